"""Flow for DVC stage `backbone`: `python -m flows.backbone [--params params.yaml]`
(writes metrics/backbone.json and plots/backbone_loss.json)."""

from __future__ import annotations

import argparse
from pathlib import Path

from prefect import flow

from eve_fdd.stages import backbone

from .training import run_training_stage

OUT_DIR = Path("data/backbone")


def build(cfg, on_log, item=None):
    return backbone.build(cfg, OUT_DIR, on_log=on_log)


@flow(name="backbone", log_prints=True)
def backbone_flow(params: str = "params.yaml") -> dict[str, float]:
    return run_training_stage(backbone, build, params)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    backbone_flow(parser.parse_args().params)


if __name__ == "__main__":
    main()
