"""Stage `edit_pairs`: supervised image-edit pairs for the edit adapter (single images only:
the edit adapter never sees an edited video). Outputs: `pairs.parquet`, `rejects.parquet`,
`samples/`, and the metrics.

Shapes, the stand-in for Emu Edit's data (METHOD.md section 2): for each pair a scene from its
own seed (disjoint from the video set's), one of the seven base tasks (round robin, so every
task gets the same share), the world's edit with its instruction and output caption, and the
same frame of the scene rendered before and after the edit. Reserved subjects and styles are
never used (they are the LoRA experiment's). A task that does not apply to a scene (remove
from one shape, add to five) is a reject row, kept with its reason.

Full: an image-edit dataset in InstructPix2Pix's layout at `edit_pairs.ingest.source`
(data/edit_ingest.py: parquet files or images + pairs.jsonl/csv), every row checked, texts
counted with the backbone's CLIP tokenizer (`models.backbone.pretrained`, its `tokenizer/`),
each unusable row a counted reject. No scene: `edit_spec`, `scene` and `seed` are null. The
task comes from the data or from a keyword rule on the instruction (metrics `task_from_data`,
`task_from_rule`). A source folder with nothing in it but README files (the repository's
raw/edit_pairs/) means no dataset: the table is empty and `pretrained_edit_adapter` is 1 (the
edit adapter can only be the ControlNet `edit_adapter.pretrained` names); it is 0 whenever
there are pairs.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..config import Config
from ..data import tables
from ..data.edit_ingest import ingest_edit_pairs, nothing_to_ingest
from ..data.splits import EDIT_PAIRS_STREAM, shards, split_of, stream_seed
from ..data.video import contact_sheet, display_scale
from ..world import applicable, caption, make_edit, random_scene, render_frame, vocab

STAGE = "edit_pairs"
PARAMS = ("profile", "seed", "world", "edit_pairs", "models.backbone.pretrained")  # as in dvc.yaml


def pair_seed(seed: int, index: int) -> int:
    return stream_seed(seed, index, EDIT_PAIRS_STREAM)


def make_pairs(cfg: Config, indices: range) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Shapes: rows of the edit pairs table for pairs `indices`, and reject rows (the full
    profile ingests its pairs instead: `ingest_pairs`)."""
    if cfg.profile == "full":
        raise ValueError("make_pairs renders Shapes pairs; the full profile ingests them (ingest_pairs)")
    w, rows, rejects = cfg.world, [], []
    for i in indices:
        seed = pair_seed(cfg.seed, i)
        rng = np.random.default_rng(seed)
        task = vocab.TASKS[i % len(vocab.TASKS)]
        scene = random_scene(seed, w.min_shapes, w.max_shapes, w.speed)
        pair_id = f"pair-{i:06d}-{task}"
        if not applicable(scene, task):
            rejects.append(dict(stage=STAGE, item=pair_id, reason="not_applicable",
                                detail=f"{pair_id} (seed {seed}): task {task!r} does not apply to {caption(scene)!r}"))
            continue
        edit = make_edit(scene, task, rng, tuple(w.speed))
        frame = int(rng.integers(w.frames))
        before = render_frame(scene, frame, w.size, w.supersample)
        after = render_frame(edit.scene, frame, w.size, w.supersample)
        rows.append(dict(
            pair_id=pair_id, split=split_of(pair_id, cfg.edit_pairs.test_fraction), task=task,
            input_caption=caption(scene), instruction=edit.instruction, output_caption=edit.output_caption,
            edit_spec=edit.spec.to_json(), scene=scene.to_json(), frame=frame, height=w.size, width=w.size,
            input_image=tables.frames_to_bytes(before[None]), output_image=tables.frames_to_bytes(after[None]), seed=seed,
        ))
    return rows, rejects


def ingest_pairs(cfg: Config) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, int]]:
    """Full: (rows, rejects, counts) of the dataset at `edit_pairs.ingest.source`, texts over the
    backbone tokenizer's limit rejected; nothing (and no tokenizer loaded) when no dataset was given."""
    ingest = cfg.edit_pairs.ingest
    if nothing_to_ingest(ingest):
        print(f"edit_pairs: {ingest.source} holds no dataset; no pairs (the edit adapter is edit_adapter.pretrained)")
        return [], [], {}
    from ..models.text import backbone_tokenizer, token_counter

    count_tokens, max_tokens = token_counter(backbone_tokenizer(cfg.models.backbone.pretrained))
    return ingest_edit_pairs(ingest, cfg.edit_pairs.test_fraction, count_tokens, max_tokens, stage=STAGE)


