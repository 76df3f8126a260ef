"""Flow for DVC stage `features`: `python -m flows.features [--params params.yaml]`
(writes metrics/features.json and plots/features_loss.json)."""

from __future__ import annotations

import argparse
from pathlib import Path

from prefect import flow

from eve_fdd.stages import features

from .training import run_training_stage

OUT_DIR = Path("data/features")


def build(cfg, on_log, item=None):
    return features.build(cfg, OUT_DIR, on_log=on_log)


@flow(name="features", log_prints=True)
def features_flow(params: str = "params.yaml") -> dict[str, float]:
    return run_training_stage(features, build, params)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    features_flow(parser.parse_args().params)


if __name__ == "__main__":
    main()
