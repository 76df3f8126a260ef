"""Parquet tables: schemas declared in code, checked on write and on read.

A table is a list of row dicts. `write_table` builds an Arrow table against the declared
schema (so a wrong type fails before anything is written) and writes it atomically;
`read_table` checks that the file has every declared column with the declared type and
runs the table's row checks, naming the file, row and column of the first problem.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


class SchemaError(ValueError):
    """A table on disk (or about to be written) does not match its declared schema."""


RowCheck = Callable[[dict[str, Any]], str | None]


@dataclass(frozen=True)
class TableSpec:
    name: str
    schema: pa.Schema
    key: str  # column that names a row in error messages
    row_checks: tuple[RowCheck, ...] = field(default=())

    def check_row(self, row: dict[str, Any]) -> str | None:
        for check in self.row_checks:
            problem = check(row)
            if problem:
                return problem
        return None


def _check_frames(row: dict[str, Any]) -> str | None:
    n, h, w = row["num_frames"], row["height"], row["width"]
    if min(n, h, w) < 1:
        return f"num_frames/height/width must be positive, got {n}/{h}/{w}"
    expected = n * h * w * 3
    got = len(row["frames"])
    if got != expected:
        return f"frames has {got} bytes, expected num_frames*height*width*3 = {expected}"
    if row["split"] not in ("train", "test"):
        return f"split must be 'train' or 'test', got {row['split']!r}"
    if not row["caption"].strip():
        return "caption is empty"
    return None


VIDEOS = TableSpec(
    name="videos",
    key="video_id",
    schema=pa.schema(
        [
            pa.field("video_id", pa.string(), nullable=False),
            pa.field("split", pa.string(), nullable=False),  # "train" or "test" (held out)
            pa.field("caption", pa.string(), nullable=False),
            pa.field("num_frames", pa.int32(), nullable=False),
            pa.field("height", pa.int32(), nullable=False),
            pa.field("width", pa.int32(), nullable=False),
            pa.field("fps", pa.float32(), nullable=False),
            # uint8 RGB, (num_frames, height, width, 3) in C order
            pa.field("frames", pa.binary(), nullable=False),
            pa.field("source", pa.string(), nullable=False),  # "shapes" or the clip's path
            pa.field("scene", pa.string(), nullable=True),  # Shapes: scene JSON, for ground truth
            pa.field("seed", pa.int64(), nullable=True),  # Shapes: the scene's seed
        ]
    ),
    row_checks=(_check_frames,),
)

def _check_instruction(row: dict[str, Any]) -> str | None:
    if row["status"] not in ("accepted", "rejected"):
        return f"status must be 'accepted' or 'rejected', got {row['status']!r}"
    if row["status"] == "accepted" and (not row["instruction"].strip() or not row["output_caption"].strip()):
        return "an accepted row needs a non-empty instruction and output_caption"
    if row["status"] == "rejected" and not row["reason"]:
        return "a rejected row needs a reason"
    if row["set"] not in ("videos", "subject", "style"):
        return f"set must be 'videos', 'subject' or 'style', got {row['set']!r}"
    return None


INSTRUCTIONS = TableSpec(
    name="instructions",
    key="row_id",
    schema=pa.schema(
        [
            pa.field("row_id", pa.string(), nullable=False),  # video_id/task[/concept]
            pa.field("set", pa.string(), nullable=False),  # videos | subject | style
            pa.field("video_id", pa.string(), nullable=False),
            pa.field("task", pa.string(), nullable=False),
            pa.field("concept", pa.string(), nullable=True),  # the subject or style, for those sets
            pa.field("input_caption", pa.string(), nullable=False),
            pa.field("instruction", pa.string(), nullable=False),  # "" when rejected
            pa.field("output_caption", pa.string(), nullable=False),
            pa.field("edit_spec", pa.string(), nullable=True),  # Shapes: the parsed edit (EditSpec JSON)
            pa.field("model", pa.string(), nullable=False),  # GGUF file name
            pa.field("model_sha256", pa.string(), nullable=False),
            pa.field("prompt_version", pa.string(), nullable=False),
            pa.field("seed", pa.int64(), nullable=False),  # the seed of the last attempt
            pa.field("attempts", pa.int32(), nullable=False),
            pa.field("raw_output", pa.string(), nullable=False),  # the model's text, as returned
            pa.field("status", pa.string(), nullable=False),  # accepted | rejected
            pa.field("reason", pa.string(), nullable=True),  # why the last attempt was rejected
            pa.field("completion_tokens", pa.int32(), nullable=False),  # over all attempts
        ]
    ),
    row_checks=(_check_instruction,),
)

def _check_pair(row: dict[str, Any]) -> str | None:
    expected = row["height"] * row["width"] * 3
    if min(row["height"], row["width"]) < 1:
        return f"height/width must be positive, got {row['height']}/{row['width']}"
    for col in ("input_image", "output_image"):
        if len(row[col]) != expected:
            return f"{col} has {len(row[col])} bytes, expected height*width*3 = {expected}"
    if row["split"] not in ("train", "test"):
        return f"split must be 'train' or 'test', got {row['split']!r}"
    if not row["instruction"].strip() or not row["output_caption"].strip():
        return "instruction and output_caption must be non-empty"
    return None


EDIT_PAIRS = TableSpec(
    name="edit_pairs",
    key="pair_id",
    schema=pa.schema(
        [
            pa.field("pair_id", pa.string(), nullable=False),
            pa.field("split", pa.string(), nullable=False),  # "train" or "test" (held out)
            pa.field("task", pa.string(), nullable=False),
            pa.field("input_caption", pa.string(), nullable=False),
            pa.field("instruction", pa.string(), nullable=False),
            pa.field("output_caption", pa.string(), nullable=False),
            pa.field("edit_spec", pa.string(), nullable=True),  # Shapes: EditSpec JSON; null for an ingested dataset
            pa.field("scene", pa.string(), nullable=True),  # Shapes: the input scene JSON; null for an ingested dataset
            pa.field("frame", pa.int32(), nullable=False),  # which frame of the scene's motion both images show (ingested: 0)
            pa.field("height", pa.int32(), nullable=False),
            pa.field("width", pa.int32(), nullable=False),
            # uint8 RGB, (height, width, 3) in C order: the image before and after the edit
            pa.field("input_image", pa.binary(), nullable=False),
            pa.field("output_image", pa.binary(), nullable=False),
            pa.field("seed", pa.int64(), nullable=True),  # Shapes: the scene's seed; null for an ingested dataset
        ]
    ),
    row_checks=(_check_pair,),
)

REJECTS = TableSpec(
    name="rejects",
    key="item",
    schema=pa.schema(
        [
            pa.field("stage", pa.string(), nullable=False),
            pa.field("item", pa.string(), nullable=False),  # file, row or id that was rejected
            pa.field("reason", pa.string(), nullable=False),  # short machine-readable reason
            pa.field("detail", pa.string(), nullable=False),  # human-readable explanation
        ]
    ),
)


def frames_to_bytes(frames: np.ndarray) -> bytes:
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 (F, H, W, 3), got {frames.dtype} {frames.shape}")
    return np.ascontiguousarray(frames).tobytes()


def frames_from_row(row: dict[str, Any]) -> np.ndarray:
    shape = (row["num_frames"], row["height"], row["width"], 3)
    return np.frombuffer(row["frames"], dtype=np.uint8).reshape(shape)


def write_table(spec: TableSpec, rows: Iterable[dict[str, Any]], path: str | Path) -> int:
    """Validate rows against `spec` and write them to `path` atomically. Returns the row count."""
    rows = list(rows)
    path = Path(path)
    for i, row in enumerate(rows):
        missing = [f.name for f in spec.schema if f.name not in row]
        extra = sorted(set(row) - set(spec.schema.names))
        if missing or extra:
            raise SchemaError(
                f"{path}: {spec.name} row {i} ({row.get(spec.key)!r}): "
                + (f"missing columns {missing}" if missing else "")
                + (" and " if missing and extra else "")
                + (f"unexpected columns {extra}" if extra else "")
            )
    try:
        table = pa.Table.from_pylist(rows, schema=spec.schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise SchemaError(f"{path}: {spec.name}: a value does not fit the declared schema: {exc}") from None
    _check_rows(spec, rows, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp, compression="zstd", row_group_size=256)
    os.replace(tmp, path)
    return len(rows)


def count_rows(path: str | Path) -> int:
    """Rows of a parquet table, from its footer (nothing else is read)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: not found; run the stage that writes it first")
    return pq.ParquetFile(path).metadata.num_rows


