"""DINO (v1) and DINOv2 Vision Transformers: the network, its specs and positional-embedding interpolation.

Building one from a local weight file is :func:`partdisco.models.vit_backbone.load_backbone`.

One module, :class:`VisionTransformer`, with the official parameter names (``cls_token``, ``pos_embed``,
``register_tokens``, ``mask_token``, ``patch_embed.proj``, ``blocks.{i}.*``, ``norm``), covers

- DINO v1 (facebookresearch/dino): ViT-S/16, ViT-S/8, ViT-B/16, ViT-B/8; no layer scale, GELU MLP;
- DINOv2 (facebookresearch/dinov2): ViT-S/B/L/g 14, with and without 4 registers; layer scale; GELU MLP,
  except ViT-g whose FFN is the fused SwiGLU (``mlp.w12``: in -> 2 x hidden, ``mlp.w3``: hidden -> out,
  hidden = (int(4 C x 2/3) + 7) // 8 x 8).

Positional embeddings are interpolated as each official model does (see :func:`interpolate_pos_embed`):
DINO v1 and the plain DINOv2 models use bicubic interpolation with a *scale factor* of (n + 0.1) / M and no
antialiasing; the DINOv2 ``_reg`` hub models use the output *size* n and antialiasing (``interpolate_offset
= 0``, ``interpolate_antialias = True`` in dinov2 ``hub/backbones.py``). The two give different numbers.

Example:
    >>> spec = ViTSpec.named("dinov2_vits14_reg")
    >>> spec.embed_dim, spec.depth, spec.num_registers, spec.interpolate_offset, spec.interpolate_antialias
    (384, 12, 4, 0.0, True)
    >>> vit = VisionTransformer(ViTSpec.named("dino_vits16", depth=1))
    >>> vit(torch.zeros(2, 3, 32, 48)).shape
    torch.Size([2, 384, 2, 3])
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

logger = logging.getLogger(__name__)

FAMILIES = ("dino", "dinov2")
SIZES = {
    384: ("s", 6, 12),
    768: ("b", 12, 12),
    1024: ("l", 16, 24),
    1536: ("g", 24, 40),
}  # C: name, heads, depth
LN_EPS = 1e-6  # both official codes: partial(nn.LayerNorm, eps=1e-6)
POS_GRID = {"dino": 224, "dinov2": 518}  # img_size the pos_embed was made for: 224/p and 518/14 = 37
POS_ALIGN = False  # the official interpolations leave align_corners at its default (False)
RESIZE_ALIGN = False  # inputs resized to patch multiples with half-pixel centres, as image resizing does


@dataclass(frozen=True)
class ViTSpec:
    """Everything that fixes the shapes and the computation of a DINO / DINOv2 ViT.

    Attributes:
        family: ``"dino"`` (v1) or ``"dinov2"``.
        embed_dim: C (384 S, 768 B, 1024 L, 1536 g).
        depth: number of blocks.
        num_heads: attention heads.
        patch_size: p (16 or 8 for DINO, 14 for DINOv2).
        pos_grid: M, the side of the stored positional-embedding grid (M x M patch positions + 1 class).
        num_registers: register tokens (0, or 4 for the ``_reg`` models).
        ffn: ``"mlp"`` (GELU) or ``"swiglu"`` (ViT-g).
        mlp_hidden: hidden width of the FFN (for SwiGLU: of one half of ``w12``).
        layer_scale: ``ls1``/``ls2`` gammas (DINOv2).
        interpolate_offset: the offset added before the scale factor (0.1), or 0 = interpolate to a size.
        interpolate_antialias: antialiased bicubic interpolation of the positions.
    """

    family: str
    embed_dim: int
    depth: int
    num_heads: int
    patch_size: int
    pos_grid: int
    num_registers: int = 0
    ffn: str = "mlp"
    mlp_hidden: int = 0
    layer_scale: bool = False
    interpolate_offset: float = 0.1
    interpolate_antialias: bool = False

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"ViT family must be one of {FAMILIES}, got {self.family!r}")
        if self.ffn not in ("mlp", "swiglu"):
            raise ValueError(f"ViT ffn must be 'mlp' or 'swiglu', got {self.ffn!r}")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by {self.num_heads} heads")
        if self.mlp_hidden <= 0:
            object.__setattr__(self, "mlp_hidden", default_mlp_hidden(self.embed_dim, self.ffn))

    @property
    def size(self) -> str:
        """``"s"``, ``"b"``, ``"l"``, ``"g"`` by width, else ``"d{C}"``."""
        return SIZES[self.embed_dim][0] if self.embed_dim in SIZES else f"d{self.embed_dim}"

    @property
    def name(self) -> str:
        """Official hub name, e.g. ``dinov2_vitg14_reg``; ``_depthN`` if not the official depth."""
        name = f"{self.family}_vit{self.size}{self.patch_size}" + ("_reg" if self.num_registers else "")
        official_depth = SIZES.get(self.embed_dim, ("", 0, -1))[2]
        return name if self.depth == official_depth else f"{name}_depth{self.depth}"

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for checkpoints (:meth:`from_dict` inverts it)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ViTSpec:
        """Inverse of :meth:`to_dict`; unknown keys (e.g. a file hash stored alongside) are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})

    @classmethod
    def named(cls, name: str, depth: int | None = None) -> ViTSpec:
        """The spec of an official model by hub name (:data:`VIT_NAMES`), optionally with fewer blocks.

        Args:
            name: e.g. ``"dino_vitb8"``, ``"dinov2_vitl14_reg"``.
            depth: override the number of blocks.

        Returns:
            The :class:`ViTSpec`.
        """
        if name not in VIT_NAMES:
            raise ValueError(f"unknown ViT {name!r}; choose from {sorted(VIT_NAMES)}")
        return dataclasses.replace(VIT_NAMES[name], **({"depth": depth} if depth is not None else {}))


