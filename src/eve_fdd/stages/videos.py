"""Stage `videos`: the input-only video set (METHOD.md section 3).

Shapes: render `videos.count` scenes, each from its own seed, with the scene stored for the
ground truth. Full: ingest a folder of real clips plus a captions CSV; clips that cannot be
used are written to the rejects table with the reason. Outputs (under `out_dir`):
`videos.parquet`, `rejects.parquet`, `samples/` (contact sheet PNG + GIFs); the metrics json.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ..config import Config, IngestConfig
from ..data import tables
from ..data.ingest import ingest_folder
from ..data.splits import shards, split_of, stream_seed
from ..data.video import contact_sheet, write_gif
from ..world import caption, random_scene, render_video

STAGE = "videos"
PARAMS = ("profile", "seed", "world", "videos")  # what this stage reads, as in dvc.yaml


def scene_seed(seed: int, index: int) -> int:
    """Independent, reproducible seed for video `index` of a run seeded with `seed`."""
    return stream_seed(seed, index)


def render_shapes(cfg: Config, indices: range) -> list[dict[str, Any]]:
    """Rows of the videos table for Shapes videos `indices`."""
    w, rows = cfg.world, []
    for i in indices:
        seed = scene_seed(cfg.seed, i)
        scene = random_scene(seed, w.min_shapes, w.max_shapes, w.speed)
        frames = render_video(scene, w.frames, w.size, w.supersample)
        video_id = f"shapes-{i:05d}"
        rows.append(
            dict(
                video_id=video_id,
                split=split_of(video_id, cfg.videos.test_fraction),
                caption=caption(scene),
                num_frames=w.frames,
                height=w.size,
                width=w.size,
                fps=cfg.videos.fps,
                frames=tables.frames_to_bytes(frames),
                source="shapes",
                scene=scene.to_json(),
                seed=seed,
            )
        )
    return rows


def ingest_clips(ingest: IngestConfig, test_fraction: float) -> tuple[list[dict], list[dict]]:
    rows, rejects = ingest_folder(ingest, stage=STAGE)
    for row in rows:
        row["split"] = split_of(row["video_id"], test_fraction)
    return rows, rejects


@dataclass
class Outputs:
    videos: Path
    rejects: Path
    samples: list[Path]
    metrics: dict[str, float]


def summarize(rows: list[dict], rejects: list[dict]) -> dict[str, float]:
    metrics: dict[str, float] = {
        "videos": len(rows),
        "train": sum(r["split"] == "train" for r in rows),
        "test": sum(r["split"] == "test" for r in rows),
        "rejected": len(rejects),
        "frames": sum(r["num_frames"] for r in rows),
    }
    for reason, n in sorted(Counter(r["reason"] for r in rejects).items()):
        metrics[f"rejected.{reason}"] = n
    if rows:
        # mean absolute change between consecutive frames: how much the set moves
        diffs = [np.abs(np.diff(tables.frames_from_row(r).astype(np.int16), axis=0)).mean() for r in rows if r["num_frames"] > 1]
        metrics["mean_frame_diff"] = round(float(np.mean(diffs)), 4) if diffs else 0.0
        shapes = [len(json.loads(r["scene"])["shapes"]) for r in rows if r["scene"]]
        if shapes:
            metrics["mean_shapes"] = round(float(np.mean(shapes)), 4)
    return metrics


def write_samples(rows: list[dict], out_dir: Path, count: int) -> list[Path]:
    """A contact sheet of the first `count` videos and one GIF each, for people to look at."""
    out_dir.mkdir(parents=True, exist_ok=True)
    picked = rows[:count]
    if not picked:
        return []
    videos = [tables.frames_from_row(r) for r in picked]
    scale = max(1, 128 // max(v.shape[1] for v in videos))
    sheet = out_dir / "contact_sheet.png"
    contact_sheet(videos, sheet, scale=scale, captions=[f"{r['video_id']}: {r['caption']}" for r in picked])
    paths = [sheet]
    for r, v in zip(picked, videos):
        gif = out_dir / f"{r['video_id']}.gif"
        write_gif(v, gif, fps=r["fps"], scale=scale)
        paths.append(gif)
    return paths


def write_outputs(cfg: Config, rows: list[dict], rejects: list[dict], out_dir: Path) -> Outputs:
    rows = sorted(rows, key=lambda r: r["video_id"])
    out_dir.mkdir(parents=True, exist_ok=True)
    videos = out_dir / "videos.parquet"
    rejected = out_dir / "rejects.parquet"
    tables.write_table(tables.VIDEOS, rows, videos)
    tables.write_table(tables.REJECTS, rejects, rejected)
    samples = write_samples(rows, out_dir / "samples", cfg.videos.samples)
    return Outputs(videos, rejected, samples, summarize(rows, rejects))


def run(cfg: Config, out_dir: Path, progress: bool = True) -> Outputs:
    """The whole stage without orchestration (the Prefect flow splits the same work into tasks)."""
    if cfg.profile == "shapes":
        rows = []
        for r in tqdm(shards(cfg.videos.count, cfg.videos.shard_size), desc="render", disable=not progress):
            rows.extend(render_shapes(cfg, r))
        rejects: list[dict] = []
    else:
        rows, rejects = ingest_clips(cfg.videos.ingest, cfg.videos.test_fraction)
    return write_outputs(cfg, rows, rejects, out_dir)
