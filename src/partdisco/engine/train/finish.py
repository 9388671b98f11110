"""The end of a run, and the held-out metrics and part pictures that the loop also makes on the way.

:func:`finish_run` writes the final ``model.pt``, ``metrics.json`` and ``parts.png``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from partdisco.engine import distributed as dist_utils
from partdisco.engine.evaluate import evaluate, metric_warnings
from partdisco.engine.evaluate.diagnostics import format_diagnostics, has_label_metrics, part_diagnostics
from partdisco.engine.inference.network import predict_labels
from partdisco.engine.runfolder import METRICS_FILE, MODEL_FILE, PARTS_PICTURE
from partdisco.engine.train.checkpointing import checkpoint_state
from partdisco.engine.train.divergence import raise_if_weights_diverged
from partdisco.engine.train.setup import Run
from partdisco.engine.train.step import set_train_mode
from partdisco.fileio import save_torch, write_json
from partdisco.metrics.report import format_metrics
from partdisco.visualise import part_grid, save_png, to_uint8_image

log = logging.getLogger("partdisco.train")


def finish_run(run: Run, step: int, last_saved: Path | None) -> None:
    """The end of a run: held-out metrics, final ``model.pt``, ``metrics.json``, ``parts.png``, summary."""
    cfg, model = run.cfg, run.learner.model
    raise_if_weights_diverged(model, step, None, last_saved)  # finite weights only
    metrics = evaluate_test_split(run)
    if not has_label_metrics(metrics):  # nothing to score against: describe the parts instead
        metrics["diagnostics"] = part_diagnostics(
            model, run.test_set, run.device, cfg.eval.batch_size, cfg.eval.max_images or 200
        )
    skipped = {"train": list(run.train_set.skipped), "test": list(run.test_set.skipped)}
    metrics["skipped_images"] = skipped
    if skipped["train"] or skipped["test"]:
        log.warning(
            "skipped %d unreadable training and %d test images (listed in metrics.json; data.strict=true "
            "makes them errors)%s",
            len(skipped["train"]),
            len(skipped["test"]),
            "; with data.num_workers > 0 only the main process's skips are counted"
            if cfg.data.num_workers
            else "",
        )
    if run.main:
        assert run.writer is not None
        run.writer.scalars({k: v for k, v in metrics.items() if isinstance(v, float)}, step, "eval")
        # The final model is weights-only (a third of the size); the full state stays in checkpoints/.
        final = checkpoint_state(run.learner, step, cfg, metrics, world=run.world)
        save_torch(
            {k: v for k, v in final.items() if k not in ("optimizer", "scaler")}, run.run_dir / MODEL_FILE
        )
        write_json(run.run_dir / METRICS_FILE, metrics)
        save_png(run.run_dir / PARTS_PICTURE, parts_picture(run))
        which = _test_split_words(run)
        if "diagnostics" not in metrics:  # (without labels the table would be empty)
            log.info("%s metrics (x100):\n%s", which, format_metrics(metrics))
        else:
            log.info(
                "no labels to score: unsupervised diagnostics of the parts on %d of the %d %s images "
                "(look at %s too):\n%s",
                metrics["diagnostics"]["images"],
                len(run.test_set),
                which,
                run.run_dir / PARTS_PICTURE,
                format_diagnostics(metrics["diagnostics"]),
            )
        for note in dict.fromkeys(metric_warnings(metrics).values()):
            log.warning("%s", note)
        log.info("finished %d steps; run folder %s", step, run.run_dir)
    dist_utils.barrier()


def _test_split_words(run: Run) -> str:
    """``held-out``, or what the test images are when they are training images (a folder without a split)."""
    train_files, test_files = getattr(run.train_set, "files", None), getattr(run.test_set, "files", None)
    if train_files is not None and test_files is not None and set(test_files) & set(train_files):
        return "test (= training images: the data set has no test.txt / train.txt, so nothing is held out)"
    return "held-out"


def parts_picture(run: Run) -> np.ndarray:
    """Input / part map / overlay of the fixed test images (train mode restored when it was on).

    Black is the background: the mask's when training uses masks, the model's own prediction (its
    background channel, unrefined) in mask-free training.
    """
    model, batch = run.learner.model, run.vis_batch
    was_training = model.training
    model.eval()
    # mask-free runs show their own background; with masks the mask is the background, as in training
    fg_mask = None if run.mask_free else batch.fg_mask.to(run.device)
    labels = predict_labels(model, batch.image.to(run.device), fg_mask).cpu().numpy()
    if was_training:
        set_train_mode(model, run.cfg.model.freeze_bn)
    return part_grid([to_uint8_image(x) for x in batch.image], list(labels))


def evaluate_test_split(run: Run) -> dict[str, Any]:
    """Held-out metrics of the model on the test split (eval mode; the caller restores train mode)."""
    run.learner.model.eval()
    progress = run.cfg.log.progress and run.main
    data = run.cfg.data  # the whole-image fg_iou runs as `partdisco segment` would on the final model.pt
    return evaluate(
        run.learner.model,
        run.test_set,
        run.cfg.eval,
        run.device,
        progress=progress,
        size=data.image_size,
        padding=data.padding_frac,
    )
