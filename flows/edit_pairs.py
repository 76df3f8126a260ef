"""Flow for DVC stage `edit_pairs`: `python -m flows.edit_pairs [--params params.yaml]`."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from prefect import flow, task
from tqdm import tqdm

from eve_fdd import tracking
from eve_fdd.config import Config, load_config
from eve_fdd.data.splits import shards
from eve_fdd.stages import edit_pairs

OUT_DIR = Path("data/edit_pairs")
METRICS = Path("metrics/edit_pairs.json")


@task(name="make-pairs")
def make_shard(cfg: Config, indices: range) -> tuple[list[dict], list[dict]]:
    return edit_pairs.make_pairs(cfg, indices)


@task(name="ingest-edit-pairs", retries=1)
def ingest(cfg: Config) -> tuple[list[dict], list[dict], dict[str, int]]:
    return edit_pairs.ingest_pairs(cfg)


@flow(name="edit_pairs", log_prints=True)
def edit_pairs_flow(params: str = "params.yaml") -> dict[str, float]:
    cfg = load_config(params)
    with tracking.stage_run(cfg, edit_pairs.STAGE, edit_pairs.PARAMS, env=os.environ) as run:
        if cfg.profile == "shapes":
            futures = [make_shard.submit(cfg, r) for r in shards(cfg.edit_pairs.count, cfg.edit_pairs.shard_size)]
            rows, rejects, counts = [], [], {}
            for f in tqdm(futures, desc="edit pair shards", unit="shard"):
                got, bad = f.result()
                rows += got
                rejects += bad
        else:
            rows, rejects, counts = ingest(cfg)
        out = edit_pairs.write_outputs(cfg, rows, rejects, OUT_DIR, counts)
        tracking.write_metrics(out.metrics, METRICS)
        run.log_metrics(out.metrics)
        run.log_artifacts(out.samples, "samples")
        run.log_artifact(out.rejects)
        print(f"edit_pairs: {out.metrics['pairs']:.0f} pairs -> {out.pairs}, {out.metrics['rejected']:.0f} rejected -> {out.rejects}")
        return out.metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    edit_pairs_flow(parser.parse_args().params)


if __name__ == "__main__":
    main()