def image(row: dict[str, Any], column: str) -> np.ndarray:
    """(H, W, 3) uint8 of a pair's input_image or output_image."""
    return np.frombuffer(row[column], dtype=np.uint8).reshape(row["height"], row["width"], 3)


@dataclass
class Outputs:
    pairs: Path
    rejects: Path
    samples: list[Path]
    metrics: dict[str, float]


def summarize(rows: list[dict], rejects: list[dict]) -> dict[str, float]:
    metrics: dict[str, float] = {
        "pairs": len(rows),
        "train": sum(r["split"] == "train" for r in rows),
        "test": sum(r["split"] == "test" for r in rows),
        "rejected": len(rejects),
    }
    for task, n in sorted(Counter(r["task"] for r in rows).items()):
        metrics[f"task.{task}"] = n
    for reason, n in sorted(Counter(r["reason"] for r in rejects).items()):
        metrics[f"rejected.{reason}"] = n
    if rows:  # how much an edit changes the image, per task: the "return the input" baseline's error
        for task in sorted({r["task"] for r in rows}):
            diffs = [np.abs(image(r, "output_image").astype(np.int16) - image(r, "input_image")).mean() / 255 for r in rows if r["task"] == task]
            metrics[f"identity_l1.{task}"] = round(float(np.mean(diffs)), 5)
    return metrics


def write_outputs(cfg: Config, rows: list[dict], rejects: list[dict], out_dir: Path, counts: dict[str, int] | None = None) -> Outputs:
    """Write the tables and the contact sheet; metrics are `summarize`'s plus `counts` (the
    full profile's task_from_data / task_from_rule) and `pretrained_edit_adapter`."""
    rows = sorted(rows, key=lambda r: r["pair_id"])
    out_dir.mkdir(parents=True, exist_ok=True)
    pairs, rejected = out_dir / "pairs.parquet", out_dir / "rejects.parquet"
    tables.write_table(tables.EDIT_PAIRS, rows, pairs)
    tables.write_table(tables.REJECTS, rejects, rejected)
    samples: list[Path] = []
    picked = _one_per_task(rows, cfg.edit_pairs.samples)
    if picked:
        sheet = out_dir / "samples" / "contact_sheet.png"
        sheet.parent.mkdir(parents=True, exist_ok=True)
        contact_sheet([np.stack([image(r, "input_image"), image(r, "output_image")]) for r in picked], sheet,
                      scale=display_scale(picked[0]["width"]), captions=[f"{r['task']}: {r['instruction']}" for r in picked])
        samples.append(sheet)
    # with no pairs (full, no dataset given) the edit adapter can only be the pretrained ControlNet
    metrics = summarize(rows, rejects) | dict(counts or {}) | {"pretrained_edit_adapter": int(cfg.profile == "full" and not rows)}
    return Outputs(pairs, rejected, samples, metrics)


def _one_per_task(rows: list[dict], count: int) -> list[dict]:
    """Up to `count` pairs, cycling through the tasks so every task shows."""
    by_task: dict[str, list[dict]] = {}
    for r in rows:
        by_task.setdefault(r["task"], []).append(r)
    out: list[dict] = []
    depth = 0
    while len(out) < count and any(depth < len(v) for v in by_task.values()):
        out += [v[depth] for v in by_task.values() if depth < len(v)][: count - len(out)]
        depth += 1
    return out


def run(cfg: Config, out_dir: Path) -> Outputs:
    """The whole stage without orchestration (the Prefect flow splits the same work into tasks)."""
    if cfg.profile == "full":
        rows, rejects, counts = ingest_pairs(cfg)
        return write_outputs(cfg, rows, rejects, out_dir, counts)
    rows, rejects = [], []
    for r in shards(cfg.edit_pairs.count, cfg.edit_pairs.shard_size):
        got, bad = make_pairs(cfg, r)
        rows += got
        rejects += bad
    return write_outputs(cfg, rows, rejects, out_dir)
