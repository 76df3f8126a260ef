"""The FDD losses (METHOD.md sections 4.3-4.5), each a function returning (loss, logs).

SDS in the x0-space form: L = E[c(t) ||x'_0 - sg(x̂0_η(x'_t, t))||^2] with x'_t = α_t x'_0 + σ_t ε.
Its gradient with respect to x'_0 is 2 c(t) (x'_0 - x̂0) / N, and since x'_0 - x̂0 =
(σ_t / α_t)(ε̂_η - ε) for the teacher's implied noise ε̂_η, it points along the c(t)-weighted
(teacher prediction - noise) direction of DreamFusion and ADD (tests/test_distill_losses.py
checks this on a toy teacher).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..diffusion import NoiseSchedule

WEIGHTINGS = ("uniform", "alpha")


def sds_weight(schedule: NoiseSchedule, t: torch.Tensor, weighting: str) -> torch.Tensor:
    """c(t) per batch item. The paper leaves c(t) open; ours: "uniform" (c = 1) or "alpha"
    (c = α_t, ADD's choice for its distillation loss: less weight where the teacher sees
    mostly noise)."""
    if weighting == "uniform":
        return torch.ones(t.shape[0], dtype=torch.float32)
    if weighting == "alpha":
        alpha, _ = schedule.coefficients(t, torch.zeros(t.shape[0]))
        return alpha.reshape(-1).float()
    raise ValueError(f"unknown SDS weighting {weighting!r}; expected one of {WEIGHTINGS}")


def sds_timesteps(schedule: NoiseSchedule, batch: int, t_range: tuple[float, float], generator: torch.Generator) -> torch.Tensor:
    """t drawn uniformly from [lo, hi] x the train timesteps (fractions; the ends, where the
    teacher sees no signal or no noise, are left out as in DreamFusion and ADD)."""
    lo, hi = t_range
    if not 0.0 <= lo < hi <= 1.0:
        raise ValueError(f"SDS t range must satisfy 0 <= lo < hi <= 1, got {t_range}")
    n = schedule.train_timesteps
    return torch.randint(int(lo * (n - 1)), int(hi * (n - 1)) + 1, (batch,), generator=generator)


def sds_loss(x0: torch.Tensor, teacher_x0: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], schedule: NoiseSchedule,
             t: torch.Tensor, noise: torch.Tensor, weight: torch.Tensor, frames: slice = slice(None)) -> tuple[torch.Tensor, dict[str, float]]:
    """SDS of the student's clean sample `x0` (B, C, F, H, W) or (B, C, H, W) against a teacher
    `teacher_x0(x_t, t) -> x̂0` (called without gradients: the stop-gradient), at timesteps
    `t` (B,) with `noise` like x0 and weight c(t) (B,). `frames` picks the frames that are
    scored (frame 0 is the conditioning frame, not the student's)."""
    x_t = schedule.add_noise(x0.detach(), noise, t)
    with torch.no_grad():
        target = teacher_x0(x_t, t)
    if x0.ndim == 5:
        x0, target = x0[:, :, frames], target[:, :, frames]
    per_item = (x0 - target).pow(2).flatten(1).mean(1)
    loss = (weight.to(per_item) * per_item).mean()
    return loss, {"sds": float(loss.detach()), "sds_distance": float(per_item.detach().mean())}


def hinge_discriminator(real: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """E[max(0, 1 - D(real))] + E[max(0, 1 + D(fake))]; `fake` must be detached from the student."""
    loss = torch.relu(1 - real).mean() + torch.relu(1 + fake).mean()
    return loss, {"d_loss": float(loss.detach()), "d_real_acc": float((real > 0).float().mean()),
                  "d_fake_acc": float((fake < 0).float().mean())}


def hinge_generator(fake: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """The student's adversarial loss -E[D(fake)]."""
    loss = -fake.mean()
    return loss, {"g_adv": float(loss.detach())}