def default_mlp_hidden(embed_dim: int, ffn: str) -> int:
    """FFN hidden width with mlp_ratio 4; SwiGLU as dinov2's ``SwiGLUFFNFused`` rounds it."""
    hidden = 4 * embed_dim
    return (int(hidden * 2 / 3) + 7) // 8 * 8 if ffn == "swiglu" else hidden


def _official_specs() -> dict[str, ViTSpec]:
    specs: dict[str, ViTSpec] = {}
    for C in (384, 768):
        for p in (16, 8):
            size, heads, depth = SIZES[C]
            specs[f"dino_vit{size}{p}"] = ViTSpec("dino", C, depth, heads, p, POS_GRID["dino"] // p)
    for C, (size, heads, depth) in SIZES.items():
        ffn = "swiglu" if size == "g" else "mlp"
        common = dict(family="dinov2", embed_dim=C, depth=depth, num_heads=heads, patch_size=14, pos_grid=37)
        specs[f"dinov2_vit{size}14"] = ViTSpec(**common, ffn=ffn, layer_scale=True)
        specs[f"dinov2_vit{size}14_reg"] = ViTSpec(
            **common,
            ffn=ffn,
            layer_scale=True,
            num_registers=4,
            interpolate_offset=0.0,
            interpolate_antialias=True,
        )
    return specs


VIT_NAMES: dict[str, ViTSpec] = _official_specs()


def patch_multiple(size: int, patch: int) -> int:
    """The multiple of ``patch`` nearest to ``size`` (at least one patch).

    Example:
        >>> patch_multiple(96, 14), patch_multiple(100, 14), patch_multiple(5, 14)
        (98, 98, 14)
    """
    return max(patch, int(round(size / patch)) * patch)


def resize_to_patch_multiple(x: Tensor, patch: int) -> Tensor:
    """Bilinearly resize (B, 3, H, W) to the nearest multiples of ``patch`` (no-op if they are)."""
    H, W = x.shape[-2:]
    if H % patch == 0 and W % patch == 0 and H >= patch and W >= patch:  # (no branch on exported multiples)
        return x
    size = (patch_multiple(H, patch), patch_multiple(W, patch))
    return F.interpolate(x, size=size, mode="bilinear", align_corners=RESIZE_ALIGN)  # (B, 3, h0 * p, w0 * p)


def interpolate_pos_embed(
    pos_embed: Tensor, grid: tuple[int, int], image_equal_sides: bool, offset: float, antialias: bool
) -> Tensor:
    """Positional embeddings for an (h0, w0) patch grid, as the official DINO / DINOv2 code computes them.

    The stored (1, 1 + M^2, C) table is returned unchanged when the token count is M^2 and the image is
    square (both official codes test exactly this). Otherwise the M x M patch positions are resized
    bicubically (``align_corners`` False): with ``offset`` > 0 by the scale factors ((h0 + offset) / M,
    (w0 + offset) / M), which PyTorch also uses to map coordinates; with ``offset`` = 0 to the size (h0, w0).

    Args:
        pos_embed: (1, 1 + M * M, C) stored table (class position first).
        grid: (h0, w0), the patch grid of the image.
        image_equal_sides: whether the image (in pixels) is square.
        offset: 0.1 for DINO v1 and plain DINOv2, 0.0 for DINOv2 ``_reg``.
        antialias: False for DINO v1 and plain DINOv2, True for DINOv2 ``_reg``.

    Returns:
        (1, 1 + h0 * w0, C) in the dtype of ``pos_embed``.
    """
    N = pos_embed.shape[1] - 1
    h0, w0 = grid
    symbolic = not (isinstance(h0, int) and isinstance(w0, int))  # sizes traced for ONNX export
    if not symbolic and h0 * w0 == N and image_equal_sides:
        return pos_embed
    M = int(math.sqrt(N))
    if M * M != N:
        raise ValueError(f"pos_embed holds {N} patch positions, not a square grid")
    C = pos_embed.shape[-1]
    dtype = pos_embed.dtype
    table = pos_embed.float()
    patch = table[:, 1:].reshape(1, M, M, C).permute(0, 3, 1, 2)  # (1, C, M, M)
    if symbolic and offset:  # ONNX export: a float scale factor would be fixed at the traced size
        if antialias:
            raise NotImplementedError("exporting interpolate_offset > 0 with antialiasing is not supported")
        # the stored table for a square M x M grid without a branch on the size (nearest at M x M: a copy)
        same = (torch.scalar_tensor(h0) == M) & (torch.scalar_tensor(w0) == M)
        kept = F.interpolate(patch, size=(h0, w0), mode="nearest")  # (1, C, h0, w0)
        scaled = bicubic_by_scale(patch, (h0, w0), offset)  # (1, C, h0, w0)
        patch = torch.where(same, kept, scaled)
    else:
        if offset:
            size_or_scale: dict[str, Any] = {"scale_factor": (float(h0 + offset) / M, float(w0 + offset) / M)}
        else:
            size_or_scale = {"size": (h0, w0)}
        patch = F.interpolate(
            patch, mode="bicubic", antialias=antialias, align_corners=POS_ALIGN, **size_or_scale
        )
    if not symbolic and tuple(patch.shape[-2:]) != (h0, w0):
        raise RuntimeError(f"position interpolation gave {tuple(patch.shape[-2:])}, expected {(h0, w0)}")
    patch = patch.permute(0, 2, 3, 1).reshape(1, h0 * w0, C)  # (1, h0 * w0, C)
    return torch.cat([table[:, :1], patch], dim=1).to(dtype)


def _bicubic_matrix(n_out: Any, n_in: int, offset: float) -> Tensor:
    """(n_out, n_in) weights of PyTorch's bicubic resize at the scale factor (n_out + offset) / n_in.

    align_corners False, no antialiasing, A = -0.75, indices clamped at the borders, as ATen computes them;
    ``n_out`` may be a ``torch.SymInt``.
    """
    A = -0.75
    dst = torch.arange(n_out, dtype=torch.float32)
    inverse = 1.0 / ((torch.scalar_tensor(n_out, dtype=torch.float64) + offset) / n_in)  # as PyTorch: 1 / sf
    inverse = inverse.float()
    src = (dst + 0.5) * inverse - 0.5
    first = torch.floor(src)
    t = src - first

    def near(x: Tensor) -> Tensor:  # |x| <= 1
        return ((A + 2) * x - (A + 3)) * x * x + 1

    def far(x: Tensor) -> Tensor:  # 1 < |x| < 2
        return ((A * x - 5 * A) * x + 8 * A) * x - 4 * A

    weights = torch.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], dim=1)  # (n_out, 4)
    index = (first.long()[:, None] + torch.arange(-1, 3)[None]).clamp(0, n_in - 1)  # (n_out, 4)
    return torch.zeros(n_out, n_in).scatter_add(1, index, weights)  # (n_out, n_in)


