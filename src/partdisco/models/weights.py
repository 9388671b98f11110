"""Weight files, the bottom of models/: read a file, strip wrapper prefixes, load strictly, check finiteness.

Everything here knows tensors and files, nothing of our architectures or checkpoint layouts:

- :class:`CheckpointError` (and :class:`NonFiniteWeightsError`, :class:`CheckpointMismatchError`): a file
  that cannot be used; the message names the file and the fix.
- :func:`resolve_checkpoint_path` (a run folder -> its ``model.pt``) and :func:`load_file`, the one
  ``torch.load`` of the package (``weights_only=True``, an opt-in pickle fallback, images refused by magic).
- :func:`clean_state_dict` (``module.`` / ``_orig_mod.`` prefixes), :func:`inner_state_dict`,
  :func:`load_state_dict_strict` (every missing, unexpected or mis-shaped key named) and the finiteness
  checks :func:`non_finite_tensors` / :func:`check_finite_weights`.

Every load is strict: the only tolerated gap is a missing ``*.num_batches_tracked`` BN counter, which files
written before PyTorch 0.4.1 (e.g. the Caffe conversions, the original torchvision ResNet files) do not have.
"""

from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

logger = logging.getLogger(__name__)

_PREFIXES = ("module.", "_orig_mod.")
_MAX_LISTED = 40


class CheckpointError(ValueError):
    """A weight file cannot be read or is not of a usable layout; the message names the file and the fix."""


class NonFiniteWeightsError(CheckpointError):
    """A weight file holds NaN or infinite values (a diverged run); the message names the tensors."""


def non_finite_tensors(state_dict: Mapping[str, Any]) -> list[str]:
    """Names of the floating-point tensors in ``state_dict`` that hold a NaN or an infinity."""
    return [
        k
        for k, v in state_dict.items()
        if isinstance(v, Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all())
    ]


def check_finite_weights(state_dict: Mapping[str, Any], what: str) -> None:
    """Raise :class:`NonFiniteWeightsError` in one line when a tensor of ``state_dict`` is not finite."""
    bad = non_finite_tensors(state_dict)
    if bad:
        raise NonFiniteWeightsError(
            f"{what}: {len(bad)} tensor(s) hold NaN or inf (first: {bad[0]}); these weights are unusable "
            "(the run diverged): use an earlier checkpoint or train with a lower optim.lr"
        )


class CheckpointMismatchError(CheckpointError):
    """A state dict does not match a module; the message lists missing, unexpected and mis-shaped keys."""


