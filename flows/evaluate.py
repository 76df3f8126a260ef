"""Flow for DVC stages `evaluate@<variant>` and `baselines@<baseline>`:
`python -m flows.evaluate METHOD [--params params.yaml]` (writes metrics/evaluate/METHOD.json).
METHOD is an FDD variant (stage `evaluate`) or a baseline of evaluate.baselines (`baselines`)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from eve_fdd import tracking
from eve_fdd.config import load_config
from eve_fdd.stages import evaluate

from .cli import item_main

DATA = Path("data")
DIRS = evaluate.Dirs(DATA / "instructions" / "instructions.parquet", DATA / "videos" / "videos.parquet", DATA / "backbone",
                     DATA / "edit_adapter", DATA / "video_adapter", DATA / "fdd", DATA / "metric_models")


@flow(name="evaluate", log_prints=True)
def evaluate_flow(method: str, params: str = "params.yaml") -> dict[str, float]:
    cfg = load_config(params)
    stage = evaluate.stage_of(method)
    keys = evaluate.PARAMS if stage == "evaluate" else evaluate.BASELINE_PARAMS
    with tracking.stage_run(cfg, f"{stage}@{method}", keys, env=os.environ) as run:
        metrics, artifacts = task(evaluate.build, name=f"evaluate-{method}", cache_policy=NO_CACHE)(
            cfg, method, DIRS, DATA / "evaluate" / method)
        tracking.write_metrics(metrics, Path("metrics") / "evaluate" / f"{method}.json")
        run.log_metrics(metrics)
        run.log_artifacts(artifacts)
        print(f"{stage}@{method}: {json.dumps({k: v for k, v in metrics.items() if k.endswith('.mean')})}")
        return metrics


def main() -> None:
    item_main(evaluate_flow, __doc__, "method", "an FDD variant (full, no_align, ...) or a baseline (input, edit_frames, sdedit_75, ...)")


if __name__ == "__main__":
    main()
