"""tests/full_profile.py: the tiny full-profile models load back through the classes' own
`from_pretrained` and the project's loaders, and run with the shapes the full profile uses."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from full_profile import MAX_TOKENS, build_tiny_full

FRAME = 32
SENTENCE = "A red square, moving right at 3 px/frame on a blue background; it's the Quickest thing!"


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    return build_tiny_full(tmp_path_factory.mktemp("full-profile"), frame_size=FRAME, seed=0)


def test_saved_directories_load_back(full):
    from diffusers import ControlNetModel, MotionAdapter, StableDiffusionPipeline, UNetMotionModel
    from transformers import AutoImageProcessor, Dinov2Model

    from eve_fdd.config import IngestConfig
    from eve_fdd.data.ingest import ingest_folder
    from eve_fdd.models.adapters import TASK_LABELS
    from eve_fdd.models.backbone import load_backbone

    assert set(full) == {"backbone", "controlnet", "motion", "dinov2", "clip", "pick", "xclip", "clips"}
    bb = load_backbone(full["backbone"])
    assert bb.vae is not None and bb.unet.config.sample_size == FRAME // 2 and bb.tokenizer.model_max_length == MAX_TOKENS
    pipe = StableDiffusionPipeline.from_pretrained(full["backbone"])
    assert type(pipe.scheduler).__name__ == "DDIMScheduler" and pipe.scheduler.config.steps_offset == 1
    assert pipe.safety_checker is None
    cn = ControlNetModel.from_pretrained(full["controlnet"])
    assert cn.config.num_class_embeds == len(TASK_LABELS) and tuple(cn.config.conditioning_embedding_out_channels) == (16, 32)
    motion = UNetMotionModel.from_unet2d(bb.unet, MotionAdapter.from_pretrained(full["motion"]))
    assert any("motion_modules" in n for n, _ in motion.named_parameters())
    dino = Dinov2Model.from_pretrained(full["dinov2"])
    pixels = AutoImageProcessor.from_pretrained(full["dinov2"])(images=[np.zeros((40, 48, 3), np.uint8)], return_tensors="pt").pixel_values
    assert pixels.shape == (1, 3, FRAME, FRAME)
    assert dino(pixel_values=pixels).last_hidden_state.shape == (1, 1 + (FRAME // 4) ** 2, 32)
    cfg = IngestConfig(source_dir=str(full["clips"]), frames=4, stride=2, size=16)
    videos, rejects = ingest_folder(cfg)
    assert len(videos) == 4 and [r["item"].endswith("broken.mp4") for r in rejects] == [True]


def test_tokenizer_vae_and_controlnet_shapes(full):
    from diffusers import AutoencoderKL, ControlNetModel
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(full["backbone"], subfolder="tokenizer")
    ids = tok(SENTENCE).input_ids
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id and tok.unk_token_id not in ids[1:-1]
    assert tok.decode(ids, skip_special_tokens=True).replace(" ", "") == SENTENCE.lower().replace(" ", "")  # CLIP decodes word by word
    assert tok.eos_token_id == len(tok) - 1  # XCLIPModel pools at the highest id
    long = tok(" ".join(["square"] * 200), padding="max_length", truncation=True, max_length=tok.model_max_length).input_ids
    assert len(long) == MAX_TOKENS and long[-1] == tok.eos_token_id

    vae = AutoencoderKL.from_pretrained(full["backbone"], subfolder="vae")
    with torch.no_grad():
        latent = vae.encode(torch.rand(1, 3, FRAME, FRAME) * 2 - 1).latent_dist.sample()
    assert latent.shape == (1, 4, FRAME // 2, FRAME // 2)
    cn = ControlNetModel.from_pretrained(full["controlnet"])
    with torch.no_grad():
        down, mid = cn(latent, torch.tensor([10]), encoder_hidden_states=torch.randn(1, MAX_TOKENS, 32),
                       controlnet_cond=torch.rand(1, 3, FRAME, FRAME), class_labels=torch.tensor([0]), return_dict=False)
    assert len(down) > 0 and down[0].shape[-2:] == latent.shape[-2:] and mid.shape[0] == 1


def test_metric_models_load_and_score(full):
    from eve_fdd.evaluate.paper_metrics import MetricModels, load_image_text, load_video_text, paper_metrics

    models = MetricModels(load_image_text(full["clip"]), load_image_text(full["pick"]), load_video_text(full["xclip"]))
    rng = np.random.default_rng(0)
    edited, inputs = (rng.integers(0, 256, (2, 4, FRAME, FRAME, 3), dtype=np.uint8) for _ in range(2))
    out = paper_metrics(models, edited, inputs, ["a red square", "a blue circle"], ["a green square", "a blue square moving"])
    assert set(out) == {"clip_frame", "pick_score", "viclip_out", "viclip_dir"}
    assert all(v.shape == (2,) and np.isfinite(v).all() for v in out.values())
