"""``model.arch=vit``: a DINO / DINOv2 ViT trunk (frozen by default) feeding the part head ``layer5``.

The segmenter has the same interface as :class:`partdisco.models.Segmenter` (``preprocess``, ``num_parts``,
``background_channel``, ``out_channels``, ``forward -> (B, K(+1), h, w)``, ``param_groups``, ``config``), so
training, evaluation and ``partdisco segment`` use it unchanged. Its parameters are ``backbone.*`` (the
official ViT names) and ``layer5.*`` (the reference's ASPP head, on the C patch-token channels).

- Output stride = the patch size p. An input whose sides are not multiples of p is first resized
  (bilinear) to the nearest multiples, so the logits always cover the whole image.
- ``finetune_blocks = N``: the last N blocks and the final norm train; everything before them runs under
  ``torch.no_grad`` (no activations are kept for backward: CPU training with a frozen ViT costs one
  inference pass of the ViT plus the head). N = 0 (default) freezes the whole ViT.
- The input normalisation is ImageNet's, which every DINO / DINOv2 file expects.
- Checkpoints are self-contained: the state dict holds the ViT weights, and ``config()["backbone"]`` records
  the architecture and where the weights came from (file, SHA-256, layout), so ``partdisco.load`` rebuilds
  the model without the original file.

Example:
    >>> from partdisco.models.vit import ViTSpec
    >>> seg = ViTSegmenter(ViTSpec.named("dinov2_vits14", depth=2), num_parts=4, finetune_blocks=1)
    >>> seg(seg.preprocess(torch.rand(2, 3, 64, 96))).shape   # 64 x 96 -> 70 x 98 -> 5 x 7 patches
    torch.Size([2, 4, 5, 7])
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from partdisco.config import RANDOM_INIT, ModelConfig
from partdisco.models.build import Arch, register_arch
from partdisco.models.segmenter import IMAGENET, ASPPHead, PartSegmenter, Preprocess
from partdisco.models.vit import (
    VisionTransformer,
    ViTSpec,
    patch_multiple,
    resize_to_patch_multiple,
)
from partdisco.models.vit_backbone import load_backbone

VIT_ARCH = "vit"

logger = logging.getLogger(__name__)


class ViTSegmenter(PartSegmenter):
    """A ViT trunk plus the ASPP part head, producing part logits at output stride p.

    Args:
        backbone: a :class:`VisionTransformer` (e.g. from
            :func:`partdisco.models.vit_backbone.load_backbone`) or a :class:`ViTSpec` for random weights.
        num_parts: K.
        background_channel: add a background logit as channel 0 -> K + 1 outputs.
        finetune_blocks: how many of the last blocks (and the final norm) train; 0 = frozen ViT.
        preprocess: input normalisation; None = ImageNet (what the DINO weights expect).

    Attributes:
        arch: ``"vit"``.
        backbone: the ViT.
        layer5: the head.
    """

    arch = "vit"

    def __init__(
        self,
        backbone: VisionTransformer | ViTSpec,
        num_parts: int,
        background_channel: bool = False,
        finetune_blocks: int = 0,
        preprocess: Preprocess | None = None,
    ) -> None:
        super().__init__(num_parts, background_channel, preprocess if preprocess is not None else IMAGENET)
        self.backbone = backbone if isinstance(backbone, VisionTransformer) else VisionTransformer(backbone)
        depth = self.backbone.spec.depth
        if not 0 <= int(finetune_blocks) <= depth:
            raise ValueError(
                f"model.finetune_blocks must be between 0 and the ViT's {depth} blocks, got {finetune_blocks}"
            )
        self.finetune_blocks = int(finetune_blocks)
        self.layer5 = ASPPHead(self.backbone.spec.embed_dim, self.out_channels)
        first_trained = depth - self.finetune_blocks
        for name, p in self.backbone.named_parameters():
            trained = self.finetune_blocks > 0 and (
                name.startswith("norm.")
                or (name.startswith("blocks.") and int(name.split(".")[1]) >= first_trained)
            )
            p.requires_grad_(trained)

    @property
    def spec(self) -> ViTSpec:
        """The backbone's :class:`ViTSpec`."""
        return self.backbone.spec

    @property
    def input_multiple(self) -> int:  # type: ignore[override]
        """Input sides are resized to multiples of the patch size inside :meth:`forward_features`."""
        return self.spec.patch_size

    def train(self, mode: bool = True) -> ViTSegmenter:
        """Train mode for the trained blocks and the head; the frozen part stays in eval mode."""
        super().train(mode)
        self.backbone.eval()  # no dropout / BN anywhere in the ViT: eval keeps it exactly deterministic
        return self

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """Logit grid (h, w) for an (H, W) input: the patch grid after rounding to multiples of p."""
        p = self.spec.patch_size
        return patch_multiple(height, p) // p, patch_multiple(width, p) // p

    def forward_features(self, x: Tensor) -> Tensor:
        """ViT patch tokens (B, C, h, w) of a normalised image (B, 3, H, W)."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected a normalised image batch (B, 3, H, W), got shape {tuple(x.shape)}")
        p = self.spec.patch_size
        x = resize_to_patch_multiple(x, p)  # (B, 3, h * p, w * p)
        grid = (x.shape[-2] // p, x.shape[-1] // p)
        vit = self.backbone
        first_trained = vit.spec.depth - self.finetune_blocks
        with torch.no_grad():  # the frozen part keeps no activations for backward
            tokens = vit.embed(x)  # (B, 1 + R + h * w, C)
            for block in vit.blocks[:first_trained]:
                tokens = block(tokens)
            if self.finetune_blocks == 0:
                return vit.to_map(tokens, grid)[0]  # (B, C, h, w)
        for block in vit.blocks[first_trained:]:
            tokens = block(tokens)
        return vit.to_map(tokens, grid)[0]  # (B, C, h, w)

    def forward(self, x: Tensor) -> Tensor:
        """Part logits (B, out_channels, h, w) of a normalised image (B, 3, H, W); h = round(H / p)."""
        return self.layer5(self.forward_features(x))

    def backbone_parameters(self) -> list[nn.Parameter]:
        """The ViT's parameters (the frozen ones do not require grad, so they leave the optimiser's group)."""
        return list(self.backbone.parameters())

    def config_extra(self) -> dict[str, Any]:
        """``finetune_blocks`` and ``backbone`` = the ViT spec + where its weights came from."""
        return {
            "finetune_blocks": self.finetune_blocks,
            "backbone": {"name": self.spec.name, **self.spec.to_dict(), **dict(self.backbone.source)},
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ViTSegmenter:
        """Rebuild (random weights) from :meth:`config` output; the caller loads the state dict."""
        backbone = config.get("backbone")
        if not isinstance(backbone, Mapping):
            raise ValueError("a vit segmenter config needs a 'backbone' dict (the ViT spec)")
        vit = VisionTransformer(ViTSpec.from_dict(backbone))
        vit.source = {k: str(backbone[k]) for k in ("file", "sha256", "layout") if k in backbone}
        pre = config.get("preprocess")
        return cls(
            vit,
            int(config["num_parts"]),
            background_channel=bool(config.get("background_channel", False)),
            finetune_blocks=int(config.get("finetune_blocks", 0)),
            preprocess=Preprocess.from_dict(pre) if isinstance(pre, Mapping) else None,
        )

    def extra_repr(self) -> str:
        """Shown by ``print(module)``."""
        return (
            f"arch='vit', backbone={self.spec.name!r}, num_parts={self.num_parts}, "
            f"background_channel={self.background_channel}, finetune_blocks={self.finetune_blocks}"
        )


@register_arch
class ViTArch(Arch):
    """``model.arch=vit``: a DINO / DINOv2 ViT from ``init_from`` (or random ``model.vit``) + the part head.

    Not created by name alone (:func:`partdisco.models.build.create_segmenter`): it needs a backbone.
    """

    name = VIT_ARCH
    by_name = False

    def from_config(self, config: Mapping[str, Any]) -> ViTSegmenter:
        """:meth:`ViTSegmenter.from_config`."""
        return ViTSegmenter.from_config(config)

    def resolve(self, cfg: ModelConfig) -> tuple[ModelConfig, str | None]:
        """DINO / DINOv2 files: ImageNet normalisation, no ResNet provenance to detect."""
        return dataclasses.replace(cfg, normalization="imagenet"), None

    def build(self, cfg: ModelConfig) -> ViTSegmenter:
        """The ViT segmenter; it uses ImageNet normalisation whatever ``model.normalization`` says.

        Args:
            cfg: ``init_from`` (a local DINO / DINOv2 ``.pth`` / ``.safetensors``, any layout), ``vit`` (hub
                name for random weights), ``finetune_blocks``, ``num_parts``, ``background_channel``.

        Returns:
            The :class:`ViTSegmenter` in train mode.
        """
        if cfg.init_from is not None and cfg.init_from != RANDOM_INIT:
            vit = load_backbone(cfg.init_from)
        else:
            try:
                spec = ViTSpec.named(cfg.vit)
            except ValueError as err:
                raise ValueError(f"model.vit: {err}") from None
            vit = VisionTransformer(spec)
            logger.info("arch=vit with random %s weights (no model.init_from)", spec.name)
        if cfg.normalization != "imagenet":
            logger.info("arch=vit uses ImageNet normalisation, not model.normalization=%s", cfg.normalization)
        if cfg.finetune_blocks > vit.spec.depth:
            raise ValueError(
                f"model.finetune_blocks={cfg.finetune_blocks} but {vit.spec.name} has {vit.spec.depth} blocks"
            )
        return ViTSegmenter(
            vit, cfg.num_parts, background_channel=cfg.background_channel, finetune_blocks=cfg.finetune_blocks
        ).train()
