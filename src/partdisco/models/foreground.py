"""The discovered foreground classifier that travels with a trained model (``data.foreground=discover``).

Foreground discovery (:mod:`partdisco.engine.discover`) learns, over the training photos, one linear
foreground / background classifier on the dense stride-8 features of the ImageNet EfficientNet-Lite0 that
ships as a pip package. The classifier is a few hundred numbers; it is stored in the model's checkpoint
(key ``"foreground"``), in ``.pt`` exports and in ONNX metadata, so that ``partdisco segment`` and
``partdisco eval`` on new photos take the foreground from what recurred across the training photos
(:mod:`partdisco.engine.inference.discovered`) rather than from the segmenter's own background channel.

This module holds only the record and its checks (plain types, safe to store in a ``weights_only``
checkpoint); the network that applies it lives in the engine.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

FEATURES = "efficientnet_lite0_stage3_stage4"  # the only feature layout a classifier can be for (today)


@dataclass(frozen=True)
class ForegroundClassifier:
    """``sigmoid(((x - mean) / std) @ weight + bias)`` on the unit-normalised stage-3 + stage-4 features.

    Attributes:
        mean, std, weight: one value per feature channel (152 for EfficientNet-Lite0).
        bias: the classifier's bias.
        size: shorter side of the network input (``data.discover_size``).
        refine_radius: guided filter radius as a fraction of the shorter side (0: off).
        refine_eps: the guided filter's ridge.
        threshold: probability above which a pixel is foreground.
        features: which network and layers the classifier reads (:data:`FEATURES`).

    Example:
        >>> clf = ForegroundClassifier((0.0, 0.0), (1.0, 1.0), (1.0, -1.0), 0.0)
        >>> ForegroundClassifier.from_dict(clf.to_dict()) == clf
        True
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    weight: tuple[float, ...]
    bias: float
    size: int = 320
    refine_radius: float = 0.06
    refine_eps: float = 1e-3
    threshold: float = 0.5
    features: str = FEATURES

    def __post_init__(self) -> None:
        n = len(self.weight)
        if n == 0 or len(self.mean) != n or len(self.std) != n:
            raise ValueError(
                f"foreground classifier: mean, std and weight need one value per channel, got "
                f"{len(self.mean)}, {len(self.std)} and {n}"
            )
        if not all(math.isfinite(v) for v in (*self.mean, *self.std, *self.weight, self.bias)):
            raise ValueError("foreground classifier: non-finite numbers")
        if min(self.std) <= 0:
            raise ValueError("foreground classifier: std must be > 0")
        if self.size < 32 or not 0.0 <= self.refine_radius < 0.5 or self.refine_eps <= 0:
            raise ValueError(
                f"foreground classifier: size >= 32, refine_radius in [0, 0.5), refine_eps > 0; got "
                f"{self.size}, {self.refine_radius}, {self.refine_eps}"
            )
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"foreground classifier: threshold must be in (0, 1), got {self.threshold}")
        if self.features != FEATURES:
            raise ValueError(f"foreground classifier: features {self.features!r}, this version: {FEATURES}")

    def to_dict(self) -> dict[str, Any]:
        """Plain lists and numbers (JSON, ONNX metadata, a ``weights_only`` checkpoint)."""
        return {
            "features": self.features,
            "mean": list(self.mean),
            "std": list(self.std),
            "weight": list(self.weight),
            "bias": self.bias,
            "size": self.size,
            "refine_radius": self.refine_radius,
            "refine_eps": self.refine_eps,
            "threshold": self.threshold,
        }

    @classmethod
    def from_dict(cls, values: Any, what: str = "classifier") -> ForegroundClassifier:
        """Rebuild from :meth:`to_dict`'s output; ValueError naming ``what`` when it is malformed."""
        if not isinstance(values, Mapping):
            raise ValueError(
                f"{what}: not a foreground classifier (expected a mapping, got {type(values).__name__})"
            )
        try:
            return cls(
                mean=_floats(values["mean"]),
                std=_floats(values["std"]),
                weight=_floats(values["weight"]),
                bias=float(values["bias"]),
                size=int(values.get("size", 320)),
                refine_radius=float(values.get("refine_radius", 0.06)),
                refine_eps=float(values.get("refine_eps", 1e-3)),
                threshold=float(values.get("threshold", 0.5)),
                features=str(values.get("features", FEATURES)),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{what}: not a foreground classifier ({err})") from err


def _floats(values: Sequence[Any]) -> tuple[float, ...]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise TypeError(f"expected a list of numbers, got {type(values).__name__}")
    return tuple(float(v) for v in values)