def read_table(spec: TableSpec, path: str | Path) -> list[dict[str, Any]]:
    """Read `path`, check it against `spec`, and return its rows."""
    path = Path(path)
    if not path.is_file():
        raise SchemaError(f"{path}: {spec.name} table not found")
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise SchemaError(f"{path}: not a readable parquet file: {exc}") from None
    for f in spec.schema:
        if f.name not in table.schema.names:
            raise SchemaError(f"{path}: {spec.name} table has no column '{f.name}' (expected {f.type})")
        got = table.schema.field(f.name).type
        if got != f.type:
            raise SchemaError(f"{path}: column '{f.name}' has type {got}, expected {f.type}")
        if not f.nullable and table.column(f.name).null_count:
            raise SchemaError(f"{path}: column '{f.name}' has {table.column(f.name).null_count} null values; it may not be null")
    extra = sorted(set(table.schema.names) - set(spec.schema.names))
    if extra:
        raise SchemaError(f"{path}: {spec.name} table has unexpected columns {extra}")
    rows = table.select(spec.schema.names).to_pylist()
    _check_rows(spec, rows, path)
    return rows


def _check_rows(spec: TableSpec, rows: list[dict[str, Any]], path: Path) -> None:
    for i, row in enumerate(rows):
        problem = spec.check_row(row)
        if problem:
            raise SchemaError(f"{path}: {spec.name} row {i} ({row.get(spec.key)!r}): {problem}")
