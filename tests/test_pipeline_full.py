"""End to end on the full profile: the real `dvc repro` through every stage to `report`, with
tiny randomly initialised models of the classes the full profile loads (SD 1.5's UNet, VAE,
CLIP text encoder and tokenizer; a MotionAdapter; a ControlNet; DINOv2; CLIP / PickScore /
X-CLIP; a small Llama GGUF) saved in the hub's layouts, on real mp4 clips with one broken
file; then `eve-fdd edit` on an mp4 with the trained student."""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from eve_fdd.data import tables

from conftest import ROOT, sh
from full_profile import build_tiny_full, edit_pair_folder, full_smoke_params, lora_image_folder, tiny_full_gguf

pytestmark = pytest.mark.e2e

STAGES = ("videos", "llm", "instructions", "subject_style_instructions", "edit_pairs", "backbone", "edit_adapter", "video_adapter",
          "loras@watercolour", "metric_models@clip", "metric_models@xclip", "features", "fdd@full", "fdd_personal@watercolour",
          "evaluate@full", "baselines@sdedit_75", "report")


@pytest.fixture(scope="module")
def full_repro(tmp_path_factory, prefect_api):
    models_root = tmp_path_factory.mktemp("full-pretrained")
    models = build_tiny_full(models_root)
    gguf = tiny_full_gguf(models_root / "tiny-full.gguf")
    dest = tmp_path_factory.mktemp("full-smoke") / "project"
    files = sh(["git", "ls-files", "--cached", "--others", "--exclude-standard"], ROOT).stdout.split()
    for f in files:
        if (ROOT / f).is_file() and not f.startswith(("data/", "metrics/", "report/", "plots/")):
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, dest / f)
    shutil.copytree(models["clips"], dest / "raw" / "clips", dirs_exist_ok=True)
    edit_pair_folder(dest / "raw" / "edit_pairs")
    lora_image_folder(dest / "raw" / "loras" / "watercolour")
    params = full_smoke_params(yaml.safe_load((ROOT / "params.yaml").read_text()), models, gguf)
    params["evaluate"]["baselines"] = ["sdedit_75"]
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (dest / "results").mkdir(exist_ok=True)
    (dest / "results" / "fdd_seeds.json").unlink(missing_ok=True)  # the Shapes seed runs are not this project's
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}", **prefect_api)
    env.pop("MLFLOW_TRACKING_URI", None)
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"]):
        sh(cmd, dest, env)
    proc = sh(["dvc", "repro"], dest, env, timeout=1800)
    return dest, env, proc.stdout + proc.stderr, models


def test_every_stage_runs_on_the_full_profile(full_repro):
    dest, env, out, _ = full_repro
    for stage in STAGES:
        assert f"Running stage '{stage}'" in out, stage
    videos = tables.read_table(tables.VIDEOS, dest / "data/videos/videos.parquet")
    rejects = tables.read_table(tables.REJECTS, dest / "data/videos/rejects.parquet")
    assert len(videos) == 4 and [r["item"].endswith("broken.mp4") for r in rejects] == [True]  # a counted reject, named
    assert json.loads((dest / "metrics/videos.json").read_text())["rejected"] == 1
    pairs = json.loads((dest / "metrics/edit_pairs.json").read_text())
    assert pairs["pairs"] == 8 and pairs["pretrained_edit_adapter"] == 0  # ingested from raw/edit_pairs
    assert json.loads((dest / "metrics/edit_adapter.json").read_text())["steps"] == 3  # trained on them, not resolved
    video = json.loads((dest / "metrics/video_adapter.json").read_text())
    assert video["steps"] == 3 and "check.init.frame_change" in video  # trained on the clips from the given MotionAdapter
    lora = json.loads((dest / "metrics/loras/watercolour.json").read_text())
    assert lora["steps"] == 3 and lora["train_images"] == 6  # trained from raw/loras/watercolour, not resolved
    text = (dest / "report/tables.md").read_text()
    assert "Full profile" in text and "PickScore" in text and "changed err" not in text


def test_every_metric_is_finite(full_repro):
    dest = full_repro[0]
    found = list((dest / "metrics").rglob("*.json"))
    assert len(found) >= len(STAGES) - 1  # every stage but report writes its metrics
    for path in found:
        for key, value in json.loads(path.read_text()).items():
            if isinstance(value, (int, float)):
                assert math.isfinite(value), (path, key)
    for method in ("full", "sdedit_75"):
        m = json.loads((dest / "metrics/evaluate" / f"{method}.json").read_text())
        assert all(f"paper.{k}.mean" in m for k in ("clip_frame", "pick_score", "viclip_out", "viclip_dir"))


