"""Flow for DVC stage `backbone`: `python -m flows.backbone [--params params.yaml]`."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from eve_fdd import tracking
from eve_fdd.config import Config, load_config
from eve_fdd.stages import backbone

OUT_DIR = Path("data/backbone")
METRICS = Path("metrics/backbone.json")
PLOT = Path("plots/backbone_loss.json")


@task(name="train-backbone", cache_policy=NO_CACHE)  # its inputs (the MLflow run) are not hashable
def build(cfg: Config, run) -> backbone.Outputs:
    return backbone.build(cfg, OUT_DIR, on_log=lambda row: run.log_metrics({"train.loss": row["loss"]}, step=int(row["step"])))


@flow(name="backbone", log_prints=True)
def backbone_flow(params: str = "params.yaml") -> dict[str, float]:
    cfg = load_config(params)
    with tracking.stage_run(cfg, backbone.STAGE, backbone.PARAMS, env=os.environ) as run:
        out = build(cfg, run)
        tracking.write_metrics(out.metrics, METRICS)
        PLOT.parent.mkdir(parents=True, exist_ok=True)
        PLOT.write_text(json.dumps([{"step": r["step"], "loss": r["loss"]} for r in out.curve], indent=1) + "\n")
        run.log_metrics(out.metrics)
        run.log_artifacts(out.artifacts)
        print(f"backbone: {json.dumps(out.metrics)}")
        return out.metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    backbone_flow(parser.parse_args().params)


if __name__ == "__main__":
    main()
