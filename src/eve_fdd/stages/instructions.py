"""Stages `instructions` and `subject_style_instructions` (METHOD.md section 3).

`instructions`: one instruction per task (add, remove, background, texture, local, style,
global) for every video. `subject_style_instructions`: the subject set (input captions with
an instruction that adds the subject or replaces an item with it) and the style set (an
instruction to render the image in the style), `instructions.subject_style_count` captions
per subject and per style, from training videos. Outputs: `<name>.parquet` (one row per
request, accepted or rejected) and `<name>_rejects.parquet` (every failed attempt).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import Config
from ..data import tables
from ..llm import generate as gen
from ..llm.tiny import load_llama
from ..world import Scene, applicable, vocab
from .llm import model_info

VIDEOS_STAGE = "instructions"
SUBJECT_STYLE_STAGE = "subject_style_instructions"
PARAMS = ("profile", "seed", "llm", "instructions")


def _scene(row: dict) -> Scene | None:
    return Scene.from_json(row["scene"]) if row["scene"] else None


def _request(cfg: Config, row: dict, set_: str, task: str, concept: str | None = None) -> gen.Request:
    row_id = f"{row['video_id']}/{task}" + (f"/{concept}" if concept else "")
    return gen.Request(
        row_id=row_id, set=set_, video_id=row["video_id"], task=task, caption=row["caption"], concept=concept,
        scene=_scene(row), seed=gen.derive_seed(cfg.seed, row_id),
    )


def video_requests(cfg: Config, videos: list[dict]) -> tuple[list[gen.Request], list[dict]]:
    """Seven requests per video; a task that cannot apply to a Shapes scene (add to a full
    scene, remove its only shape) is recorded as a reject instead of asked."""
    requests, skipped = [], []
    for row in videos:
        scene = _scene(row)
        for task in vocab.TASKS:
            if scene is not None and not applicable(scene, task):
                skipped.append(dict(stage=VIDEOS_STAGE, item=f"{row['video_id']}/{task}", reason="not_applicable",
                                    detail=f"{row['video_id']}: a {task} edit cannot apply to {row['caption']!r}"))
                continue
            requests.append(_request(cfg, row, "videos", task))
    return requests, skipped


def subject_style_requests(cfg: Config, videos: list[dict]) -> list[gen.Request]:
    """For each subject: `count` training captions, alternating add / replace; for each style:
    `count` captions with a style instruction."""
    ic = cfg.instructions
    train = [r for r in videos if r["split"] == "train"] or videos
    requests = []
    for s, subject in enumerate(ic.subjects):
        for i in range(ic.subject_style_count):
            row = train[(s * ic.subject_style_count + i) % len(train)]
            task = "add" if i % 2 == 0 else "replace"
            if task == "add" and (scene := _scene(row)) is not None and not applicable(scene, "add"):
                task = "replace"
            requests.append(_request(cfg, row, "subject", task, subject))
    for s, style in enumerate(ic.styles):
        for i in range(ic.subject_style_count):
            row = train[(s * ic.subject_style_count + i + len(ic.subjects)) % len(train)]
            requests.append(_request(cfg, row, "style", "style", style))
    return requests


def load_writer(cfg: Config, llm_dir: Path, cache_dir: Path) -> gen.Writer:
    info = model_info(llm_dir)
    path = Path(info["path"])
    model = load_llama(path, n_ctx=cfg.llm.n_ctx, n_threads=cfg.llm.n_threads, n_gpu_layers=cfg.llm.n_gpu_layers, seed=cfg.seed)
    return gen.Writer(
        model=model, model_name=path.name, model_sha256=info["sha256"], profile=cfg.profile, sampling=cfg.llm,
        grammar=gen.json_grammar(), cache=gen.Cache(cache_dir / "completions.sqlite"), scene_grammar=cfg.instructions.grammar,
    )


def shards(requests: list[gen.Request], size: int) -> list[list[gen.Request]]:
    return [requests[i : i + size] for i in range(0, len(requests), size)]


def summarize(rows: list[dict], rejects: list[dict], stats: gen.Stats) -> dict[str, Any]:
    """Counts per task, acceptance (first try and after retries), the share of distinct
    instructions among the accepted ones, rejects by reason, speed."""
    m: dict[str, Any] = {"requests": len(rows), "accepted": sum(r["status"] == "accepted" for r in rows)}
    m["acceptance"] = round(m["accepted"] / len(rows), 4) if rows else 0.0
    m["first_try_acceptance"] = round(sum(r["status"] == "accepted" and r["attempts"] == 1 for r in rows) / len(rows), 4) if rows else 0.0
    for task in sorted({r["task"] for r in rows}):
        sub = [r for r in rows if r["task"] == task]
        m[f"task.{task}.requests"] = len(sub)
        m[f"task.{task}.acceptance"] = round(sum(r["status"] == "accepted" for r in sub) / len(sub), 4)
        m[f"task.{task}.first_try"] = round(sum(r["status"] == "accepted" and r["attempts"] == 1 for r in sub) / len(sub), 4)
        accepted = [r["instruction"] for r in sub if r["status"] == "accepted"]
        m[f"task.{task}.distinct"] = round(len(set(accepted)) / len(accepted), 4) if accepted else 0.0
    for reason, n in sorted(Counter(r["reason"] for r in rejects).items()):
        m[f"rejects.{reason}"] = n
    m["rejected_attempts"] = len(rejects)
    m.update(model_calls=stats.model_calls, cache_hits=stats.cache_hits, completion_tokens=stats.completion_tokens,
             tokens_per_second=round(stats.tokens_per_second, 2), model_seconds=round(stats.model_seconds, 2))
    return m


@dataclass
class Outputs:
    table: Path
    rejects: Path
    metrics: dict[str, Any]


def write_outputs(name: str, rows: list[dict], rejects: list[dict], stats: gen.Stats, out_dir: Path) -> Outputs:
    table, rejected = out_dir / f"{name}.parquet", out_dir / f"{name}_rejects.parquet"
    tables.write_table(tables.INSTRUCTIONS, rows, table)
    tables.write_table(tables.REJECTS, rejects, rejected)
    return Outputs(table, rejected, summarize(rows, rejects, stats))


def examples(rows: list[dict], count: int) -> dict[str, list]:
    """An MLflow table: the first accepted rows of each task, then rejected ones."""
    picked: list[dict] = []
    for task in sorted({r["task"] for r in rows}):
        picked += [r for r in rows if r["task"] == task and r["status"] == "accepted"][: max(1, count // 8)]
    picked += [r for r in rows if r["status"] == "rejected"][: max(1, count // 4)]
    cols = ("row_id", "task", "concept", "input_caption", "instruction", "output_caption", "status", "reason", "attempts")
    return {c: [r[c] for r in picked[:count]] for c in cols}
