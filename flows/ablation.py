"""Ablations as DVC experiments, started through Prefect (DESIGN.md, Orchestration).

Flows, served together by `make serve` (flows/serve.py):
- `ablation`: one FDD variant, FDD seed and any other params overrides as a DVC experiment
  (`dvc exp run --temp`: it runs in a copy of the project, so two ablations run at once without
  touching each other's files or the workspace). It trains the variant unless the DVC cache
  already has that result, evaluates it (stage `evaluate`) and returns its metrics; the
  experiment shows in `dvc exp show`. E.g.
  `prefect deployment run 'ablation/ablation' --param variant=no_sds --param seed=1 --watch`.
- `sweep`: several variants x seeds as ablations, at most `limit` at once.
- `reproduce`: `dvc repro` of the whole pipeline in the workspace.
Each opens an MLflow parent run (named after the flow and its experiment); the stage runs DVC
starts are nested under it and carry the Prefect flow run id and the DVC experiment name.
A failing stage fails the flow run with the stage's error message; the workspace is untouched.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections import deque
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed
from prefect.runtime import flow_run

from eve_fdd import tracking
from eve_fdd.config import FDD_VARIANTS, ConfigError, load_config

PARAMS = "params.yaml"
TAIL = 40  # lines of a failed command's output put in the error
# Every DVC command of these flows waits for the repository lock instead of failing after DVC's
# default 3 s: two ablations started together both take it while `dvc exp run --temp` stashes the
# params and makes its copy, which can take longer than that on a loaded machine ("Unable to acquire lock").
DVC = ("dvc", "--wait-for-lock")
ERROR_LINE = re.compile(r"^(?:[\w.]*(?:Error|Exception|Failed)\b.*:|ERROR:)")


class ExperimentFailed(RuntimeError):
    """`dvc exp run` (or `dvc repro`) exited non-zero; the message ends with its output's tail."""


def overrides_for(variant: str, seed: int, params: dict[str, Any] | None) -> dict[str, Any]:
    """The `-S` overrides of one ablation: only this variant is trained and evaluated (no
    baselines, no fdd_personal), at this FDD seed, plus the caller's. Checked against
    params.yaml now, so a bad key or value fails before DVC starts."""
    if variant not in FDD_VARIANTS:
        raise ValueError(f"ablation: unknown variant {variant!r}; expected one of {list(FDD_VARIANTS)}")
    found = {"fdd.variants": [variant], "fdd.seed": seed, "fdd_personal.concepts": [], "evaluate.baselines": [], **(params or {})}
    load_config(PARAMS, found)  # raises ConfigError naming the key
    return found


def _set_args(overrides: dict[str, Any]) -> list[str]:
    return [arg for k, v in overrides.items() for arg in ("-S", f"{k}={v if isinstance(v, str) else json.dumps(v)}")]


def baseline() -> tuple[str, list[str]]:
    """The experiments' baseline: git HEAD's commit, and the directory outputs of its pipeline
    (dvc.yaml, params and dvc.lock) whose listing is not in the DVC cache (a fresh clone, whose
    lock records results this machine never made). Read under DVC's repository lock, waiting for
    it: another ablation's `dvc exp run --temp` holds it while it stashes its `-S` values, and
    meanwhile detaches HEAD onto its temporary commits and writes those values into the
    workspace's params.yaml. Read then, HEAD was one of those commits ("'./dvc.yaml' validation
    failed in revision ...", seen in CI) and `dvc data status` saw that variant's results as
    missing; so the outputs are read through DVC from the commit, not from the workspace."""
    from dvc.repo import Repo, lock_repo

    missing = []
    with Repo(".", _wait_for_lock=True) as repo, lock_repo(repo):  # closed after: it holds DVC's state database open
        rev = repo.scm.get_rev()
        for _ in repo.brancher(revs=[rev], workspace=False):  # repo.index is the commit's inside the loop
            for out in repo.index.outs:
                if out.use_cache and out.hash_info and out.hash_info.isdir and not os.path.exists(repo.cache.local.oid_to_path(out.hash_info.value)):
                    missing.append(str(out.def_path).rstrip("/") + "/")
    return rev, missing


def missing_results() -> list[str]:
    """The baseline's directory outputs whose listing the DVC cache lacks (`baseline()`)."""
    return baseline()[1]


def exp_run_command(name: str, overrides: dict[str, Any], missing: list[str]) -> list[str]:
    """`dvc exp run --temp` of one ablation. When the lock names directory outputs the cache lacks
    (a fresh clone), DVC 3.67 fails inside the experiment once it restores from its run cache a
    stage that reads such a directory: after each stage the experiment looks the stage's deps up
    in an index it loaded earlier, still holding the lock's entry, whose directory listing is
    missing ("failed to load directory ('data', 'edit_pairs')"). Then every stage is run (`-f`)
    instead; `make repro` once puts the lock's results in the cache, and ablations reuse again
    (tests/test_flows_ablation.py reproduces both). `missing`: from `baseline()`."""
    if missing:
        print(f"warning: {len(missing)} results of dvc.lock are not in the DVC cache (e.g. {missing[0]}; a fresh clone?): "
              "experiment runs every stage (dvc exp run -f), reusing nothing; run `make repro` once to let ablations "
              "reuse the teachers")
    return [*DVC, "exp", "run", "--temp", *(["-f"] if missing else []), "-n", name, *_set_args(overrides)]


