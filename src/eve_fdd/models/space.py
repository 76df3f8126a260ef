"""Model space: how clips go between pixels and the diffusion model's sample space (DESIGN.md,
"Two scales, one code path"). The one place that knows whether the backbone is a pixel model
(Shapes) or a latent one (SD 1.5 + its VAE, the full profile); everything else (student,
teachers, pool, SDS, discriminators, baselines, evaluation, editor) calls it.

- `PixelSpace`: the identity; samples are RGB pixels in [-1, 1].
- `LatentSpace`: SD's `AutoencoderKL`. Frames are encoded one by one, in chunks, in the
  VAE's dtype, and scaled by its `scaling_factor` (and `shift_factor` where the config has
  one). Ours: `encode` takes the posterior **mean** (deterministic, as diffusers'
  ControlNet/InstructPix2Pix training scripts do for their conditioning images), not a
  sample. `decode` is differentiable: the discriminators read decoded frames, and the
  student's adversarial gradient reaches its latents through the decoder.

Pixels are what the edit adapter's condition and the discriminators read: a ControlNet of a
latent model takes the input frame at `scale` times the latent size.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .adapters import batch_to_frames, frames_to_batch


def pixels_from_uint8(frames: np.ndarray) -> torch.Tensor:
    """uint8 (N, F, H, W, 3) -> clips (N, 3, F, H, W) in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(frames)).float().div(127.5).sub(1).permute(0, 4, 1, 2, 3)


def _flat(x: torch.Tensor) -> torch.Tensor:
    """Clips (B, C, F, H, W) as frames (B*F, C, H, W); images pass through."""
    if x.ndim not in (4, 5):
        raise ValueError(f"model space: expected images (B, C, H, W) or clips (B, C, F, H, W), got shape {tuple(x.shape)}")
    return frames_to_batch(x) if x.ndim == 5 else x


def _like(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Frames back into `x`'s layout (clips or images) and onto its device."""
    return (batch_to_frames(out, x.shape[2]) if x.ndim == 5 else out).to(x.device)


class PixelSpace:
    """The Shapes backbone's space: pixels are the samples."""

    latent = False
    scale = 1  # pixels per sample position, per side

    def __init__(self, channels: int = 3):
        self.channels = channels

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        return pixels

    def decode(self, samples: torch.Tensor) -> torch.Tensor:
        return samples

    def describe(self) -> str:
        return "pixels"


class LatentSpace:
    """SD's VAE between pixels and latents; `chunk` frames go through it at once."""

    latent = True

    def __init__(self, vae: Any, chunk: int = 8):
        if chunk < 1:
            raise ValueError(f"LatentSpace: chunk must be at least 1, got {chunk}")
        self.vae, self.chunk = vae, chunk
        cfg = vae.config
        self.channels = int(cfg.latent_channels)
        self.scale = 2 ** (len(cfg.block_out_channels) - 1)
        self.scaling_factor = float(cfg.scaling_factor)
        self.shift_factor = float(getattr(cfg, "shift_factor", None) or 0.0)

    @property
    def dtype(self) -> torch.dtype:
        return self.vae.dtype

    @property
    def device(self) -> torch.device:
        return self.vae.device

    @torch.no_grad()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels in [-1, 1] (B, 3, [F,] H, W) -> scaled latents (B, C, [F,] H/scale, W/scale), float32."""
        flat = _flat(pixels)
        if flat.shape[-1] % self.scale or flat.shape[-2] % self.scale:
            raise ValueError(f"LatentSpace: frames of {flat.shape[-2]}x{flat.shape[-1]} pixels; the VAE needs sides "
                             f"divisible by {self.scale}")
        parts = []
        for i in range(0, flat.shape[0], self.chunk):
            x = flat[i : i + self.chunk].to(self.device, self.dtype)
            mean = self.vae.encode(x).latent_dist.mode()
            parts.append(((mean - self.shift_factor) * self.scaling_factor).float())
        return _like(torch.cat(parts), pixels)

    def decode(self, samples: torch.Tensor) -> torch.Tensor:
        """Scaled latents -> pixels (B, 3, [F,] H, W), about [-1, 1] (not clamped: the gradient
        must not vanish at the edges), float32; differentiable unless run under no_grad."""
        flat = _flat(samples)
        parts = []
        for i in range(0, flat.shape[0], self.chunk):
            z = flat[i : i + self.chunk] / self.scaling_factor + self.shift_factor
            parts.append(self.vae.decode(z.to(self.device, self.dtype)).sample.float())
        return _like(torch.cat(parts), samples)

    def describe(self) -> str:
        return f"latents ({type(self.vae).__name__}, x{self.scale}, {self.channels} channels, scaling {self.scaling_factor:g})"


def model_space(vae: Any = None, chunk: int = 8) -> PixelSpace | LatentSpace:
    """The space of a backbone: its VAE's latents, or pixels when it has none."""
    return PixelSpace() if vae is None else LatentSpace(vae, chunk)


def check_compatible(space: PixelSpace | LatentSpace, unet: Any, controlnet: Any = None, where: str = "backbone") -> None:
    """The UNet reads the space's channels, and a ControlNet's condition is at pixel size:
    each mismatch stops with what was expected, before any training."""
    cfg = unet.config
    if cfg.in_channels != space.channels:
        raise ValueError(f"{where}: the UNet reads {cfg.in_channels} channels but the model space has {space.channels} "
                         f"({space.describe()}); the VAE and the UNet do not belong together")
    if controlnet is not None:
        down = 2 ** (len(controlnet.config.conditioning_embedding_out_channels) - 1)
        if down != space.scale:
            raise ValueError(f"{where}: the ControlNet's conditioning embedding shrinks its condition image {down}x "
                             f"(conditioning_embedding_out_channels {list(controlnet.config.conditioning_embedding_out_channels)}), "
                             f"but the condition is the input frame in pixels, {space.scale}x the sample size; expected "
                             f"{int(np.log2(space.scale)) + 1} entries")
