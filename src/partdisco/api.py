"""The Python API that the CLI calls: configure, train, evaluate, load and segment.

Example:
    >>> import partdisco
    >>> cfg = partdisco.resolve_train_config(["train.steps=2", "train.batch_size=2"])
    >>> cfg.train.steps
    2
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from partdisco.config import ConfigError, RunConfig, load_config, split_overrides

if TYPE_CHECKING:  # the heavy modules load when a function needs them: `partdisco --help` stays fast
    import numpy as np

    from partdisco.engine.segment import SegmentSummary
    from partdisco.models.reader import LoadedCheckpoint
    from partdisco.models.segmenter import Segmenter
    from partdisco.models.vit import VisionTransformer


def resolve_train_config(
    overrides: list[str] | None = None, config_file: str | Path | None = None
) -> RunConfig:
    """Build the config of a training run from ``key=value`` overrides.

    With ``resume=RUN_DIR`` (or a checkpoint inside it), the run's saved ``config.yaml`` is the base and the
    other overrides apply on top (e.g. ``train.steps=4000`` to train longer).

    Raises:
        ConfigError: unknown keys, wrong types, missing files; the message names them.
    """
    overrides = list(overrides or [])
    given = split_overrides(overrides, keys=("resume", "dataset"))
    resume = given.resume
    if resume is None:
        return load_config(None, overrides, config_file=config_file)
    from partdisco.engine.checkpoint import resolve_resume
    from partdisco.engine.runfolder import CONFIG_FILE

    run_dir, _ = resolve_resume(resume)
    saved = run_dir / CONFIG_FILE
    if not saved.is_file():
        raise ConfigError(f"resume: run folder {str(run_dir)!r} has no config.yaml")
    _refuse_resume_words(run_dir, saved, given, config_file)
    cfg = load_config(None, list(given.rest), config_file=saved)  # the run's data set
    cfg.resume = str(resume)
    cfg.out = str(run_dir)
    return cfg


def _refuse_resume_words(run_dir: Path, saved: Path, given: Any, config_file: str | Path | None) -> None:
    """Refuse words that a resumed run cannot honour (they used to be dropped without a word)."""
    import yaml

    values = yaml.safe_load(saved.read_text()) or {}
    rest = split_overrides(list(given.rest), keys=("recipe",))
    ignored = []
    if given.dataset is not None and given.dataset != values.get("dataset"):
        ignored.append(f"dataset={given.dataset} (the run's is {values.get('dataset')})")
    if rest.recipe is not None and rest.recipe != values.get("recipe"):
        ignored.append(f"recipe={rest.recipe} (the run's is {values.get('recipe')})")
    for item in rest.rest:
        key, _, value = item.partition("=")
        if key.strip() == "out" and Path(value).absolute() != run_dir.absolute():
            ignored.append(f"out={value} (a resumed run stays in {run_dir})")
    if config_file is not None and Path(config_file).resolve() != saved.resolve():
        ignored.append(f"--config {config_file} (a resumed run's config is {saved})")
    if ignored:
        raise ConfigError(
            f"resume={run_dir} continues that run as it was; cannot take {'; '.join(ignored)} "
            "(drop them, or start a new run with out=NEW_FOLDER and model.init_from=)"
        )


def train(cfg: RunConfig | list[str] | None = None) -> Path:
    """Train a segmenter; returns the run folder.

    Args:
        cfg: a resolved RunConfig, or ``key=value`` overrides (None = the synthetic default run).
    """
    from partdisco.engine.train import fit

    if not isinstance(cfg, RunConfig):
        cfg = resolve_train_config(cfg)
    return fit(cfg)


def load(path: str | Path, device: str = "cpu") -> Segmenter:
    """Load a segmenter from our checkpoint, a released unsup-parts checkpoint or a SCOPS state dict.

    Returns:
        A ``Segmenter`` (or, for ``model.arch=vit`` checkpoints, a ``ViTSegmenter`` with the same
        interface) in eval mode on ``device``; ``model.preprocess`` turns RGB [0, 1] images into its
        input, and ``model(x)`` returns part logits (B, K or K + 1, h, w).
    """
    from partdisco.engine.inference.network import resolve_device
    from partdisco.models.reader import load_segmenter

    return load_segmenter(path).to(resolve_device(device)).eval()


def open_checkpoint(path: str | Path, device: str = "cpu", allow_pickle: bool = False) -> LoadedCheckpoint:
    """Read a checkpoint file (or a run folder) and recognise its layout: the one loader of every command.

    Args:
        path: our checkpoint, a released unsup-parts file, a SCOPS state dict, a run folder (its
            ``model.pt``), or an exported ``.onnx`` model.
        device: ``"cpu"``, ``"cuda"``, ``"auto"``...: where the segmenter goes.
        allow_pickle: allow full unpickling (only for trusted files; see ``models.weights.load_file``).

    Returns:
        A :class:`partdisco.models.reader.LoadedCheckpoint`: ``path`` (resolved), ``layout``
        (``partdisco`` | ``unsup_parts`` | ``scops`` | ``onnx``), ``segmenter`` (eval mode, on ``device``)
        and ``contents`` (the loaded dict; ours carry ``config``). A ``.onnx`` file (``partdisco export
        RUN model.onnx``) gives an ``OnnxSegmenter`` run by onnxruntime on the CPU; its ``contents`` are
        the file's metadata.

    Raises:
        FileNotFoundError: no such file or run folder.
        CheckpointError: unreadable, unknown layout, or a backbone file (the message names the file).
    """
    from partdisco.engine.inference.network import resolve_device
    from partdisco.models.reader import LoadedCheckpoint, load_checkpoint_file

    if Path(path).suffix.lower() == ".onnx":  # an exported model, run by onnxruntime on the CPU
        from partdisco.models.onnx_model import OnnxSegmenter

        onnx_model = OnnxSegmenter(path).eval()
        return LoadedCheckpoint(onnx_model.path.resolve(), "onnx", onnx_model, onnx_model.metadata)
    loaded = load_checkpoint_file(path, allow_pickle=allow_pickle)
    loaded.segmenter = loaded.segmenter.to(resolve_device(device)).eval()
    return loaded


def load_backbone(path: str | Path, device: str = "cpu") -> VisionTransformer:
    """Load a local DINO (v1) or DINOv2 ViT file as a frozen feature extractor; nothing is downloaded.

    Args:
        path: a ``.pth`` or ``.safetensors`` file in the official hub, timm or Hugging Face layout.
        device: where to put it.

    Returns:
        A ``VisionTransformer`` in eval mode with frozen weights: ``model(x)`` maps an ImageNet-normalised
        (B, 3, H, W), H and W multiples of the patch size, to the final-norm patch tokens
        (B, C, H / p, W / p); ``model(x, return_class_token=True)`` also returns the class token (B, C).
        ``model.spec`` says family, size, patch and registers; ``model.source`` the file, SHA-256, layout.
    """
    from partdisco.models.vit_backbone import load_backbone as _load_backbone

    return _load_backbone(path).to(device)


def evaluate_checkpoint(
    checkpoint: str | Path,
    overrides: list[str] | None = None,
    *,
    device: str = "auto",
    out: str | Path | None = None,
    regression: bool = True,
    progress: bool = True,
) -> tuple[dict[str, Any], Path]:
    """Evaluate a checkpoint on a data set split and write the metrics as JSON.

    Args:
        checkpoint: our checkpoint, a released unsup-parts file or a SCOPS state dict.
        overrides: ``dataset=NAME``, ``split=test``, ``data.*`` and ``eval.*`` keys. Without ``dataset=``,
            our checkpoints are evaluated on the data set they were trained on.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        out: JSON path; default ``metrics-<dataset>-<split>.json`` next to the checkpoint.
        regression: also fit and score keypoint regression (needs the data set's train split).
        progress: show progress bars.

    Returns:
        The metrics dict and the path of the JSON file
        (:func:`partdisco.engine.evaluate.checkpoint_eval.evaluate_checkpoint`).
    """
    from partdisco.engine.evaluate.checkpoint_eval import evaluate_checkpoint as _evaluate_checkpoint

    return _evaluate_checkpoint(
        checkpoint, overrides, device=device, out=out, regression=regression, progress=progress
    )


def evaluation_config(trained: RunConfig, dataset: str | None, overrides: list[str]) -> RunConfig:
    """The config a checkpoint is evaluated with: its own, changed only where the command line says.

    See :func:`partdisco.engine.evaluate.checkpoint_eval.evaluation_config`; ``trained`` is not modified.

    Example:
        >>> from partdisco.config import load_config
        >>> trained = load_config("synthetic", ["data.image_size=128"], check=False)
        >>> evaluation_config(trained, "folder", ["data.root=photos"]).data.image_size
        128
    """
    from partdisco.engine.evaluate.checkpoint_eval import evaluation_config as _evaluation_config

    return _evaluation_config(trained, dataset, overrides)


def is_training_divergence(err: BaseException) -> bool:
    """True when ``err`` is the stop of a diverged training run (a user-facing error, not a bug)."""
    from partdisco.engine.train import TrainingDivergedError

    return isinstance(err, TrainingDivergedError)


def export(src: str | Path, dst: str | Path, fp16: bool = False, opset: int | None = None) -> Path:
    """Write a weights-only copy of a checkpoint (optionally float16), or the segmenter as ONNX.

    Args:
        src: a run folder, one of our checkpoints (a full training checkpoint included), or a released
            unsup-parts / SCOPS file.
        dst: the output ``.pt`` file, or a ``.onnx`` file: the network with a dynamic batch and image size
            (``partdisco.models.onnx_model.export_onnx``; needs ``pip install 'partdisco[onnx]'``).
        fp16: store the weights as float16 (half the size); not for ONNX.
        opset: the ONNX opset (None: ``partdisco.models.onnx_model.ONNX_OPSET``); only for ONNX.

    Returns:
        The written path. The ``.pt`` file keeps the model description, the training image size and, for
        our checkpoints, the run config (so ``partdisco eval`` still knows the data set); no optimizer
        state. The ``.onnx`` file carries K, the background channel, the input normalisation and the
        inference defaults in its metadata, so ``partdisco segment model.onnx`` runs it like ``src``.

    Raises:
        ValueError: ``--fp16`` or ``opset`` given for the other format.
    """
    from partdisco.engine.runfolder import refuse_run_file
    from partdisco.models.checkpoint import export_checkpoint
    from partdisco.models.reader import load_checkpoint_file

    to_onnx = Path(dst).suffix.lower() == ".onnx"
    if to_onnx and fp16:
        raise ValueError(f"export: --fp16 is for .pt copies; {str(dst)!r} is written as float32 ONNX")
    if opset is not None and not to_onnx:
        raise ValueError(f"export: --opset is for ONNX files; {str(dst)!r} does not end in .onnx")
    loaded = load_checkpoint_file(src)
    refuse_run_file(dst, "export: DST", source=loaded.path)
    if to_onnx:
        from partdisco.models.onnx_model import ONNX_OPSET, export_onnx

        return export_onnx(loaded.segmenter, dst, opset=opset or ONNX_OPSET)
    extra: dict[str, Any] = {
        "exported_from": str(loaded.path),
        "weights_dtype": "float16" if fp16 else "float32",
    }
    if loaded.ours:
        extra.update({k: loaded.contents[k] for k in ("config", "step", "metrics") if k in loaded.contents})
    return export_checkpoint(loaded.segmenter, dst, extra=extra, fp16=fp16)


def convert(src: str | Path, dst: str | Path, allow_pickle: bool = False) -> tuple[Segmenter, Path]:
    """Convert a released unsup-parts / SCOPS checkpoint (or ours) to our format (``partdisco convert``).

    Args:
        src: the released file.
        dst: the output ``.pt`` file (not ``src`` itself).
        allow_pickle: allow full unpickling of ``src`` (only for files you trust).

    Returns:
        ``(segmenter, path)``: the segmenter read from ``src`` (its ``arch``, ``num_parts`` and
        ``background_channel`` describe what was found) and the written file, which holds it in our format
        with ``converted_from = str(src)``.

    Raises:
        ValueError: ``dst`` is ``src``.
        CheckpointError: ``src`` is unreadable or not a segmenter.
    """
    import os

    from partdisco.engine.runfolder import refuse_run_file
    from partdisco.models.checkpoint import export_checkpoint
    from partdisco.models.reader import load_checkpoint_file

    if os.path.exists(dst) and os.path.exists(src) and os.path.samefile(src, dst):
        raise ValueError(f"convert: DST {str(dst)!r} is SRC; write the converted file to another path")
    refuse_run_file(dst, "convert: DST")
    seg = load_checkpoint_file(src, allow_pickle=allow_pickle).segmenter
    return seg, export_checkpoint(seg, dst, extra={"converted_from": str(src)})


def format_metrics(metrics: dict[str, Any], decimals: int = 1) -> str:
    """A plain-text table of the scalar metrics (and the baseline's, side by side), 1 decimal.

    The same table ``partdisco eval`` prints and training writes to its log
    (:func:`partdisco.metrics.report.format_metrics`). Scores computed from too few keypoints or foreground
    pixels (``engine.evaluate.metric_warnings``) are marked ``*`` and explained below the table.
    """
    from partdisco.engine.evaluate import metric_warnings
    from partdisco.metrics.report import format_metrics as table

    return table(metrics, decimals, thin=metric_warnings(metrics))


def segment(
    model: Segmenter | str | Path,
    images: Any,
    *,
    masks: Any = None,
    size: int | None = None,
    background: str = "auto",
    batch_size: int = 8,
    device: str | None = None,
    crop: str = "auto",
    padding: float | None = None,
    fg_refine: float | None = None,
) -> tuple[np.ndarray, np.ndarray] | tuple[list[np.ndarray], list[np.ndarray]]:
    """Segment images into parts; arrays in, arrays out (no files written).

    Images can be file paths, PIL images, numpy arrays (H, W), (H, W, 1|3|4) or torch tensors (C, H, W):
    uint8 (0..255), uint16 (0..65535) or float (0..1; floats outside it are refused, not clipped); PIL
    images of any mode (CMYK, P, YCbCr, F...) are converted as image files are; alpha is composited on
    black, grey is repeated.
    A list gives lists back; a 4-D batch (numpy (B, H, W, C) or torch (B, C, H, W)) gives stacked arrays;
    a single image gives single arrays. Every image is resized so its shorter side is ``size`` for the
    network and the results are resized back to the image's own size (docs/SEGMENT.md).

    Args:
        model: a Segmenter (e.g. from :func:`load`) or a checkpoint path.
        images: one image, a list of images, or a 4-D batch (see above).
        masks: optional foreground masks shaped like ``images``: paths (non-zero is foreground, as
            ``read_mask``), or (H, W) arrays: bool, float 0..1 (> 0.5 is foreground) or integer (non-zero is
            foreground). Background pixels get label 0.
        size: shorter side of the network input; None (default) = the size the model was trained at
            (``model.inference_defaults.image_size``, from its checkpoint), else 256, exactly as
            ``partdisco segment``.
        background: ``"auto"`` (masks, else the discovered foreground of a model trained with
            ``data.foreground=discover``, else the model's background channel, else no background),
            ``"model"`` (masks, else the model's background channel), ``"none"`` or ``"border"`` (the part
            covering most of the image border is background).
        batch_size: images per forward pass.
        device: ``"cpu"``, ``"cuda"``, ``"auto"``...; None keeps a Segmenter where it is (and loads a
            path on ``"auto"``). A given device moves the model there.
        crop: object-centric inference: ``"auto"`` crops around the object (the mask, else the model's
            predicted foreground, two passes) with ``padding``, segments the crop at ``size`` x ``size``
            and pastes the maps back; ``"none"`` segments the whole image.
        padding: per-side padding of the object crop; None = the checkpoint's ``data.padding_frac``
            (0.05 when unknown), as ``partdisco segment``.
        fg_refine: models with a background channel: window radius (fraction of the network input's
            shorter side) of the colour-guided refinement of the predicted foreground; 0 = off; None = the
            checkpoint's ``eval.fg_refine_radius`` (0.0625 when unknown), as ``partdisco segment
            --fg-refine``.

    Returns:
        ``(labels, probs)``: labels uint8 (H, W), 0 = background, 1..K = parts; probs float32 (C, H, W),
        the softmax over the model's C channels (C = K, or K + 1 with channel 0 = background). Lists,
        (B, ...) stacks or single arrays, following ``images``.

    Raises:
        ValueError: an unsupported image layout, a mask of another size, a bad ``background``.

    Example:
        >>> import numpy as np
        >>> from partdisco.models import create_segmenter
        >>> seg = create_segmenter("resnet18", num_parts=4)
        >>> labels, probs = segment(seg, np.zeros((30, 40, 3), np.uint8), size=32)
        >>> labels.shape, labels.dtype, probs.shape, int(labels.min()) >= 1
        ((30, 40), dtype('uint8'), (4, 30, 40), True)
    """
    import numpy as np

    from partdisco.engine.inference.images import segment_images
    from partdisco.engine.inference.inputs import as_image_lists
    from partdisco.engine.inference.network import resolve_device
    from partdisco.engine.inference.options import SegmentOptions

    if isinstance(model, (str, Path)):
        model = load(model, device=str(resolve_device(device or "auto")))
    elif device is not None:
        model = model.to(resolve_device(device))
    arrays, mask_items, shape = as_image_lists(images, masks)
    options = SegmentOptions(size, background, batch_size, crop, padding, fg_refine)
    results = segment_images(model, arrays, mask_items, with_probs=True, **options.as_kwargs())
    labels = [r.labels for r in results]
    probs = [r.probs for r in results if r.probs is not None]  # with_probs=True: one per image
    if shape == "batch":
        return np.stack(labels), np.stack(probs)
    if shape == "list":
        return labels, probs
    return labels[0], probs[0]


def default_out_dir(inputs: list[str]) -> Path:
    """Where ``partdisco segment`` writes without ``--out``: ``FOLDER_parts`` next to the first input."""
    from partdisco.engine.segment import default_out_dir as _default_out_dir

    return _default_out_dir(inputs)


def segment_files(
    model: Segmenter,
    inputs: list[str],
    out_dir: str | Path,
    *,
    checkpoint: str | None = None,
    masks_dir: str | Path | None = None,
    size: int | None = None,
    batch_size: int = 8,
    background: str = "auto",
    save_probs: bool = False,
    overwrite: bool = False,
    alpha: float = 0.5,
    progress: bool = True,
    crop: str = "auto",
    padding: float | None = None,
    fg_refine: float | None = None,
) -> SegmentSummary:
    """Segment image files and write label maps, colour maps, overlays, ``parts.json`` and ``index.html``.

    What ``partdisco segment`` runs (docs/SEGMENT.md); :func:`segment` is the same without files.

    Args:
        model: a Segmenter on its device (e.g. ``open_checkpoint(path, device).segmenter``).
        inputs: image files, folders (recursive) and glob patterns.
        out_dir: the output folder (created or reused, never wiped).
        checkpoint: the checkpoint path, recorded in ``parts.json`` and compared on a rerun.
        masks_dir: foreground masks named like the images; they define the background.
        size: shorter side of the network input; None = the model's training size, else 256.
        batch_size: images per forward pass.
        background: ``"auto"``, ``"model"``, ``"none"`` or ``"border"`` (``"auto"`` with masks).
        save_probs: also write ``probs/NAME.npz``.
        overwrite: recompute images whose outputs exist.
        alpha: part opacity in the overlays, in [0, 1].
        progress: show a progress bar.
        crop: ``"auto"``, ``"object"`` or ``"none"`` (object-centric inference).
        padding: object crop padding per side; None = the checkpoint's ``data.padding_frac``, else 0.05.
        fg_refine: refinement radius of a predicted foreground (fraction of the input side, 0 = off); None
            = the checkpoint's ``eval.fg_refine_radius`` (0.0625 when unknown).

    Returns:
        The summary: ``written``, ``skipped``, ``failed`` (path -> reason), ``notes``, ``out_dir``,
        ``index_html``.

    Raises:
        ValueError: no images, bad arguments, or an ``out_dir`` written with another model or settings.
        FileNotFoundError: an input does not exist, or an image has no mask in ``masks_dir``.
    """
    from partdisco.engine import distributed
    from partdisco.engine.inference.options import SegmentOptions
    from partdisco.engine.segment.run import segment_files as _segment_files

    # under torchrun: one process group for the run (gloo on CPU), the images dealt to the ranks
    started = not distributed.is_initialized() and distributed.init_from_env(_model_device(model))
    try:
        options = SegmentOptions(size, background, batch_size, crop, padding, fg_refine)
        return _segment_files(
            model,
            inputs,
            out_dir,
            options,
            masks_dir=masks_dir,
            save_probs=save_probs,
            overwrite=overwrite,
            alpha=alpha,
            checkpoint=checkpoint,
            progress=progress,
        )
    finally:
        if started:
            distributed.destroy()


def process_rank() -> int:
    """This process's rank under ``torchrun`` (0 in a single process): only rank 0 reports, in the CLI."""
    import os

    from partdisco.engine import distributed

    if distributed.is_initialized():
        return distributed.rank()
    return int(os.environ.get("RANK", "0")) if distributed.launched_by_torchrun() else 0


def _model_device(model: Any) -> Any:
    """The device a segmenter (or an ONNX-backed one, on the CPU) runs on."""
    from partdisco.engine.inference import model_device

    return model_device(model)


def write_synthetic(
    out: str | Path,
    n: int,
    *,
    image_size: int = 128,
    seed: int = 0,
    test_fraction: float = 1.0,
    stress: list[str] | tuple[str, ...] = (),
    object_scale: tuple[float, float] | None = None,
) -> dict[str, int]:
    """Write ``n`` synthetic images (masks, part maps, keypoints, split lists) as a folder data set.

    ``partdisco data synth``; see ``partdisco.data.synthetic.write_folder``.

    Args:
        out: a new or empty folder.
        n: number of images, >= 2.
        image_size: image side in pixels.
        seed: random seed.
        test_fraction: share of the images listed in ``test.txt`` (1.0 = all held-out test images).
        stress: stress variants ``small``, ``salient``, ``clutter``, ``all`` (issue #21; see
            ``partdisco.data.synthetic.SceneOptions``); empty = the built-in data set.
        object_scale: (lo, hi) range of the creature box's longer side as a fraction of the image side.

    Returns:
        Images written per split.

    Raises:
        ValueError: ``n < 2``, an unknown stress variant, a bad scale range, or ``out`` is not new or empty.
    """
    from partdisco.data.synthetic import stress_options, write_folder

    if n < 2:
        raise ValueError(f"--n must be >= 2, got {n}")
    options = stress_options(list(stress), object_scale)
    return write_folder(
        Path(out).expanduser(),
        n,
        image_size=image_size,
        seed=seed,
        test_fraction=test_fraction,
        options=options,
    )


def guess_dataset(root: str | Path) -> str | None:
    """The layout a folder looks like: ``cub``, ``deepfashion``, ``pascal_part``, ``folder``, or None."""
    from partdisco.data.check import guess_dataset as _guess_dataset

    return _guess_dataset(root)


def check_dataset(
    root: str | Path, dataset: str, overrides: list[str] | None = None, out: TextIO | None = None
) -> int:
    """Report what a data set folder holds, what is missing and what is bad (``partdisco data check``).

    Args:
        root: the data set folder.
        dataset: its layout, a preset name (``synthetic`` checks a folder written by ``data synth``).
        overrides: ``key=value`` config keys (``data.pascal_class=cat``, ...), type-checked as for training;
            ``dataset=`` among them is ignored (``dataset`` decides).
        out: where the report goes (default stdout).

    Returns:
        0 when everything required is present and every sample reads, else 1.
    """
    import sys

    from partdisco.data.check import check_dataset as _check_dataset

    name = "folder" if dataset == "synthetic" else dataset
    # the preset's data settings, then the overrides (the folder is not validated: reporting on it is the
    # point)
    rest = list(split_overrides(list(overrides or []), keys=("dataset",)).rest)
    cfg = load_config(dataset, rest, check=False)
    return int(_check_dataset(root, name, out=out or sys.stdout, cfg=cfg.data))


__all__ = [
    "check_dataset",
    "convert",
    "default_out_dir",
    "evaluate_checkpoint",
    "export",
    "format_metrics",
    "guess_dataset",
    "load",
    "open_checkpoint",
    "resolve_train_config",
    "segment",
    "segment_files",
    "train",
    "write_synthetic",
]
