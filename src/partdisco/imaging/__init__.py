"""Image values and colour: colour spaces and jitter (:mod:`.color`), the uint8 RGB rule (:mod:`.convert`).

On the floor of :mod:`partdisco.geometry` (above ``config``, below ``data``): everything that reads or
shows an image may use it.
"""

from partdisco.imaging.color import (
    LAB_CIE,
    LAB_SKIMAGE,
    JitterParams,
    apply_color_jitter,
    rgb_to_lab,
    sample_jitter_params,
)
from partdisco.imaging.convert import composite_on_black, sixteen_to_eight, to_rgb_uint8

__all__ = [
    "LAB_CIE",
    "LAB_SKIMAGE",
    "JitterParams",
    "apply_color_jitter",
    "composite_on_black",
    "rgb_to_lab",
    "sample_jitter_params",
    "sixteen_to_eight",
    "to_rgb_uint8",
]
