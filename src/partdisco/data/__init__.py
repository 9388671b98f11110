"""Data sets and batching.

``build_dataset(cfg, split, train)`` returns a :class:`PartsDataset` whose items are the sample dicts
described in ``docs/ARCHITECTURE.md``; ``collate`` stacks them into a typed :class:`Batch`.
"""

from __future__ import annotations

import importlib

from partdisco.config import DataConfig
from partdisco.data.batch import Batch, PartsDataset, collate

_BUILDERS = {
    "synthetic": "partdisco.data.synthetic",
    "cub": "partdisco.data.cub",
    "deepfashion": "partdisco.data.deepfashion",
    "pascal_part": "partdisco.data.pascal_part",
    "folder": "partdisco.data.folder",
}


def list_datasets() -> list[str]:
    """Names accepted by ``data.name``."""
    return sorted(_BUILDERS)


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
    if cfg.name not in _BUILDERS:
        raise ValueError(f"data.name: unknown data set {cfg.name!r}; choose from {list_datasets()}")
    module = importlib.import_module(_BUILDERS[cfg.name])
    return module.build(cfg, split, train, seed=seed)


__all__ = ["Batch", "PartsDataset", "build_dataset", "collate", "list_datasets"]
