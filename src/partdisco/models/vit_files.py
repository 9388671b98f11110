"""Self-supervised ViT weight files: ``.safetensors`` I/O and the official / timm / Hugging Face key layouts.

Three layouts of the same DINO (v1) and DINOv2 weights are read, and written back for the round-trip tests:

- ``"official"``: the files the facebookresearch/dino and facebookresearch/dinov2 hub entries download
  (``cls_token``, ``pos_embed``, ``register_tokens``, ``mask_token``, ``patch_embed.proj``,
  ``blocks.{i}.{norm1,attn.qkv,attn.proj,ls1.gamma,norm2,mlp.fc1,mlp.fc2 | mlp.w12,mlp.w3,ls2.gamma}``,
  ``norm``). This is our canonical layout: :class:`partdisco.models.vit.VisionTransformer` uses its names.
  Also accepted: DINOv2 training checkpoints with chunked blocks (``blocks.{chunk}.{i}.``), and the DINO /
  DINOv2 training dicts holding a ``teacher`` (``module.``/``backbone.`` prefixes, heads ignored).
- ``"timm"``: ``vit_*_patch{16,8}_224.dino`` (keys equal to the official ones) and
  ``vit_*_patch14_dinov2`` / ``vit_*_patch14_reg4_dinov2``: no ``mask_token``; SwiGLU ``w12``/``w3`` are
  ``fc1``/``fc2``; with registers, ``reg_token``, a ``pos_embed`` without the class position and a
  ``cls_token`` with the class position already added.
- ``"hf"``: transformers ``ViTModel`` (DINO v1: ``embeddings.*``, ``encoder.layer.{i}.attention.attention.
  {query,key,value}``, ``layernorm_before/after``, ``intermediate.dense``, ``output.dense``, ``layernorm``)
  and ``Dinov2Model`` / ``Dinov2WithRegistersModel`` (``norm1/2``, ``layer_scale{1,2}.lambda1``,
  ``mlp.fc1/fc2`` or ``mlp.weights_in/weights_out``); a ``vit.`` / ``dinov2.`` / ``dinov2_with_registers.``
  prefix (the ``*ForImageClassification`` files) is stripped.

Heads that are not part of the backbone (``head.*``, ``pooler.*``, ``classifier.*``, ``dino_head.*``,
``ibot_head.*``, and our part head ``layer5.*``: a ``model.arch=vit`` checkpoint gives back its ViT) are
dropped with a log line; any other unknown key is an error listing it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from partdisco.models.weights import CheckpointError, clean_state_dict, load_file

logger = logging.getLogger(__name__)

VIT_LAYOUTS = ("official", "timm", "hf")
HEAD_PREFIXES = ("head.", "pooler.", "classifier.", "dino_head.", "ibot_head.", "layer5.")  # layer5: ours
_HF_PREFIXES = ("dinov2_with_registers.", "dinov2.", "vit.")

# safetensors dtype names <-> torch dtypes (the subset weight files use)
_ST_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
_ST_NAMES = {v: k for k, v in _ST_DTYPES.items()}
_ST_MAX_HEADER = 100_000_000  # the format's own limit on the JSON header


# --------------------------------------------------------------------------------------------------
# .safetensors: 8-byte little-endian header length, a JSON header, then the raw little-endian bytes


def read_safetensors(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """Read a ``.safetensors`` file into CPU tensors (no third-party package needed).

    Args:
        path: the file.

    Returns:
        ``{name: tensor}`` in the header's order; ``__metadata__`` is skipped.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: a truncated or malformed file, or a dtype this reader does not know; the message
            names the file and the tensor.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"weight file {str(path)!r} does not exist")
    data = path.read_bytes()
    if len(data) < 8:
        raise CheckpointError(f"{str(path)!r} is not a safetensors file: {len(data)} bytes")
    (n,) = struct.unpack("<Q", data[:8])
    if n > _ST_MAX_HEADER or 8 + n > len(data):
        raise CheckpointError(f"{str(path)!r} is not a safetensors file: header length {n} is impossible")
    try:
        header = json.loads(data[8 : 8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{str(path)!r}: safetensors header is not JSON ({err})") from None
    except RecursionError:
        raise CheckpointError(f"{str(path)!r}: safetensors header nests too deep to be a header") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{str(path)!r}: safetensors header is not a JSON object")
    body = memoryview(data)[8 + n :]
    out: dict[str, Tensor] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = _ST_DTYPES[info["dtype"]]
            shape = [int(s) for s in info["shape"]]
            start, stop = (int(v) for v in info["data_offsets"])
        except (KeyError, TypeError, ValueError, OverflowError):  # OverflowError: 1e400 in a shape
            raise CheckpointError(f"{str(path)!r}: tensor {name!r} has a bad header entry {info!r}") from None
        numel = 1
        for s in shape:
            numel *= s
        itemsize = torch.empty((), dtype=dtype).element_size()
        if not 0 <= start <= stop <= len(body) or stop - start != numel * itemsize:
            raise CheckpointError(
                f"{str(path)!r}: tensor {name!r} ({info['dtype']} {shape}) has byte range [{start}, {stop}) "
                f"that does not fit its shape or the file ({len(body)} data bytes)"
            )
        raw = bytearray(body[start:stop])  # a writable copy: torch.frombuffer shares memory
        flat = torch.frombuffer(raw, dtype=dtype) if numel else torch.empty(0, dtype=dtype)
        out[str(name)] = flat.reshape(shape)
    return out


def write_safetensors(tensors: Mapping[str, Tensor], path: str | os.PathLike[str]) -> Path:
    """Write tensors as a ``.safetensors`` file (readable by the ``safetensors`` package and transformers).

    Args:
        tensors: ``{name: tensor}``; each is written contiguous, from the CPU.
        path: destination.

    Returns:
        The path written.
    """
    path = Path(path).expanduser()
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    chunks: list[bytes] = []
    offset = 0
    for name, tensor in tensors.items():
        t = tensor.detach().cpu().contiguous()
        if t.dtype not in _ST_NAMES:
            raise ValueError(f"tensor {name!r}: dtype {t.dtype} cannot be written as safetensors here")
        raw = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {
            "dtype": _ST_NAMES[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        chunks.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)  # the format pads the header to 8 bytes
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for raw in chunks:
            f.write(raw)
    return path


def read_weight_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a ``.safetensors`` or a torch ``.pth``/``.pt``/``.bin`` file (safe loader) into a dict."""
    path = Path(path).expanduser()
    if path.suffix == ".safetensors":
        return read_safetensors(path)
    obj = load_file(path)
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{str(path)!r} holds a {type(obj).__name__}, not a state dict")
    return dict(obj)


# --------------------------------------------------------------------------------------------------
# Layouts


def _unwrap(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The backbone's tensors inside a training checkpoint (``teacher`` / ``model`` / ``state_dict``)."""
    for key in ("teacher", "model", "state_dict"):
        inner = obj.get(key)
        if isinstance(inner, Mapping) and not isinstance(inner, Tensor):
            if not any(isinstance(v, Tensor) for v in obj.values()):
                return _unwrap(inner)
    state = clean_state_dict(obj)
    if any(k.startswith("teacher.backbone.") for k in state):
        # DINOv2 training checkpoint: {"model": {"student.backbone.*", "teacher.backbone.*", heads}}
        state = {k[len("teacher.") :]: v for k, v in state.items() if k.startswith("teacher.backbone.")}
    if any(k.startswith("backbone.") for k in state):
        # DINO / DINOv2 training: backbone.* + projection heads
        state = {(k[len("backbone.") :] if k.startswith("backbone.") else k): v for k, v in state.items()}
    return state


def detect_vit_layout(state: Mapping[str, Any]) -> str:
    """Which of :data:`VIT_LAYOUTS` a (cleaned, unwrapped) ViT state dict is in.

    Args:
        state: tensors by name.

    Returns:
        ``"official"``, ``"timm"`` or ``"hf"``. A DINO v1 file is ``"official"`` whether it came from the
        DINO hub or from timm: the two use the same keys.

    Raises:
        CheckpointError: not a DINO/DINOv2 ViT in any of these layouts (first keys shown).
    """
    keys = set(state)
    stripped = {_strip_hf(k) for k in keys}
    if "embeddings.patch_embeddings.projection.weight" in stripped:
        return "hf"
    if "patch_embed.proj.weight" in keys and "cls_token" in keys:
        if "reg_token" in keys or _is_timm_swiglu(state):
            return "timm"
        if any(k.endswith("ls1.gamma") for k in keys) and "mask_token" not in keys:
            return "timm"  # DINOv2 without the (training-only) mask token: timm drops it
        return "official"
    first = ", ".join(sorted(keys)[:8])
    raise CheckpointError(
        "not a DINO / DINOv2 ViT in the official, timm or Hugging Face layout (no patch_embed.proj.weight / "
        f"embeddings.patch_embeddings.projection.weight); first keys: {first}"
    )


def _strip_hf(key: str) -> str:
    for prefix in _HF_PREFIXES:
        if key.startswith(prefix):
            return key[len(prefix) :]
    return key


def _is_timm_swiglu(state: Mapping[str, Any]) -> bool:
    fc1, fc2 = state.get("blocks.0.mlp.fc1.weight"), state.get("blocks.0.mlp.fc2.weight")
    if not isinstance(fc1, Tensor) or not isinstance(fc2, Tensor):
        return False
    return fc1.shape[0] == 2 * fc2.shape[1]  # GLU: fc1 holds both halves


def _split_heads(state: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    kept = {k: v for k, v in state.items() if not k.startswith(HEAD_PREFIXES)}
    return kept, sorted(k for k in state if k.startswith(HEAD_PREFIXES))


# DINOv2 SwiGLU MLP names: official -> timm (timm keeps fc1 / fc2 for the two SwiGLU linears)
_TIMM_SWIGLU = {"w12": "fc1", "w3": "fc2"}
_TIMM_REGISTERS = ("register_tokens", "reg_token")  # official, timm


def _inverted(mapping: Mapping[str, str]) -> dict[str, str]:
    """The other direction of a one-to-one key map; each map is written once and inverted by this.

    Example:
        >>> _inverted({"w12": "fc1", "w3": "fc2"})
        {'fc1': 'w12', 'fc2': 'w3'}
    """
    out = {v: k for k, v in mapping.items()}
    if len(out) != len(mapping):
        raise ValueError(f"key map is not one-to-one: {dict(mapping)}")
    return out


def official_from_timm(state: Mapping[str, Any]) -> dict[str, Any]:
    """Timm keys -> official keys (the inverse of :func:`timm_from_official`; see the module docstring)."""
    out: dict[str, Any] = {}
    swiglu, from_timm = _is_timm_swiglu(state), _inverted(_TIMM_SWIGLU)
    official_registers, timm_registers = _TIMM_REGISTERS
    for k, v in state.items():
        m = re.fullmatch(r"(blocks\.\d+\.mlp\.)(fc[12])\.(weight|bias)", k)
        if swiglu and m:
            out[f"{m.group(1)}{from_timm[m.group(2)]}.{m.group(3)}"] = v
        elif k == timm_registers:
            out[official_registers] = v
        else:
            out[k] = v
    if any(k.endswith("ls1.gamma") for k in state) and "mask_token" not in state:
        # timm drops DINOv2's mask token (used only by masked training, never at inference): zeros
        out["mask_token"] = torch.zeros(1, state["cls_token"].shape[-1], dtype=state["cls_token"].dtype)
    if "reg_token" in state:
        # timm folds the class position into cls_token and drops it from pos_embed: an all-zero class
        # position gives the same tokens (cls + 0), and the patch positions are unchanged.
        pos = state["pos_embed"]
        out["pos_embed"] = torch.cat([torch.zeros_like(pos[:, :1]), pos], dim=1)
    return out


def timm_from_official(state: Mapping[str, Any]) -> dict[str, Any]:
    """Official keys -> timm keys, as timm's ``checkpoint_filter_fn`` stores DINO/DINOv2 weights.

    DINO v1 keys are unchanged. DINOv2: ``mask_token`` dropped, SwiGLU ``w12``/``w3`` -> ``fc1``/``fc2``,
    with registers ``reg_token`` = ``register_tokens``, ``cls_token`` += class position, ``pos_embed``
    without the class position.
    """
    out: dict[str, Any] = {}
    official_registers, timm_registers = _TIMM_REGISTERS
    registers = official_registers in state
    for k, v in state.items():
        if k == "mask_token":
            continue
        m = re.fullmatch(r"(blocks\.\d+\.mlp\.)(w12|w3)\.(weight|bias)", k)
        if m:
            out[f"{m.group(1)}{_TIMM_SWIGLU[m.group(2)]}.{m.group(3)}"] = v
        elif registers and k == official_registers:
            out[timm_registers] = v
        elif registers and k == "cls_token":
            out[k] = v + state["pos_embed"][:, :1]
        elif registers and k == "pos_embed":
            out[k] = v[:, 1:]
        else:
            out[k] = v
    return out


_HF_EMBED = {
    "embeddings.cls_token": "cls_token",
    "embeddings.mask_token": "mask_token",
    "embeddings.position_embeddings": "pos_embed",
    "embeddings.register_tokens": "register_tokens",
    "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "layernorm.weight": "norm.weight",
    "layernorm.bias": "norm.bias",
}
# per-layer names, official -> Hugging Face: ViTModel (DINO v1) and Dinov2Model each
_HF_LAYER_V1 = {
    "norm1": "layernorm_before",
    "norm2": "layernorm_after",
    "mlp.fc1": "intermediate.dense",
    "mlp.fc2": "output.dense",
    "mlp.w12": "mlp.weights_in",
    "mlp.w3": "mlp.weights_out",
    "attn.proj": "attention.output.dense",
}
_HF_LAYER_V2 = {
    **_HF_LAYER_V1,
    "norm1": "norm1",
    "norm2": "norm2",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}
_OFFICIAL_FROM_HF_LAYER = {**_inverted(_HF_LAYER_V1), **_inverted(_HF_LAYER_V2)}  # either family
_HF_BLOCK = r"encoder\.layer\.(\d+)\.(.+)\.(weight|bias|lambda1)"
_OFFICIAL_BLOCK = r"blocks\.(\d+)\.(.+)\.(weight|bias|gamma)"


def _rename_outside_blocks(
    state: Mapping[str, Any], names: Mapping[str, str], block: str, out: dict[str, Any], strip: bool = False
) -> list[tuple[re.Match[str], Any]]:
    """Copy the keys outside the transformer blocks into ``out``, renamed by ``names`` where it has them.

    Args:
        state: the state dict to convert.
        names: embedding / final-norm key map of the direction converted.
        block: regular expression of a block key (groups: block index, layer name, tensor kind).
        out: receives the converted keys (unknown keys unchanged, for the strict load to name).
        strip: remove the Hugging Face model prefixes first.

    Returns:
        The block entries, ``(match, value)``, for the caller's per-layer renaming.
    """
    blocks: list[tuple[re.Match[str], Any]] = []
    for key, v in state.items():
        k = _strip_hf(key) if strip else key
        m = re.fullmatch(block, k)
        if k in names:
            out[names[k]] = v
        elif m is None:
            out[k] = v
        else:
            blocks.append((m, v))
    return blocks


def official_from_hf(state: Mapping[str, Any]) -> dict[str, Any]:
    """Hugging Face ``ViTModel`` / ``Dinov2Model`` / ``Dinov2WithRegistersModel`` keys -> official keys.

    ``query``/``key``/``value`` are concatenated (in that order) into ``attn.qkv``; ``layer_scale{1,2}.
    lambda1`` become ``ls{1,2}.gamma``. Keys this mapping does not know are returned unchanged, so the
    strict load that follows names them.
    """
    out: dict[str, Any] = {}
    qkv: dict[tuple[int, str], dict[str, Any]] = {}
    for m, v in _rename_outside_blocks(state, _HF_EMBED, _HF_BLOCK, out, strip=True):
        i, name, kind = int(m.group(1)), m.group(2), m.group(3)
        q = re.fullmatch(r"attention\.attention\.(query|key|value)", name)
        ls = re.fullmatch(r"layer_scale([12])", name)
        if q:
            qkv.setdefault((i, kind), {})[q.group(1)] = v
        elif ls and kind == "lambda1":
            out[f"blocks.{i}.ls{ls.group(1)}.gamma"] = v
        elif name in _OFFICIAL_FROM_HF_LAYER and kind != "lambda1":
            out[f"blocks.{i}.{_OFFICIAL_FROM_HF_LAYER[name]}.{kind}"] = v
        else:
            out[m.group(0)] = v
    for (i, kind), parts in qkv.items():
        missing = [p for p in ("query", "key", "value") if p not in parts]
        if missing:
            raise CheckpointError(f"Hugging Face layer {i}: attention {kind} lacks {missing}")
        out[f"blocks.{i}.attn.qkv.{kind}"] = torch.cat([parts["query"], parts["key"], parts["value"]], dim=0)
    return out


def hf_from_official(state: Mapping[str, Any]) -> dict[str, Any]:
    """Official keys -> Hugging Face keys (``ViTModel`` for DINO v1, ``Dinov2Model`` for DINOv2).

    The inverse of :func:`official_from_hf`; DINO v1 is recognised by the absence of layer scale.
    """
    v2 = any(k.endswith("ls1.gamma") for k in state)
    layer = _HF_LAYER_V2 if v2 else _HF_LAYER_V1
    out: dict[str, Any] = {}
    for m, v in _rename_outside_blocks(state, _inverted(_HF_EMBED), _OFFICIAL_BLOCK, out):
        i, name, kind = m.group(1), m.group(2), m.group(3)
        prefix = f"encoder.layer.{i}"
        if name == "attn.qkv":
            C = v.shape[0] // 3
            for j, part in enumerate(("query", "key", "value")):
                out[f"{prefix}.attention.attention.{part}.{kind}"] = v[j * C : (j + 1) * C].clone()
        elif kind == "gamma":
            out[f"{prefix}.layer_scale{name[2]}.lambda1"] = v
        else:
            out[f"{prefix}.{layer.get(name, name)}.{kind}"] = v
    return out


def _unchunk(state: dict[str, Any]) -> dict[str, Any]:
    """DINOv2 training checkpoints (block_chunks > 0): ``blocks.{chunk}.{i}.*`` -> ``blocks.{i}.*``."""
    if not any(re.match(r"blocks\.\d+\.\d+\.", k) for k in state):
        return state
    return {re.sub(r"^blocks\.\d+\.(\d+)\.", r"blocks.\1.", k): v for k, v in state.items()}


def to_official(obj: Mapping[str, Any], what: str) -> tuple[dict[str, Any], str, list[str]]:
    """Bring a loaded ViT file into the official layout.

    Args:
        obj: the file's dict (state dict, or a training checkpoint holding one).
        what: words naming the file in messages.

    Returns:
        (official state dict, the layout it was in, the dropped head keys).

    Raises:
        CheckpointError: not a ViT in a known layout.
    """
    state = _unwrap(obj)
    not_tensors = sorted(k for k, v in state.items() if not isinstance(v, Tensor))
    if not_tensors:
        raise CheckpointError(f"{what}: entries that are not tensors: {not_tensors[:20]}")
    state = _unchunk(state)
    state, heads = _split_heads(
        {_strip_hf(k) if k.startswith(_HF_PREFIXES) else k: v for k, v in state.items()}
    )
    try:
        layout = detect_vit_layout(state)
    except CheckpointError as err:
        raise CheckpointError(f"{what}: {err}") from None
    if layout == "hf":
        state = official_from_hf(state)
    elif layout == "timm":
        state = official_from_timm(state)
    return state, layout, heads


def to_layout(state: Mapping[str, Any], layout: str) -> dict[str, Any]:
    """Official state dict -> ``layout`` (one of :data:`VIT_LAYOUTS`)."""
    if layout == "official":
        return dict(state)
    if layout == "timm":
        return timm_from_official(state)
    if layout == "hf":
        return hf_from_official(state)
    raise ValueError(f"unknown ViT layout {layout!r}; choose from {VIT_LAYOUTS}")
