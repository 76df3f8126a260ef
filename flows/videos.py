"""Flow for DVC stage `videos`: `python -m flows.videos [--params params.yaml]`."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from prefect import flow, task
from tqdm import tqdm

from eve_fdd import tracking
from eve_fdd.config import Config, load_config
from eve_fdd.data.splits import shards
from eve_fdd.stages import videos

OUT_DIR = Path("data/videos")
METRICS = Path("metrics/videos.json")


@task(name="render-shard")
def render_shard(cfg: Config, indices: range) -> list[dict]:
    return videos.render_shapes(cfg, indices)


@task(name="ingest-clips", retries=1)
def ingest(cfg: Config) -> tuple[list[dict], list[dict]]:
    return videos.ingest_clips(cfg.videos.ingest, cfg.videos.test_fraction)


@flow(name="videos", log_prints=True)
def videos_flow(params: str = "params.yaml") -> dict[str, float]:
    cfg = load_config(params)
    with tracking.stage_run(cfg, videos.STAGE, videos.PARAMS, env=os.environ) as run:
        if cfg.profile == "shapes":
            futures = [render_shard.submit(cfg, r) for r in shards(cfg.videos.count, cfg.videos.shard_size)]
            rows = [row for f in tqdm(futures, desc="render shards", unit="shard") for row in f.result()]
            rejects: list[dict] = []
        else:
            rows, rejects = ingest(cfg)
        out = videos.write_outputs(cfg, rows, rejects, OUT_DIR)
        tracking.write_metrics(out.metrics, METRICS)
        run.log_metrics(out.metrics)
        run.log_artifacts(out.samples, "samples")
        run.log_artifact(out.rejects)
        print(f"videos: {out.metrics['videos']:.0f} written to {out.videos}, {out.metrics['rejected']:.0f} rejected -> {out.rejects}")
        return out.metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    videos_flow(parser.parse_args().params)


if __name__ == "__main__":
    main()
