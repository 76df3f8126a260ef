"""What the model-training flows share: one MLflow run per stage execution, the training as
a Prefect task (live loss to MLflow), then the DVC metrics json, the loss-curve plot and the
stage's artifacts."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from eve_fdd import tracking
from eve_fdd.config import load_config

# build(cfg, on_log) -> the stage's train.loop.TrainingOutputs (metrics, curve, artifacts)
Build = Callable[[Any, Callable[[dict[str, float]], None]], Any]


def run_training_stage(stage: ModuleType, build: Build, params: str, item: str | None = None) -> dict[str, float]:
    """`item`: the entry of a DVC foreach stage (e.g. a LoRA's concept): the MLflow run is
    named `<stage>@<item>` as DVC names the stage, metrics and plot go under `<stage>/`."""
    cfg = load_config(params)
    name = f"{stage.STAGE}@{item}" if item else stage.STAGE
    metrics = Path("metrics") / (f"{stage.STAGE}/{item}.json" if item else f"{stage.STAGE}.json")
    plot = Path("plots") / (f"{stage.STAGE}/{item}_loss.json" if item else f"{stage.STAGE}_loss.json")
    with tracking.stage_run(cfg, name, stage.PARAMS, env=os.environ) as run:
        def on_log(row: dict[str, float]) -> None:  # every logged term: losses, grad norms, timesteps, ...
            run.log_metrics({f"train.{k}": v for k, v in row.items() if k != "step"}, step=int(row["step"]))

        # NO_CACHE: the task's inputs (the MLflow run's callback) are not hashable
        out = task(build, name=f"train-{stage.STAGE.replace('_', '-')}", cache_policy=NO_CACHE)(cfg, on_log)
        tracking.write_metrics(out.metrics, metrics)
        tracking.write_curve(out.curve, plot)
        run.log_metrics(out.metrics)
        run.log_artifacts(out.artifacts)
        print(f"{name}: {json.dumps(out.metrics)}")
        return out.metrics
