"""The two discriminators of FDD (METHOD.md section 5), in the style of Adversarial
Diffusion Distillation: a frozen feature network (DINO) with small trainable heads on the
features of several of its layers; each head gives a logit per token, averaged to one logit
per sample, and the heads' logits are summed.

- `EditDiscriminator` D_e(input frame, instruction, output frame): each head projects the
  output frame's tokens, attends to the projected tokens of the input frame (the extra image
  projection + attention layer of section 5), and is conditioned on the instruction by a
  projection term (logit += <h, W c> / sqrt(d), c the mean-pooled text embedding).
- `VideoDiscriminator` D_v(video, caption): each head projects every frame's tokens, runs one
  temporal attention layer per token across the frames (with learned frame positions), and is
  conditioned on the caption the same way.

The feature network: DINOv2 (`transformers.Dinov2Model`) for the full profile; for Shapes a
small `Dinov2Model` of the same class that stage `features` trains on world renders to name
what covers each patch (distill/shapes_features.py says why it stands in for DINO), or, with
`features.network: random`, one initialised deterministically from the seed and never trained
(`tiny_dino`). Gradients pass through the frozen network to the student's samples; its own
weights never change.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def tiny_dino(hidden_size: int = 64, layers: int = 4, heads: int = 4, image_size: int = 32, patch_size: int = 4, seed: int = 0) -> Any:
    """The Shapes profile's feature network: a small `Dinov2Model`, seeded, frozen."""
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(seed)
    config = Dinov2Config(hidden_size=hidden_size, num_hidden_layers=layers, num_attention_heads=heads,
                          intermediate_size=hidden_size * 2, image_size=image_size, patch_size=patch_size)
    return Dinov2Model(config).requires_grad_(False).eval()


class FrozenFeatures(nn.Module):
    """Token features (B, N, H) of images in [-1, 1] at the given layers (1 = after the first
    transformer block) of a frozen `Dinov2Model`; images are resized to `size` (full
    profile: 224) and normalised as the network expects."""

    def __init__(self, model: Any, layers: Sequence[int], size: int | None = None,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        super().__init__()
        depth = model.config.num_hidden_layers
        bad = [layer for layer in layers if not 1 <= layer <= depth]
        if bad or not layers:
            raise ValueError(f"feature layers {list(layers)}: each must be in [1, {depth}] (the network's depth)")
        self.model = model.requires_grad_(False).eval()
        self.layers = tuple(layers)
        self.size = size
        self.register_buffer("mean", torch.tensor(mean).reshape(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).reshape(1, 3, 1, 1), persistent=False)

    @property
    def dim(self) -> int:
        return self.model.config.hidden_size

    def train(self, mode: bool = True) -> "FrozenFeatures":  # the network stays in eval mode
        super().train(mode)
        self.model.eval()
        return self

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = (images + 1) / 2
        if self.size is not None and x.shape[-1] != self.size:
            x = nn.functional.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        x = (x - self.mean) / self.std
        hidden = self.model(pixel_values=x, output_hidden_states=True).hidden_states
        return [hidden[layer] for layer in self.layers]


def _projection_logits(h: torch.Tensor, out: nn.Linear, cond: torch.Tensor) -> torch.Tensor:
    """Per-token logits of a conditional projection discriminator: linear(h) + <h, c>/sqrt(d);
    h (..., d), cond broadcastable to h."""
    return out(h).squeeze(-1) + (h * cond).sum(-1) / math.sqrt(h.shape[-1])


class _EditHead(nn.Module):
    def __init__(self, feat_dim: int, text_dim: int, width: int, heads: int):
        super().__init__()
        self.proj = nn.Sequential(nn.Linear(feat_dim, width), nn.GELU(), nn.Linear(width, width))
        self.source = nn.Linear(feat_dim, width)
        self.norm = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.text = nn.Linear(text_dim, width)
        self.out = nn.Linear(width, 1)

    def forward(self, feat: torch.Tensor, source_feat: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        h = self.proj(feat)
        s = self.source(source_feat)
        h = h + self.attn(self.norm(h), s, s, need_weights=False)[0]
        return _projection_logits(h, self.out, self.text(text)[:, None]).mean(1)


class _VideoHead(nn.Module):
    def __init__(self, feat_dim: int, text_dim: int, width: int, heads: int, max_frames: int):
        super().__init__()
        self.proj = nn.Sequential(nn.Linear(feat_dim, width), nn.GELU(), nn.Linear(width, width))
        self.frame_pos = nn.Parameter(torch.zeros(max_frames, width))
        self.norm = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.text = nn.Linear(text_dim, width)
        self.out = nn.Linear(width, 1)

    def forward(self, feat: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        b, f, n, _ = feat.shape
        h = self.proj(feat) + self.frame_pos[:f, None]
        seq = h.transpose(1, 2).reshape(b * n, f, -1)  # one sequence over the frames per token
        q = self.norm(seq)
        seq = seq + self.attn(q, q, q, need_weights=False)[0]
        h = seq.reshape(b, n, f, -1)
        return _projection_logits(h, self.out, self.text(text)[:, None, None]).mean((1, 2))


def pooled(text_emb: torch.Tensor) -> torch.Tensor:
    """(B, L, D) token embeddings -> (B, D), the mean over tokens."""
    return text_emb.mean(1)


class EditDiscriminator(nn.Module):
    """D_e: one logit per output frame (N,) for (input frames, instruction, output frames),
    images (N, C, H, W) in [-1, 1], instruction embeddings (N, L, D)."""

    def __init__(self, features: FrozenFeatures, text_dim: int, width: int = 64, heads: int = 4):
        super().__init__()
        self.features = features
        self.heads = nn.ModuleList(_EditHead(features.dim, text_dim, width, heads) for _ in features.layers)

    def forward(self, source: torch.Tensor, instruction_emb: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            source_feats = self.features(source)
        text = pooled(instruction_emb)
        return sum(head(f, s, text) for head, f, s in zip(self.heads, self.features(output), source_feats))


class VideoDiscriminator(nn.Module):
    """D_v: one logit per clip (B,) for clips (B, C, F, H, W) in [-1, 1] and captions (B, L, D)."""

    def __init__(self, features: FrozenFeatures, text_dim: int, width: int = 64, heads: int = 4, max_frames: int = 32):
        super().__init__()
        self.features = features
        self.heads = nn.ModuleList(_VideoHead(features.dim, text_dim, width, heads, max_frames) for _ in features.layers)

    def forward(self, clips: torch.Tensor, caption_emb: torch.Tensor) -> torch.Tensor:
        b, c, f, h, w = clips.shape
        frames = clips.transpose(1, 2).reshape(b * f, c, h, w)
        text = pooled(caption_emb)
        feats = [x.reshape(b, f, *x.shape[1:]) for x in self.features(frames)]
        return sum(head(x, text) for head, x in zip(self.heads, feats))
