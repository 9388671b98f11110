"""The run of ``partdisco segment``: :func:`segment_files`, chunk by chunk, reading and writing in threads.

Checks and resolves the arguments, opens the ledger (:mod:`.ledger`), deals the pending images to the ranks,
segments them in chunks while the next chunk is decoded and the last one's files are written
(:class:`_Session`), and ends with the final ``parts.json``, ``index.html`` and the summary.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from partdisco.config import MAX_IMAGE_SIZE
from partdisco.data.io import IMAGE_EXTENSIONS, ImageReadError
from partdisco.engine import distributed as dist_utils
from partdisco.engine.inference.background import check_background
from partdisco.engine.inference.images import PartMaps, segment_images
from partdisco.engine.inference.network import inference_size
from partdisco.engine.inference.options import SegmentOptions
from partdisco.engine.runfolder import require_writable_dir
from partdisco.engine.segment.inputs import InputImage, chunked, collect_images, find_masks, read_chunk
from partdisco.engine.segment.ledger import (
    PARTS_JSON,
    claim_out_dir,
    is_done,
    merge_and_write,
    open_ledger,
    segment_settings,
)
from partdisco.engine.segment.outputs import INDEX_HTML, name_too_long, write_outputs

logger = logging.getLogger(__name__)

IO_THREADS = 2  # threads that decode inputs and encode outputs while the network runs
# Batches per chunk: enough that images of equal processing size can share a batch, few enough that the
# first chunk's reads and the last chunk's writes (which nothing overlaps) stay short. 2 instead of 4
# measured within the noise on 128 photos (BENCHMARKS.md, issue #24), so 4 stays.
CHUNK_BATCHES = 4
# parts.json grows with the folder and is rewritten whole, so rewriting it after every chunk would cost
# O(images^2) on large folders. After a chunk it is rewritten only once FLUSH_COST_RATIO times its last
# rewrite's duration has passed since then: the rewrites cost at most ~1/FLUSH_COST_RATIO of the run, and
# a killed run loses at most that long's entries (their files are redone on the rerun). A ledger that took
# under FLUSH_FREE_S to write (a folder of up to some thousands of images) is rewritten after every chunk.
# Ctrl-C, an error and the end of the run always write it.
FLUSH_COST_RATIO = 20.0
FLUSH_FREE_S = 0.05


@dataclass
class SegmentSummary:
    """What :func:`segment_files` did.

    Attributes:
        out_dir: the output folder.
        written: names segmented in this run.
        skipped: names whose outputs existed already (resumed).
        failed: unreadable files: path -> reason.
        notes: names whose background differs from what was asked for -> why (:attr:`PartMaps.note`).
        no_foreground: names segmented in this run where no pixel is a part (all background).
        parts_json: path of ``parts.json``.
        index_html: path of ``index.html``.
    """

    out_dir: Path
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    no_foreground: list[str] = field(default_factory=list)
    parts_json: Path | None = None
    index_html: Path | None = None


def _gather_summary(summary: SegmentSummary, items: Sequence[InputImage]) -> None:
    """Every rank's written / failed / notes, gathered into ``summary`` in input order (collective)."""
    import torch.distributed as dist

    mine = (summary.written, summary.failed, summary.notes)
    everyone: list[Any] = [None] * dist_utils.world_size()
    dist.all_gather_object(everyone, mine)
    written = {name for w, _, _ in everyone for name in w}
    failed = {path: reason for _, f, _ in everyone for path, reason in f.items()}
    notes = {name: note for _, _, n in everyone for name, note in n.items()}
    summary.written = [item.name for item in items if item.name in written]
    summary.failed = {str(i.path): failed[str(i.path)] for i in items if str(i.path) in failed}
    summary.notes = {i.name: notes[i.name] for i in items if i.name in notes}


def _segment_or_skip(
    model: nn.Module,
    loaded: list[tuple[InputImage, np.ndarray, np.ndarray | None]],
    with_masks: bool,
    run: dict[str, Any],
) -> list[tuple[tuple[InputImage, np.ndarray, np.ndarray | None], PartMaps | str]]:
    """Segment a chunk; when it fails for memory, retry image by image and name the ones that still fail."""
    try:
        maps = segment_images(
            model,
            [image for _, image, _ in loaded],
            [m for _, _, m in loaded] if with_masks else None,
            names=[str(item.path) for item, _, _ in loaded],
            **run,
        )
        return list(zip(loaded, maps))
    except (MemoryError, RuntimeError) as err:
        if len(loaded) == 1:
            reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
            return [(loaded[0], f"could not be processed ({type(err).__name__}: {reason})")]
    results: list[tuple[tuple[InputImage, np.ndarray, np.ndarray | None], PartMaps | str]] = []
    for one in loaded:
        results += _segment_or_skip(model, [one], with_masks, run)
    return results


