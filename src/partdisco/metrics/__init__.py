"""Evaluation metrics: streaming accumulators and pure functions over labels, tables and centroids.

A leaf package (numpy, scipy, torch only). ``clustering`` holds the contingency table behind every NMI/ARI
number, ``keypoints`` the CUB keypoint-label and keypoint-regression protocols, ``matching`` the
Hungarian mIoU to named parts. See ``unsup-parts-method.md`` §5 for the reference protocols.
"""

from partdisco.metrics.clustering import (
    ContingencyTable,
    ari_from_table,
    clustering_scores,
    nmi_ari,
    nmi_from_table,
)
from partdisco.metrics.keypoints import (
    KeypointNMI,
    KeypointRegressor,
    all_classes_protocol,
    labels_at_keypoints,
    logits_to_labels,
    normalize_by_bbox,
    part_centroids,
    three_class_protocol,
)
from partdisco.metrics.matching import hungarian_miou, hungarian_miou_labels, iou_matrix

__all__ = [
    "ContingencyTable",
    "KeypointNMI",
    "KeypointRegressor",
    "all_classes_protocol",
    "ari_from_table",
    "clustering_scores",
    "hungarian_miou",
    "hungarian_miou_labels",
    "iou_matrix",
    "labels_at_keypoints",
    "logits_to_labels",
    "nmi_ari",
    "nmi_from_table",
    "normalize_by_bbox",
    "part_centroids",
    "three_class_protocol",
]
