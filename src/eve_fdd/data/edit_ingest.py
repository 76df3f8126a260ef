"""The full profile's `edit_pairs` stage: an image-edit dataset in InstructPix2Pix's layout ->
edit pairs rows.

Two layouts (`EditIngestConfig.layout`):
- parquet: Hugging Face's InstructPix2Pix files (timbrooks/instructpix2pix-clip-filtered),
  columns original_prompt (input caption), original_image, edit_prompt (instruction),
  edited_prompt (output caption), edited_image, optional task. An image is a
  `{bytes, path}` struct (what `datasets` writes) or plain encoded PNG/JPEG bytes. Files are
  read one batch at a time, so only one row group's images are in memory before decoding.
  A row is named `<file>:row <i>`; its pair id is `ip2p-<file, relative to source>-<i:07d>`.
- folder: images plus pairs.jsonl or pairs.csv with fields input_image, edited_image (paths
  relative to the folder), instruction, input_caption, output_caption, optional task. A row
  is named `<index file> line <n>`; its pair id is a slug of both image paths, so it stays
  the same when rows are added or reordered.

Every row read ends up either as one accepted row or as one reject row (tables.REJECTS), so
`len(rows) + len(rejects) == rows read` (the first `limit` rows when a limit is set).
Reasons: missing_field (an empty instruction, caption or image field), missing_file (folder:
no such image), malformed (a jsonl line that is not a JSON object), undecodable (PIL cannot
decode it), not_rgb (any other mode: L, RGBA, CMYK, P...; never converted), size_mismatch
(input and edited image differ in size), caption_too_long (a text over `max_tokens` by
`count_tokens`), unknown_task (a task value outside world.vocab.TASKS), duplicate_id (a pair
id already taken: the first row keeps it). Problems with the input as a whole (no source,
no index file, a file without the needed columns) raise `IngestError`.

The task: the data's `task` (lower-cased) when present, else `assign_task(instruction)`, a
keyword rule (TASK_RULES); `counts` says how many accepted rows took each way.
"""

from __future__ import annotations

import io
import json
import re
from collections import Counter
from dataclasses import dataclass
from itertools import islice
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image
from tqdm import tqdm

from ..config import EditIngestConfig
from ..world.vocab import TASKS
from .ingest import IngestError, _reject, csv_records
from .splits import split_of
from .tables import frames_to_bytes
from .video import resize_center_crop

# parquet layout: our field -> InstructPix2Pix's column
PARQUET_COLUMNS = {
    "input_caption": "original_prompt",
    "input_image": "original_image",
    "instruction": "edit_prompt",
    "output_caption": "edited_prompt",
    "edited_image": "edited_image",
}
FOLDER_FIELDS = ("input_image", "edited_image", "instruction", "input_caption", "output_caption")
INDEX_FILES = ("pairs.jsonl", "pairs.csv")
TEXT_FIELDS = ("input_caption", "instruction", "output_caption")
BATCH_ROWS = 64  # parquet rows decoded at a time

# The keyword rule for rows without a task: the first task whose pattern matches the
# instruction (case-insensitive, whole words), else "local" (an edit of one object's
# attributes: "turn the cat into a dog", "make her hair red"). Order matters: "remove the
# hat and add a scarf" is a removal, "make it look like a painting" a style, not global.
TASK_RULES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (task, re.compile(rf"\b(?:{pattern})\b", re.IGNORECASE))
    for task, pattern in (
        ("remove", r"remove|delete|erase|get rid of|take (?:out|away|off)|eliminate|without"),
        ("add", r"add|insert|put|place|include"),
        ("background", r"background|behind|backdrop|scene|scenery|setting"),
        ("style", (r"style|painting|painted|drawing|drawn|sketch|cartoon|anime|watercolou?r|oil paint(?:ing)?|pixel art"
                   r"|in the style of|make it look like an?")),
        ("texture", (r"texture[ds]?|made (?:out )?of|wooden|wood|metal(?:lic)?|glass|marble|knitted|stone|golden|plastic"
                     r"|furry|leather|brick")),
        ("global", (r"weather|season|night(?:time)?|day(?:time)?|winter|summer|autumn|spring|snow(?:y|ing)?|rain(?:y|ing)?"
                    r"|sunset|sunrise|lighting|fog(?:gy)?|make it")),
    )
)
FALLBACK_TASK = "local"