def segment_files(
    model: nn.Module,
    inputs: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    options: SegmentOptions | None = None,
    *,
    masks_dir: str | os.PathLike[str] | None = None,
    save_probs: bool = False,
    overwrite: bool = False,
    alpha: float = 0.5,
    checkpoint: str | None = None,
    progress: bool = True,
) -> SegmentSummary:
    """Segment image files and write label maps, colour maps, overlays, ``parts.json`` and ``index.html``.

    Resumable: an image whose files and ``parts.json`` entry exist is skipped (unless ``overwrite``).
    Unreadable images (and unreadable masks) are skipped and listed in the summary and in ``parts.json``.
    ``out_dir`` is created or reused; nothing in it is deleted.

    Args:
        model: a Segmenter, already on its device.
        inputs: files, folders (recursive) and glob patterns (:func:`.inputs.collect_images`).
        out_dir: output folder.
        options: how to segment (:class:`~partdisco.engine.inference.options.SegmentOptions`: size, batch
            size, background, crop, padding, foreground refinement; None = the defaults); ``background``
            must be ``"auto"`` with masks.
        masks_dir: foreground masks named like the images (:func:`.inputs.find_mask`); they define background.
        save_probs: also write ``probs/NAME.npz`` (float16 (C, H, W)).
        overwrite: recompute images whose outputs exist.
        alpha: part opacity in the overlays.
        checkpoint: checkpoint path, recorded in ``parts.json`` and compared on a rerun.
        progress: show a progress bar.

    Returns:
        A :class:`SegmentSummary`.

    Raises:
        ValueError: no images found; bad arguments; ``out_dir/parts.json`` from a different model or
            settings (without ``overwrite``); a mask whose size differs from its image's (names both files).
        FileNotFoundError: an input does not exist, or an image has no mask in ``masks_dir``.
    """
    options = options or SegmentOptions()
    check_background(options.background)
    if masks_dir is not None and options.background != "auto":
        raise ValueError(
            f"background={options.background!r} cannot be combined with masks: masks define the background"
        )
    size, batch_size = inference_size(model, options.size), options.batch_size
    if not 1 <= size <= MAX_IMAGE_SIZE or batch_size < 1:
        raise ValueError(
            f"size must be 1..{MAX_IMAGE_SIZE} and batch_size >= 1, got size={size}, batch_size={batch_size}"
        )
    options = options.resolved(model)
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {str(out)!r} exists and is not a folder")
    items = collect_images(inputs, exclude=[out])
    if not items:
        raise ValueError(
            f"no images found in {', '.join(map(str, inputs))} "
            f"(image suffixes: {', '.join(IMAGE_EXTENSIONS)})"
        )
    mask_paths = find_masks(masks_dir, items) if masks_dir is not None else {}
    settings = segment_settings(model, checkpoint, options, masks_dir)
    data, owned = open_ledger(out, settings, overwrite, int(model.num_parts))
    out.mkdir(parents=True, exist_ok=True)
    require_writable_dir(out, "--out")
    session = _Session(out, data, owned, SegmentSummary(out_dir=out, parts_json=out / PARTS_JSON), save_probs)
    pending = session.pending(items, overwrite)
    claim_out_dir(out, data, owned, pending, overwrite, save_probs)
    rank, world = dist_utils.rank(), dist_utils.world_size()
    if world > 1:
        dist_utils.barrier()  # every rank has listed what is pending before any rank writes
        pending = pending[rank::world]  # dealt in input order: the same shares on every rank
    if session.summary.skipped and rank == 0:
        logger.info(
            "%d of %d images already segmented in %s, skipped", len(session.summary.skipped), len(items), out
        )
    session.run(model, pending, mask_paths, options, alpha, progress=progress and rank == 0)
    session.finish(items, int(model.num_parts))
    return session.summary


