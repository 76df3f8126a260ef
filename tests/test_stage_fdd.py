"""Stage `fdd` (library part) on tiny models: every variant runs, trains what it should,
resumes, saves, and is scored against the Shapes ground truth; bad inputs are named."""

from __future__ import annotations

import json

import numpy as np
import pytest

from eve_fdd.config import Config, ConfigError, load_config
from eve_fdd.data import tables
from eve_fdd.distill.data import ground_truth, load_items
from eve_fdd.stages import fdd

from conftest import ROOT, TINY_BACKBONE, assert_a_killed_run_resumes_exactly, fdd_inputs

CFG = Config(
    models={"backbone": {"tiny": TINY_BACKBONE}},
    diffusion={"inference_steps": 4},
    videos={"count": 24, "shard_size": 24, "samples": 0, "test_fraction": 0.25},
    video_adapter={"heads": 2},
    fdd={"iterations": 4, "batch_size": 2, "k": 2, "pool_size": 3, "pool_refresh": 0.34, "teacher_steps": 2, "checkpoint_every": 2,
         "log_every": 1, "sample_every": 2, "eval_items": 3, "samples": 1, "lora_rank": 2,
         "discriminator": {"hidden_size": 16, "layers": 2, "heads": 2, "patch_size": 8, "feature_layers": [1, 2], "head_width": 16, "head_heads": 2}},
)
TASKS = ("remove", "local", "background")


@pytest.fixture(scope="module")
def inputs(tiny_backbone_dir, tmp_path_factory):
    return fdd_inputs(CFG, TASKS, tiny_backbone_dir, tmp_path_factory.mktemp("fdd-inputs"))

def _build(inputs, tmp_path, variant, cfg=CFG):
    return fdd.build(cfg, variant, inputs["instructions"], inputs["videos"], inputs["backbone_dir"], inputs["edit_dir"],
                     inputs["video_dir"], tmp_path / variant, tmp_path / "ckpt" / variant, progress=False)


def test_a_killed_run_resumes_to_the_uninterrupted_runs_weights_and_pool(inputs, tmp_path):
    """Killed after its step-2 checkpoint, with the teacher pool refreshed since and the
    discriminators on at step 3: the rerun ends with the same student, discriminators, pool and
    scores, bit for bit (the pool is checkpointed with the weights)."""
    cheap = CFG.model_copy(update={"fdd": CFG.fdd.model_copy(update={"eval_items": 1, "samples": 0, "sample_every": 0})})
    assert_a_killed_run_resumes_exactly(
        lambda run, on_log: fdd.build(cheap, "full", inputs["instructions"], inputs["videos"], inputs["backbone_dir"], inputs["edit_dir"],
                                      inputs["video_dir"], run / "full", run / "ckpt", progress=False, on_log=on_log), tmp_path, 3, 2)
    from safetensors.torch import load_file

    assert {"edit_real", "video_real", "items", "batch.first"} <= set(load_file(tmp_path / "killed/ckpt/checkpoints/step-000002/extra.safetensors"))


def test_items_are_accepted_rows_of_the_split_and_the_ground_truth_is_the_edited_scene(inputs):
    items = load_items(inputs["instructions"], inputs["videos"], "train")
    assert items.skipped.get("instruction_rejected", 0) >= 1 and len(items) > 0
    assert items.frames.shape[1:] == (8, 32, 32, 3)
    i = items.tasks.index("background")
    truth = ground_truth(items, i, 8, 32, 2)
    assert truth.shape == items.frames[i].shape and not np.array_equal(truth, items.frames[i])
    # each clip's frames are held once, shared by its instructions, and read back per data point
    videos = {r["video_id"]: tables.frames_from_row(r) for r in tables.read_table(tables.VIDEOS, inputs["videos"])}
    assert len(items.frames.videos) == len(set(items.video_ids)) < len(items)
    for j in (0, len(items) - 1):
        np.testing.assert_array_equal(items.frames[j], videos[items.video_ids[j]])
    part = items.take([len(items) - 1, 0])
    np.testing.assert_array_equal(np.asarray(part.frames), np.stack([videos[items.video_ids[-1]], videos[items.video_ids[0]]]))
    assert part.frames.videos is items.frames.videos
    with pytest.raises(ValueError, match="split must be"):
        load_items(inputs["instructions"], inputs["videos"], "val")