def bicubic_by_scale(grid: Tensor, size: tuple[Any, Any], offset: float) -> Tensor:
    """Bicubic resize by the scale factors ((h + offset) / M, (w + offset) / M) as two matrix products.

    ``F.interpolate(grid, scale_factor=..., mode="bicubic", align_corners=False)`` within float rounding, for
    sizes traced symbolically (ONNX export), where a float scale factor would be fixed at the traced size.

    Args:
        grid: (B, C, M, M) float.
        size: (h, w), ints or ``torch.SymInt``.
        offset: the official ``interpolate_offset`` (0.1).

    Returns:
        (B, C, h, w).

    Example:
        >>> g = torch.randn(1, 2, 4, 4)
        >>> ref = F.interpolate(g, scale_factor=(6.1 / 4, 3.1 / 4), mode="bicubic", align_corners=False)
        >>> bool(torch.allclose(bicubic_by_scale(g, (6, 3), 0.1), ref, atol=1e-5))
        True
    """
    M = grid.shape[-1]
    rows, cols = _bicubic_matrix(size[0], M, offset), _bicubic_matrix(size[1], M, offset)
    return torch.einsum("hm,bcmn,wn->bchw", rows, grid.float(), cols).to(grid.dtype)  # (B, C, h, w)


class PatchEmbed(nn.Module):
    """Non-overlapping p x p patches -> C channels (``proj`` is the official conv)."""

    def __init__(self, patch_size: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, embed_dim, patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, h0 * w0, C)."""
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention with one ``qkv`` projection (bias) and an output ``proj``."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)
        self.proj = nn.Linear(dim, dim, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        """(B, N, C) -> (B, N, C)."""
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # (B, heads, N, C / heads)
        return self.proj(x.transpose(1, 2).reshape(B, N, C))


class Mlp(nn.Module):
    """``fc1`` -> exact GELU -> ``fc2``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        """(B, N, C) -> (B, N, C)."""
        return self.fc2(F.gelu(self.fc1(x)))


