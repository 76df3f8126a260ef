"""The two frozen teachers of FDD (METHOD.md section 2) and what the student needs from them:
a clean-sample prediction x̂0 at a noisy sample (for SDS, section 4.3) and multi-step DDIM
samples from noise (the discriminators' "real" samples, section 4.4).

- `EditTeacher` ε_{θ,ψ}: the frozen backbone (a `UNet2DConditionModel`, without the
  student's LoRA) + the edit ControlNet, applied frame by frame: frame f of a clip is scored
  against input frame f, the instruction, the task label and the output caption.
- `VideoTeacher` ε_{θ,ϕ}: the frozen backbone + temporal layers (a `UNetMotionModel`),
  conditioned on the edited first frame and the output caption. The student's UNet is the
  same `UNetMotionModel` with a LoRA on it: the teacher runs it with the LoRA switched off,
  so the backbone's weights are held once.

Every call runs under `torch.no_grad()`: the teachers are the stop-gradient of the SDS loss.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from ..diffusion import NoiseSchedule, ddim_sample
from ..models.adapters import EditVideoModel, with_first_frame
from .batch import EditBatch


@contextmanager
def lora_off(unet: Any) -> Iterator[Any]:
    """The UNet without its LoRA adapters for the duration (diffusers' `disable_lora`);
    a UNet without adapters is returned as it is."""
    has_lora = bool(getattr(unet, "peft_config", None))
    if has_lora:
        unet.disable_lora()
    try:
        yield unet
    finally:
        if has_lora:
            unet.enable_lora()


class EditTeacher:
    """Backbone + edit adapter, per frame. `guidance_scale` > 1: classifier-free guidance on
    the texts (caption and instruction replaced by `empty_emb`, the encoded ""), the input
    frame and task label conditioning both branches, as the edit adapter was trained."""

    def __init__(self, unet: Any, controlnet: Any, schedule: NoiseSchedule, guidance_scale: float = 1.0,
                 empty_emb: torch.Tensor | None = None):
        if type(unet).__name__ == "UNetMotionModel":
            raise ValueError("EditTeacher: expected the image backbone (UNet2DConditionModel), got a UNetMotionModel")
        if guidance_scale != 1.0 and empty_emb is None:
            raise ValueError("EditTeacher: guidance_scale != 1 needs empty_emb (the encoded empty text)")
        self.model = EditVideoModel(unet, controlnet)
        self.schedule = schedule
        self.guidance_scale = guidance_scale
        self.empty_emb = empty_emb

    @torch.no_grad()
    def output(self, x_t: torch.Tensor, t: torch.Tensor, batch: EditBatch, source: torch.Tensor | None = None) -> torch.Tensor:
        """The model output (the schedule's prediction type) at clips or images x_t; `source`
        defaults to the batch's input video (an image batch passes its own input frames)."""
        source = batch.source if source is None else source
        cond = self.model(x_t, t, batch.caption_emb, batch.instruction_emb, source, batch.tasks)
        if self.guidance_scale == 1.0:
            return cond
        empty = self.empty_emb.expand(x_t.shape[0], *self.empty_emb.shape[1:])
        uncond = self.model(x_t, t, empty, empty, source, batch.tasks)
        return uncond + self.guidance_scale * (cond - uncond)

    @torch.no_grad()
    def x0(self, x_t: torch.Tensor, t: torch.Tensor, batch: EditBatch) -> torch.Tensor:
        """x̂0 of every frame of the noisy clips x_t (B, C, F, H, W) at timesteps t (B,)."""
        return self.schedule.split(self.output(x_t, t, batch), x_t, t)[0]

    @torch.no_grad()
    def sample(self, noise: torch.Tensor, batch: EditBatch, timesteps: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """Every frame of the input video edited independently, by DDIM from `noise` (B, C, F, H, W)."""
        return ddim_sample(lambda x, t: self.output(x, t, batch), noise, self.schedule, timesteps)

    @torch.no_grad()
    def edit_first_frame(self, noise: torch.Tensor, batch: EditBatch, timesteps: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """The edited first frame (B, C, H, W) that conditions the video adapter, from `noise` (B, C, H, W)."""
        source = batch.source[:, :, 0]
        return ddim_sample(lambda x, t: self.output(x, t, batch, source), noise, self.schedule, timesteps)


class VideoTeacher:
    """Backbone + temporal layers on whole clips, first-frame conditioned, LoRA off."""

    def __init__(self, unet: Any, schedule: NoiseSchedule):
        if type(unet).__name__ != "UNetMotionModel":
            raise ValueError(f"VideoTeacher: expected a UNetMotionModel (backbone + temporal layers), got {type(unet).__name__}")
        self.model = EditVideoModel(unet)
        self.schedule = schedule

    @torch.no_grad()
    def output(self, x_t: torch.Tensor, t: torch.Tensor, batch: EditBatch) -> torch.Tensor:
        with lora_off(self.model.unet):
            return self.model(with_first_frame(x_t, batch.needs_first()), t, batch.caption_emb)

    @torch.no_grad()
    def x0(self, x_t: torch.Tensor, t: torch.Tensor, batch: EditBatch) -> torch.Tensor:
        """x̂0 of the noisy clips x_t given the batch's edited first frame and output caption
        (frame 0 of the result is the model's, not the condition: score frames 1.. only)."""
        x_t = with_first_frame(x_t, batch.needs_first())
        return self.schedule.split(self.output(x_t, t, batch), x_t, t)[0]

    @torch.no_grad()
    def sample(self, noise: torch.Tensor, batch: EditBatch, timesteps: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """Clips that start at the batch's edited first frame, by DDIM from `noise`."""
        x = ddim_sample(lambda x, t: self.output(x, t, batch), noise, self.schedule, timesteps)
        return with_first_frame(x, batch.needs_first())
