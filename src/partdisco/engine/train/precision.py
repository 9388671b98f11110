"""One precision switch: fp32, bf16 or fp16 autocast, with a GradScaler only for fp16."""

from __future__ import annotations

import contextlib

import torch

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast_ctx(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Autocast context for the forward pass (``nullcontext`` for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision not in _DTYPES:
        raise ValueError(f"train.precision: unknown precision {precision!r}; choose fp32, bf16 or fp16")
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("train.precision=fp16 needs a CUDA device; use bf16 on CPU")
    return torch.autocast(device_type=device.type, dtype=_DTYPES[precision])


def make_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """GradScaler, enabled only for fp16 so there is a single code path."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")
