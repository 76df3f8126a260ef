"""A video-editing benchmark in the layout of TGVE / TGVE+ -> BenchmarkItems and reject rows.

TGVE (LOVEU-TGVE-2023) is a CSV with one row per video: a "Video name" column, a source
caption ("Our GT caption", "Original caption") and one target caption per edit type
("Style Change Caption", "Object Change Caption", "Background Change Caption",
"Multiple Changes Caption"). TGVE+ (the EVE paper) adds object removal, object addition
and texture change, each as an instruction and an output caption ("Remove Instruction",
"Remove Caption", ...). The clips lie in a folder. Every row becomes up to seven items.

Headers are matched case-insensitively by words (runs of letters and digits), so
"Video name", "video_name" and "VIDEO NAME" are the same:

- video: the first header with the word "video";
- source caption: the first other header with "caption" and none of the type words
  (style, object, background, multiple, remove, add, texture);
- a type's output caption: the first header with the type word and "caption" or "prompt";
- a type's instruction: the first header with the type word and "instruction".
A CSV without a video, a source caption or any edit-type column stops with a
BenchmarkError (a ValueError) naming the CSV, the headers found and what was expected.
Ours: a header naming two type words is ambiguous and stops too, and so does a type
with an instruction column but no caption column.

The video of a row is `videos_dir / name` if that is a file, else `name + ext` for each
ext of ingest.extensions in turn (TGVE names videos without extension). Its frames are
decoded once per row with the `videos` stage's sampling (decode_clip with ingest.frames,
stride, size) and shared, read-only, by the row's items.

Every row ends up as items or rejects (tables.REJECTS rows), never silently dropped:
- missing_file: the video name is empty; missing_video: no file by that name;
- the ClipError reason (unreadable, too_short, no_video_stream): decode_clip failed;
- empty_caption: the source caption is empty (the whole row), or a type has an
  instruction but an empty output caption (that item only);
- ours: duplicate_id, a later row whose video_id is already taken (the first row wins);
  no_prompts, a row with every edit cell empty.
An edit type whose cells are all empty is just absent from that row (not a reject).

Ours: the task label of each type, for the edit adapter: style -> style, object -> local,
background -> background, multiple -> global, remove/add/texture -> themselves. The
instruction is the type's instruction cell where the CSV has a non-empty one, else the
output caption itself (TGVE's four types give only target captions).
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from ..config import IngestConfig
from .ingest import _reject, video_id
from .video import ClipError, decode_clip

PROMPT_TYPES = ("style", "object", "background", "multiple", "remove", "add", "texture")
TASK_OF = {  # ours: prompt type -> the edit adapter's task label (world.vocab.TASKS)
    "style": "style",
    "object": "local",
    "background": "background",
    "multiple": "global",
    "remove": "remove",
    "add": "add",
    "texture": "texture",
}
OUTPUT_WORDS = ("caption", "prompt")


class BenchmarkError(ValueError):
    """The benchmark CSV or its clip folder cannot be used at all."""


@dataclass(frozen=True)
class BenchmarkItem:
    row_id: str  # f"{video_id}/{prompt_type}"
    video_id: str  # ingest.video_id of the file name relative to the clip folder
    prompt_type: str  # one of PROMPT_TYPES
    task: str  # TASK_OF[prompt_type]
    instruction: str
    input_caption: str
    output_caption: str
    frames: np.ndarray  # uint8 (F, size, size, 3), read-only, shared by the row's items


@dataclass(frozen=True)
class Columns:
    """Which CSV header plays which role."""

    video: str
    source: str
    output: dict[str, str]  # prompt type -> output caption header
    instruction: dict[str, str]  # prompt type -> instruction header (TGVE+ types only)


@dataclass(frozen=True)
class Row:
    line: int  # line in the CSV, for messages
    cells: dict[str, str]  # header -> stripped cell ("" where absent)


@dataclass(frozen=True)
class Prompt:
    """One edit of a row, before its frames are attached."""

    kind: str
    instruction: str
    output_caption: str


def _words(header: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", header.lower()))


def _type_of(header: str, csv_path: Path) -> str | None:
    """The prompt type a header names, None if none; two types make it ambiguous."""
    named = [t for t in PROMPT_TYPES if t in _words(header)]
    if len(named) > 1:
        raise BenchmarkError(f"{csv_path}: header {header!r} names several edit types {named}; expected one")
    return named[0] if named else None


def _first(headers: list[str], test) -> str | None:
    return next((h for h in headers if test(_words(h))), None)


def _type_columns(headers: list[str], csv_path: Path) -> tuple[dict[str, str], dict[str, str]]:
    """(output caption header, instruction header) per prompt type, first header wins."""
    output: dict[str, str] = {}
    instruction: dict[str, str] = {}
    for header in headers:
        kind, words = _type_of(header, csv_path), _words(header)
        if kind is None:
            continue
        # "instruction" first: a header naming both is an instruction.
        if "instruction" in words:
            instruction.setdefault(kind, header)
        elif words & set(OUTPUT_WORDS):
            output.setdefault(kind, header)
    orphans = [instruction[t] for t in instruction if t not in output]
    if orphans:
        raise BenchmarkError(
            f"{csv_path}: instruction columns {orphans} have no output caption column "
            f"(expected a header with the same type word and 'caption' or 'prompt'; found {headers})"
        )
    return output, instruction


def _find_columns(headers: list[str], csv_path: Path) -> Columns:
    video = _first(headers, lambda w: "video" in w)
    source = _first(
        [h for h in headers if h != video], lambda w: "caption" in w and not w & set(PROMPT_TYPES)
    )
    output, instruction = _type_columns(headers, csv_path)
    missing = []
    if video is None:
        missing.append("a video column (a header with 'video', e.g. 'Video name')")
    if source is None:
        missing.append("a source caption column (a header with 'caption' and no type word, e.g. 'Our GT caption')")
    if not output:
        missing.append(f"an edit-type column (a header with one of {list(PROMPT_TYPES)} and 'caption' or 'prompt')")
    if missing:
        raise BenchmarkError(f"{csv_path}: expected {'; '.join(missing)}; found headers {headers}")
    return Columns(video, source, output, instruction)


def _read_csv(csv_path: Path) -> tuple[Columns, list[Row]]:
    if not csv_path.is_file():
        raise BenchmarkError(f"{csv_path}: benchmark CSV not found")
    # utf-8-sig: spreadsheet exports often start with a byte-order mark.
    with csv_path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        headers = [h.strip() for h in reader.fieldnames or []]
        columns = _find_columns(headers, csv_path)
        reader.fieldnames = headers
        # csv leaves absent trailing fields as None.
        rows = [Row(reader.line_num, {h: (rec.get(h) or "").strip() for h in headers}) for rec in reader]
    return columns, rows


def _resolve_video(videos_dir: Path, name: str, extensions: tuple[str, ...]) -> Path | None:
    """The clip a row names: the name as is, else the name plus each known extension."""
    for path in [videos_dir / name] + [videos_dir / (name + ext) for ext in extensions]:
        if path.is_file():
            return path
    return None


def _prompts(row: Row, columns: Columns) -> tuple[list[Prompt], list[tuple[str, str]]]:
    """The row's edits, and (prompt type, detail) for each with an instruction but no caption."""
    prompts, empty = [], []
    for kind in PROMPT_TYPES:
        if kind not in columns.output:
            continue
        caption = row.cells[columns.output[kind]]
        instruction = row.cells[columns.instruction[kind]] if kind in columns.instruction else ""
        if caption:
            prompts.append(Prompt(kind, instruction or caption, caption))
        elif instruction:
            detail = f"{columns.instruction[kind]!r} is {instruction!r} but {columns.output[kind]!r} is empty"
            empty.append((kind, detail))
    return prompts, empty


