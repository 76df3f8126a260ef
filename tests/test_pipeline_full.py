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
from full_profile import build_tiny_full, full_smoke_params, tiny_full_gguf, tiny_lora

pytestmark = pytest.mark.e2e

STAGES = ("videos", "llm", "instructions", "subject_style_instructions", "edit_pairs", "backbone", "edit_adapter", "video_adapter",
          "loras@watercolour", "metric_models@clip", "metric_models@xclip", "fdd@full", "fdd@no_align", "fdd_personal@watercolour",
          "evaluate@full", "evaluate@no_align", "baselines@sdedit_75", "report")


@pytest.fixture(scope="module")
def full_repro(tmp_path_factory, prefect_api):
    models_root = tmp_path_factory.mktemp("full-pretrained")
    models = build_tiny_full(models_root)
    models["lora"] = tiny_lora(models["backbone"], models_root / "lora")
    gguf = tiny_full_gguf(models_root / "tiny-full.gguf")
    dest = tmp_path_factory.mktemp("full-smoke") / "project"
    files = sh(["git", "ls-files", "--cached", "--others", "--exclude-standard"], ROOT).stdout.split()
    for f in files:
        if (ROOT / f).is_file() and not f.startswith(("data/", "metrics/", "report/", "plots/")):
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, dest / f)
    shutil.copytree(models["clips"], dest / "raw" / "clips", dirs_exist_ok=True)
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
    assert json.loads((dest / "metrics/edit_pairs.json").read_text())["pretrained_edit_adapter"] == 1
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
    for method in ("full", "no_align", "sdedit_75"):
        m = json.loads((dest / "metrics/evaluate" / f"{method}.json").read_text())
        assert all(f"paper.{k}.mean" in m for k in ("clip_frame", "pick_score", "viclip_out", "viclip_dir"))


def test_the_student_trained_and_edits_otherwise_than_plug_and_play(full_repro):
    from safetensors.torch import load_file

    dest = full_repro[0]
    lora = load_file(dest / "data/fdd/full/model/lora/pytorch_lora_weights.safetensors")
    assert any(k.endswith("lora_B.weight") and v.abs().sum() > 0 for k, v in lora.items())  # B starts at zero
    full, plug = (np.load(dest / "data/evaluate" / m / "edits.npy") for m in ("full", "no_align"))
    assert full.shape == plug.shape and not np.array_equal(full, plug)  # same data points, same noise


def test_eve_fdd_edit_runs_the_trained_student_on_an_mp4(full_repro):
    from eve_fdd.data.video import read_video

    dest, env, _, models = full_repro
    clip = models["clips"] / "red_right.mp4"
    out = dest / "edited.mp4"
    sh(["eve-fdd", "edit", str(clip), "--instruction", "make the background orange", "--caption",
        "a red square moving right on an orange background", "--task", "background", "-o", str(out), "--quiet"], dest, env)
    frames, _ = read_video(out)
    assert frames.shape[0] == 12 and frames.shape[1:3] == (32, 32)  # every frame, at the model's size


def test_a_second_repro_does_nothing(full_repro):
    dest, env, _, _ = full_repro
    out = sh(["dvc", "repro"], dest, env).stdout
    assert "Running stage" not in out
