"""One row of overlays per ``partdisco segment`` output folder: the README's pictures of real photos.

Takes the first ``--n`` overlays (in ``parts.json`` order) of each folder, scales them to ``--height``
pixels and writes one PNG, a row per folder.

    python benchmarks/overlay_strip.py /tmp/exp2/pets/recipe/segment /tmp/exp2/carparts/recipe/segment \
        --out docs/images/photos_segment.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from PIL import Image


def strip(folders: list[Path], n: int, height: int, gap: int = 8) -> Image.Image:
    """The overlays, a row per folder, ``gap`` white pixels between them."""
    rows = []
    for folder in folders:
        ledger = json.loads((folder / "parts.json").read_text())
        names = list(ledger["images"])[:n]
        if not names:
            raise ValueError(f"{folder / 'parts.json'} lists no images")
        tiles = []
        for name in names:
            tile = Image.open(folder / ledger["images"][name]["files"]["overlay"]).convert("RGB")
            tiles.append(
                tile.resize((max(1, round(tile.width * height / tile.height)), height), Image.LANCZOS)
            )
        rows.append(tiles)
    width = max(sum(t.width for t in row) + gap * (len(row) - 1) for row in rows)
    sheet = Image.new("RGB", (width, len(rows) * height + gap * (len(rows) - 1)), "white")
    for r, row in enumerate(rows):
        x = 0
        for tile in row:
            sheet.paste(tile, (x, r * (height + gap)))
            x += tile.width + gap
    return sheet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folders", nargs="+", type=Path, help="partdisco segment output folders")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--n", type=int, default=8, help="overlays per row")
    parser.add_argument("--height", type=int, default=150)
    args = parser.parse_args()
    strip(args.folders, args.n, args.height).save(args.out, optimize=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