def _check_row(row: Row, columns: Columns, videos_dir: Path, ingest: IngestConfig, csv_path: Path):
    """(video path, None) if the row names a usable clip and caption, else (None, (item, reason, detail))."""
    where = f"{csv_path} line {row.line}"
    name = row.cells[columns.video].replace("\\", "/")
    if not name:  # like ingest, csv:line names a row without a file
        return None, (f"{csv_path}:{row.line}", "missing_file", f"{where}: the {columns.video!r} column is empty")
    path = _resolve_video(videos_dir, str(PurePosixPath(name)), tuple(ingest.extensions))
    if path is None:
        tried = videos_dir / name
        detail = f"{tried} ({where}): no such file, nor with any of the extensions {list(ingest.extensions)}"
        return None, (str(tried), "missing_video", detail)
    if not row.cells[columns.source]:
        return None, (str(path), "empty_caption", f"{path} ({where}): the {columns.source!r} column is empty")
    return path, None


def _decode(path: Path, ingest: IngestConfig) -> np.ndarray:
    frames, _ = decode_clip(path, ingest.frames, ingest.stride, ingest.size)
    frames.flags.writeable = False  # shared by up to seven frozen items
    return frames


def _row_outcome(
    row: Row, columns: Columns, csv_path: Path, videos_dir: Path, ingest: IngestConfig,
    taken: dict[str, int], stage: str,
) -> tuple[list[BenchmarkItem], list[dict[str, Any]]]:
    """One CSV row -> its items and rejects; `taken` maps video_id -> first CSV line."""
    where = f"{csv_path} line {row.line}"
    path, problem = _check_row(row, columns, videos_dir, ingest, csv_path)
    if problem:
        return [], [_reject(stage, *problem)]
    vid = video_id(path.relative_to(videos_dir).as_posix())
    if vid in taken:
        detail = f"{path} ({where}): video_id {vid!r} is already taken by line {taken[vid]}; kept that one"
        return [], [_reject(stage, str(path), "duplicate_id", detail)]
    taken[vid] = row.line
    prompts, empty = _prompts(row, columns)
    rejects = [_reject(stage, f"{vid}/{kind}", "empty_caption", f"{where}: {detail}") for kind, detail in empty]
    if not prompts:
        if not rejects:
            rejects.append(_reject(stage, str(path), "no_prompts", f"{path} ({where}): every edit caption is empty"))
        return [], rejects
    try:
        frames = _decode(path, ingest)
    except ClipError as exc:
        return [], rejects + [_reject(stage, str(path), exc.reason, f"{exc.detail} ({where})")]
    source = row.cells[columns.source]
    items = [
        BenchmarkItem(f"{vid}/{p.kind}", vid, p.kind, TASK_OF[p.kind], p.instruction, source, p.output_caption, frames)
        for p in prompts
    ]
    return items, rejects


def read_benchmark(
    csv_path: Path, videos_dir: Path, ingest: IngestConfig, stage: str = "evaluate"
) -> tuple[list[BenchmarkItem], list[dict[str, Any]]]:
    """Items (CSV row order, then PROMPT_TYPES order) and reject rows (CSV order) of a benchmark."""
    csv_path, videos_dir = Path(csv_path), Path(videos_dir)
    if not videos_dir.is_dir():
        raise BenchmarkError(f"{videos_dir}: benchmark clip folder not found (for {csv_path})")
    columns, rows = _read_csv(csv_path)
    items: list[BenchmarkItem] = []
    rejects: list[dict[str, Any]] = []
    taken: dict[str, int] = {}
    for row in rows:
        row_items, row_rejects = _row_outcome(row, columns, csv_path, videos_dir, ingest, taken, stage)
        items += row_items
        rejects += row_rejects
    return items, rejects
