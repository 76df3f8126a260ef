"""The frozen text-to-image backbone: UNet2DConditionModel + CLIP text encoder + tokenizer
(+ a VAE for latent models).

Shapes: a tiny pixel-space UNet (no VAE) and text encoder built from config and the world's
words; full: SD 1.5 from a hub id or a local directory. Either way the backbone lives on disk
in diffusers' pipeline layout (`unet/`, `text_encoder/`, `tokenizer/`, optional `vae/`), so
a trained Shapes backbone and a downloaded SD 1.5 load through the same `load_backbone`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from .space import LatentSpace, PixelSpace, model_space
from .text import encode_text, shapes_tokenizer, tiny_clip_text_encoder

PARTS = ("unet", "text_encoder", "tokenizer")


@dataclass
class Backbone:
    unet: Any  # diffusers UNet2DConditionModel
    text_encoder: Any  # transformers CLIPTextModel
    tokenizer: Any
    vae: Any = None  # diffusers AutoencoderKL; None = pixel space (Shapes)
    # texts longer than the tokenizer's limit: cut to it (the full profile: CLIP's 77 tokens) or an error (Shapes)
    truncate: bool = False
    text_counts: Counter = field(default_factory=Counter)  # "texts" encoded, "truncated" of them

    def encode_text(self, prompts: list[str]):
        """Encoded texts (N, L, D), float32, on the text encoder's device."""
        return encode_text(self.tokenizer, self.text_encoder, prompts, truncate=self.truncate, counts=self.text_counts).float()

    @cached_property
    def space(self) -> PixelSpace | LatentSpace:
        """Where its samples live: pixels, or the VAE's latents (models/space.py)."""
        return model_space(self.vae)

    @property
    def frame_size(self) -> int:
        """The side of the frames it makes, in pixels (`sample_size` is in latents for SD)."""
        return int(self.unet.config.sample_size) * self.space.scale

    def freeze(self, placement: Any = None) -> "Backbone":
        """Frozen: no gradients, eval mode (the backbone is never trained by FDD); with a
        `placement` (models/placement.py) also on its device, in its frozen dtype."""
        for module in (self.unet, self.text_encoder, self.vae):
            if module is None:
                continue
            if placement is None:
                module.requires_grad_(False).eval()
            else:
                placement.frozen(module)  # no gradients, eval mode, its device and dtype
        return self

    def text_metrics(self) -> dict[str, int]:
        """How many texts were encoded and how many were cut to the tokenizer's limit."""
        return {"text.encoded": int(self.text_counts["texts"]), "text.truncated": int(self.text_counts["truncated"])}

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        self.unet.save_pretrained(directory / "unet")
        self.text_encoder.save_pretrained(directory / "text_encoder")
        self.tokenizer.save_pretrained(directory / "tokenizer")
        if self.vae is not None:
            self.vae.save_pretrained(directory / "vae")
        return directory


def tiny_unet(cfg: Any, cross_attention_dim: int, sample_size: int, seed: int = 0):
    """A small pixel-space `UNet2DConditionModel`: RGB in and out, no attention at full
    resolution (it triples the cost on CPU), cross-attention in the lower-resolution blocks."""
    import torch
    from diffusers import UNet2DConditionModel

    levels = len(cfg.block_out_channels)
    down = ("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (levels - 1)
    up = ("CrossAttnUpBlock2D",) * (levels - 1) + ("UpBlock2D",)
    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=sample_size, in_channels=3, out_channels=3, down_block_types=down, up_block_types=up,
        block_out_channels=tuple(cfg.block_out_channels), layers_per_block=cfg.layers_per_block,
        attention_head_dim=cfg.attention_heads,  # diffusers reads this as the number of heads, despite the name
        norm_num_groups=cfg.norm_num_groups,
        cross_attention_dim=cross_attention_dim,
    )


def tiny_backbone(cfg: Any, sample_size: int, seed: int = 0) -> Backbone:
    """The Shapes backbone before training: tokenizer over the world's words, tiny CLIP text
    encoder, tiny UNet; deterministic for a seed."""
    tokenizer = shapes_tokenizer(max_length=cfg.max_text_tokens)
    text = tiny_clip_text_encoder(len(tokenizer), cfg.text_hidden_size, cfg.text_layers, cfg.text_heads, cfg.max_text_tokens, seed)
    return Backbone(tiny_unet(cfg, cfg.text_hidden_size, sample_size, seed), text, tokenizer)


def load_backbone(source: str | Path, torch_dtype: Any = None) -> Backbone:
    """A backbone from a diffusers pipeline layout: a local directory or a hub id (SD 1.5).
    A local directory that lacks a part raises FileNotFoundError naming it."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import AutoTokenizer, CLIPTextModel

    local = Path(source)
    if local.exists():
        if not local.is_dir():
            raise FileNotFoundError(f"{local}: expected a directory with {', '.join(PARTS)}/ (a diffusers pipeline layout)")
        missing = [p for p in PARTS if not (local / p).is_dir()]
        if missing:
            raise FileNotFoundError(f"{local}: missing {', '.join(m + '/' for m in missing)} (expected a diffusers pipeline layout: {', '.join(PARTS)}, optional vae)")
        has_vae = (local / "vae").is_dir()
    else:
        has_vae = True  # a hub id: SD 1.5 is a latent model
    kw = {"torch_dtype": torch_dtype} if torch_dtype is not None else {}
    unet = UNet2DConditionModel.from_pretrained(str(source), subfolder="unet", **kw)
    text = CLIPTextModel.from_pretrained(str(source), subfolder="text_encoder", **kw)
    tokenizer = AutoTokenizer.from_pretrained(str(source), subfolder="tokenizer")
    vae = AutoencoderKL.from_pretrained(str(source), subfolder="vae", **kw) if has_vae else None
    return Backbone(unet, text, tokenizer, vae)
