"""Deprecated import path (one release, issue #23): the architecture registry moved to :mod:`.build`.

Architectures register themselves next to their segmenter (``resnet_segmenter.py``,
``efficientnet_segmenter.py``, ``vit_segmenter.py``). Nothing inside the package imports this module.
"""

from partdisco.models.build import (
    create_segmenter,
    get_arch,
    list_archs,
    register_arch,
    segmenter_from_config,
)
from partdisco.models.efficientnet_segmenter import EFFICIENTNET_ARCHS
from partdisco.models.vit_segmenter import VIT_ARCH

__all__ = [
    "EFFICIENTNET_ARCHS",
    "VIT_ARCH",
    "create_segmenter",
    "get_arch",
    "list_archs",
    "register_arch",
    "segmenter_from_config",
]
