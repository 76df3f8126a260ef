"""Stage `features` (the discriminators' frozen feature network) and how stage fdd reads it:
Shapes trains the small Dinov2Model on world renders (or records the seeded random one),
full resolves DINOv2; models.registry.feature_network gives what the stage recorded."""

from __future__ import annotations

import json

import pytest
import torch

from eve_fdd.config import Config
from eve_fdd.distill.discriminators import tiny_dino
from eve_fdd.models.registry import feature_network
from eve_fdd.stages import features

TRAIN = {"steps": 4, "checkpoint_every": 2, "log_every": 1}
CFG = Config(world={"size": 16},
             fdd={"seed": 3, "discriminator": {"hidden_size": 16, "layers": 2, "heads": 2, "patch_size": 4, "feature_layers": [1, 2]}},
             features={"train": TRAIN, "batch_size": 4, "eval_frames": 8})


def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_shapes_trains_a_network_that_fdd_then_reads(tmp_path):
    out = features.build(CFG, tmp_path / "features", tmp_path / "ckpt", progress=False)
    info = json.loads((tmp_path / "features" / "model.json").read_text())
    assert info["trained"] is True
    assert out.metrics["steps"] == 4 and len(out.curve) == 4
    assert {"check.acc.object", "check.acc.shape_object", "check.acc.texture", "check.acc.background"} <= set(out.metrics)
    net = feature_network(CFG, None, tmp_path / "features")
    assert not any(p.requires_grad for p in net.model.parameters()) and not net.model.training
    untrained = tiny_dino(16, 2, 2, 16, 4, CFG.seed)
    assert not _same_weights(net.model, untrained)  # it trained
    again = features.build(CFG, tmp_path / "again", tmp_path / "ckpt", progress=False)  # resumes from the last checkpoint: same network
    assert again.metrics["resumed_from"] == 4
    assert _same_weights(net.model, feature_network(CFG, None, tmp_path / "again").model)


def test_random_records_the_seeded_untrained_network(tmp_path):
    cfg = CFG.model_copy(update={"features": CFG.features.model_copy(update={"network": "random"})})
    out = features.build(cfg, tmp_path / "features", tmp_path / "ckpt", progress=False)
    assert out.metrics == {"trained": 0} and not (tmp_path / "ckpt").exists()
    net = feature_network(cfg, None, tmp_path / "features")
    assert _same_weights(net.model, tiny_dino(16, 2, 2, 16, 4, seed=3))  # seeded by fdd.seed, as before the stage existed
    assert _same_weights(net.model, feature_network(cfg).model)  # what fdd builds without the stage's output


def test_fdd_without_the_stages_output_is_told_to_run_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="dvc repro features"):
        feature_network(CFG, None, tmp_path / "features")


def test_a_patch_that_does_not_divide_the_frame_is_refused(tmp_path):
    cfg = Config(world={"size": 18}, fdd={"discriminator": {"patch_size": 4}}, features={"train": TRAIN})
    with pytest.raises(ValueError, match="world.size 18 is not a multiple of fdd.discriminator.patch_size 4"):
        features.build(cfg, tmp_path / "features", tmp_path / "ckpt", progress=False)


def test_full_resolves_dinov2_and_fdd_reads_it_with_its_processor(tmp_path):
    from full_profile import _dinov2

    _dinov2(tmp_path / "dinov2", 24, 0)
    cfg = Config(profile="full", fdd={"discriminator": {"pretrained": str(tmp_path / "dinov2"), "image_size": 24, "feature_layers": [1, 2]}})
    out = features.build(cfg, tmp_path / "features", tmp_path / "ckpt", progress=False)
    assert out.metrics == {"trained": 0}
    assert json.loads((tmp_path / "features" / "model.json").read_text())["path"] == str(tmp_path / "dinov2")
    net = feature_network(cfg, None, tmp_path / "features")
    assert type(net.model).__name__ == "Dinov2Model" and net.size == 24 and net.model.config.num_hidden_layers == 2
    deep = Config(profile="full", fdd={"discriminator": {"pretrained": str(tmp_path / "dinov2"), "feature_layers": [1, 3]}})
    with pytest.raises(ValueError, match=r"fdd.discriminator.feature_layers \[1, 3\]: .* has 2 layers"):
        features.build(deep, tmp_path / "deep", tmp_path / "ckpt", progress=False)
