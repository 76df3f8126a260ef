"""Flow for DVC stage `video_adapter`: `python -m flows.video_adapter [--params params.yaml]`
(writes metrics/video_adapter.json and plots/video_adapter_loss.json)."""

from __future__ import annotations

import argparse
from pathlib import Path

from prefect import flow

from eve_fdd.stages import video_adapter

from .training import run_training_stage

BACKBONE = Path("data/backbone")
OUT_DIR = Path("data/video_adapter")


def build(cfg, on_log, item=None):
    return video_adapter.build(cfg, BACKBONE, OUT_DIR, on_log=on_log)


@flow(name="video_adapter", log_prints=True)
def video_adapter_flow(params: str = "params.yaml") -> dict[str, float]:
    return run_training_stage(video_adapter, build, params)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    video_adapter_flow(parser.parse_args().params)


if __name__ == "__main__":
    main()
