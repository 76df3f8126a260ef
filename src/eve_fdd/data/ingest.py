"""The full profile's `videos` stage: a folder of real clips + captions.csv -> videos rows.

Every clip in the folder and every CSV row ends up either as one accepted row or as one
reject row, so `len(videos) + len(rejects) == csv rows + uncaptioned clips`. Problems
with the inputs as a whole (no folder, no CSV, CSV without the needed columns) are
configuration errors and raise `IngestError` instead.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Iterator

from tqdm import tqdm

from ..config import IngestConfig
from .tables import frames_to_bytes
from .video import ClipError, decode_clip

REQUIRED_COLUMNS = ("file", "caption")


class IngestError(ValueError):
    """The clip folder or its captions CSV cannot be used at all."""


@dataclass(frozen=True)
class CaptionRow:
    line: int  # line in the CSV, for messages
    file: str  # path relative to source_dir, POSIX separators
    caption: str


def _read_captions(csv_path: Path) -> list[CaptionRow]:
    expected = f"expected a CSV with header columns {', '.join(REQUIRED_COLUMNS)}"
    if not csv_path.is_file():
        raise IngestError(f"{csv_path}: captions file not found ({expected})")
    rows = []
    for line, record in csv_records(csv_path, REQUIRED_COLUMNS, expected):
        # csv leaves absent trailing fields as None.
        file = (record["file"] or "").strip().replace("\\", "/")
        caption = (record["caption"] or "").strip()
        rows.append(CaptionRow(line, str(PurePosixPath(file)) if file else "", caption))
    return rows


def csv_records(path: Path, required: tuple[str, ...], expected: str) -> Iterator[tuple[int, dict[str, str | None]]]:
    """(line, record) per row of a CSV whose header names the `required` columns (header names
    stripped); a missing one stops with `expected` in the message."""
    # utf-8-sig: spreadsheet exports often start with a byte-order mark.
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        header = [name.strip() for name in reader.fieldnames or []]
        missing = [c for c in required if c not in header]
        if missing:
            raise IngestError(f"{path}: missing columns {missing} ({expected}; found {header})")
        reader.fieldnames = header
        for record in reader:
            yield reader.line_num, record


def _scan_clips(root: Path, extensions: set[str]) -> list[str]:
    """Clip files under `root` (recursively), as sorted POSIX paths relative to it."""
    return sorted(
        p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.suffix.lower() in extensions
    )


def video_id(rel: str) -> str:
    """`sub/my clip.mp4` -> `sub_my_clip`."""
    return str(PurePosixPath(rel).with_suffix("")).replace("/", "_").replace(" ", "_")


def _reject(stage: str, item: str, reason: str, detail: str) -> dict[str, Any]:
    return {"stage": stage, "item": item, "reason": reason, "detail": detail}


def _check_row(row: CaptionRow, root: Path, extensions: set[str], csv_path: Path) -> tuple[str, str] | None:
    """(reason, detail) if this caption row cannot become a video, else None."""
    where = f"{csv_path} line {row.line}"
    path = root / row.file
    if not row.file:
        return "missing_file", f"{where} has an empty 'file' column"
    if path.suffix.lower() not in extensions:
        return "unsupported_extension", f"{path} ({where}): extension is not one of {sorted(extensions)}"
    if not path.is_file():
        return "missing_file", f"{path} ({where}): no such file"
    if not row.caption:
        return "empty_caption", f"{path} ({where}): the caption is empty"
    return None


def _video_row(cfg: IngestConfig, root: Path, row: CaptionRow) -> dict[str, Any]:
    frames, fps = decode_clip(root / row.file, cfg.frames, cfg.stride, cfg.size)
    return {
        "video_id": video_id(row.file),
        "caption": row.caption,
        "num_frames": frames.shape[0],
        "height": frames.shape[1],
        "width": frames.shape[2],
        "fps": fps,
        "frames": frames_to_bytes(frames),
        "source": str(root / row.file),
        "scene": None,
        "seed": None,
    }


def _triage_rows(
    rows: list[CaptionRow], root: Path, extensions: set[str], csv_path: Path, stage: str
) -> tuple[list[CaptionRow], list[dict[str, Any]]]:
    """Split caption rows into those worth decoding and reject rows (first row per file wins)."""
    first_line: dict[str, int] = {}
    todo: list[CaptionRow] = []
    rejects: list[dict[str, Any]] = []
    for row in rows:
        item = str(root / row.file) if row.file else f"{csv_path}:{row.line}"
        if row.file in first_line:
            detail = f"{item} ({csv_path} line {row.line}): already captioned on line {first_line[row.file]}"
            rejects.append(_reject(stage, item, "duplicate_caption", detail + "; kept that one"))
            continue
        if row.file:
            first_line[row.file] = row.line
        problem = _check_row(row, root, extensions, csv_path)
        if problem:
            rejects.append(_reject(stage, item, *problem))
        else:
            todo.append(row)
    return todo, rejects


def _decode_rows(
    cfg: IngestConfig, root: Path, todo: list[CaptionRow], stage: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Decode each clip (in file order) into a videos row, or a reject row saying why not."""
    videos: dict[str, dict[str, Any]] = {}
    rejects: list[dict[str, Any]] = []
    for row in tqdm(sorted(todo, key=lambda r: r.file), desc="ingest clips", unit="clip"):
        item, vid = str(root / row.file), video_id(row.file)
        if vid in videos:
            # e.g. a.mp4 and a.gif, or a/b.mp4 and a_b.mp4: ids must stay unique.
            detail = f"{item}: video_id {vid!r} is already taken by {videos[vid]['source']}"
            rejects.append(_reject(stage, item, "duplicate_id", detail))
            continue
        try:
            videos[vid] = _video_row(cfg, root, row)
        except ClipError as exc:
            rejects.append(_reject(stage, item, exc.reason, exc.detail))
    return list(videos.values()), rejects


def ingest_folder(cfg: IngestConfig, stage: str = "videos") -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Decode every captioned clip under cfg.source_dir; returns (videos rows, rejects rows).

    Reject rows are as declared by tables.REJECTS. Videos rows have every tables.VIDEOS
    column except `split`, which the stage assigns (it depends on videos.test_fraction,
    not on the clip). Videos are sorted by video_id, rejects by item then reason.
    """
    root = Path(cfg.source_dir)
    if not root.is_dir():
        raise IngestError(f"{root}: clip folder not found (videos.ingest.source_dir)")
    csv_path = root / cfg.captions_csv
    extensions = {e.lower() for e in cfg.extensions}
    rows = _read_captions(csv_path)
    todo, rejects = _triage_rows(rows, root, extensions, csv_path, stage)
    listed = {row.file for row in rows}
    for rel in _scan_clips(root, extensions):
        if rel not in listed:
            item = str(root / rel)
            rejects.append(_reject(stage, item, "missing_caption", f"{item}: no row for it in {csv_path}"))
    videos, failed = _decode_rows(cfg, root, todo, stage)
    return sorted(videos, key=lambda r: r["video_id"]), sorted(rejects + failed, key=lambda r: (r["item"], r["reason"]))
