"""End to end: the real `dvc repro` on smoke-size params, in a copy of the project."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from eve_fdd.data import tables

pytestmark = pytest.mark.e2e


def _run(cmd, cwd, env):
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def project(tmp_path_factory, request):
    """A git checkout of the project's tracked files with smoke-size params."""
    root = Path(request.config.rootpath)
    dest = tmp_path_factory.mktemp("e2e") / "project"
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=root, capture_output=True, text=True, check=True
    ).stdout.split()
    for f in files:
        if (root / f).is_file() and not f.startswith(("data/", "metrics/")):
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / f, dest / f)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    params["videos"].update(count=24, samples=2, shard_size=10)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    env.pop("MLFLOW_TRACKING_URI", None)
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"]):
        _run(cmd, dest, env)
    return dest, env


def test_dvc_repro_runs_the_pipeline(project):
    dest, env = project
    out = _run(["dvc", "repro"], dest, env)
    assert "Running stage 'videos'" in out
    rows = tables.read_table(tables.VIDEOS, dest / "data/videos/videos.parquet")
    assert len(rows) == 24
    assert tables.read_table(tables.REJECTS, dest / "data/videos/rejects.parquet") == []
    assert (dest / "data/videos/samples/contact_sheet.png").stat().st_size > 0
    assert "videos" in _run(["dvc", "metrics", "show"], dest, env)
    # MLflow: one run for the stage, tagged and with its artifacts, in the project's store
    client = MlflowClient(f"sqlite:///{dest}/mlflow.db")
    exp = client.get_experiment_by_name("eve-fdd-shapes")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["dvc.stage"] == "videos"
    assert run.data.tags.get("prefect.flow_run_id")
    assert run.data.metrics["videos"] == 24
    samples = {a.path for a in client.list_artifacts(run.info.run_id, "samples")}
    assert "samples/contact_sheet.png" in samples and "samples/shapes-00000.gif" in samples


def test_second_repro_is_a_no_op(project):
    dest, env = project
    out = _run(["dvc", "repro"], dest, env)
    assert "Running stage" not in out
    assert "up to date" in _run(["dvc", "status"], dest, env)


def test_changing_a_param_reruns_only_what_reads_it(project):
    dest, env = project
    params = yaml.safe_load((dest / "params.yaml").read_text())
    params["tracking"]["experiment_prefix"] = "renamed"  # not read by `videos`
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert "Running stage" not in _run(["dvc", "repro"], dest, env)
    params["videos"]["count"] = 20
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert "Running stage 'videos'" in _run(["dvc", "repro"], dest, env)
    assert len(tables.read_table(tables.VIDEOS, dest / "data/videos/videos.parquet")) == 20
