"""A folder of the user's own images with captions -> images and captions (stage `loras` at
full scale: a subject's or a style's images, raw/loras/README.md).

Layout: images (IMAGE_EXTENSIONS, in the folder or below it) and `captions.csv` with the
header `file,caption` (`file` relative to the folder). Every caption row and every image in
the folder ends up either as one image or as one reject row (tables.REJECTS), named by the
file and the CSV line: missing_file (an empty `file` column, or no such file), empty_caption,
duplicate_caption (a file captioned again: the first row keeps it), undecodable (PIL cannot
read it), not_rgb (any other mode: L, RGBA, P...; never converted), missing_caption (an image
with no row). Problems with the folder as a whole (no folder, no captions.csv, a CSV without
the columns, no usable image) raise `IngestError`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .edit_ingest import RowError, decode_rgb
from .ingest import IngestError, _read_captions, _reject, _scan_clips
from .video import resize_center_crop

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")
CAPTIONS = "captions.csv"


def read_image_folder(folder: Path, size: int, stage: str) -> tuple[np.ndarray, list[str], list[dict[str, Any]]]:
    """Every captioned image of `folder`, resized (short side `size`) and centre-cropped, in
    file order: (uint8 (N, size, size, 3), their captions, reject rows sorted by item then reason)."""
    folder = Path(folder)
    expected = f"expected images ({', '.join(IMAGE_EXTENSIONS)}) and a {CAPTIONS} with header columns file, caption"
    if not folder.is_dir():
        raise IngestError(f"{folder}: image folder not found (stage {stage}; {expected})")
    csv_path = folder / CAPTIONS
    rows = _read_captions(csv_path)  # IngestError naming the file when it or its columns are missing
    first: dict[str, int] = {}  # file -> the line that captioned it
    kept: dict[str, tuple[np.ndarray, str]] = {}
    rejects: list[dict[str, Any]] = []
    for row in rows:
        where = f"{csv_path} line {row.line}"
        item = str(folder / row.file) if row.file else f"{csv_path}:{row.line}"
        try:
            if not row.file:
                raise RowError("missing_file", f"{where}: the 'file' column is empty")
            if row.file in first:
                raise RowError("duplicate_caption", f"{item} ({where}): already captioned on line {first[row.file]}; kept that one")
            first[row.file] = row.line
            if not row.caption:
                raise RowError("empty_caption", f"{item} ({where}): the caption is empty")
            kept[row.file] = (resize_center_crop(decode_rgb(folder / row.file, "file", where), size), row.caption)
        except RowError as exc:
            rejects.append(_reject(stage, item, exc.reason, exc.detail))
    for rel in _scan_clips(folder, set(IMAGE_EXTENSIONS)):
        if rel not in first:
            item = str(folder / rel)
            rejects.append(_reject(stage, item, "missing_caption", f"{item}: no row for it in {csv_path}"))
    rejects.sort(key=lambda r: (r["item"], r["reason"]))
    if not kept:
        reasons = sorted({r["reason"] for r in rejects})
        raise IngestError(f"{folder}: no usable image ({len(rejects)} rejected: {', '.join(reasons) or 'none listed'}; {expected})")
    files = sorted(kept)
    return np.stack([kept[f][0] for f in files]), [kept[f][1] for f in files], rejects
