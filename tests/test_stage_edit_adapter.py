"""Stage `edit_adapter` (library part): trains only the ControlNet over a frozen backbone,
resumes, saves a loadable adapter and scores held-out edits per task against the identity
baseline. Quality is measured by the stage on default params, not here."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from eve_fdd.config import Config
from eve_fdd.diffusion import NoiseSchedule, make_scheduler
from eve_fdd.models.adapters import TASK_LABELS, EditVideoModel, edit_adapter as make_adapter
from eve_fdd.models.backbone import tiny_backbone
from eve_fdd.models.registry import trained_path
from eve_fdd.stages import edit_adapter, edit_pairs
from eve_fdd.train import edit_adapter as te

from conftest import TINY_BACKBONE, assert_a_killed_run_resumes_exactly

CFG = Config(
    models={"backbone": {"tiny": TINY_BACKBONE}},
    edit_pairs={"count": 42, "test_fraction": 0.3, "shard_size": 42, "samples": 0},
    edit_adapter={"train": {"steps": 3, "checkpoint_every": 2, "log_every": 1}, "batch_size": 4, "eval_pairs": 14, "eval_steps": 2, "samples": 3},
)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, tiny_backbone_dir):
    root = tmp_path_factory.mktemp("edit")
    return tiny_backbone_dir, edit_pairs.run(CFG, root / "edit_pairs").pairs


def test_region_errors_split_the_image_by_what_the_edit_changes():
    source = -torch.ones(1, 3, 4, 4)
    target = source.clone()
    target[:, :, 0, :] = 1.0  # the edit turns the top row white: 4 of 16 pixels
    identity = te.region_errors(source, source, target)
    assert identity["changed"][0] == pytest.approx(1.0) and identity["kept"][0] == 0.0
    assert identity["all"][0] == pytest.approx(4 / 16)
    perfect = te.region_errors(target, source, target)
    assert perfect["all"][0] == 0.0 and perfect["changed"][0] == 0.0
    unchanged = te.region_errors(source, source, source)  # nothing to change: that region is undefined
    assert np.isnan(unchanged["changed"][0]) and unchanged["kept"][0] == 0.0


def test_only_the_controlnet_gets_gradients(inputs):
    root, pairs = inputs
    backbone = tiny_backbone(CFG.models.backbone.tiny, CFG.world.size, 0).freeze()
    net = make_adapter(backbone.unet, (16,))
    # the zero convolutions start at 0, so move them off zero to let the gradient reach the rest
    with torch.no_grad():
        for p in net.controlnet_down_blocks.parameters():
            p.normal_(0, 0.1)
    schedule = NoiseSchedule.from_scheduler(make_scheduler(CFG.diffusion))
    batch = te.load_pairs(pairs, "train").take(range(4))
    te.edit_loss(backbone, EditVideoModel(backbone.unet, net), schedule, batch, torch.Generator().manual_seed(0)).backward()
    assert all(p.grad is None for m in (backbone.unet, backbone.text_encoder) for p in m.parameters())
    assert net.class_embedding.weight.grad is not None and net.controlnet_cond_embedding.conv_in.weight.grad is not None


def test_build_trains_resumes_exactly_saves_and_checks(inputs, tmp_path):
    from diffusers import ControlNetModel

    root, pairs = inputs
    out, _ = assert_a_killed_run_resumes_exactly(
        lambda run, on_log: edit_adapter.build(CFG, pairs, root, run / "out", run / "ckpt", progress=False, on_log=on_log), tmp_path, 2, 2)
    assert out.metrics["steps"] == 3
    tmp_path = tmp_path / "whole"
    loaded = ControlNetModel.from_pretrained(trained_path(tmp_path / "out"))
    assert loaded.config.num_class_embeds == len(TASK_LABELS)
    for task in ("add", "remove", "background", "texture", "local", "style", "global"):
        assert f"check.identity.changed.{task}" in out.metrics
    assert out.metrics["check.identity.kept.mean"] == 0.0  # "return the input" is exact where nothing changes
    # the input image already shows everything a removal's output caption names
    assert out.metrics["check.identity.present.remove"] >= out.metrics["check.identity.present.add"]
    assert 0.0 <= out.metrics["check.adapter.present.mean"] <= 1.0
    assert 0.0 < out.metrics["check.identity.changed.mean"] <= 1.0
    assert 0.0 <= out.metrics["check.adapter.all.mean"] <= 1.0
    assert (tmp_path / "out/samples.png").stat().st_size > 0


def test_missing_backbone_names_the_stage(inputs, tmp_path):
    _, pairs = inputs
    with pytest.raises(FileNotFoundError, match="model.json"):
        edit_adapter.build(CFG, pairs, tmp_path / "nowhere", tmp_path / "out", tmp_path / "ckpt", progress=False)


def test_changing_only_the_check_does_not_retrain(inputs, tmp_path):
    _, pairs = inputs
    root = inputs[0]
    edit_adapter.build(CFG, pairs, root, tmp_path / "out", tmp_path / "ckpt", progress=False)
    guided = CFG.model_copy(update={"edit_adapter": CFG.edit_adapter.model_copy(update={"guidance_scale": 2.0, "eval_pairs": 7})})
    out = edit_adapter.build(guided, pairs, root, tmp_path / "out", tmp_path / "ckpt", progress=False)
    assert out.metrics["resumed_from"] == 3 and out.metrics["test_pairs"] == 7
