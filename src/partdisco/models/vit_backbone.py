"""A DINO / DINOv2 backbone from a local weight file: read any layout, infer its spec, strict-load it.

:func:`load_backbone` reads official, timm and Hugging Face files (``.pth`` / ``.safetensors``, through
:mod:`partdisco.models.vit_files`), infers the :class:`~partdisco.models.vit.ViTSpec` from the tensors
(:func:`spec_from_state_dict`) and loads them strictly; :func:`random_state_dict` makes test weights.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from partdisco.models.vit import SIZES, VisionTransformer, ViTSpec
from partdisco.models.vit_files import read_weight_file, to_official
from partdisco.models.weights import CheckpointError, load_state_dict_strict

logger = logging.getLogger(__name__)


def _take(state: Mapping[str, Any], key: str, what: str, dim: int) -> Tensor:
    value = state.get(key)
    if not isinstance(value, Tensor) or value.dim() != dim:
        raise CheckpointError(f"{what}: no {dim}-d tensor {key!r} to read the architecture from")
    return value


def spec_from_state_dict(state: Mapping[str, Any], what: str = "ViT weights") -> ViTSpec:
    """Infer the architecture of an official-layout ViT state dict from its keys and shapes.

    Family: layer scale (``blocks.0.ls1.gamma``) means DINOv2, its absence DINO v1. C from ``cls_token``,
    p from ``patch_embed.proj.weight``, depth from the highest block index, registers from
    ``register_tokens``, SwiGLU from ``mlp.w12``; the head count is the official one for C (64 channels per
    head otherwise). A DINOv2 file with registers interpolates like the official ``_reg`` hub models.

    Args:
        state: official-layout tensors.
        what: words naming the file in messages.

    Returns:
        The :class:`ViTSpec`.

    Raises:
        CheckpointError: a tensor needed to tell the architecture is missing or has an odd shape.
    """
    C = int(_take(state, "cls_token", what, 3).shape[-1])
    proj = _take(state, "patch_embed.proj.weight", what, 4)
    if proj.shape[0] != C or proj.shape[1] != 3 or proj.shape[2] != proj.shape[3]:
        raise CheckpointError(f"{what}: patch_embed.proj.weight {tuple(proj.shape)} is not ({C}, 3, p, p)")
    p = int(proj.shape[-1])
    N = int(_take(state, "pos_embed", what, 3).shape[1]) - 1
    M = int(math.isqrt(N))
    if M * M != N:
        raise CheckpointError(f"{what}: pos_embed has {N} patch positions, not a square grid (+ class token)")
    blocks = {int(k.split(".")[1]) for k in state if k.startswith("blocks.") and k.split(".")[1].isdigit()}
    if not blocks:
        raise CheckpointError(f"{what}: no blocks.N.* tensors")
    depth = max(blocks) + 1
    v2 = "blocks.0.ls1.gamma" in state
    registers = (
        int(state["register_tokens"].shape[1]) if isinstance(state.get("register_tokens"), Tensor) else 0
    )
    swiglu = "blocks.0.mlp.w12.weight" in state
    hidden_key = "blocks.0.mlp.w3.weight" if swiglu else "blocks.0.mlp.fc1.weight"
    hidden_w = _take(state, hidden_key, what, 2)
    hidden = int(hidden_w.shape[1] if swiglu else hidden_w.shape[0])
    heads = SIZES[C][1] if C in SIZES else max(1, C // 64)
    reg_style = v2 and registers > 0
    return ViTSpec(
        family="dinov2" if v2 else "dino",
        embed_dim=C,
        depth=depth,
        num_heads=heads,
        patch_size=p,
        pos_grid=M,
        num_registers=registers,
        ffn="swiglu" if swiglu else "mlp",
        mlp_hidden=hidden,
        layer_scale=v2,
        interpolate_offset=0.0 if reg_style else 0.1,
        interpolate_antialias=reg_style,
    )


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file, read in 16 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_backbone(path: str | os.PathLike[str], family: str | None = None) -> VisionTransformer:
    """Build a frozen DINO / DINOv2 ViT from a local ``.pth`` or ``.safetensors`` file; nothing is downloaded.

    The file may be in the official hub, timm or Hugging Face transformers layout (see
    :mod:`partdisco.models.vit_files`); family, size, patch size and registers are read from its keys and
    shapes. Every tensor must be used and every parameter present with the right shape: otherwise a
    :class:`CheckpointMismatchError` lists the keys.

    Args:
        path: the weight file.
        family: expect ``"dino"`` or ``"dinov2"``; None accepts either.

    Returns:
        The :class:`VisionTransformer` in eval mode with ``requires_grad=False`` everywhere;
        ``model(x)`` maps an ImageNet-normalised (B, 3, H, W) to (B, C, H / p, W / p) and
        ``model.source`` records ``file``, ``sha256`` and ``layout``.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: unreadable, not a ViT, or not of the expected family.
        CheckpointMismatchError: keys or shapes that do not fit the detected architecture (listed).

    Example:
        >>> import tempfile
        >>> from partdisco.models.vit_files import write_safetensors
        >>> spec = ViTSpec.named("dinov2_vits14", depth=1)
        >>> with tempfile.TemporaryDirectory() as d:
        ...     _ = write_safetensors(VisionTransformer(spec).state_dict(), f"{d}/vits14.safetensors")
        ...     vit = load_backbone(f"{d}/vits14.safetensors")
        >>> vit.spec.name, vit(torch.zeros(1, 3, 28, 42)).shape
        ('dinov2_vits14_depth1', torch.Size([1, 384, 2, 3]))
    """
    path = Path(path).expanduser()
    what = f"ViT weights {str(path)!r}"
    obj = read_weight_file(path)
    state, layout, heads = to_official(obj, what)
    spec = spec_from_state_dict(state, what)
    if family is not None and spec.family != family:
        raise CheckpointError(f"{what} hold a {spec.family} model ({spec.name}), not {family}")
    vit = VisionTransformer(spec)
    load_state_dict_strict(vit, state, f"{what} ({layout} layout, read as {spec.name})")
    if heads:
        logger.info("%s: ignored %d head tensors (%s...)", what, len(heads), heads[0])
    vit.source = {"file": str(path), "sha256": file_sha256(path), "layout": layout}
    logger.info("loaded %s from %s (%s layout)", spec.name, path, layout)
    return vit.freeze_()


def random_state_dict(spec: ViTSpec, seed: int = 0) -> dict[str, Tensor]:
    """Seeded random weights of the real shapes, in the official layout (for tests and benchmarks).

    The recipe (stable across torch versions: one CPU ``torch.Generator``, ``randn`` per tensor in the
    module's key order): linear/conv weights N(0, 1 / fan_in), biases N(0, 0.02^2), LayerNorm weights
    1 + N(0, 0.1^2) and biases N(0, 0.1^2), layer-scale gammas 0.1 + N(0, 0.05^2), ``cls_token``,
    ``pos_embed``, ``register_tokens`` and ``mask_token`` N(0, 1). The positions are unit-scale on purpose,
    so a wrong interpolation shows in the outputs.

    Args:
        spec: the architecture.
        seed: generator seed.

    Returns:
        ``{official key: float32 tensor}``.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.device("meta"):  # shapes only, no memory
        shapes = {k: v.shape for k, v in VisionTransformer(spec).state_dict().items()}
    out: dict[str, Tensor] = {}
    for key, shape in shapes.items():
        x = torch.randn(shape, generator=generator)
        module = key.rsplit(".", 1)[0].rsplit(".", 1)[-1] if "." in key else ""
        if key.endswith("gamma"):
            x = 0.1 + 0.05 * x
        elif module.startswith("norm") and key.endswith("weight"):
            x = 1.0 + 0.1 * x
        elif module.startswith("norm") and key.endswith("bias"):
            x = 0.1 * x
        elif key.endswith("weight"):
            x = x / math.sqrt(math.prod(shape[1:]))
        elif key.endswith("bias"):
            x = 0.02 * x
        out[key] = x
    return out
