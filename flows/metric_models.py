"""Flow for DVC stage `metric_models@<kind>`: `python -m flows.metric_models KIND [--params params.yaml]`
(writes metrics/metric_models/KIND.json and plots/metric_models/KIND_loss.json)."""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from eve_fdd.stages import metric_models

from .cli import item_main
from .training import run_training_stage

OUT_DIR = Path("data/metric_models")


def build(cfg, on_log, kind):
    return metric_models.build(cfg, kind, OUT_DIR / kind, on_log=on_log)


@flow(name="metric_models", log_prints=True)
def metric_models_flow(kind: str, params: str = "params.yaml") -> dict[str, float]:
    return run_training_stage(metric_models, build, params, item=kind)


def main() -> None:
    item_main(metric_models_flow, __doc__, "kind", "clip (CLIPFrame, PickScore) or xclip (ViCLIP_out, ViCLIP_dir)")


if __name__ == "__main__":
    main()
