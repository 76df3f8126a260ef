"""Which timesteps a sampler visits.

Inference runs T DDIM steps (the scheduler's "trailing" spacing, from t = T_train - 1
down). The FDD student runs only k of them, with gradients through all k. METHOD.md
section 4.2: split the T inference timesteps into k equal bins and draw one from each (K-bin),
so that over training the student sees every step it will take at inference; the ablation
"w/o K-bin" always uses the same k evenly spread steps.

Without zero terminal SNR (SD 1.5 is an epsilon model, `diffusion.zero_terminal_snr: false`)
the last timestep is not pure noise: with SD's scaled-linear betas alpha_bar(999) = 0.0047,
so x_999 keeps sqrt(0.0047) = 6.8% of the clean signal. The sampler, like diffusers' SD
pipelines, still starts from pure Gaussian noise labelled t = 999 (the first trailing
inference timestep; the mismatch is that 6.8%), and K-bin's first bin {999, 957, ...} draws
the student's first step from it as everywhere else; with zero terminal SNR (Shapes)
alpha_bar(999) = 0 and t = 999 matches pure noise exactly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from diffusers import DDIMScheduler


def inference_timesteps(scheduler: "DDIMScheduler", steps: int) -> torch.Tensor:
    """The scheduler's `steps` DDIM timesteps, descending (a copy: the scheduler keeps its own)."""
    if steps < 1 or steps > scheduler.config.num_train_timesteps:
        raise ValueError(f"steps must be in [1, {scheduler.config.num_train_timesteps}], got {steps}")
    scheduler.set_timesteps(steps)
    return scheduler.timesteps.clone().long()


def kbin_timesteps(inference: torch.Tensor, k: int, generator: torch.Generator | None = None, first: str = "last") -> torch.Tensor:
    """k timesteps, one drawn uniformly from each of k equal consecutive bins of the
    (descending) inference timesteps; step i comes from bin i, so they stay descending.
    `first`: "last" puts step 0 at the first inference timestep (the last of the schedule,
    where the student's pure-noise start belongs, as at inference: under zero terminal SNR a
    t drawn lower in bin 0 labels pure noise as a sample with signal; ours, METHOD.md 4.2);
    "drawn" draws it from bin 0 like the others (the paper's literal reading)."""
    steps = len(inference)
    if k < 1 or steps % k:
        raise ValueError(f"K-bin needs the {steps} inference steps to split into k={k} equal bins (steps % k == 0)")
    if first not in ("last", "drawn"):
        raise ValueError(f"K-bin's first step is 'last' or 'drawn', got {first!r}")
    width = steps // k
    picks = torch.randint(0, width, (k,), generator=generator) + torch.arange(k) * width
    if first == "last":
        picks[0] = 0
    return inference[picks]


def uniform_timesteps(scheduler: "DDIMScheduler", k: int) -> torch.Tensor:
    """The "w/o K-bin" ablation: the same k evenly spread steps every time (the
    scheduler's own spacing for a k-step sampler)."""
    return inference_timesteps(scheduler, k)


def student_timesteps(
    scheduler: "DDIMScheduler", inference_steps: int, k: int, mode: str, generator: torch.Generator | None = None, kbin_first: str = "last"
) -> torch.Tensor:
    """The k timesteps of one student generation: mode "kbin" (its first step: `kbin_first`) or "uniform"."""
    if mode == "kbin":
        return kbin_timesteps(inference_timesteps(scheduler, inference_steps), k, generator, kbin_first)
    if mode == "uniform":
        return uniform_timesteps(scheduler, k)
    raise ValueError(f"unknown timestep mode {mode!r}; expected 'kbin' or 'uniform'")
