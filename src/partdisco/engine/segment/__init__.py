"""``partdisco segment``: image files in, part-map files out; resumable.

The application on top of :mod:`partdisco.engine.inference` (which turns images into part maps): collect
the inputs (files, folders, glob patterns), read images and masks (``data.io``: grayscale, RGBA, 16-bit,
EXIF handled), run :func:`~partdisco.engine.inference.images.segment_images` in chunks, write the outputs,
skip what a previous run wrote.

Outputs under ``out_dir`` (NAME = the input's path relative to the folder it was found in, no suffix):
``labels/NAME.png`` (palette PNG, uint8 labels 0..K), ``color/NAME.png``, ``overlay/NAME.jpg``, optional
``probs/NAME.npz``, plus ``parts.json`` and ``index.html``. Every file is written atomically; an image is
skipped on a rerun when all its files and its ``parts.json`` entry exist (docs/SEGMENT.md).

Under ``torchrun`` (an initialised process group) the images still to do are dealt to the ranks in input
order (rank r takes every world-th one); each rank writes its own images' files and merges its entries into
the one ``parts.json`` (under the folder lock, as two runs into one ``--out`` do), and rank 0 writes the
final ``parts.json`` (entries in input order, as one process writes them) and ``index.html``.

Rooms: :mod:`.inputs` (collecting and reading inputs and masks), :mod:`.outputs` (the files per image,
``index.html``), :mod:`.ledger` (``parts.json``: done-detection, settings, merge, lock), :mod:`.run`
(:func:`segment_files`, the chunked run with its I/O threads). This ``__init__`` re-exports what
``engine/segment.py`` exported before it became this package; the modules import each other directly.
"""

from partdisco.engine.inference.options import SegmentOptions
from partdisco.engine.segment.inputs import (
    MAX_WORKING_PIXELS,
    InputImage,
    collect_images,
    default_out_dir,
    find_mask,
)
from partdisco.engine.segment.ledger import PARTS_JSON_VERSION, read_parts_json, weights_fingerprint
from partdisco.engine.segment.outputs import THUMB_SIDE, output_paths, part_entry, write_outputs
from partdisco.engine.segment.run import IO_THREADS, SegmentSummary, segment_files

__all__ = [
    "IO_THREADS",
    "MAX_WORKING_PIXELS",
    "PARTS_JSON_VERSION",
    "THUMB_SIDE",
    "InputImage",
    "SegmentOptions",
    "SegmentSummary",
    "collect_images",
    "default_out_dir",
    "find_mask",
    "output_paths",
    "part_entry",
    "read_parts_json",
    "segment_files",
    "weights_fingerprint",
    "write_outputs",
]