def assign_task(instruction: str) -> str:
    """The task of an instruction by TASK_RULES: the first (task, pattern) in order that
    matches a whole word or phrase, case-insensitively, else FALLBACK_TASK ("local"):

    1. remove: remove, delete, erase, get rid of, take out/away/off, eliminate, without
    2. add: add, insert, put, place, include
    3. background: background, behind, backdrop, scene, scenery, setting
    4. style: style, painting, painted, drawing, drawn, sketch, cartoon, anime, watercolo(u)r,
       oil paint(ing), pixel art, in the style of, make it look like a(n)
    5. texture: texture(s/d), made (out) of, wooden, wood, metal(lic), glass, marble, knitted,
       stone, golden, plastic, furry, leather, brick
    6. global: weather, season, night(time), day(time), winter, summer, autumn, spring,
       snow(y/ing), rain(y/ing), sunset, sunrise, lighting, fog(gy), make it
    7. local: anything else (one object changed: "turn the cat into a dog")
    """
    for task, pattern in TASK_RULES:
        if pattern.search(instruction):
            return task
    return FALLBACK_TASK


@dataclass
class SourceRow:
    where: str  # "<file>:row <i>" or "<index> line <n>", for messages
    pair_id: str
    texts: dict[str, str]  # input_caption, instruction, output_caption (stripped; "" when absent)
    task: str  # "" when the data has none
    images: dict[str, bytes | Path | None]  # input_image, edited_image: encoded bytes or a file
    problem: tuple[str, str] | None = None  # (reason, detail) found while reading


