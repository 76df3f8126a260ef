"""Flow for DVC stage `edit_adapter`: `python -m flows.edit_adapter [--params params.yaml]`
(writes metrics/edit_adapter.json and plots/edit_adapter_loss.json)."""

from __future__ import annotations

import argparse
from pathlib import Path

from prefect import flow

from eve_fdd.stages import edit_adapter

from .training import run_training_stage

PAIRS = Path("data/edit_pairs/pairs.parquet")
BACKBONE = Path("data/backbone")
OUT_DIR = Path("data/edit_adapter")


def build(cfg, on_log, item=None):
    return edit_adapter.build(cfg, PAIRS, BACKBONE, OUT_DIR, on_log=on_log)


@flow(name="edit_adapter", log_prints=True)
def edit_adapter_flow(params: str = "params.yaml") -> dict[str, float]:
    return run_training_stage(edit_adapter, build, params)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    edit_adapter_flow(parser.parse_args().params)


if __name__ == "__main__":
    main()