def clean_state_dict(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Strip the ``module.`` (DataParallel/DDP) and ``_orig_mod.`` (torch.compile) prefixes from every key.

    Args:
        state_dict: a state dict, possibly wrapped-module style.

    Returns:
        A new plain dict with the same values, keys without those prefixes (repeatedly, in any order).

    Example:
        >>> sorted(clean_state_dict({"module._orig_mod.conv1.weight": 1, "bn1.bias": 2}))
        ['bn1.bias', 'conv1.weight']
    """
    cleaned: dict[str, Any] = {}
    for key, value in state_dict.items():
        name = str(key)
        stripped = True
        while stripped:
            stripped = False
            for prefix in _PREFIXES:
                if name.startswith(prefix):
                    name, stripped = name[len(prefix) :], True
        if name in cleaned:
            raise CheckpointError(f"state dict has two keys that both become {name!r} after prefix stripping")
        cleaned[name] = value
    return cleaned


_IMAGE_MAGIC = {
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
    b"BM": "a BMP image",
    b"II*\x00": "a TIFF image",
    b"MM\x00*": "a TIFF image",
    b"RIFF": "a RIFF (e.g. WebP) file",
}


def resolve_checkpoint_path(path: str | os.PathLike[str]) -> Path:
    """Where a checkpoint argument points: a file as it is, a run folder -> its ``model.pt``.

    Users pass what they have: ``runs/x`` as well as ``runs/x/model.pt`` (style guide rule 23).

    Raises:
        FileNotFoundError: neither a file nor a run folder with ``model.pt``; names what was looked for and,
            for an unfinished run, its newest periodic checkpoint.

    Example:
        >>> import tempfile
        >>> run = Path(tempfile.mkdtemp()); (run / "model.pt").write_bytes(b"")
        0
        >>> resolve_checkpoint_path(run) == run / "model.pt"
        True
    """
    given = Path(path).expanduser()
    if given.is_dir():
        final = given / "model.pt"
        if final.is_file():
            return final
        steps = sorted((given / "checkpoints").glob("step_*.pt"))
        hint = f"; its newest checkpoint is {steps[-1]}" if steps else ""
        raise FileNotFoundError(
            f"{str(given)!r} is a folder without model.pt (not a finished run folder){hint}"
        )
    if not given.is_file():
        raise FileNotFoundError(
            f"checkpoint {str(given)!r} does not exist (expected a .pt file or a run folder)"
        )
    return given


def load_file(path: str | os.PathLike[str], allow_pickle: bool = False) -> Any:
    """Read a ``.pth`` file onto the CPU with ``torch.load(weights_only=True)``.

    Args:
        path: the file.
        allow_pickle: retry with ``weights_only=False`` if the safe loader refuses the file. Unpickling runs
            arbitrary code, so only pass True for files you trust (e.g. an old unsup-parts checkpoint whose
            optimiser state holds a pickled object; the released ones load without it).

    Returns:
        Whatever the file holds (a state dict or a checkpoint dict).

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: the file is not a readable torch file; the message names it.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"weight file {str(path)!r} does not exist")
    with open(path, "rb") as f:
        head = f.read(8)
    kind = next((what for magic, what in _IMAGE_MAGIC.items() if head.startswith(magic)), None)
    if kind is None and not head.startswith((b"PK\x03\x04", b"\x80")):  # torch zip, legacy pickle
        kind = "not a torch file"
    if kind is not None:
        raise CheckpointError(
            f"{str(path)!r} is {kind}: not a checkpoint (expected a torch .pt/.pth file or a run folder)"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if not allow_pickle:
            raise CheckpointError(
                f"{str(path)!r} holds objects the safe loader refuses ({str(err).splitlines()[0]}); "
                "if you trust the file, load it with allow_pickle=True"
            ) from None
        logger.warning("loading %s with weights_only=False (allow_pickle=True)", path)
    except Exception as err:  # corrupt zip, truncated file, not a torch file at all
        raise CheckpointError(f"cannot read {str(path)!r} as a torch file: {err}") from None
    # Legacy fallback: only reached with allow_pickle=True after the safe loader refused the file.
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise CheckpointError(f"cannot read {str(path)!r} as a torch file: {err}") from None


def _listing(title: str, items: list[str]) -> str:
    shown = items[:_MAX_LISTED]
    more = f", ... and {len(items) - len(shown)} more" if len(items) > len(shown) else ""
    return f"\n  {title} ({len(items)}): " + ", ".join(shown) + more


def load_state_dict_strict(
    module: nn.Module, state_dict: Mapping[str, Any], what: str, exclude: tuple[str, ...] = ()
) -> None:
    """Load ``state_dict`` into ``module`` after checking every key and shape.

    Args:
        module: the receiver.
        state_dict: tensors by name (prefixes are *not* stripped here; see :func:`clean_state_dict`).
        what: words naming the source in messages, e.g. ``"backbone weights 'r18.pth'"``.
        exclude: key prefixes of ``module`` that are not expected in ``state_dict`` (left as they are),
            e.g. ``("layer5.",)`` to load a backbone only.

    Raises:
        CheckpointMismatchError: some keys are missing, unexpected or of the wrong shape, or a value is not a
            tensor; every offending key is named (up to 40 per kind, then a count). Nothing is loaded then.
        NonFiniteWeightsError: a tensor holds NaN or inf (a diverged run). Nothing is loaded then.
    """
    expected = {k: v for k, v in module.state_dict().items() if not k.startswith(exclude)}
    given = dict(state_dict)
    missing = [k for k in expected if k not in given and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in given if k not in expected]
    not_tensor = [k for k in given if k in expected and not isinstance(given[k], Tensor)]
    wrong_shape = [
        f"{k} (file {tuple(given[k].shape)} vs model {tuple(expected[k].shape)})"
        for k in expected
        if k in given and isinstance(given[k], Tensor) and given[k].shape != expected[k].shape
    ]
    if missing or unexpected or not_tensor or wrong_shape:
        message = f"{what} do not match {type(module).__name__}:"
        for title, items in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("wrong shape", wrong_shape),
            ("not a tensor", not_tensor),
        ):
            if items:
                message += _listing(title, items)
        raise CheckpointMismatchError(message)
    check_finite_weights(given, what)
    skipped = [k for k in expected if k not in given]  # only num_batches_tracked counters
    if skipped:
        logger.debug("%s: %d num_batches_tracked counters absent, kept as they are", what, len(skipped))
    module.load_state_dict(given, strict=False)


def inner_state_dict(obj: Mapping[str, Any], key: str | None, layout: str, what: str) -> dict[str, Any]:
    """The model state dict stored under ``obj[key]`` (``obj`` itself for ``key=None``), prefixes stripped.

    Args:
        obj: a loaded file.
        key: where the file keeps the model's tensors (``"model"`` in ours), or None for a raw state dict.
        layout: the file's layout, for the message.
        what: words naming the source in messages.

    Raises:
        CheckpointError: the entry is not a dict.

    Example:
        >>> inner_state_dict({"model": {"module.w": 1}}, "model", "partdisco", "x")
        {'w': 1}
    """
    inner = obj.get(key) if key is not None else obj
    if not isinstance(inner, Mapping):
        raise CheckpointError(f"{what}: the {layout} model state is not a dict (got {type(inner).__name__})")
    return clean_state_dict(inner)
