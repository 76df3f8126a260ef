"""End to end: the real `dvc repro` on smoke-size params, in a copy of the project."""

import json

import pytest
import yaml
from mlflow.tracking import MlflowClient

from eve_fdd.data import tables

from conftest import sh

pytestmark = pytest.mark.e2e


def _run(cmd, cwd, env) -> str:
    proc = sh(cmd, cwd, env)
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def project(smoke_repro):
    """A git checkout of the project's tracked files with smoke-size params, after `dvc repro`."""
    dest, env, _, _ = smoke_repro
    return dest, env


def test_dvc_repro_runs_the_pipeline(smoke_repro):
    dest, env, out, _ = smoke_repro
    for stage in ("videos", "llm", "instructions", "subject_style_instructions", "edit_pairs", "backbone", "edit_adapter",
                  "video_adapter", "loras@star", "loras@sketch", "metric_models@clip",
                  "metric_models@xclip", "features", "fdd@full", "fdd_personal@star", "evaluate@full", "baselines@input",
                  "baselines@sdedit_75", "report"):
        assert f"Running stage '{stage}'" in out
    rows = tables.read_table(tables.VIDEOS, dest / "data/videos/videos.parquet")
    assert len(rows) == 24
    assert tables.read_table(tables.REJECTS, dest / "data/videos/rejects.parquet") == []
    assert (dest / "data/videos/samples/contact_sheet.png").stat().st_size > 0
    assert "videos" in _run(["dvc", "metrics", "show"], dest, env)
    # a 10-step Llama, and still valid instructions (the scene grammar), so FDD and the evaluation have data
    assert json.loads((dest / "metrics/instructions.json").read_text())["acceptance"] >= 0.9
    fdd = json.loads((dest / "metrics/fdd/full.json").read_text())
    assert fdd["steps"] == 2 and fdd["train_items"] > 0
    evaluated = json.loads((dest / "metrics/evaluate/full.json").read_text())
    assert evaluated["items"] == 3 and "gt.fidelity.changed.mean" in evaluated
    assert "| EVE (FDD, full) |" in (dest / "report/tables.md").read_text()
    # MLflow: one run for the stage, tagged and with its artifacts, in the project's store
    client = MlflowClient(f"sqlite:///{dest}/mlflow.db")
    exp = client.get_experiment_by_name("eve-fdd-shapes")
    (run,) = client.search_runs([exp.experiment_id], "tags.`dvc.stage` = 'videos'")
    assert run.info.status == "FINISHED" and run.data.tags["dvc.stage"] == "videos"
    assert run.data.tags.get("prefect.flow_run_id")
    assert run.data.metrics["videos"] == 24
    samples = {a.path for a in client.list_artifacts(run.info.run_id, "samples")}
    assert "samples/contact_sheet.png" in samples and "samples/shapes-00000.gif" in samples


def test_edit_pairs_stage_writes_pairs_and_logs_them(project):
    dest, env = project
    pairs = tables.read_table(tables.EDIT_PAIRS, dest / "data/edit_pairs/pairs.parquet")
    rejects = tables.read_table(tables.REJECTS, dest / "data/edit_pairs/rejects.parquet")
    assert len(pairs) + len(rejects) == 21 and len(pairs) >= 14
    metrics = json.loads((dest / "metrics/edit_pairs.json").read_text())
    assert metrics["pairs"] == len(pairs)
    client = MlflowClient(f"sqlite:///{dest}/mlflow.db")
    exp = client.get_experiment_by_name("eve-fdd-shapes")
    (run,) = client.search_runs([exp.experiment_id], "tags.`dvc.stage` = 'edit_pairs'")
    assert run.data.metrics["pairs"] == len(pairs)
    assert "samples/contact_sheet.png" in {a.path for a in client.list_artifacts(run.info.run_id, "samples")}


@pytest.mark.parametrize("stage, path", [("backbone", "backbone"), ("edit_adapter", "edit_adapter"),
                                         ("video_adapter", "video_adapter"), ("loras@sketch", "loras/sketch")])