def test_the_fdd_stages_log_their_terms_samples_and_metrics_to_mlflow(full_repro):
    from mlflow.tracking import MlflowClient

    dest = full_repro[0]
    client = MlflowClient(f"sqlite:///{dest}/mlflow.db")
    exp = client.get_experiment_by_name("eve-fdd-full")

    def run_of(stage):
        (run,) = client.search_runs([exp.experiment_id], f"tags.`dvc.stage` = '{stage}'")
        return run, (lambda key: [m.step for m in client.get_metric_history(run.info.run_id, key)])

    run, history = run_of("fdd@full")
    metrics = json.loads((dest / "metrics/fdd/full.json").read_text())
    assert metrics["steps"] == 3 and len(metrics["setup"]) == 16 and run.data.tags["setup"] == metrics["setup"]  # text: a tag
    assert [r["step"] for r in json.loads((dest / "plots/fdd/full_loss.json").read_text())] == [0, 1, 2]
    assert history("train.loss") == history("train.sds_edit") == history("train.grad_norm") == history("train.timestep.0") == [0, 1, 2]
    assert history("train.adv_video") == history("train.edit.d_real_acc") == history("train.critic.grad_norm") == [2]  # after SDS only
    assert {"samples.png", "timesteps.png"} <= {a.path for a in client.list_artifacts(run.info.run_id)}
    run, history = run_of("fdd_personal@watercolour")
    assert history("train.sds_concept") == history("train.sds_edit") == [0, 1, 2] and history("train.adv_concept") == [2]
    assert {"timesteps.png", "samples.png", "drawn_inputs.png", "step-000000.gif", "step-000002.gif"} <= {
        a.path for a in client.list_artifacts(run.info.run_id)}
    run, _ = run_of("baselines@sdedit_75")
    metrics = json.loads((dest / "metrics/evaluate/sdedit_75.json").read_text())
    assert run.info.run_name == "baselines@sdedit_75"
    assert run.data.metrics["paper.pick_score.mean"] == pytest.approx(metrics["paper.pick_score.mean"])
    assert "samples.png" in {a.path for a in client.list_artifacts(run.info.run_id)}


def test_eve_fdd_edit_runs_the_trained_student_on_an_mp4_and_it_is_not_plug_and_play(full_repro):
    import torch
    from safetensors.torch import load_file

    from eve_fdd.config import load_config
    from eve_fdd.data.video import read_video, resize_center_crop
    from eve_fdd.distill.editor import load_editor
    from eve_fdd.distill.teachers import lora_off

    dest, env, _, models = full_repro
    lora = load_file(dest / "data/fdd/full/model/lora/pytorch_lora_weights.safetensors")
    assert any(k.endswith("lora_B.weight") and v.abs().sum() > 0 for k, v in lora.items())  # B starts at zero: it trained
    clip = models["clips"] / "red_right.mp4"
    out = dest / "edited.mp4"
    args = ("make the background orange", "a red square moving right on an orange background", "background")
    sh(["eve-fdd", "edit", str(clip), "--instruction", args[0], "--caption", args[1], "--task", args[2], "-o", str(out), "--quiet"],
       dest, env)
    frames, _ = read_video(out)
    assert frames.shape[0] == 12 and frames.shape[1:3] == (32, 32)  # every frame, at the model's size
    cwd = Path.cwd()
    os.chdir(dest)  # the stage directories the editor reads are relative to the project
    try:
        editor = load_editor(load_config("params.yaml"), "data/fdd/full")
        source = np.stack([resize_center_crop(f, editor.size) for f in read_video(clip)[0][:6]])
        aligned = editor.edit(source, *args, seed=3, progress=False)
        with lora_off(editor.student.unet), torch.no_grad():
            plug_and_play = editor.edit(source, *args, seed=3, progress=False)  # the same noise, without the FDD LoRA
    finally:
        os.chdir(cwd)
    assert aligned.shape == plug_and_play.shape and not np.array_equal(aligned, plug_and_play)


def test_a_second_repro_does_nothing(full_repro):
    dest, env, _, _ = full_repro
    out = sh(["dvc", "repro"], dest, env).stdout
    assert "Running stage" not in out
