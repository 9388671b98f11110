"""The crop-parameter block of the object-centred data sets lives in one dataclass (issue #12, point 1)."""

from __future__ import annotations

from pathlib import Path

import pytest

from partdisco.config import DataConfig
from partdisco.data import cub, folder, pascal_part
from partdisco.data.transforms import ObjectCrop


def test_from_config_reads_the_four_keys() -> None:
    cfg = DataConfig(image_size=40, padding_frac=0.2, jitter_frac=0.125, flip=False)
    assert ObjectCrop.from_config(cfg) == ObjectCrop(size=40, padding_frac=0.2, jitter_frac=0.125, flip=False)


def test_frozen() -> None:
    crop = ObjectCrop(32, 0.05, 0.05, True)
    with pytest.raises(AttributeError):
        crop.size = 64  # type: ignore[misc]


@pytest.mark.parametrize(
    "module, fixture", [(cub, "tiny_cub"), (pascal_part, "tiny_pascal"), (folder, "tiny_folder")]
)
def test_data_sets_take_the_crop_from_the_config(
    module, fixture: str, request: pytest.FixtureRequest
) -> None:
    root: Path = request.getfixturevalue(fixture)
    name = {cub: "cub", pascal_part: "pascal_part", folder: "folder"}[module]
    cfg = DataConfig(
        name=name, root=str(root), image_size=36, padding_frac=0.2, jitter_frac=0.125, flip=False
    )
    ds = module.build(cfg, "train", train=True)
    assert (ds.size, ds.padding_frac, ds.jitter_frac, ds.flip) == (36, 0.2, 0.125, False)
    assert tuple(ds[0]["image"].shape) == (3, 36, 36)
