"""Flows for DVC stages `instructions` and `subject_style_instructions`:
`python -m flows.instructions {videos|subject_style} [--params params.yaml]`."""

from __future__ import annotations

import argparse
import os
from functools import lru_cache
from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from eve_fdd import tracking
from eve_fdd.config import Config, load_config
from eve_fdd.data import tables
from eve_fdd.llm import generate as gen
from eve_fdd.stages import instructions as stage

VIDEOS = Path("data/videos/videos.parquet")
LLM_DIR = Path("data/llm")
OUT_DIR = Path("data/instructions")


@lru_cache(maxsize=1)
def writer(cfg: Config) -> gen.Writer:
    """One loaded model per process, shared by the shard tasks (they run one at a time)."""
    return stage.load_writer(cfg, LLM_DIR, Path(cfg.instructions.cache_dir))


@task(name="generate-shard", retries=2, retry_delay_seconds=1, cache_policy=NO_CACHE)
def generate_shard(cfg: Config, requests: list[gen.Request], name: str) -> tuple[list[dict], list[dict]]:
    return gen.generate(writer(cfg), requests, cfg.instructions, cfg.world.speed, name)


def _run(cfg: Config, name: str, requests: list[gen.Request], skipped: list[dict]) -> dict:
    with tracking.stage_run(cfg, name, stage.PARAMS, env=os.environ) as run:
        rows, rejects = [], list(skipped)
        for shard in stage.shards(requests, cfg.instructions.shard_size):
            r, j = generate_shard(cfg, shard, name)
            rows += r
            rejects += j
        out = stage.write_outputs(name, rows, rejects, writer(cfg).stats, OUT_DIR)
        tracking.write_metrics(out.metrics, Path("metrics") / f"{name}.json")
        run.log_metrics({k: v for k, v in out.metrics.items()})
        run.log_table(stage.examples(rows, cfg.instructions.examples), "examples.json")
        run.log_artifact(out.rejects)
        m = out.metrics
        print(f"{name}: {m['accepted']}/{m['requests']} accepted ({m['first_try_acceptance']:.1%} on the first try), "
              f"{m['model_calls']} model calls, {m['cache_hits']} cached, {m['tokens_per_second']} tokens/s")
        return m


@flow(name="instructions", log_prints=True)
def instructions_flow(params: str = "params.yaml") -> dict:
    cfg = load_config(params)
    requests, skipped = stage.video_requests(cfg, tables.read_table(tables.VIDEOS, VIDEOS))
    return _run(cfg, stage.VIDEOS_STAGE, requests, skipped)


@flow(name="subject_style_instructions", log_prints=True)
def subject_style_flow(params: str = "params.yaml") -> dict:
    cfg = load_config(params)
    requests = stage.subject_style_requests(cfg, tables.read_table(tables.VIDEOS, VIDEOS))
    return _run(cfg, stage.SUBJECT_STYLE_STAGE, requests, [])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("which", choices=["videos", "subject_style"])
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    (instructions_flow if args.which == "videos" else subject_style_flow)(args.params)


if __name__ == "__main__":
    main()
