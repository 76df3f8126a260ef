"""Stage `video_adapter` (library part): only the temporal layers learn, the first frame
conditions the clip, the stage resumes, saves a loadable MotionAdapter and checks temporal
consistency against independent frames. Quality is measured by the stage, not here."""

from __future__ import annotations

import pytest
import torch

from eve_fdd.config import Config
from eve_fdd.data.splits import VIDEO_ADAPTER_EVAL_STREAM, VIDEO_ADAPTER_TRAIN_STREAM
from eve_fdd.diffusion import NoiseSchedule, make_scheduler
from eve_fdd.models.adapters import EditVideoModel, load_video_adapter, motion_parameters, video_adapter as make_adapter, with_first_frame
from eve_fdd.models.backbone import load_backbone, tiny_backbone
from eve_fdd.models.registry import trained_path
from eve_fdd.stages import video_adapter
from eve_fdd.train import video_adapter as tv

from conftest import TINY_BACKBONE, assert_a_killed_run_resumes_exactly

CFG = Config(
    world={"frames": 4, "size": 16},
    models={"backbone": {"tiny": TINY_BACKBONE}},
    video_adapter={"train": {"steps": 3, "checkpoint_every": 2, "log_every": 1}, "batch_size": 2, "eval_clips": 3, "eval_steps": 2, "samples": 2},
)


@pytest.fixture
def backbone_dir(tiny_backbone_dir):
    return tiny_backbone_dir


def test_clips_are_the_scenes_motion_from_their_own_stream():
    x, captions, _ = tv.clips(CFG.world, 0, VIDEO_ADAPTER_TRAIN_STREAM, range(2))
    assert x.shape == (2, 3, 4, 16, 16) and x.min() >= -1 and x.max() <= 1
    assert (x[:, :, 1:] - x[:, :, :-1]).abs().amax() > 0  # the shapes move
    assert tv.clips(CFG.world, 0, VIDEO_ADAPTER_EVAL_STREAM, range(2))[1] != captions


def test_first_frame_is_fixed_and_frame_change_measures_motion():
    x = torch.randn(2, 3, 4, 8, 8)
    first = torch.zeros(2, 3, 8, 8)
    y = with_first_frame(x, first)
    assert torch.equal(y[:, :, 0], first) and torch.equal(y[:, :, 1:], x[:, :, 1:])
    still = torch.zeros(1, 3, 4, 8, 8)
    assert tv.frame_change(still)[0] == 0 and tv.motion(still)[0] == 0
    ramp = torch.linspace(-1, 1, 4).reshape(1, 1, 4, 1, 1).expand(1, 3, 4, 8, 8)
    assert tv.frame_change(ramp)[0] == pytest.approx(1 / 3) and tv.motion(ramp)[0] == pytest.approx(1.0)


def test_only_the_temporal_layers_get_gradients_and_frame_0_has_no_loss():
    backbone = tiny_backbone(CFG.models.backbone.tiny, CFG.world.size, 0).freeze()
    unet = make_adapter(backbone.unet, heads=2)
    unet.requires_grad_(False)
    for p in motion_parameters(unet):
        p.requires_grad_(True)
    schedule = NoiseSchedule.from_scheduler(make_scheduler(CFG.diffusion))
    x0, captions, _ = tv.clips(CFG.world, 0, VIDEO_ADAPTER_TRAIN_STREAM, range(2))
    x0.requires_grad_(True)
    loss = tv.video_loss(EditVideoModel(unet), schedule, x0, backbone.encode_text(captions), torch.Generator().manual_seed(0))
    loss.backward()
    assert all(p.grad is None for n, p in unet.named_parameters() if "motion_modules" not in n)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in motion_parameters(unet))
    assert x0.grad[:, :, 1:].abs().sum() > 0  # frame 0 is a condition, not a target


def test_build_trains_resumes_exactly_saves_and_checks(backbone_dir, tmp_path):
    out, _ = assert_a_killed_run_resumes_exactly(
        lambda run, on_log: video_adapter.build(CFG, backbone_dir, run / "out", run / "ckpt", progress=False, on_log=on_log), tmp_path, 2, 2)
    assert out.metrics["steps"] == 3
    tmp_path = tmp_path / "whole"
    backbone = load_backbone(trained_path(backbone_dir))
    model = load_video_adapter(backbone.unet, trained_path(tmp_path / "out"))
    assert sum(p.numel() for p in motion_parameters(model)) == out.metrics["params_motion"]
    for key in ("check.frame_change", "check.frame_change_ground_truth", "check.independent.frame_change", "check.motion", "check.shape_recall"):
        assert key in out.metrics
    assert out.metrics["check.frame_change_ground_truth"] > 0
    assert (tmp_path / "out/samples.png").stat().st_size > 0 and (tmp_path / "out/samples/clip-00.gif").stat().st_size > 0
