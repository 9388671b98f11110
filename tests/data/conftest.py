"""Fixtures over the tiny on-disk data sets of :mod:`tiny_datasets` (plain builders live there)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from .tiny_datasets import make_tiny_cub, make_tiny_deepfashion, make_tiny_folder, make_tiny_pascal


@pytest.fixture(autouse=True)
def _seed_torch() -> None:
    """Fix torch's global generator per test (for tests that draw from it; augmentations do not)."""
    torch.manual_seed(0)


@pytest.fixture
def tiny_cub(tmp_path: Path) -> Path:
    return make_tiny_cub(tmp_path)


@pytest.fixture
def tiny_deepfashion(tmp_path: Path) -> Path:
    return make_tiny_deepfashion(tmp_path)


@pytest.fixture
def tiny_pascal(tmp_path: Path) -> Path:
    return make_tiny_pascal(tmp_path)


@pytest.fixture
def tiny_folder(tmp_path: Path) -> Path:
    return make_tiny_folder(tmp_path)
