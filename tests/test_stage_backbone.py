"""Stage `backbone` (library part): trains with the shared loop, resumes, saves a loadable
backbone and scores samples with the detector. Quality is measured by the stage, not here."""

from __future__ import annotations

import json

import torch

from eve_fdd.config import Config
from eve_fdd.data.splits import BACKBONE_EVAL_STREAM, BACKBONE_TRAIN_STREAM
from eve_fdd.models.backbone import load_backbone
from eve_fdd.stages import backbone
from eve_fdd.train import backbone as tb
from eve_fdd.world import caption

from conftest import assert_a_killed_run_resumes_exactly

CFG = Config(
    models={"backbone": {"tiny": {"block_out_channels": [8, 16], "norm_num_groups": 4, "attention_heads": 2,
                                  "text_hidden_size": 16, "text_layers": 1, "text_heads": 2}}},
    backbone={"train": {"steps": 4, "checkpoint_every": 2, "log_every": 1}, "batch_size": 2, "eval_samples": 3, "eval_steps": 2},
)


def test_batches_are_renders_of_captioned_scenes_from_their_own_stream():
    x, captions, scenes = tb.batch(CFG.world, 0, BACKBONE_TRAIN_STREAM, range(3))
    assert x.shape == (3, 3, 32, 32) and x.min() >= -1 and x.max() <= 1
    assert captions == [caption(s) for s in scenes]
    _, again, _ = tb.batch(CFG.world, 0, BACKBONE_TRAIN_STREAM, range(3))
    _, held, _ = tb.batch(CFG.world, 0, BACKBONE_EVAL_STREAM, range(3))
    assert again == captions and held != captions


def test_min_snr_weighting_reweights_the_per_sample_loss():
    from eve_fdd.diffusion import NoiseSchedule, make_scheduler
    from eve_fdd.models.backbone import tiny_backbone

    model = tiny_backbone(CFG.models.backbone.tiny, 32, 0)
    x0, captions, _ = tb.batch(CFG.world, 0, BACKBONE_TRAIN_STREAM, range(4))
    v = NoiseSchedule.from_scheduler(make_scheduler(CFG.diffusion))

    def loss(schedule, gamma):
        return tb.v_loss(model, schedule, x0, captions, torch.Generator().manual_seed(3), 0.0, gamma)

    plain, weighted = loss(v, None), loss(v, 5.0)
    assert torch.isfinite(weighted) and not torch.isclose(plain, weighted)
    ones = NoiseSchedule(v.alphas_cumprod.clamp(max=0.999), "epsilon")  # no zero-SNR step; every SNR below gamma
    assert torch.isclose(loss(ones, None), loss(ones, 1e9), rtol=1e-5)  # weights all 1: the plain MSE


def test_build_trains_saves_and_checks(tmp_path):
    cut = CFG.model_copy(update={"backbone": CFG.backbone.model_copy(update={"train": CFG.backbone.train.model_copy(update={"steps": 2})})})
    first = backbone.build(cut, tmp_path / "out", tmp_path / "ckpt", progress=False)
    assert first.metrics["steps"] == 2
    out = backbone.build(CFG, tmp_path / "out", tmp_path / "ckpt", progress=False)  # params changed: fingerprint differs
    assert out.metrics["steps"] == 4 and out.metrics["resumed_from"] == 0
    again = backbone.build(CFG, tmp_path / "out2", tmp_path / "ckpt", progress=False)  # same params: nothing left to train
    assert again.metrics["resumed_from"] == 4 and again.metrics["steps"] == 4
    assert_a_killed_run_resumes_exactly(
        lambda run, on_log: backbone.build(CFG, run / "out", run / "ckpt", progress=False, on_log=on_log), tmp_path / "resume", 3, 2)
    info = json.loads((tmp_path / "out/model.json").read_text())
    loaded = load_backbone(info["path"])
    assert sum(p.numel() for p in loaded.unet.parameters()) == out.metrics["params_unet"]
    for key in ("check.all_present", "check.shape_recall", "check.untrained.shape_recall"):
        assert 0.0 <= out.metrics[key] <= 1.0
    assert (tmp_path / "out/samples.png").stat().st_size > 0
    assert [r["step"] for r in out.curve] == [0, 1, 2, 3]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in out.curve)