class SwiGLU(nn.Module):
    """DINOv2 ViT-g's fused SwiGLU: ``w12`` -> halves (a, b) -> silu(a) * b -> ``w3``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.w12 = nn.Linear(dim, 2 * hidden)
        self.w3 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        """(B, N, C) -> (B, N, C)."""
        a, b = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(a) * b)


class LayerScale(nn.Module):
    """Per-channel scale ``gamma`` (DINOv2)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        """X * gamma."""
        return x * self.gamma


class Block(nn.Module):
    """Pre-norm transformer block: x + ls1(attn(norm1(x))), then x + ls2(mlp(norm2(x)))."""

    def __init__(self, spec: ViTSpec) -> None:
        super().__init__()
        C = spec.embed_dim
        self.norm1 = nn.LayerNorm(C, eps=LN_EPS)
        self.attn = Attention(C, spec.num_heads)
        self.ls1 = LayerScale(C) if spec.layer_scale else nn.Identity()
        self.norm2 = nn.LayerNorm(C, eps=LN_EPS)
        self.mlp = SwiGLU(C, spec.mlp_hidden) if spec.ffn == "swiglu" else Mlp(C, spec.mlp_hidden)
        self.ls2 = LayerScale(C) if spec.layer_scale else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        """(B, N, C) -> (B, N, C)."""
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class VisionTransformer(nn.Module):
    """A DINO / DINOv2 ViT returning the final-norm patch tokens as a feature map.

    Input: an ImageNet-normalised image (B, 3, H, W), H and W multiples of the patch size p (use
    :data:`partdisco.models.IMAGENET` on RGB [0, 1]). Output: (B, C, H / p, W / p), the patch tokens after
    the final LayerNorm (dinov2's ``x_norm_patchtokens``), and with ``return_class_token=True`` also the
    normalised class token (B, C). Register tokens are dropped from the output.

    Args:
        spec: the architecture.

    Attributes:
        spec: the :class:`ViTSpec`.
        source: where the weights came from (set by :func:`.vit_backbone.load_backbone`):
            ``{"file", "sha256", "layout"}``, empty for random weights.
    """

    def __init__(self, spec: ViTSpec) -> None:
        super().__init__()
        self.spec = spec
        C = spec.embed_dim
        self.source: dict[str, str] = {}
        self.patch_embed = PatchEmbed(spec.patch_size, C)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, C))
        self.pos_embed = nn.Parameter(torch.zeros(1, spec.pos_grid**2 + 1, C))
        if spec.num_registers:
            self.register_tokens = nn.Parameter(torch.zeros(1, spec.num_registers, C))
        if spec.family == "dinov2":
            self.mask_token = nn.Parameter(torch.zeros(1, C))  # kept for a 1:1 official state dict; unused
        self.blocks = nn.ModuleList(Block(spec) for _ in range(spec.depth))
        self.norm = nn.LayerNorm(C, eps=LN_EPS)
        self.init_weights_()

    @torch.no_grad()
    def init_weights_(self) -> VisionTransformer:
        """The official random init (timm-style).

        Truncated N(0, 0.02) positions and linear weights, zero biases, class / register tokens
        N(0, 1e-6^2), layer scale 1 (dinov2 hub ``init_values=1.0``). Draws from the global RNG, like
        every PyTorch module constructor (seed it at the entry point).

        Returns:
            ``self``.
        """
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        if self.spec.num_registers:
            nn.init.normal_(self.register_tokens, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        return self

    def freeze_(self) -> VisionTransformer:
        """No parameter gradients, eval mode; returns ``self``."""
        for p in self.parameters():
            p.requires_grad_(False)
        return self.eval()

    def grid(self, height: int, width: int) -> tuple[int, int]:
        """Patch grid (h0, w0) of an (H, W) input; ValueError unless both are multiples of p."""
        p = self.spec.patch_size
        if height % p or width % p or height < p or width < p:
            raise ValueError(
                f"{self.spec.name} needs H and W to be positive multiples of the patch size {p}, "
                f"got {height} x {width}"
            )
        return height // p, width // p

    def embed(self, x: Tensor) -> Tensor:
        """Tokens entering block 0: [class, registers..., patches] (B, 1 + R + h0 * w0, C)."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected a normalised image batch (B, 3, H, W), got shape {tuple(x.shape)}")
        B, _, H, W = x.shape
        grid = self.grid(H, W)
        tokens = self.patch_embed(x)  # (B, h0 * w0, C)
        tokens = torch.cat([self.cls_token.expand(B, -1, -1), tokens], dim=1)  # (B, 1 + h0 * w0, C)
        tokens = tokens + interpolate_pos_embed(
            self.pos_embed, grid, H == W, self.spec.interpolate_offset, self.spec.interpolate_antialias
        )
        if self.spec.num_registers:
            # registers go in after the positions are added: they have none (dinov2 prepare_tokens_with_masks)
            regs = self.register_tokens.expand(B, -1, -1)
            tokens = torch.cat([tokens[:, :1], regs, tokens[:, 1:]], dim=1)  # (B, 1 + R + h0 * w0, C)
        return tokens

    def to_map(self, tokens: Tensor, grid: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """Final norm, then (patch map (B, C, h0, w0), class token (B, C))."""
        tokens = self.norm(tokens)
        B, _, C = tokens.shape
        patches = tokens[:, 1 + self.spec.num_registers :]  # (B, h0 * w0, C)
        return patches.transpose(1, 2).reshape(B, C, *grid), tokens[:, 0]

    def forward(self, x: Tensor, return_class_token: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """Final-norm patch tokens as a map.

        Args:
            x: float (B, 3, H, W), ImageNet-normalised, H and W multiples of the patch size.
            return_class_token: also return the normalised class token.

        Returns:
            (B, C, H / p, W / p), or that and the class token (B, C).
        """
        tokens = self.embed(x)
        for block in self.blocks:
            tokens = block(tokens)
        feature_map, cls = self.to_map(tokens, self.grid(x.shape[-2], x.shape[-1]))
        return (feature_map, cls) if return_class_token else feature_map

    def extra_repr(self) -> str:
        """Shown by ``print(module)``."""
        return f"name={self.spec.name!r}, source={self.source.get('file', 'random')!r}"
