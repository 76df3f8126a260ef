"""Stage `fdd` on the full profile (library part): SD 1.5's classes in latent space with its
VAE, AnimateDiff's MotionAdapter, a ControlNet reading pixels, DINOv2 discriminators reading
decoded frames, real mp4 clips without a ground truth; all tiny and random (tests/full_profile.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from eve_fdd.config import Config
from eve_fdd.stages import fdd

from full_profile import build_tiny_full, full_stage_inputs, metric_models_dir

FRAME = 32


def full_cfg(models, **fdd_over) -> Config:
    f = {"iterations": 4, "batch_size": 2, "k": 2, "pool_size": 3, "pool_refresh": 0.34, "teacher_steps": 2, "checkpoint_every": 2,
         "log_every": 1, "sample_every": 2, "eval_items": 2, "samples": 1, "lora_rank": 2, "sds_only_fraction": 0.5,
         "discriminator": {"pretrained": str(models["dinov2"]), "image_size": 24, "feature_layers": [1, 2], "head_width": 16,
                           "head_heads": 2}} | fdd_over
    return Config(profile="full", videos={"fps": 4, "ingest": {"frames": 4, "stride": 2, "size": FRAME}},
                  diffusion={"prediction_type": "epsilon", "zero_terminal_snr": False, "inference_steps": 4},
                  models={"backbone": {"pretrained": str(models["backbone"])}}, fdd=f)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return build_tiny_full(tmp_path_factory.mktemp("full-models"), frame_size=FRAME)


@pytest.fixture(scope="module")
def inputs(models, tmp_path_factory):
    return full_stage_inputs(models, tmp_path_factory.mktemp("full-inputs"), full_cfg(models).videos.ingest)


def _build(cfg, inputs, tmp_path, variant):
    return fdd.build(cfg, variant, inputs["instructions"], inputs["videos"], inputs["backbone_dir"], inputs["edit_dir"],
                     inputs["video_dir"], tmp_path / variant, tmp_path / "ckpt" / variant, progress=False)


def test_random_init_builds_untrained_adapters_like_the_teachers_and_guidance_runs(models, inputs, tmp_path):
    from diffusers import ControlNetModel

    out = _build(full_cfg(models, iterations=2, teacher_guidance=3.0, sds_guidance=2.0, inference_guidance=1.5), inputs, tmp_path,
                 "random_init")
    assert all(np.isfinite(r["loss"]) for r in out.curve)
    info = json.loads((tmp_path / "random_init" / "model.json").read_text())
    cn = ControlNetModel.from_pretrained(info["controlnet"])
    assert tuple(cn.config.conditioning_embedding_out_channels) == (16, 32)  # reads pixels at 2x the latents, as the teacher


def test_bad_parts_are_named_before_training(models, inputs, tmp_path):
    from eve_fdd.models.adapters import edit_adapter
    from eve_fdd.models.backbone import load_backbone

    cfg = full_cfg(models)
    wrong = tmp_path / "edit_adapter"
    wrong.mkdir()
    edit_adapter(load_backbone(models["backbone"]).unet, conditioning_channels=(16,)).save_pretrained(wrong / "model")
    (wrong / "model.json").write_text(json.dumps({"path": str(wrong / "model")}))
    with pytest.raises(ValueError, match=r"edit adapter.*shrinks its condition image 1x"):
        fdd.build(cfg, "full", inputs["instructions"], inputs["videos"], inputs["backbone_dir"], wrong, inputs["video_dir"],
                  tmp_path / "o1", tmp_path / "c1", progress=False)
    (wrong / "model.json").write_text(json.dumps({"path": str(models["motion"])}))  # a MotionAdapter where a ControlNet belongs
    with pytest.raises(ValueError, match="could not load a ControlNetModel"):
        fdd.build(cfg, "full", inputs["instructions"], inputs["videos"], inputs["backbone_dir"], wrong, inputs["video_dir"],
                  tmp_path / "o2", tmp_path / "c2", progress=False)
    missing = full_cfg(models, discriminator={"pretrained": str(tmp_path / "no-dino"), "feature_layers": [1, 2]})
    with pytest.raises(FileNotFoundError, match=r"fdd.discriminator.pretrained: .*no-dino: no such directory"):
        fdd.build(missing, "full", inputs["instructions"], inputs["videos"], inputs["backbone_dir"], inputs["edit_dir"],
                  inputs["video_dir"], tmp_path / "o3", tmp_path / "c3", progress=False)
    assert not (tmp_path / "c3").exists()  # nothing trained


def test_long_captions_are_cut_to_clips_77_tokens_and_counted(models):
    from eve_fdd.models.registry import build_backbone

    bb = build_backbone(full_cfg(models))
    emb = bb.encode_text(["a red square " * 60, "a blue square"])
    assert emb.shape == (2, 77, 32) and torch.isfinite(emb).all()
    assert bb.text_metrics() == {"text.encoded": 2, "text.truncated": 1}


def test_every_method_is_edited_in_latents_scored_by_the_paper_metrics_and_reported(models, inputs, tmp_path):
    from eve_fdd import tracking
    from eve_fdd.data import tables
    from eve_fdd.stages import evaluate, report

    methods = ("no_align", "input", "edit_frames", "sdedit_75")
    cfg = full_cfg(models).model_copy(update={
        "evaluate": Config().evaluate.model_copy(update={"items": 3, "batch_size": 2, "samples": 2, "baselines": methods[1:]})})
    cfg = cfg.model_copy(update={"fdd": cfg.fdd.model_copy(update={"variants": ("no_align",)})})
    _build(cfg, inputs, tmp_path / "fdd", "no_align")
    metric_dir = metric_models_dir(models, tmp_path / "metric_models")
    dirs = evaluate.Dirs(inputs["instructions"], inputs["videos"], inputs["backbone_dir"], inputs["edit_dir"], inputs["video_dir"],
                         tmp_path / "fdd", metric_dir)
    (held,) = [v for v in tables.read_table(tables.VIDEOS, inputs["videos"]) if v["split"] == "test"]
    for method in methods:
        metrics, artifacts = evaluate.build(cfg, method, dirs, tmp_path / "eval" / method, progress=False)
        tracking.write_metrics(metrics, tmp_path / "metrics" / f"{method}.json")
        assert metrics["items"] == 3 and not any(k.startswith("gt.") for k in metrics)  # real clips: no ground truth
        for name in ("clip_frame", "pick_score", "viclip_out", "viclip_dir"):
            assert np.isfinite(metrics[f"paper.{name}.mean"]), (method, name)
        edits = np.load(tmp_path / "eval" / method / "edits.npy")
        assert edits.shape == (3, 4, FRAME, FRAME, 3) and edits.dtype == np.uint8
        if method == "input":  # the input's own pixels, not a VAE round trip
            assert all(np.array_equal(e, tables.frames_from_row(held)) for e in edits)
    report.build(cfg, dirs, tmp_path / "metrics", tmp_path / "eval", tmp_path / "report", tmp_path / "no-seeds.json",
                 tmp_path / "plots", tmp_path / "fdd-metrics")
    text = (tmp_path / "report" / "tables.md").read_text()
    assert "Full profile" in text and "PickScore" in text and "changed err" not in text  # the columns this profile has
    assert len(list((tmp_path / "report" / "grids").glob("item-*.gif"))) == 2


def test_a_benchmark_in_tgve_layout_is_scored_with_its_missing_videos_counted(models, inputs, tmp_path):
    import csv

    from eve_fdd.data import tables
    from eve_fdd.stages import evaluate

    bench = tmp_path / "benchmark"
    (bench / "videos").mkdir(parents=True)
    shutil_copy = __import__("shutil").copy
    for name in ("red_right.mp4", "green_down.mp4"):
        shutil_copy(models["clips"] / name, bench / "videos" / name)
    with (bench / "tgve.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["Video name", "Our GT caption", "Style Change Caption", "Object Change Caption", "Background Change Caption",
                    "Multiple Changes Caption", "Remove Instruction", "Remove Caption"])
        w.writerow(["red_right", "a red square moving right on a blue background", "a red square in van gogh style",
                    "a red ball moving right on a blue background", "a red square moving right on a beach", "a ball on a beach",
                    "remove the square", "a blue background"])
        w.writerow(["green_down", "a green square moving down on a white background", "a green square, watercolour", "", "", "", "", ""])
        w.writerow(["not_there", "a clip that is not in the folder", "an oil painting", "", "", "", "", ""])
    metric_dir = metric_models_dir(models, tmp_path / "metric_models")
    base = full_cfg(models)
    cfg = base.model_copy(update={"evaluate": base.evaluate.model_copy(update={
        "samples": 1, "benchmark": base.evaluate.benchmark.model_copy(update={"dir": str(bench), "csv": "tgve.csv", "videos": "videos"})})})
    dirs = evaluate.Dirs(inputs["instructions"], inputs["videos"], inputs["backbone_dir"], inputs["edit_dir"], inputs["video_dir"],
                         tmp_path / "fdd", metric_dir)
    metrics, _ = evaluate.build(cfg, "sdedit_75", dirs, tmp_path / "out", progress=False)
    assert metrics["items"] == 6 and metrics["skipped.benchmark_missing_video"] == 1  # 5 + 1 items; the missing video counted
    assert np.isfinite(metrics["paper.pick_score.mean"]) and np.isfinite(metrics["paper.pick_score.remove"])
    (reject,) = tables.read_table(tables.REJECTS, tmp_path / "out" / "benchmark_rejects.parquet")
    assert reject["reason"] == "missing_video" and "not_there" in reject["item"]
    assert np.load(tmp_path / "out" / "edits.npy").shape == (6, 4, FRAME, FRAME, 3)


def test_fdd_and_evaluate_run_with_frozen_weights_in_bf16_as_on_a_gpu(models, inputs, tmp_path, monkeypatch):
    """The GPU placement on the CPU: VAE, text encoder, UNet, ControlNet, motion modules, DINOv2
    and the metric models stored in bf16, the student's LoRA and the heads float32, autocast on."""
    from safetensors.torch import load_file

    from eve_fdd.models.placement import Placement
    from eve_fdd.stages import evaluate

    gpu_like = Placement(torch.device("cpu"), True, torch.bfloat16)
    monkeypatch.setattr(Placement, "resolve", classmethod(lambda cls, mixed_precision="no": gpu_like))
    placed: list = []
    frozen = Placement.frozen
    monkeypatch.setattr(Placement, "frozen", lambda self, *ms: (placed.extend(m for m in ms if m is not None), frozen(self, *ms))[1])
    cfg = full_cfg(models, iterations=2, sds_only_fraction=0.5, mixed_precision="auto")
    out = _build(cfg, inputs, tmp_path / "fdd", "full")
    assert out.metrics["device"] == "cpu" and out.metrics["bf16"] == 1.0 and out.metrics["frozen_bf16"] == 1.0
    assert len(out.curve) == 2 and np.isfinite(out.curve[1]["loss"]) and np.isfinite(out.curve[1]["critic.loss"])  # adversarial at step 1
    kinds = {type(m).__name__ for m in placed}
    assert {"AutoencoderKL", "CLIPTextModel", "UNet2DConditionModel", "Dinov2Model"} <= kinds
    lora = load_file(next((tmp_path / "fdd" / "full" / "model" / "lora").glob("*.safetensors")))
    assert all(v.dtype == torch.float32 for v in lora.values())  # trained in float32 on a bf16 base
    assert any(float(v.abs().sum()) > 0 for k, v in lora.items() if "lora_B" in k)  # and it trained (B starts at zero)

    metric_dir = metric_models_dir(models, tmp_path / "metric_models")
    dirs = evaluate.Dirs(inputs["instructions"], inputs["videos"], inputs["backbone_dir"], inputs["edit_dir"], inputs["video_dir"],
                         tmp_path / "fdd", metric_dir)
    cfg = cfg.model_copy(update={"evaluate": cfg.evaluate.model_copy(update={"items": 2, "batch_size": 2, "samples": 0})})
    metrics, _ = evaluate.build(cfg, "full", dirs, tmp_path / "eval", progress=False)
    assert {"CLIPModel", "XCLIPModel", "ControlNetModel", "UNetMotionModel"} <= {type(m).__name__ for m in placed}
    assert all(p.dtype == torch.bfloat16 for m in placed for p in m.parameters() if not p.requires_grad)
    assert metrics["frozen_bf16"] == 1.0 and metrics["bf16"] == 1.0
    for name in ("clip_frame", "pick_score", "viclip_out", "viclip_dir"):
        assert np.isfinite(metrics[f"paper.{name}.mean"]), name
    edits = np.load(tmp_path / "eval" / "edits.npy")
    assert edits.shape == (2, 4, FRAME, FRAME, 3) and edits.std() > 0