def _run(cmd: list[str], env: dict[str, str], what: str) -> None:
    """Run `cmd` in the project, its output printed line by line (Prefect logs it)."""
    tail: deque[str] = deque(maxlen=TAIL)
    errors: list[str] = []  # the lines that say what went wrong (a stage's exception, DVC's ERROR)
    with subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1) as proc:
        for line in proc.stdout:
            line = line.rstrip()
            tail.append(line)
            if ERROR_LINE.match(line) and line not in errors:
                errors.append(line)
            if line:
                print(line)
        rc = proc.wait()
    if rc:
        raise ExperimentFailed(f"{what} failed (exit {rc}): " + " | ".join(errors[-4:]) + "\n--- last lines ---\n" + "\n".join(tail))


def find_experiment(shown: Any, name: str) -> dict[str, Any] | None:
    """The `data` of experiment `name` in `dvc exp show --json` output."""
    if isinstance(shown, dict):
        if shown.get("name") == name and isinstance(shown.get("data"), dict):
            return shown["data"]
        items = shown.values()
    elif isinstance(shown, list):
        items = shown
    else:
        return None
    for value in items:
        found = find_experiment(value, name)
        if found is not None:
            return found
    return None


def experiment_metrics(name: str, variant: str, baseline: str) -> dict[str, float]:
    """The variant's metrics in experiment `name`, run on commit `baseline`."""
    shown = json.loads(subprocess.run([*DVC, "exp", "show", "--rev", baseline, "--json"], capture_output=True, text=True,
                                      check=True).stdout)
    data = find_experiment(shown, name)
    if data is None:
        raise ExperimentFailed(f"dvc exp show: no experiment named {name!r} after its run")
    metrics = data.get("metrics") or {}
    out: dict[str, float] = {}
    for path, prefix in ((f"metrics/evaluate/{variant}.json", "evaluate."), (f"metrics/fdd/{variant}.json", "fdd.")):
        out |= {prefix + k: v for k, v in (metrics.get(path, {}).get("data") or {}).items() if isinstance(v, (int, float))}
    return out


def _env(parent_run_id: str) -> dict[str, str]:
    cfg = load_config(PARAMS)
    return {**os.environ, "EVE_FDD_PARENT_RUN_ID": parent_run_id, "MLFLOW_TRACKING_URI": tracking.store_uri(cfg),
            "EVE_FDD_PREFECT_FLOW_RUN_ID": str(flow_run.id or "")}


@task(name="dvc-exp-run", cache_policy=NO_CACHE)
def run_experiment(name: str, variant: str, overrides: dict[str, Any]) -> dict[str, float]:
    cfg = load_config(PARAMS, overrides)
    with tracking.parent_run(cfg, f"ablation {name}", tags={"kind": "ablation", "dvc.experiment": name, "variant": variant,
                                                             "prefect.flow_run_id": str(flow_run.id or "")},
                             params={k: v for k, v in overrides.items()}) as parent:
        rev, missing = baseline()
        try:
            _run(exp_run_command(name, overrides, missing), _env(parent.id), f"dvc exp run {name}")
        except ExperimentFailed:
            # DVC keeps a failed --temp experiment (without the failed stage's outputs): drop it, so
            # `dvc exp show` lists only results and the ablation can be re-run under its name
            subprocess.run([*DVC, "exp", "remove", name], capture_output=True, text=True)
            raise
        metrics = experiment_metrics(name, variant, rev)
        parent.log_metrics(metrics)
    return metrics


def experiment_name(variant: str, seed: int) -> str:
    run_id = str(flow_run.id or "local").replace("-", "")[:8]
    return f"{variant.replace('_', '-')}-seed{seed}-{run_id}"


@flow(name="ablation", log_prints=True, persist_result=True)
def ablation(variant: str = "full", seed: int = 0, params: dict[str, Any] | None = None, name: str | None = None) -> dict[str, float]:
    """One ablation variant as a DVC experiment; returns its held-out metrics."""
    try:
        overrides = overrides_for(variant, seed, params)
    except ConfigError as exc:
        raise ValueError(str(exc)) from None
    return run_experiment(name or experiment_name(variant, seed), variant, overrides)


@flow(name="sweep", log_prints=True, persist_result=True)
def sweep(variants: list[str] | None = None, seeds: list[int] | None = None, limit: int = 2,
          params: dict[str, Any] | None = None) -> dict[str, dict[str, float]]:
    """Every variant x seed as an ablation experiment, at most `limit` running at once."""
    if limit < 1:
        raise ValueError(f"sweep: limit must be at least 1, got {limit}")
    jobs = [(v, s) for v in (variants or list(FDD_VARIANTS)) for s in (seeds or [0])]
    checked = {(v, s): overrides_for(v, s, params) for v, s in jobs}  # every job is valid before any starts
    pending, running, results, failed = deque(jobs), {}, {}, {}
    while pending or running:
        while pending and len(running) < limit:
            v, s = pending.popleft()
            name = experiment_name(v, s)
            running[run_experiment.submit(name, v, checked[(v, s)])] = name
        done = next(as_completed(list(running)))
        name = running.pop(done)
        try:
            results[name] = done.result()
        except Exception as exc:  # the others go on; the sweep fails at the end, naming every failure
            failed[name] = str(exc).splitlines()[0]
    if failed:
        raise ExperimentFailed(f"sweep: {len(failed)} of {len(jobs)} ablations failed: " + "; ".join(f"{n}: {m}" for n, m in failed.items()))
    return results


@flow(name="reproduce", log_prints=True, persist_result=True)
def reproduce(targets: list[str] | None = None) -> dict[str, str]:
    """`dvc repro` (of `targets`, or everything) in the workspace."""
    cfg = load_config(PARAMS)
    with tracking.parent_run(cfg, "reproduce", tags={"kind": "reproduce", "prefect.flow_run_id": str(flow_run.id or "")}) as parent:
        _run([*DVC, "repro", *(targets or [])], _env(parent.id), "dvc repro")
    return {"status": subprocess.run([*DVC, "status"], capture_output=True, text=True).stdout.strip()}
