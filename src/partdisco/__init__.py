"""partdisco: unsupervised object part discovery.

Shape letters used in docstrings and comments throughout the package:
B batch, K parts (discovered), P ground-truth parts, C channels, H x W input image, h x w logit grid,
N keypoints, D feature dimension.
"""

__version__ = "0.1.0"

from partdisco.api import (  # noqa: E402
    evaluate_checkpoint,
    load,
    load_backbone,
    resolve_train_config,
    segment,
    train,
)

__all__ = [
    "__version__",
    "evaluate_checkpoint",
    "load",
    "load_backbone",
    "resolve_train_config",
    "segment",
    "train",
]