def test_model_stages_save_check_plot_and_log(project, stage, path):
    dest, env = project
    info = json.loads((dest / f"data/{path}/model.json").read_text())
    assert info["trained"] and (dest / info["path"]).is_dir()
    metrics = json.loads((dest / f"metrics/{path}.json").read_text())
    assert metrics["steps"] == 3 and any(k.startswith("check.") for k in metrics)
    curve = json.loads((dest / f"plots/{path}_loss.json").read_text())
    assert [r["step"] for r in curve] == [0, 1, 2]
    assert (dest / f"data/checkpoints/{path}/checkpoints/step-000003/weights.safetensors").is_file()
    assert path in _run(["dvc", "plots", "show", "--json", f"plots/{path}_loss.json"], dest, env)
    client = MlflowClient(f"sqlite:///{dest}/mlflow.db")
    exp = client.get_experiment_by_name("eve-fdd-shapes")
    (run,) = client.search_runs([exp.experiment_id], f"tags.`dvc.stage` = '{stage}'")
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train.loss")] == [0, 1, 2]
    assert "samples.png" in {a.path for a in client.list_artifacts(run.info.run_id)}


def _instructions(dest, name):
    rows = tables.read_table(tables.INSTRUCTIONS, dest / f"data/instructions/{name}.parquet")
    rejects = tables.read_table(tables.REJECTS, dest / f"data/instructions/{name}_rejects.parquet")
    return rows, rejects


def test_instructions_cover_every_video_and_task(project):
    dest, env = project
    videos = tables.read_table(tables.VIDEOS, dest / "data/videos/videos.parquet")
    rows, rejects = _instructions(dest, "instructions")
    not_applicable = {r["item"] for r in rejects if r["reason"] == "not_applicable"}
    asked = {r["row_id"] for r in rows}
    for v in videos:  # seven per video: a row, or an explicit reject saying why it was not asked
        for task in ("add", "remove", "background", "texture", "local", "style", "global"):
            assert (f"{v['video_id']}/{task}" in asked) != (f"{v['video_id']}/{task}" in not_applicable)
    failed = [r for r in rejects if r["reason"] != "not_applicable"]
    # every failed attempt is a reject row: attempts - (1 if accepted) per row
    assert len(failed) == sum(r["attempts"] - (r["status"] == "accepted") for r in rows)
    assert all(r["model"] == "shapes-llama.gguf" and len(r["model_sha256"]) == 64 for r in rows)
    metrics = json.loads((dest / "metrics/instructions.json").read_text())
    assert metrics["requests"] == len(rows) and metrics["model_calls"] == sum(r["attempts"] for r in rows)
    subject, _ = _instructions(dest, "subject_style_instructions")
    assert sorted({(r["set"], r["concept"]) for r in subject}) == [("style", "scanlines"), ("style", "sketch"), ("subject", "cross"), ("subject", "star")]
    client = MlflowClient(f"sqlite:///{dest}/mlflow.db")
    exp = client.get_experiment_by_name("eve-fdd-shapes")
    (run,) = client.search_runs([exp.experiment_id], "tags.`dvc.stage` = 'instructions'")
    assert run.data.metrics["requests"] == len(rows)
    assert "examples.json" in {a.path for a in client.list_artifacts(run.info.run_id)}


def test_forced_rerun_reads_the_cache_instead_of_the_model(project):
    dest, env = project
    before, _ = _instructions(dest, "instructions")
    calls = json.loads((dest / "metrics/instructions.json").read_text())["model_calls"]
    _run(["dvc", "repro", "-f", "-s", "instructions"], dest, env)
    metrics = json.loads((dest / "metrics/instructions.json").read_text())
    assert metrics["model_calls"] == 0 and metrics["cache_hits"] == calls
    assert _instructions(dest, "instructions")[0] == before


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
    assert "Running stage 'videos'" in _run(["dvc", "repro", "videos"], dest, env)  # (not what follows it: minutes)
    assert len(tables.read_table(tables.VIDEOS, dest / "data/videos/videos.parquet")) == 20
