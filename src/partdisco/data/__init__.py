"""Data sets and batching.

``build_dataset(cfg, split, train)`` returns a :class:`PartsDataset` whose items are the sample dicts
described in ``docs/ARCHITECTURE.md``; ``collate`` stacks them into a typed :class:`Batch`.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from partdisco.config import DATASETS, DataConfig
from partdisco.data.batch import Batch, PartsDataset, collate

# The registry of data sets is config.DATASETS: data set NAME is the module partdisco/data/NAME.py, whose
# build(cfg, split, train, seed) makes it (tests/test_registries.py checks every name has its module).
_BUILDERS = {name: f"partdisco.data.{name}" for name in DATASETS}


def list_datasets() -> list[str]:
    """Names accepted by ``data.name`` (:data:`partdisco.config.DATASETS`), sorted."""
    return sorted(_BUILDERS)


def dataset_module(name: str) -> ModuleType:
    """The module that builds data set ``name`` (``partdisco.data.NAME``).

    Raises:
        ValueError: ``name`` is not one of :data:`partdisco.config.DATASETS`.
    """
    if name not in _BUILDERS:
        raise ValueError(f"data.name: unknown data set {name!r}; choose from {list_datasets()}")
    return importlib.import_module(_BUILDERS[name])


def build_dataset(cfg: DataConfig, split: str, train: bool, seed: int = 0) -> PartsDataset:
    """Build a data set split.

    Args:
        cfg: the ``data`` slice of the run config.
        split: ``train`` or ``test``.
        train: training pipeline (random crops / flips) rather than the evaluation one.
        seed: the run's seed; augmentations are drawn from (seed, epoch, index) (``data/io.py``).

    Returns:
        A :class:`PartsDataset` of sample dicts.

    Raises:
        ValueError: unknown data set name.
    """
    return dataset_module(cfg.name).build(cfg, split, train, seed=seed)


__all__ = ["Batch", "PartsDataset", "build_dataset", "collate", "dataset_module", "list_datasets"]
