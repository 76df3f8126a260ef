"""MLflow tracking: one run per stage execution.

Every run is tagged with the git revision (and whether the tree was dirty), the DVC stage,
the profile and, when the stage runs inside a Prefect flow, the flow-run id, so a run in the
MLflow UI leads back to the code, params and orchestration that produced it. Experiments are
named `<prefix>-<profile>` (e.g. `eve-fdd-shapes`). The store defaults to `mlflow.db`
(sqlite) in the project root with artifacts in `mlruns/` beside it; `MLFLOW_TRACKING_URI`
in the environment wins over params.yaml, as MLflow users expect.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import mlflow
from filelock import FileLock
from mlflow.tracking import MlflowClient

from .config import Config


def resolve_uri(uri: str, root: Path) -> str:
    """Make a relative sqlite path absolute against the project root."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix):].startswith("/"):
        return prefix + str((root / uri[len(prefix):]).resolve())
    return uri


def git_revision(root: Path) -> tuple[str, bool]:
    """(commit, dirty); ("unknown", False) outside a git checkout."""
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown", False
    return rev, bool(status.strip())


def prefect_flow_run_id() -> str | None:
    try:
        from prefect.runtime import flow_run
    except ImportError:
        return None
    return flow_run.id


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def split_metrics(metrics: Mapping[str, Any]) -> tuple[dict[str, float], dict[str, str]]:
    """(numbers, texts): a metrics json may hold text next to numbers (stage fdd's `setup`
    fingerprint); MLflow takes the numbers as metrics and the text as tags."""
    numbers = {k: float(v) for k, v in metrics.items() if not isinstance(v, str)}
    return numbers, {k: v for k, v in metrics.items() if isinstance(v, str)}


class StageRun:
    """The MLflow run of one stage execution; thin helpers over the active run."""

    def __init__(self, run: mlflow.ActiveRun):
        self.run = run
        self.id = run.info.run_id

    def log_metrics(self, metrics: Mapping[str, float | str], step: int | None = None) -> None:
        numbers, texts = split_metrics(metrics)
        mlflow.log_metrics(numbers, step=step)
        if texts:
            mlflow.set_tags(texts)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        mlflow.log_artifact(str(path), artifact_path=artifact_path)

    def log_artifacts(self, paths: list[Path], artifact_path: str | None = None) -> None:
        for p in paths:
            self.log_artifact(p, artifact_path)

    def log_table(self, data: dict[str, list], name: str) -> None:
        mlflow.log_table(data, name)

    def log_dict(self, data: dict[str, Any], name: str) -> None:
        mlflow.log_dict(data, name)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        mlflow.set_tags({k: str(v) for k, v in tags.items()})


def store_root(root: Path, env: Mapping[str, str]) -> Path:
    """Where the project's MLflow store is: DVC's `DVC_ROOT` when DVC runs the stage (in a
    `dvc exp run --temp` copy that is the project, not the copy, so experiments' runs land
    in the project's store beside the others), else `root`."""
    return Path(env["DVC_ROOT"]).resolve() if env.get("DVC_ROOT") else root


def run_tags(env: Mapping[str, str]) -> dict[str, str]:
    """Tags that join a run to its orchestration: the Prefect flow run, the DVC experiment
    (name and baseline commit) and the parent run (`EVE_FDD_PARENT_RUN_ID`, set by the
    ablation and reproduction flows: the MLflow UI nests the stage runs under it)."""
    tags = {}
    flow_run_id = prefect_flow_run_id()
    if flow_run_id:
        tags["prefect.flow_run_id"] = flow_run_id
    for var, tag in (("DVC_EXP_NAME", "dvc.experiment"), ("DVC_EXP_BASELINE_REV", "dvc.experiment_baseline"),
                     ("EVE_FDD_PARENT_RUN_ID", "mlflow.parentRunId"), ("EVE_FDD_PREFECT_FLOW_RUN_ID", "prefect.parent_flow_run_id")):
        if env.get(var):
            tags[tag] = env[var]
    return tags


def experiment_name(cfg: Config) -> str:
    return f"{cfg.tracking.experiment_prefix}-{cfg.profile}"


def _store_lock(uri: str) -> FileLock | nullcontext:
    """A file lock beside a sqlite store (`<db>.lock`). The first client of a new store creates
    its tables (MLflow's migrations) and two processes doing that at once fail ("duplicate
    column name", "table ... already exists"), as two ablations started together on a project
    with no store yet did; a server store (http) needs none."""
    prefix = "sqlite:///"
    return FileLock(uri[len(prefix):] + ".lock") if uri.startswith(prefix) else nullcontext()


