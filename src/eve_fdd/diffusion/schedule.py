"""The noise schedule: a diffusers `DDIMScheduler` built from config, and differentiable
conversions between the three things a diffusion model can predict.

With a_t = alphas_cumprod[t], alpha = sqrt(a_t), sigma = sqrt(1 - a_t):
    x_t = alpha * x0 + sigma * eps          v = alpha * eps - sigma * x0
so  x0 = alpha * x_t - sigma * v,  eps = alpha * v + sigma * x_t   (v-prediction)
    x0 = (x_t - sigma * eps) / alpha                               (epsilon)
    eps = (x_t - alpha * x0) / sigma                               (sample)
Zero terminal SNR (a_T = 0: the last training step is pure noise, as METHOD.md section 6
asks) leaves alpha = 0 at t = T - 1, where an epsilon model cannot give x0: it needs
v-prediction. The Shapes backbone is trained that way; SD 1.5 (full profile) is an epsilon
model and keeps its own schedule (`diffusion.zero_terminal_snr: false`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from diffusers import DDIMScheduler

    from ..config import DiffusionConfig


def make_scheduler(cfg: "DiffusionConfig") -> "DDIMScheduler":
    """The project's DDIM scheduler: rescaled betas for zero terminal SNR, "trailing"
    timestep spacing (so sampling starts at t = T - 1, the pure-noise step)."""
    from diffusers import DDIMScheduler

    if cfg.zero_terminal_snr and cfg.prediction_type == "epsilon":
        raise ValueError(
            "diffusion: zero_terminal_snr needs prediction_type 'v_prediction' (or 'sample'): an epsilon "
            "model cannot predict x0 from pure noise; set diffusion.zero_terminal_snr: false for epsilon models (SD 1.5)"
        )
    return DDIMScheduler(
        num_train_timesteps=cfg.train_timesteps,
        beta_schedule=cfg.beta_schedule,
        beta_start=cfg.beta_start,
        beta_end=cfg.beta_end,
        prediction_type=cfg.prediction_type,
        rescale_betas_zero_snr=cfg.zero_terminal_snr,
        timestep_spacing="trailing",
        clip_sample=False,
        set_alpha_to_one=True,
    )


class NoiseSchedule:
    """alphas_cumprod of a scheduler, and the conversions, for any batch of timesteps.
    Works for images (B, C, H, W) and clips (B, C, F, H, W) alike: a_t broadcasts over
    every dimension after the batch."""

    def __init__(self, alphas_cumprod: torch.Tensor, prediction_type: str):
        if prediction_type not in ("epsilon", "v_prediction", "sample"):
            raise ValueError(f"unknown prediction_type {prediction_type!r}; expected epsilon, v_prediction or sample")
        self.alphas_cumprod = alphas_cumprod.detach().to(torch.float64)
        self.prediction_type = prediction_type

    @classmethod
    def from_scheduler(cls, scheduler: "DDIMScheduler") -> "NoiseSchedule":
        return cls(scheduler.alphas_cumprod, scheduler.config.prediction_type)

    @property
    def train_timesteps(self) -> int:
        return len(self.alphas_cumprod)

    def coefficients(self, t: torch.Tensor | int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(alpha, sigma) at timesteps `t` (one per batch item, or one for all; -1 means the
        clean end of sampling, a = 1), shaped to broadcast against `like`."""
        t = torch.as_tensor(t, dtype=torch.long).reshape(-1).cpu()  # indexes the CPU table; the result goes to `like`'s device
        if ((t < -1) | (t >= self.train_timesteps)).any():
            raise ValueError(f"timesteps must lie in [-1, {self.train_timesteps - 1}], got {t.tolist()}")
        a = torch.where(t >= 0, self.alphas_cumprod[t.clamp(min=0)], torch.ones((), dtype=torch.float64))
        a = a.to(like.dtype).to(like.device).reshape(-1, *([1] * (like.ndim - 1)))
        return a.sqrt(), (1 - a).clamp(min=0).sqrt()

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        alpha, sigma = self.coefficients(t, x0)
        return alpha * x0 + sigma * noise

    def velocity(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        """The v-prediction target alpha * eps - sigma * x0."""
        alpha, sigma = self.coefficients(t, x0)
        return alpha * noise - sigma * x0

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        """What a model of this prediction type is trained to output."""
        if self.prediction_type == "v_prediction":
            return self.velocity(x0, noise, t)
        return noise if self.prediction_type == "epsilon" else x0

    def min_snr_weights(self, t: torch.Tensor, gamma: float) -> torch.Tensor:
        """Min-SNR-gamma loss weights (Hang et al., 2023, "Efficient Diffusion Training via
        Min-SNR Weighting Strategy") for a batch of timesteps, for this prediction type's MSE:
        min(SNR, gamma) / (SNR + 1) for v, / SNR for epsilon, itself for x0. They cap the weight
        of nearly clean timesteps, which otherwise dominate the loss while the global layout
        (where and what the shapes are) is learned at the noisy ones. Normalised to mean 1 over
        the batch, so the loss keeps the unweighted scale. A zero-SNR timestep gets weight 0 (it
        carries no information about x0 beyond the mean)."""
        a = self.alphas_cumprod[torch.as_tensor(t, dtype=torch.long).reshape(-1).cpu()]  # on the CPU, as the table
        snr = a / (1 - a).clamp(min=1e-12)
        capped = snr.clamp(max=gamma)
        if self.prediction_type == "v_prediction":
            w = capped / (snr + 1)
        elif self.prediction_type == "epsilon":
            w = capped / snr.clamp(min=1e-12)
        else:
            w = capped
        return (w / w.mean().clamp(min=1e-12)).float()

    def split(self, model_output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor | int) -> tuple[torch.Tensor, torch.Tensor]:
        """(x0, eps) predicted by a model output at x_t; differentiable in both."""
        alpha, sigma = self.coefficients(t, x_t)
        if self.prediction_type == "v_prediction":
            return alpha * x_t - sigma * model_output, alpha * model_output + sigma * x_t
        if self.prediction_type == "epsilon":
            if (alpha == 0).any():
                raise ValueError("an epsilon prediction at a zero-SNR timestep (alpha = 0) says nothing about x0")
            return (x_t - sigma * model_output) / alpha, model_output
        if (sigma == 0).any():
            raise ValueError("a sample prediction at t = -1 (sigma = 0) says nothing about the noise")
        return model_output, (x_t - alpha * model_output) / sigma
