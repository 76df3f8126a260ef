import json
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from eve_fdd import tracking
from eve_fdd.config import parse_config


@pytest.fixture
def cfg(tmp_path):
    return parse_config({"tracking": {"uri": f"sqlite:///{tmp_path}/mlflow.db"}, "videos": {"count": 5}})


def test_stage_run_logs_params_tags_metrics_artifacts(cfg, tmp_path, root):
    art = tmp_path / "sheet.png"
    art.write_bytes(b"png")
    with tracking.stage_run(cfg, "videos", ("profile", "world", "videos"), root=root) as run:
        run.log_metrics({"videos": 5, "rejected": 1, "setup": "0123abcd"})  # text: a tag, not a metric
        run.log_artifact(art, "samples")
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    r = client.get_run(run.id)
    assert r.info.status == "FINISHED" and r.info.run_name == "videos"
    exp = client.get_experiment(r.info.experiment_id)
    assert exp.name == "eve-fdd-shapes"
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"  # the UI opens it on runs, not GenAI traces
    client.delete_experiment_tag(exp.experiment_id, "mlflow.experimentKind")  # a store made before the kind was set
    with tracking.stage_run(cfg, "videos", ("profile",), root=root):
        pass
    assert client.get_experiment(exp.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
    assert r.data.params["videos.count"] == "5" and r.data.params["world.size"] == "32"
    assert r.data.params["world.speed"] == "[0.02, 0.06]" and r.data.params["profile"] == "shapes"
    assert r.data.metrics == {"videos": 5.0, "rejected": 1.0}
    tags = r.data.tags
    assert tags["dvc.stage"] == "videos" and tags["profile"] == "shapes" and tags["setup"] == "0123abcd"
    assert len(tags["git.revision"]) == 40 or tags["git.revision"] == "unknown"
    assert tags["git.dirty"] in ("true", "false")
    listed = {a.path for a in client.list_artifacts(run.id)} | {a.path for a in client.list_artifacts(run.id, "samples")}
    assert {"config.json", "samples/sheet.png"} <= listed
    config = json.loads(Path(client.download_artifacts(run.id, "config.json", str(tmp_path))).read_text())
    assert config["videos"]["count"] == 5


def test_failed_stage_marks_run_failed(cfg, root, tmp_path):
    with pytest.raises(RuntimeError):
        with tracking.stage_run(cfg, "videos", ("videos",), root=root) as run:
            raise RuntimeError("boom")
    assert MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").get_run(run.id).info.status == "FAILED"


def test_environment_uri_wins(cfg, root, tmp_path):
    other = f"sqlite:///{tmp_path}/other.db"
    with tracking.stage_run(cfg, "videos", ("videos",), root=root, env={"MLFLOW_TRACKING_URI": other}) as run:
        pass
    assert MlflowClient(other).get_run(run.id).info.run_name == "videos"
    assert mlflow.get_tracking_uri() == other


def test_relative_sqlite_uri_resolves_against_root(tmp_path):
    assert tracking.resolve_uri("sqlite:///mlflow.db", tmp_path) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert tracking.resolve_uri("sqlite:////abs/x.db", tmp_path) == "sqlite:////abs/x.db"
    assert tracking.resolve_uri("http://127.0.0.1:5000", tmp_path) == "http://127.0.0.1:5000"


def test_git_revision_outside_git(tmp_path):
    assert tracking.git_revision(tmp_path) == ("unknown", False)


def test_write_metrics_is_readable_json(tmp_path):
    path = tracking.write_metrics({"b": 2, "a": 1.5}, tmp_path / "m" / "x.json")
    assert json.loads(path.read_text()) == {"a": 1.5, "b": 2}
    assert path.stat().st_mode & 0o044  # others can read it (DVC, CI artefacts)


def test_processes_that_open_a_new_store_at_once_all_log_to_one_experiment(tmp_path, root):
    """Two ablations started together on a project without a store both create it: MLflow's
    table migrations must not run twice at once ('duplicate column name'), nor the experiment
    be created twice."""
    import os
    import subprocess
    import sys

    script = ("import sys\nfrom eve_fdd import tracking\nfrom eve_fdd.config import parse_config\n"
              "cfg = parse_config({'tracking': {'uri': sys.argv[1]}})\n"
              "if sys.argv[3] == 'stage':\n"
              "    with tracking.stage_run(cfg, 'videos', ('videos',), root=sys.argv[2]) as run:\n        print(run.id)\n"
              "else:\n"
              "    with tracking.parent_run(cfg, 'ablation', root=sys.argv[2]) as run:\n        print(run.id)\n")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}  # set by mlflow.set_tracking_uri in other tests
    procs = [subprocess.Popen([sys.executable, "-c", script, uri, str(root), kind], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for kind in ("stage", "parent", "stage", "parent")]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(err[-1500:] for _, err in outs)
    client = MlflowClient(uri)
    (exp,) = [e for e in client.search_experiments() if e.name == "eve-fdd-shapes"]
    assert {r.info.run_id for r in client.search_runs([exp.experiment_id])} == {out.strip() for out, _ in outs}


def test_parent_run_logs_text_metrics_as_tags(cfg, tmp_path, root):
    """An ablation's parent run rolls up metrics/fdd/<variant>.json, whose `setup` is text."""
    with tracking.parent_run(cfg, "ablation", root=root) as run:
        run.log_metrics({"fdd.steps": 150, "fdd.setup": "0123abcd"})
    r = run.client.get_run(run.id)
    assert r.data.metrics == {"fdd.steps": 150.0} and r.data.tags["fdd.setup"] == "0123abcd"