# What the experiment is, for MLflow 3 (its kinds: genai_development, custom_model_development, ...).
# MLflow 3.17's UI still opens on its GenAI views (traces, evaluation runs) until the browser is
# switched to "Model training" once, or the link carries `?workflowType=machine_learning` (make ui
# prints one); then an experiment opens on its runs, metrics and artifacts.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def _ensure_experiment(name: str, root: Path) -> str:
    """The experiment's id, created (artifacts under `root/mlruns/<name>`, tagged as a
    model-training experiment) if it is new; under the store's lock, so concurrent first runs
    make the store and the experiment once. An older experiment without the kind gets it."""
    with _store_lock(mlflow.get_tracking_uri()):
        client = MlflowClient()
        exp = client.get_experiment_by_name(name)
        if exp is None:
            artifacts = (root / "mlruns" / name).resolve().as_uri()
            return client.create_experiment(name, artifact_location=artifacts, tags=EXPERIMENT_KIND)
        for key, value in EXPERIMENT_KIND.items():
            if exp.tags.get(key) != value:
                client.set_experiment_tag(exp.experiment_id, key, value)
        return exp.experiment_id


@contextmanager
def stage_run(
    cfg: Config,
    stage: str,
    sections: tuple[str, ...],
    root: str | Path = ".",
    env: Mapping[str, str] | None = None,
) -> Iterator[StageRun]:
    """Open the MLflow run of `stage`, logging the params in `sections` (dotted config keys
    the stage reads) and the resolved config; the run ends FAILED if the body raises."""
    env = env or {}
    root = Path(root).resolve()
    store = store_root(root, env)
    uri = env.get("MLFLOW_TRACKING_URI") or resolve_uri(cfg.tracking.uri, store)
    mlflow.set_tracking_uri(uri)
    exp_id = _ensure_experiment(experiment_name(cfg), store)
    rev, dirty = git_revision(root)
    tags = {
        "dvc.stage": stage,
        "profile": cfg.profile,
        "git.revision": rev,
        "git.dirty": str(dirty).lower(),
        "mlflow.source.git.commit": rev,
        **run_tags(env),
    }
    params: dict[str, Any] = {}
    for name in sections:
        value = cfg.section(name)
        params.update(flatten(value.model_dump(mode="json"), name + ".") if hasattr(value, "model_dump") else {name: value})
    with mlflow.start_run(experiment_id=exp_id, run_name=stage, tags=tags) as active:
        mlflow.log_params({k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in params.items()})
        mlflow.log_dict(cfg.model_dump(mode="json"), "config.json")
        yield StageRun(active)


class ParentRun:
    """An orchestration run, written through `MlflowClient` (not the fluent API's active run,
    so several can be open at once in one process, as a sweep's are)."""

    def __init__(self, client: MlflowClient, run_id: str):
        self.client, self.id = client, run_id

    def log_metrics(self, metrics: Mapping[str, float | str], step: int | None = None) -> None:
        numbers, texts = split_metrics(metrics)
        for k, v in numbers.items():
            self.client.log_metric(self.id, k, v, step=step)
        for k, v in texts.items():
            self.client.set_tag(self.id, k, v)


def client_run(run_id: str) -> ParentRun:
    """A run another process opened (the flow of a stage whose training `accelerate launch`
    started: its rank 0 logs the live loss into the flow's run), written through `MlflowClient`
    at the tracking URI of the environment."""
    return ParentRun(MlflowClient(), run_id)


@contextmanager
def parent_run(cfg: Config, name: str, root: str | Path = ".", tags: Mapping[str, Any] | None = None,
               params: Mapping[str, Any] | None = None) -> Iterator[ParentRun]:
    """The run an orchestration flow (an ablation, a reproduction) opens around the stage runs
    it starts: they carry its id (`EVE_FDD_PARENT_RUN_ID` in their environment) and the MLflow
    UI shows them nested under it. Ends FINISHED, or FAILED if the body raises."""
    root = Path(root).resolve()
    mlflow.set_tracking_uri(store_uri(cfg, root))
    exp_id = _ensure_experiment(experiment_name(cfg), root)  # first: a client opens (and may create) the store
    client = MlflowClient()
    rev, dirty = git_revision(root)
    all_tags = {"kind": "orchestration", "profile": cfg.profile, "git.revision": rev, "git.dirty": str(dirty).lower(),
                "mlflow.source.git.commit": rev, **run_tags(os.environ), **(tags or {})}
    run = client.create_run(exp_id, run_name=name, tags={k: str(v) for k, v in all_tags.items()})
    parent = ParentRun(client, run.info.run_id)
    for k, v in (params or {}).items():
        client.log_param(parent.id, k, json.dumps(v) if isinstance(v, (list, dict)) else v)
    try:
        yield parent
    except BaseException:
        client.set_terminated(parent.id, "FAILED")
        raise
    client.set_terminated(parent.id, "FINISHED")


def store_uri(cfg: Config, root: str | Path = ".") -> str:
    """The tracking URI the project's runs go to (what a flow passes to the stages it starts)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or resolve_uri(cfg.tracking.uri, Path(root).resolve())


def write_metrics(metrics: Mapping[str, Any], path: str | Path) -> Path:
    """Write a DVC metrics json atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as f:
        json.dump(dict(metrics), f, indent=2, sort_keys=True)
        f.write("\n")
    os.chmod(f.name, 0o644)
    Path(f.name).replace(path)
    return path


def write_curve(curve: list[Mapping[str, float]], path: str | Path, keys: tuple[str, ...] = ("step", "loss")) -> Path:
    """Write a training curve as a DVC plot (a JSON list of {step, loss} rows)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([{k: r[k] for k in keys} for r in curve], indent=1) + "\n")
    return path
