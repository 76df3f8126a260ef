"""A small deterministic DDIM sampler (eta = 0) over any timesteps, for images and clips.

The loop stays ours (diffusers' `DDIMScheduler.step` assumes evenly spaced timesteps; the
K-bin student jumps between random ones) and is plain torch, so it is differentiable:
called with gradients on, the FDD student backpropagates through all of its k steps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from .schedule import NoiseSchedule

# model(x_t, t) -> model output (what the schedule's prediction type says); t is a (B,) tensor
Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def ddim_step(schedule: NoiseSchedule, model_output: torch.Tensor, x_t: torch.Tensor, t: int, t_prev: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One DDIM step from t to t_prev (-1 = the end): (x_{t_prev}, predicted x0)."""
    x0, eps = schedule.split(model_output, x_t, t)
    alpha_prev, sigma_prev = schedule.coefficients(t_prev, x_t)
    return alpha_prev * x0 + sigma_prev * eps, x0


def ddim_sample(model: Denoiser, noise: torch.Tensor, schedule: NoiseSchedule, timesteps: Sequence[int] | torch.Tensor) -> torch.Tensor:
    """Run DDIM from `noise` (x at timesteps[0]) through the given descending timesteps and
    return the final clean sample. Gradients flow through every step unless the caller
    runs it under `torch.no_grad()`."""
    ts = [int(t) for t in timesteps]
    if not ts:
        raise ValueError("ddim_sample needs at least one timestep")
    if any(b >= a for a, b in zip(ts, ts[1:])):
        raise ValueError(f"timesteps must be strictly descending, got {ts}")
    x = noise
    batch = noise.shape[0]
    for i, t in enumerate(ts):
        t_prev = ts[i + 1] if i + 1 < len(ts) else -1
        out = model(x, torch.full((batch,), t, dtype=torch.long, device=x.device))
        x, _ = ddim_step(schedule, out, x, t, t_prev)
    return x


def windows(frames: int, window: int, stride: int) -> list[slice]:
    """Overlapping frame windows covering every frame (the last one aligned to the end)."""
    if window < 1 or stride < 1 or stride > window:
        raise ValueError(f"need 1 <= stride <= window, got window={window}, stride={stride}")
    if frames <= window:
        return [slice(0, frames)]
    starts = list(range(0, frames - window + 1, stride))
    if starts[-1] != frames - window:
        starts.append(frames - window)
    return [slice(s, s + window) for s in starts]


def windowed(model: Callable[[torch.Tensor, torch.Tensor, slice], torch.Tensor], window: int, stride: int) -> Denoiser:
    """A denoiser for clips longer than the video model's window (METHOD.md section 6):
    at every step the model runs on overlapping windows of frames (it is told which frames,
    to slice its own per-frame conditions) and overlapping predictions are averaged.
    Clips are (B, C, F, H, W)."""

    def run(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5:
            raise ValueError(f"windowed sampling is for clips (B, C, F, H, W), got shape {tuple(x.shape)}")
        total = torch.zeros_like(x)
        count = torch.zeros(x.shape[2], dtype=x.dtype, device=x.device)
        for w in windows(x.shape[2], window, stride):
            total[:, :, w] = total[:, :, w] + model(x[:, :, w], t, w)
            count[w] += 1
        return total / count.reshape(1, 1, -1, 1, 1)

    return run
