"""Data sets and batching.

``build_dataset(cfg, split, train)`` returns a torch Dataset whose items are the sample dicts described in
``docs/ARCHITECTURE.md``; ``collate`` stacks them into a batch dict.
"""

from __future__ import annotations

import importlib
from typing import Any

import torch
from torch.utils.data import Dataset

from partdisco.config import DATASETS, DataConfig

# The registry of data sets is config.DATASETS: data set NAME is the module partdisco/data/NAME.py, whose
# build(cfg, split, train, seed) makes it (tests/test_registries.py checks every name has its module).
_BUILDERS = {name: f"partdisco.data.{name}" for name in DATASETS}


def list_datasets() -> list[str]:
    """Names accepted by ``data.name`` (:data:`partdisco.config.DATASETS`), sorted."""
    return sorted(_BUILDERS)


def dataset_module(name: str) -> Any:
    """The module that builds data set ``name`` (``partdisco.data.NAME``).

    Raises:
        ValueError: ``name`` is not one of :data:`partdisco.config.DATASETS`.
    """
    if name not in _BUILDERS:
        raise ValueError(f"data.name: unknown data set {name!r}; choose from {list_datasets()}")
    return importlib.import_module(_BUILDERS[name])


def build_dataset(cfg: DataConfig, split: str, train: bool, seed: int = 0) -> Dataset:
    """Build a data set split.

    Args:
        cfg: the ``data`` slice of the run config.
        split: ``train`` or ``test``.
        train: training pipeline (random crops / flips) rather than the evaluation one.
        seed: the run's seed; augmentations are drawn from (seed, epoch, index) (``data/io.py``).

    Returns:
        A Dataset of sample dicts.

    Raises:
        ValueError: unknown data set name.
    """
    return dataset_module(cfg.name).build(cfg, split, train, seed=seed)


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack sample dicts into a batch dict (tensors stacked, strings listed).

    Raises:
        ValueError: samples with different keys or image sizes (name the first offending sample).
    """
    if not samples:
        raise ValueError("cannot collate an empty list of samples")
    keys = samples[0].keys()
    batch: dict[str, Any] = {}
    for s in samples[1:]:
        if s.keys() != keys:
            raise ValueError(
                f"sample {s.get('name')!r} has keys {sorted(s)} but the first has {sorted(keys)}"
            )
    for key in keys:
        values = [s[key] for s in samples]
        if isinstance(values[0], torch.Tensor):
            shapes = {tuple(v.shape) for v in values}
            if len(shapes) > 1:
                raise ValueError(
                    f"cannot batch {key!r} of different shapes {sorted(shapes)}; use batch size 1"
                )
            batch[key] = torch.stack(values)
        elif isinstance(values[0], (int, float)):
            batch[key] = torch.tensor(values)
        else:
            batch[key] = values
    return batch


__all__ = ["build_dataset", "collate", "dataset_module", "list_datasets"]
