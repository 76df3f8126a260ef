"""Stage `metric_models` (library part): the small CLIP / X-CLIP train, resume, save in the
layout the paper metrics load, and are checked; the full profile resolves given models."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.torch import load_file

from eve_fdd.config import Config
from eve_fdd.data.splits import METRIC_MODELS_TRAIN_STREAM
from eve_fdd.evaluate import metric_models as mm
from eve_fdd.evaluate.paper_metrics import MetricModels, load_image_text, load_video_text, paper_metrics
from eve_fdd.stages import metric_models
from eve_fdd.world.vocab import TASKS

from conftest import assert_a_killed_run_resumes_exactly

TRAIN = {"steps": 3, "checkpoint_every": 2, "log_every": 1}
CFG = Config(metric_models={"hidden_size": 16, "layers": 1, "heads": 2, "clip_train": TRAIN, "xclip_train": TRAIN,
                            "clip_batch_size": 2, "xclip_batch_size": 2, "eval_scenes": 7})


def test_pairs_hold_each_scene_and_one_edit_of_it():
    p = mm.pairs(CFG.world, 0, METRIC_MODELS_TRAIN_STREAM, range(60))
    assert p.clips.shape == p.edited.shape == (60, 8, 32, 32, 3)
    assert all(a != b for a, b in zip(p.captions, p.edited_captions))
    assert set(p.tasks) == set(TASKS)
    again = mm.pairs(CFG.world, 0, METRIC_MODELS_TRAIN_STREAM, range(10, 12))
    assert again.captions == p.captions[10:12] and np.array_equal(again.edited, p.edited[10:12])
    one = mm.pairs(CFG.world, 0, METRIC_MODELS_TRAIN_STREAM, range(10, 12), single_frame=True)
    assert one.clips.shape == (2, 1, 32, 32, 3) and one.captions == again.captions
    for k in range(2):  # the same frame of the scene and of its edit
        f = next(f for f in range(8) if np.array_equal(one.clips[k, 0], again.clips[k, f]))
        assert np.array_equal(one.edited[k, 0], again.edited[k, f])


@pytest.mark.parametrize("kind", ["clip", "xclip"])
def test_build_trains_resumes_exactly_saves_and_checks(tmp_path, kind):
    out, _ = assert_a_killed_run_resumes_exactly(
        lambda run, on_log: metric_models.build(CFG, kind, run / kind, run / "ckpt", progress=False, on_log=on_log), tmp_path, 2, 2)
    tmp_path = tmp_path / "whole"
    m = out.metrics
    assert m["steps"] == 3 and [r["step"] for r in out.curve] == [0, 1, 2]
    assert 0 <= m["check.pair_accuracy"] <= 1 and {f"check.pair_accuracy.{t}" for t in TASKS} <= set(m)
    if kind == "xclip":
        assert -1 <= m["check.dir.ground_truth"] <= 1 and -1 <= m["check.dir.reversed"] <= 1
    saved = load_file(tmp_path / "ckpt" / "checkpoints" / "step-000003" / "weights.safetensors")
    assert all(k.startswith(f"{kind}.") for k in saved)
    info = json.loads((tmp_path / kind / "model.json").read_text())
    encoder = load_image_text(info["path"]) if kind == "clip" else load_video_text(info["path"])
    texts = encoder.texts(["a small yellow circle on a white background", "a small yellow circle on a black background"])
    assert texts.shape == (2, 16)
    # the caption's last words count: the text is pooled at </s> (XCLIPModel pools at the
    # highest id, so the X-CLIP tokenizer gives </s> the last one), not at a word before them
    assert (texts[0] * texts[1]).sum() < 0.9999


def test_saved_models_serve_the_paper_metrics(tmp_path):
    for kind in mm.KINDS:
        metric_models.build(CFG, kind, tmp_path / kind, tmp_path / f"ckpt-{kind}", progress=False)
    clip = json.loads((tmp_path / "clip" / "model.json").read_text())
    models = MetricModels(load_image_text(clip["path"]), load_image_text(clip["pick"], clip["pick_processor"]),
                          load_video_text(json.loads((tmp_path / "xclip" / "model.json").read_text())["path"]))
    p = mm.pairs(CFG.world, 0, METRIC_MODELS_TRAIN_STREAM, range(3))
    found = paper_metrics(models, p.edited, p.clips, p.captions, p.edited_captions)
    assert all(v.shape == (3,) and np.isfinite(v).all() for v in found.values())


def test_full_profile_records_the_given_models_and_names_a_missing_one(tmp_path):
    metric_models.build(CFG, "clip", tmp_path / "shapes-clip", tmp_path / "ckpt", progress=False)
    local = str(tmp_path / "shapes-clip" / "model")
    full = CFG.model_copy(update={"profile": "full", "metric_models": CFG.metric_models.model_copy(
        update={"clip": local, "pick": local, "pick_processor": local})})
    out = metric_models.build(full, "clip", tmp_path / "full-clip", progress=False)
    assert out.metrics == {"trained": 0}
    info = json.loads((tmp_path / "full-clip" / "model.json").read_text())
    assert info == {"path": local, "pick": local, "pick_processor": local, "trained": False}
    missing = full.model_copy(update={"metric_models": full.metric_models.model_copy(update={"xclip": str(tmp_path / "nowhere")})})
    with pytest.raises(OSError, match="nowhere"):
        metric_models.build(missing, "xclip", tmp_path / "full-xclip", progress=False)


def test_unknown_kind_is_named(tmp_path):
    with pytest.raises(ValueError, match="unknown model 'vit'"):
        metric_models.build(CFG, "vit", tmp_path, progress=False)


def test_xclip_loss_trains_the_features_the_metrics_read():
    """The X-CLIP loss is CLIP's symmetric cross-entropy over `get_video_features` /
    `get_text_features` (what ViCLIP_out/_dir read), not XCLIPModel's own loss over
    prompt-rewritten text; a few steps on one batch make those features tell its pairs apart."""
    import torch
    import torch.nn.functional as F

    from eve_fdd.evaluate.paper_metrics import VideoText, frame_processor
    from eve_fdd.models.text import shapes_tokenizer

    w, m = CFG.world, CFG.metric_models
    tokenizer, processor = shapes_tokenizer(eos_last=True), frame_processor(w.size)
    model = mm.tiny_xclip(tokenizer.vocab_size, w.size, m.hidden_size, m.layers, m.heads, m.patch_size,
                          tokenizer.model_max_length, frames=w.frames, seed=0)
    data = mm.pairs(CFG.world, 0, METRIC_MODELS_TRAIN_STREAM, range(4))
    g = torch.Generator().manual_seed(0)
    loss = mm.contrastive_loss("xclip", model, tokenizer, processor, data, g)
    enc = VideoText(model, tokenizer, processor)
    v = enc.videos(np.concatenate([data.clips, data.edited]))
    t = enc.texts(data.captions + data.edited_captions)
    logits = model.logit_scale.exp().detach() * t @ v.T
    want = (F.cross_entropy(logits, torch.arange(8)) + F.cross_entropy(logits.T, torch.arange(8))) / 2
    assert torch.allclose(loss.detach(), want, atol=1e-5)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(70):
        opt.zero_grad()
        mm.contrastive_loss("xclip", model, tokenizer, processor, data, g).backward()
        opt.step()
    # a scene and its edit (captions a word apart) are each closer to their own caption
    # (chance 0.25; 0.25 at most while the text is pooled before the words that differ)
    assert mm.check("xclip", enc, data)["check.pair_accuracy"] >= 0.5
