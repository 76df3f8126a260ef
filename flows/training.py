"""What the model-training flows share: one MLflow run per stage execution, the training as
a Prefect task (live loss to MLflow), then the DVC metrics json, the loss-curve plot and the
stage's artifacts.

With `train.launcher` set (e.g. `accelerate launch --multi_gpu --num_processes 8`) the task
starts the stage's training under that launcher (flows/worker.py runs the flow module's
`build` in every process; rank 0 logs the live loss into this flow's MLflow run and hands its
outputs back); the flow, its Prefect run, its MLflow run and its DVC outputs stay one, in this
process. The launcher is not a DVC param of the stages: what a step computes depends on
`micro_batches`, not on the process count (train/parallel.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from eve_fdd import tracking
from eve_fdd.config import load_config
from eve_fdd.train.loop import TrainingOutputs
from eve_fdd.train.parallel import launcher_command

# build(cfg, on_log, item) -> the stage's train.loop.TrainingOutputs (metrics, curve, artifacts);
# a module-level function of the stage's flow module, so that a launched worker can import it
Build = Callable[[Any, Callable[[dict[str, float]], None], str | None], Any]


def run_training_stage(stage: ModuleType, build: Build, params: str, item: str | None = None) -> dict[str, float]:
    """`item`: the entry of a DVC foreach stage (e.g. a LoRA's concept): the MLflow run is
    named `<stage>@<item>` as DVC names the stage, metrics and plot go under `<stage>/`."""
    cfg = load_config(params)
    name = f"{stage.STAGE}@{item}" if item else stage.STAGE
    metrics = Path("metrics") / (f"{stage.STAGE}/{item}.json" if item else f"{stage.STAGE}.json")
    plot = Path("plots") / (f"{stage.STAGE}/{item}_loss.json" if item else f"{stage.STAGE}_loss.json")
    launcher = launcher_command(cfg.train.launcher)
    with tracking.stage_run(cfg, name, stage.PARAMS, env=os.environ) as run:
        train = f"train-{stage.STAGE.replace('_', '-')}"
        if launcher:  # NO_CACHE: the task's inputs (the MLflow run, its callback) are not hashable
            run.set_tags({"train.launcher": cfg.train.launcher})
            out = task(launched, name=train, cache_policy=NO_CACHE)(launcher, build, params, item, run.id)
        else:
            out = task(build, name=train, cache_policy=NO_CACHE)(cfg, live_loss(run), item)
        tracking.write_metrics(out.metrics, metrics)
        tracking.write_curve(out.curve, plot)
        run.log_metrics(out.metrics)
        run.log_artifacts(out.artifacts)
        print(f"{name}: {json.dumps(out.metrics)}")
        return out.metrics


def live_loss(run: Any) -> Callable[[dict[str, float]], None]:
    """The training loop's `on_log` for `run` (a StageRun, or the client run of a launched rank 0):
    every logged term (losses, grad norms, timesteps, ...) as `train.<term>` at its step."""
    def on_log(row: dict[str, float]) -> None:
        run.log_metrics({f"train.{k}": v for k, v in row.items() if k != "step"}, step=int(row["step"]))

    return on_log


def launched(launcher: list[str], build: Build, params: str, item: str | None, run_id: str) -> TrainingOutputs:
    """Run `build` under `launcher` (flows/worker.py in each process) and return rank 0's outputs."""
    import mlflow

    with tempfile.TemporaryDirectory(prefix="eve-fdd-worker-") as tmp:
        outputs = Path(tmp) / "outputs.json"
        # accelerate of this flow's own environment, whatever PATH holds
        cmd = [sys.executable, "-m", "accelerate.commands.launch", *launcher[2:], "-m", "flows.worker", module_name(build), "--params", params, "--outputs", str(outputs), "--run-id", run_id]
        if item is not None:
            cmd += ["--item", item]
        env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow.get_tracking_uri()}
        print("launching:", " ".join(cmd), flush=True)
        done = subprocess.run(cmd, env=env, stdout=sys.stdout, stderr=sys.stderr)
        if done.returncode != 0:
            raise RuntimeError(f"the launched training exited with status {done.returncode}: {' '.join(cmd)}")
        if not outputs.is_file():
            raise RuntimeError(f"the launched training wrote no outputs ({outputs}): {' '.join(cmd)}")
        return read_outputs(outputs)


def module_name(build: Build) -> str:
    """The importable name of the module defining `build` (`python -m flows.x` runs it as __main__)."""
    name = build.__module__
    if name == "__main__":
        spec = getattr(sys.modules["__main__"], "__spec__", None)
        if spec is None:
            raise RuntimeError("train.launcher: run the stage's flow as a module (python -m flows.<stage>), so its processes can import it")
        name = spec.name
    return name


def write_outputs(out: TrainingOutputs, path: Path) -> None:
    path.write_text(json.dumps({"metrics": out.metrics, "curve": out.curve, "artifacts": [str(p) for p in out.artifacts]}))


def read_outputs(path: Path) -> TrainingOutputs:
    data = json.loads(path.read_text())
    return TrainingOutputs(data["metrics"], data["curve"], [Path(p) for p in data["artifacts"]])
