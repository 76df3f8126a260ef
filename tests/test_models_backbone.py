"""models/: the Shapes tokenizer and backbone, and the full profile's from_pretrained path
(exercised with tiny models of SD 1.5's classes saved in its layout)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from eve_fdd.config import Config, TinyBackboneConfig
from eve_fdd.models.backbone import load_backbone, tiny_backbone
from eve_fdd.models.registry import build_backbone
from eve_fdd.models.text import shapes_tokenizer, world_words
from eve_fdd.world import caption, make_edit, random_scene, vocab

SMALL = TinyBackboneConfig(block_out_channels=(16, 32), text_hidden_size=32, text_layers=1, max_text_tokens=48)


def test_world_words_cover_every_caption_and_instruction():
    tok = shapes_tokenizer()
    assert set(vocab.COLORS) | set(vocab.KINDS) | set(vocab.SUBJECTS) | set(vocab.RESERVED_STYLES) <= set(world_words())

    for seed in range(40):  # scenes the vocabulary was not built from
        scene = random_scene(seed)
        texts = [caption(scene)]
        for task in vocab.TASKS:
            try:
                edit = make_edit(scene, task, np.random.default_rng(seed))
            except ValueError:
                continue
            texts += [edit.instruction, edit.output_caption]
        for text in texts:
            ids = tok(text).input_ids
            assert tok.unk_token_id not in ids, text
            assert tok.decode(ids, skip_special_tokens=True).replace(" ,", ",") == text.lower()
    assert tok("a zorp").input_ids[2] == tok.unk_token_id  # unknown words are <unk>, not dropped


def test_tiny_backbone_runs_on_images_and_text():
    bb = tiny_backbone(SMALL, sample_size=32, seed=0)
    emb = bb.encode_text(["a small red circle on a navy background", "make the red circle blue"])
    assert emb.shape == (2, 48, 32)
    x = torch.randn(2, 3, 32, 32)
    out = bb.unet(x, torch.tensor([10, 900]), encoder_hidden_states=emb).sample
    assert out.shape == x.shape and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="more than the text encoder's 48"):
        bb.encode_text(["a red circle " * 20])
    again = tiny_backbone(SMALL, sample_size=32, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(bb.unet.parameters(), again.unet.parameters()))  # seeded


def test_freeze_leaves_nothing_trainable():
    bb = tiny_backbone(SMALL, sample_size=32).freeze()
    assert not any(p.requires_grad for m in (bb.unet, bb.text_encoder) for p in m.parameters())
    assert not bb.unet.training


def test_saved_backbone_loads_back_identically_through_the_registry(tmp_path):
    bb = tiny_backbone(SMALL, sample_size=32, seed=1)
    bb.save(tmp_path / "backbone")
    cfg = Config()
    loaded = build_backbone(cfg, trained=tmp_path / "backbone")
    assert loaded.vae is None  # pixel space
    prompts = ["a large blue dotted square on a beige background"]
    assert loaded.tokenizer(prompts).input_ids == bb.tokenizer(prompts).input_ids
    with torch.no_grad():
        emb, emb2 = bb.encode_text(prompts), loaded.encode_text(prompts)
        x, t = torch.randn(1, 3, 32, 32), torch.tensor([500])
        assert torch.equal(emb, emb2)
        diff = (bb.unet.eval()(x, t, emb).sample - loaded.unet(x, t, emb2).sample).abs().max()
        assert diff < 1e-5, diff


def test_full_profile_loads_sd_layout_from_a_local_directory(tmp_path):
    """SD 1.5's classes (UNet2DConditionModel, CLIPTextModel, CLIPTokenizer, AutoencoderKL),
    tiny, saved as a diffusers pipeline directory: the full profile's loader reads them."""
    import json

    from diffusers import AutoencoderKL
    from transformers import CLIPTokenizer

    root = tmp_path / "sd15"
    bb = tiny_backbone(SMALL.model_copy(update={"text_hidden_size": 32}), sample_size=16)
    bb.unet.save_pretrained(root / "unet")
    bb.text_encoder.save_pretrained(root / "text_encoder")
    words = ["a", "red", "circle", "on", "blue", "background"]
    vocab_json = {w + "</w>": i for i, w in enumerate(["!", *words])}
    vocab_json.update({"<|startoftext|>": len(vocab_json), "<|endoftext|>": len(vocab_json) + 1})
    (tmp_path / "vocab.json").write_text(json.dumps(vocab_json))
    (tmp_path / "merges.txt").write_text("#version: 0.2\n")
    CLIPTokenizer(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt"), model_max_length=48).save_pretrained(root / "tokenizer")
    AutoencoderKL(block_out_channels=(8,), norm_num_groups=8, latent_channels=4, sample_size=16).save_pretrained(root / "vae")

    cfg = Config(profile="full", models={"backbone": {"pretrained": str(root)}})
    loaded = build_backbone(cfg)
    assert type(loaded.tokenizer).__name__.startswith("CLIPTokenizer") and loaded.vae is not None
    emb = loaded.encode_text(["a red circle on a blue background"])
    assert emb.shape == (1, 48, 32)

    (root / "text_encoder").rename(root / "te")
    with pytest.raises(FileNotFoundError, match="missing text_encoder/"):
        load_backbone(root)
    with pytest.raises(FileNotFoundError, match="expected a directory"):
        load_backbone(root / "unet" / "config.json")
