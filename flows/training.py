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

# build(cfg, on_log) -> the stage's Outputs (metrics, curve, artifacts)
Build = Callable[[Any, Callable[[dict[str, float]], None]], Any]


def run_training_stage(stage: ModuleType, build: Build, params: str) -> dict[str, float]:
    cfg = load_config(params)
    with tracking.stage_run(cfg, stage.STAGE, stage.PARAMS, env=os.environ) as run:
        def on_log(row: dict[str, float]) -> None:
            run.log_metrics({"train.loss": row["loss"]}, step=int(row["step"]))

        # NO_CACHE: the task's inputs (the MLflow run's callback) are not hashable
        out = task(build, name=f"train-{stage.STAGE.replace('_', '-')}", cache_policy=NO_CACHE)(cfg, on_log)
        tracking.write_metrics(out.metrics, Path("metrics") / f"{stage.STAGE}.json")
        tracking.write_curve(out.curve, Path("plots") / f"{stage.STAGE}_loss.json")
        run.log_metrics(out.metrics)
        run.log_artifacts(out.artifacts)
        print(f"{stage.STAGE}: {json.dumps(out.metrics)}")
        return out.metrics