@pytest.mark.parametrize("variant", ["full", "no_align", "random_init"])
def test_variants_train_what_they_should_save_and_are_scored(inputs, tmp_path, variant):
    out = _build(inputs, tmp_path, variant)
    m = out.metrics
    assert m["eval_items"] == 3 and np.isfinite(m["eval.fidelity.all.mean"]) and np.isfinite(m["eval.temporal.mean"])
    assert "eval.identity.fidelity.all.mean" in m
    info = json.loads((tmp_path / variant / "model.json").read_text())
    assert (tmp_path / variant / "model" / "lora" / "pytorch_lora_weights.safetensors").is_file()
    if variant == "no_align":
        assert "steps" not in m and not out.curve
        return
    assert m["steps"] == 4 and m["pool.generated"] >= 3
    progress = sorted(p.name for p in (tmp_path / variant / "progress").iterdir())
    assert progress == ["step-000000.gif", "step-000002.gif", "step-000003.gif"]  # every 2 iterations and the last
    from eve_fdd.data.video import read_video

    frames, _ = read_video(tmp_path / variant / "progress" / "step-000003.gif")
    assert frames.shape[:3] == (CFG.world.frames, 96, 4 * 96)  # input | student | edit teacher | video teacher
    assert (tmp_path / variant / "timesteps.png").is_file() and set(out.artifacts) >= {tmp_path / variant / "timesteps.png"}
    adv = [r for r in out.curve if "adv_edit" in r]
    assert adv and adv[0]["step"] == round(2 / 3 * 4)  # SDS only before that
    assert all("critic.loss" in r for r in adv)
    from safetensors.torch import load_file

    saved = load_file(tmp_path / "ckpt" / variant / "checkpoints" / "step-000004" / "weights.safetensors")
    student = {k for k in saved if k.startswith(("unet.", "controlnet."))}
    if variant == "full":
        assert student and all("lora_" in k for k in student)
        assert info["trainable"] == "lora"
    else:
        assert any("motion_modules" in k and "lora_" not in k for k in student) and any(k.startswith("controlnet.") for k in student)
        assert (tmp_path / variant / "model" / "controlnet").is_dir()
    assert any(k.startswith(("d_edit.", "d_video.")) for k in saved) and not any(".features." in k for k in saved)
    again = _build(inputs, tmp_path, variant)  # rerun: resumes from the finished checkpoint, trains nothing
    assert again.metrics["resumed_from"] == 4
    if variant == "random_init":  # issue 29: two seed runs of it were alike to five digits in results/fdd_seeds.json
        other = _build(inputs, tmp_path / "seed1", variant, CFG.model_copy(update={"fdd": CFG.fdd.model_copy(update={"seed": 1})}))
        assert other.metrics["setup"] == m["setup"] and other.metrics["eval.fidelity.all.mean"] != m["eval.fidelity.all.mean"]


def test_the_run_fingerprint_covers_the_teachers_and_the_setup_all_but_the_seed(inputs, tmp_path):
    """Retrained teachers under unchanged params are another run: their checkpoints are not
    resumed, and their seed runs are not averaged with the old ones (report)."""
    import shutil

    edit_dir = shutil.copytree(inputs["edit_dir"], tmp_path / "edit_adapter")
    files = (inputs["instructions"], inputs["videos"], inputs["backbone_dir"], edit_dir, inputs["video_dir"])
    run, setup = fdd.fingerprints(CFG, files)
    assert run != setup and fdd.fingerprints(CFG, files) == (run, setup)
    other_seed = CFG.model_copy(update={"fdd": CFG.fdd.model_copy(update={"seed": CFG.fdd.seed + 1})})
    run2, setup2 = fdd.fingerprints(other_seed, files)
    assert run2 != run and setup2 == setup
    weights = next(p for p in sorted(edit_dir.rglob("*.safetensors")))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    run3, setup3 = fdd.fingerprints(CFG, files)
    assert run3 not in (run, run2) and setup3 != setup


def test_dvc_reruns_the_fdd_stage_whenever_the_code_its_setup_hashes_changes():
    """The setup fingerprint hashes the files stage fdd's module runs (config.module_sources),
    so DVC must rerun the stage when any of them changes: else its metrics keep an old setup
    and every seed run of the new code is left out of the report."""
    import yaml

    from eve_fdd.config import PACKAGE_DIR, module_sources

    deps = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["fdd"]["do"]["deps"]
    uncovered = [p.relative_to(ROOT).as_posix() for p in module_sources(fdd.__name__)
                 if not any(p == ROOT / d or (ROOT / d) in p.parents for d in deps)]
    assert not uncovered, f"dvc.yaml stage fdd lacks deps on {uncovered}"
    assert PACKAGE_DIR / "evaluate" / "report.py" not in module_sources(fdd.__name__)


def test_bad_inputs_are_named(inputs, tmp_path):
    with pytest.raises(ValueError, match="unknown FDD variant 'nope'"):
        _build(inputs, tmp_path, "nope")
    with pytest.raises(FileNotFoundError, match="model.json"):
        fdd.build(CFG, "full", inputs["instructions"], inputs["videos"], inputs["backbone_dir"], tmp_path / "missing",
                  inputs["video_dir"], tmp_path / "o", progress=False)
    with pytest.raises(tables.SchemaError, match="not found"):
        fdd.build(CFG, "full", tmp_path / "none.parquet", inputs["videos"], inputs["backbone_dir"], inputs["edit_dir"],
                  inputs["video_dir"], tmp_path / "o", progress=False)
    with pytest.raises(ConfigError, match="unknown FDD variant"):
        load_config(ROOT / "params.yaml", {"fdd.variants": ["full", "best"]})
