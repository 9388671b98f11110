"""Training losses: pure functions (``functional``) and the weighted ``Objective``."""

from partdisco.losses.functional import (
    background_bce,
    contrastive_infonce,
    equivariance_kl,
    part_feature_statistics,
    pool_part_features,
    sample_positive_images,
    within_part_variance,
)
from partdisco.losses.objective import Objective, part_probabilities

__all__ = [
    "Objective",
    "background_bce",
    "contrastive_infonce",
    "equivariance_kl",
    "part_feature_statistics",
    "part_probabilities",
    "pool_part_features",
    "sample_positive_images",
    "within_part_variance",
]
