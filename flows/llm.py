"""Flow for DVC stage `llm`: `python -m flows.llm [--params params.yaml]`."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from prefect import flow, task

from eve_fdd import tracking
from eve_fdd.config import Config, load_config
from eve_fdd.stages import llm

OUT_DIR = Path("data/llm")
METRICS = Path("metrics/llm.json")


@task(name="build-model")
def build_model(cfg: Config) -> dict:
    return llm.build(cfg, OUT_DIR)


@flow(name="llm", log_prints=True)
def llm_flow(params: str = "params.yaml") -> dict:
    cfg = load_config(params)
    with tracking.stage_run(cfg, llm.STAGE, llm.PARAMS, env=os.environ) as run:
        metrics = build_model(cfg)
        tracking.write_metrics(metrics, METRICS)
        run.log_metrics(metrics)
        run.log_artifact(OUT_DIR / "model.json")
        print(f"llm: {llm.model_info(OUT_DIR)['path']} ready")
        return metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    llm_flow(parser.parse_args().params)


if __name__ == "__main__":
    main()
