"""Stage `loras` (library part) and the concept classifier its check reads samples with."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from eve_fdd.config import Config
from eve_fdd.data.splits import CONCEPT_DETECTOR_EVAL_STREAM, CONCEPT_DETECTOR_TRAIN_STREAM, LORA_TRAIN_STREAM
from eve_fdd.evaluate import concepts
from eve_fdd.models.adapters import LORA_WEIGHTS
from eve_fdd.models.backbone import load_backbone
from eve_fdd.models.registry import trained_path
from eve_fdd.stages import lora
from eve_fdd.train import lora as tl
from eve_fdd.world import caption

from conftest import TINY_BACKBONE, assert_a_killed_run_resumes_exactly

CFG = Config(
    models={"backbone": {"tiny": TINY_BACKBONE}},
    loras={"train": {"steps": 3, "checkpoint_every": 2, "log_every": 1}, "batch_size": 4, "eval_samples": 3, "eval_steps": 2,
           "detector_steps": 2, "detector_renders": 8, "samples": 2},
)


@pytest.fixture
def backbone_dir(tiny_backbone_dir):
    return tiny_backbone_dir


@pytest.mark.parametrize("concept, word", [("star", "star"), ("cross", "cross"), ("scanlines", "scanlines"), ("sketch", "pencil sketch")])
def test_batches_are_half_concept_half_base_world(concept, word):
    x, captions = tl.batch(CFG.world, 0, LORA_TRAIN_STREAM, 0, 6, concept)
    assert x.shape == (6, 3, 32, 32)
    assert all(word in c for c in captions[:3]) and not any(word in c for c in captions[3:])


@pytest.mark.parametrize("concept", ["star", "cross", "scanlines", "sketch"])
def test_concept_words_name_the_concept_and_nothing_in_the_base_world(concept):
    """The words whose embeddings learn with the LoRA: in every caption with the concept, in no
    base-world caption (so learning them changes nothing the base world asks for)."""
    from eve_fdd.world import vocab

    words = set(vocab.CONCEPT_WORDS[concept])
    _, with_c = concepts.renders(CFG.world, 0, LORA_TRAIN_STREAM, range(64), concept)
    _, base = concepts.renders(CFG.world, 0, LORA_TRAIN_STREAM, range(64, 1064), None)
    assert all(words <= set(caption(s).replace(",", " ").split()) for s in with_c)
    assert not any(words & set(caption(s).replace(",", " ").split()) for s in base)


def test_without_token_embeddings_only_the_lora_is_saved(backbone_dir, tmp_path):
    """With `token_embeddings` off only the LoRA is saved; model.json says there are no embeddings."""
    cfg = CFG.model_copy(update={"loras": CFG.loras.model_copy(update={"token_embeddings": False})})
    out = lora.build(cfg, "sketch", backbone_dir, tmp_path / "out", tmp_path / "ckpt", progress=False)
    assert out.metrics["params_token_embeddings"] == 0
    assert json.loads((tmp_path / "out/model.json").read_text())["token_embeddings"] is None
    assert not (tmp_path / "out/model" / "learned_embeds.safetensors").exists()


def test_unknown_concept_is_named():
    with pytest.raises(ValueError, match="unknown concept 'moon'"):
        concepts.concept_scene(None, "moon", np.random.default_rng(0), (0.02, 0.06))


def test_style_classifier_learns_from_renders():
    detector = concepts.train_detector("sketch", CFG.world, 0, CONCEPT_DETECTOR_TRAIN_STREAM, CONCEPT_DETECTOR_EVAL_STREAM, count=256, steps=150)
    assert detector.held_out_accuracy > 0.85
    with_c, _ = concepts.renders(CFG.world, 0, CONCEPT_DETECTOR_EVAL_STREAM, range(1000, 1032), "sketch")
    without, _ = concepts.renders(CFG.world, 0, CONCEPT_DETECTOR_EVAL_STREAM, range(1032, 1064), None)
    assert detector(with_c).mean() > 0.8 and detector(without).mean() < 0.2


def test_build_trains_only_the_lora_resumes_saves_and_checks(backbone_dir, tmp_path):
    out, _ = assert_a_killed_run_resumes_exactly(
        lambda run, on_log: lora.build(CFG, "star", backbone_dir, run / "out", run / "ckpt", progress=False, on_log=on_log), tmp_path, 2, 2)
    assert out.metrics["steps"] == 3 and out.metrics["params_lora"] > 0
    tmp_path = tmp_path / "whole"
    # the checkpoint holds the LoRA and the concept word's embedding only: the backbone stayed frozen
    from safetensors.torch import load_file

    saved = load_file(tmp_path / "ckpt/checkpoints/step-000003/weights.safetensors")
    assert saved and all("lora_" in k for k in saved if k != "tokens.rows")
    assert saved["tokens.rows"].shape == (1, TINY_BACKBONE["text_hidden_size"])  # one word: "star"
    assert out.metrics["params_token_embeddings"] == TINY_BACKBONE["text_hidden_size"]
    backbone = load_backbone(trained_path(backbone_dir))
    backbone.unet.load_lora_adapter(trained_path(tmp_path / "out"), weight_name=LORA_WEIGHTS, prefix=None, adapter_name="star")
    loaded = {n: p for n, p in backbone.unet.named_parameters() if "lora_" in n}
    assert sum(p.numel() for p in loaded.values()) == out.metrics["params_lora"]
    info = json.loads((tmp_path / "out/model.json").read_text())
    learned = load_file(info["token_embeddings"])
    assert list(learned) == ["star"]
    torch.testing.assert_close(learned["star"], saved["tokens.rows"][0])
    for key in ("present.prompted", "present.unprompted", "present.prompted_without_lora", "detector_accuracy"):
        assert 0.0 <= out.metrics[f"check.{key}"] <= 1.0
    assert (tmp_path / "out/samples.png").stat().st_size > 0


def test_concept_outside_the_list_is_refused(backbone_dir, tmp_path):
    with pytest.raises(ValueError, match="not in loras.concepts"):
        lora.build(CFG.model_copy(update={"loras": CFG.loras.model_copy(update={"concepts": ("star",)})}), "sketch", backbone_dir, tmp_path, tmp_path)