class _Session:
    """One ``segment_files`` run into ``out``: its ledger, its summary, the chunks and the file writes."""

    def __init__(
        self, out: Path, data: dict[str, Any], owned: set[str], summary: SegmentSummary, save_probs: bool
    ) -> None:
        self.out, self.data, self.owned, self.summary, self.save_probs = out, data, owned, summary, save_probs
        self.entries: dict[str, Any] = data["images"]
        self.failed: dict[str, str] = data["failed"]
        self.writing: list[tuple[InputImage, PartMaps, Future[dict[str, Any]]]] = []
        self.bar: Any = None
        self.flushed_at, self.flush_cost = time.monotonic(), 0.0  # the last parts.json rewrite: end, duration

    def pending(self, items: Sequence[InputImage], overwrite: bool) -> list[InputImage]:
        """The images still to do (the others are skipped); names too long to write are failures."""
        pending = []
        for item in items:
            if not overwrite and is_done(self.out, item, self.entries, self.save_probs):
                self.summary.skipped.append(item.name)
            else:
                pending.append(item)
        for item in list(pending):
            too_long = name_too_long(self.out, item)
            if too_long:
                pending.remove(item)
                self._fail(item, too_long)
                logger.warning("skipping %s", too_long)
        return pending

    def _fail(self, item: InputImage, reason: str) -> None:
        self.failed[str(item.path)] = self.summary.failed[str(item.path)] = reason

    def run(
        self,
        model: nn.Module,
        pending: Sequence[InputImage],
        mask_paths: dict[str, Path],
        options: SegmentOptions,
        alpha: float,
        progress: bool,
    ) -> None:
        """Segment ``pending`` chunk by chunk, decoding and writing files in threads meanwhile.

        Decoding and encoding (PIL releases the GIL) run in threads while the network runs: chunk k + 1 is
        read and chunk k - 1's files are written during chunk k's forward passes. Results are taken in
        input order, so parts.json and every file are what the sequential loop wrote.
        """
        from tqdm.auto import tqdm

        self.bar = tqdm(total=len(pending), unit="img", desc="segment", disable=not progress)
        io = ThreadPoolExecutor(max_workers=IO_THREADS, thread_name_prefix="segment-io")
        chunks = list(chunked(pending, CHUNK_BATCHES * options.batch_size))
        reads = [io.submit(read_chunk, chunks[0], mask_paths)] if chunks else []
        try:
            for k in range(len(chunks)):
                loaded, unreadable = reads[k].result()
                if k + 1 < len(chunks):
                    reads.append(io.submit(read_chunk, chunks[k + 1], mask_paths))
                self._chunk(model, k, loaded, unreadable, bool(mask_paths), options, alpha, io)
            if chunks:
                self._finish_writes()
        except BaseException:
            for job in reads:
                job.cancel()  # no more reading; the segmented images' files are still written (as before)
            io.shutdown(wait=True)
            self._finish_writes(interrupted=True)  # and listed: a rerun skips them
            raise
        finally:
            io.shutdown(wait=True)
            self.bar.close()

    def _chunk(
        self,
        model: nn.Module,
        k: int,
        loaded: list[tuple[InputImage, np.ndarray, np.ndarray | None]],
        unreadable: list[tuple[InputImage, ImageReadError]],
        with_masks: bool,
        options: SegmentOptions,
        alpha: float,
        io: ThreadPoolExecutor,
    ) -> None:
        """Chunk ``k``: list its unreadable files, claim its outputs, segment it, queue its writes."""
        for item, err in unreadable:
            self._fail(item, str(err))
            logger.warning("skipping an unreadable file: %s", err)
            self.bar.update(1)
        run = dict(options.as_kwargs(), with_probs=self.save_probs)
        results = _segment_or_skip(model, loaded, with_masks, run) if loaded else []
        if k > 0:
            self._finish_writes(flush="when_due")  # chunk k - 1's files, written while this chunk ran
        for (item, image, _), maps in results:
            if isinstance(maps, str):  # could not be processed (memory): skipped by name
                self._fail(item, maps)
                logger.warning("skipping %s: %s", item.path, maps)
                self.bar.update(1)
            else:
                job = io.submit(write_outputs, self.out, item, image, maps, self.save_probs, alpha=alpha)
                self.writing.append((item, maps, job))

    def _finish_writes(self, interrupted: bool = False, flush: str = "always") -> None:
        """Enter the written images in the ledger and write it: a killed run resumes from there.

        ``flush="when_due"``: write ``parts.json`` only when :data:`FLUSH_COST_RATIO` allows it.
        """
        summary = self.summary
        while self.writing:
            item, maps, job = self.writing.pop(0)
            if interrupted and (job.cancelled() or job.exception() is not None):
                continue  # stopped: list only the images whose files were all written
            self.entries[item.name] = job.result()
            self.owned.update(self.entries[item.name]["files"].values())
            if self.entries[item.name]["foreground_area"] == 0:
                summary.no_foreground.append(item.name)
            if maps.note:
                summary.notes[item.name] = maps.note
            self.failed.pop(str(item.path), None)
            summary.written.append(item.name)
            self.bar.update(1)
        now = time.monotonic()
        cost = self.flush_cost
        if flush == "when_due" and cost >= FLUSH_FREE_S and now - self.flushed_at < FLUSH_COST_RATIO * cost:
            return  # entered in memory; the next due rewrite (or the last) lists them
        merge_and_write(self.out, self.data, summary.written)
        self.flushed_at = time.monotonic()
        self.flush_cost = self.flushed_at - now

    def finish(self, items: Sequence[InputImage], num_parts: int) -> None:
        """The final ``parts.json`` and ``index.html`` (rank 0 under torchrun), the summary, the log lines."""
        out, summary = self.out, self.summary
        if dist_utils.world_size() == 1:
            summary.index_html = merge_and_write(out, self.data, summary.written, num_parts=num_parts)
        else:
            dist_utils.barrier()  # every rank's entries are in parts.json
            if dist_utils.rank() == 0:  # one final parts.json, in input order, and the one index.html
                merge_and_write(out, self.data, summary.written, num_parts=num_parts, order=items)
            _gather_summary(summary, items)
            summary.index_html = out / INDEX_HTML
            dist_utils.barrier()  # no rank reports before index.html exists
        if summary.no_foreground:
            logger.warning(
                "no foreground found in %d image(s) (all background; marked in index.html), first: %s",
                len(summary.no_foreground),
                ", ".join(summary.no_foreground[:5]),
            )
        logger.info(
            "segmented %d images, skipped %d done, %d unreadable -> %s",
            len(summary.written),
            len(summary.skipped),
            len(summary.failed),
            out,
        )