class RowError(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def resolve_layout(cfg: EditIngestConfig) -> str:
    source = Path(cfg.source)
    if not source.exists():
        raise IngestError(f"{source}: image-edit dataset not found (edit_pairs.ingest.source; expected a .parquet file or a folder)")
    if cfg.layout != "auto":
        return cfg.layout
    if source.is_file():
        return "parquet" if source.suffix == ".parquet" else "folder"
    return "parquet" if any(source.rglob("*.parquet")) else "folder"


def nothing_to_ingest(cfg: EditIngestConfig) -> bool:
    """True when `source` is a folder with nothing but README files and dotfiles (the
    repository's raw/edit_pairs/ as it comes) and neither layout nor index is set: no dataset
    was given. Anything else is ingested (and an unusable one raises IngestError)."""
    source = Path(cfg.source)
    if cfg.layout != "auto" or cfg.index or not source.is_dir():
        return False
    return not any(p.is_file() and not p.name.startswith(".") and not p.name.upper().startswith("README")
                   for p in source.rglob("*"))


def _parquet_files(source: Path) -> list[Path]:
    files = [source] if source.is_file() else sorted(source.rglob("*.parquet"))
    if not files:
        raise IngestError(f"{source}: no .parquet files (edit_pairs.ingest.layout is parquet)")
    return files


def _image_kind(path: Path, schema: pa.Schema, column: str) -> str:
    kind = schema.field(column).type
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        return "binary"
    if pa.types.is_struct(kind) and kind.get_field_index("bytes") >= 0:
        return "struct"
    raise IngestError(f"{path}: column {column!r} is {kind}; expected a struct {{bytes, path}} (datasets' Image) or binary")


def _parquet_rows(source: Path, files: list[Path]) -> Iterator[SourceRow]:
    for path in files:
        handle = pq.ParquetFile(path)
        names = handle.schema_arrow.names
        missing = [c for c in PARQUET_COLUMNS.values() if c not in names]
        if missing:
            raise IngestError(f"{path}: missing columns {missing} (expected InstructPix2Pix's "
                              f"{', '.join(PARQUET_COLUMNS.values())}, optional task; found {names})")
        kinds = {c: _image_kind(path, handle.schema_arrow, c) for c in ("original_image", "edited_image")}
        columns = list(PARQUET_COLUMNS.values()) + (["task"] if "task" in names else [])
        stem = _slug(path.name if source.is_file() else path.relative_to(source).as_posix())
        i = 0
        for batch in handle.iter_batches(batch_size=BATCH_ROWS, columns=columns):
            for record in batch.to_pylist():
                where = f"{path}:row {i}"
                texts = {ours: _field(record, theirs) for ours, theirs in PARQUET_COLUMNS.items() if ours in TEXT_FIELDS}
                images = {ours: _parquet_image(record[PARQUET_COLUMNS[ours]], kinds[PARQUET_COLUMNS[ours]])
                          for ours in ("input_image", "edited_image")}
                yield SourceRow(where, f"ip2p-{stem}-{i:07d}", texts, _field(record, "task").lower(), images)
                i += 1


def _parquet_image(value: Any, kind: str) -> bytes | None:
    if value is None:
        return None
    data = value.get("bytes") if kind == "struct" else value
    return data or None


def _index_path(root: Path, index: str) -> Path:
    if index:
        path = root / index
        if not path.is_file():
            raise IngestError(f"{path}: index file not found (edit_pairs.ingest.index)")
        return path
    found = [root / name for name in INDEX_FILES if (root / name).is_file()]
    if not found:
        raise IngestError(f"{root}: no {' or '.join(INDEX_FILES)} (expected images plus an index with fields "
                          f"{', '.join(FOLDER_FIELDS)}, optional task; or InstructPix2Pix's *.parquet files)")
    return found[0]


def _folder_records(index: Path) -> Iterator[tuple[int, dict[str, Any] | None]]:
    """(line, record) per row of a jsonl or csv index; record None for a jsonl line that is not a JSON object."""
    if index.suffix == ".jsonl":
        with index.open(encoding="utf-8-sig") as handle:
            for line, text in enumerate(handle, start=1):
                if not text.strip():
                    continue
                try:
                    record = json.loads(text)
                except ValueError:
                    record = None
                yield line, record if isinstance(record, dict) else None
        return
    yield from csv_records(index, FOLDER_FIELDS, f"expected {', '.join(FOLDER_FIELDS)}, optional task")


def _folder_rows(root: Path, index: Path) -> Iterator[SourceRow]:
    for line, record in _folder_records(index):
        where = f"{index} line {line}"
        if record is None:
            row = SourceRow(where, f"{index.name}-line-{line}", {}, "", {})
            row.problem = ("malformed", f"{where}: not a JSON object")
            yield row
            continue
        paths = {key: _field(record, key).replace("\\", "/") for key in ("input_image", "edited_image")}
        images = {key: (root / PurePosixPath(p)) if p else None for key, p in paths.items()}
        pair_id = f"{_slug(paths['input_image'])}--{_slug(paths['edited_image'])}" if all(paths.values()) else f"{index.name}-line-{line}"
        yield SourceRow(where, pair_id, {key: _field(record, key) for key in TEXT_FIELDS}, _field(record, "task").lower(), images)


def _field(record: dict[str, Any], key: str) -> str:
    """A text field, stripped; "" when absent or null (csv leaves absent trailing fields None)."""
    value = record.get(key)
    return "" if value is None else str(value).strip()


def _slug(path: str) -> str:
    """`in/0001 cat.png` -> `in_0001_cat`."""
    stem = str(PurePosixPath(path).with_suffix("")) if path else ""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("_")


def _check_texts(row: SourceRow, count_tokens: Callable[[str], int] | None, max_tokens: int) -> None:
    empty = [k for k in TEXT_FIELDS if not row.texts.get(k)] + [k for k in ("input_image", "edited_image") if not row.images.get(k)]
    if empty:
        raise RowError("missing_field", f"{row.where}: empty {', '.join(empty)}")
    if row.task and row.task not in TASKS:
        raise RowError("unknown_task", f"{row.where}: task {row.task!r} is not one of {', '.join(TASKS)}")
    if count_tokens is not None:
        long = [(k, count_tokens(row.texts[k])) for k in TEXT_FIELDS]
        long = [(k, n) for k, n in long if n > max_tokens]
        if long:
            said = ", ".join(f"{k} is {n} tokens" for k, n in long)
            raise RowError("caption_too_long", f"{row.where}: {said}, more than {max_tokens}")


def decode_rgb(ref: bytes | Path, field: str, where: str) -> np.ndarray:
    """An RGB image (uint8 (H, W, 3)) from a file or encoded bytes, named `<where> <field>`
    in the RowError (missing_file, not_rgb, undecodable) that says why it cannot be one."""
    name = f"{where} {field}" + (f" ({ref})" if isinstance(ref, Path) else "")
    if isinstance(ref, Path) and not ref.is_file():
        raise RowError("missing_file", f"{name}: no such file")
    try:
        with Image.open(ref if isinstance(ref, Path) else io.BytesIO(ref)) as image:
            image.load()
            if image.mode != "RGB":
                raise RowError("not_rgb", f"{name}: mode {image.mode}, expected RGB (not converted)")
            return np.asarray(image)
    except RowError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise RowError("undecodable", f"{name}: not a readable image ({type(exc).__name__}: {exc})") from None


def _pair_row(row: SourceRow, size: int, test_fraction: float) -> dict[str, Any]:
    before, after = (decode_rgb(row.images[k], k, row.where) for k in ("input_image", "edited_image"))  # type: ignore[arg-type]
    if before.shape != after.shape:
        raise RowError("size_mismatch", f"{row.where}: input_image is {before.shape[1]}x{before.shape[0]}, "
                                        f"edited_image {after.shape[1]}x{after.shape[0]} (width x height); they must match")
    before, after = resize_center_crop(before, size), resize_center_crop(after, size)
    return dict(
        pair_id=row.pair_id, split=split_of(row.pair_id, test_fraction), task=row.task or assign_task(row.texts["instruction"]),
        input_caption=row.texts["input_caption"], instruction=row.texts["instruction"], output_caption=row.texts["output_caption"],
        edit_spec=None, scene=None, frame=0, height=size, width=size,
        input_image=frames_to_bytes(before[None]), output_image=frames_to_bytes(after[None]), seed=None,
    )


def ingest_edit_pairs(
    cfg: EditIngestConfig,
    test_fraction: float,
    count_tokens: Callable[[str], int] | None = None,
    max_tokens: int = 77,
    stage: str = "edit_pairs",
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, int]]:
    """Read and check every row of the dataset at cfg.source; returns (rows, rejects, counts).

    Rows have every tables.EDIT_PAIRS column (edit_spec, scene and seed null, frame 0), sorted
    by pair_id; rejects are as tables.REJECTS declares, sorted by item then reason. counts:
    `task_from_data` and `task_from_rule`, over the accepted rows. With `count_tokens`, a text
    longer than `max_tokens` by it is a reject (CLIP: 77 with its start and end tokens).
    """
    source = Path(cfg.source)
    layout = resolve_layout(cfg)
    if layout == "parquet":
        files = _parquet_files(source)
        reader, total = _parquet_rows(source, files), sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    else:
        if not source.is_dir():
            raise IngestError(f"{source}: expected a folder with images and {' or '.join(INDEX_FILES)} (edit_pairs.ingest.layout is folder)")
        reader, total = _folder_rows(source, _index_path(source, cfg.index)), None
    if cfg.limit:
        total = min(total, cfg.limit) if total is not None else cfg.limit
    rows: dict[str, dict[str, Any]] = {}
    first: dict[str, str] = {}  # pair_id -> the row that claimed it
    rejects: list[dict[str, Any]] = []
    tally: Counter[str] = Counter()
    for row in tqdm(islice(reader, cfg.limit or None), total=total, desc="ingest edit pairs", unit="pair"):
        try:
            if row.problem:
                raise RowError(*row.problem)
            if row.pair_id in first:
                raise RowError("duplicate_id", f"{row.where}: pair id {row.pair_id!r} is already taken by {first[row.pair_id]}; kept that one")
            first[row.pair_id] = row.where
            _check_texts(row, count_tokens, max_tokens)
            rows[row.pair_id] = _pair_row(row, cfg.size, test_fraction)
            tally["task_from_data" if row.task else "task_from_rule"] += 1
        except RowError as exc:
            rejects.append(_reject(stage, row.where, exc.reason, exc.detail))
    counts = {k: tally[k] for k in ("task_from_data", "task_from_rule")}
    return sorted(rows.values(), key=lambda r: r["pair_id"]), sorted(rejects, key=lambda r: (r["item"], r["reason"])), counts
