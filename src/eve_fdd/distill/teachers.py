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
- `ConceptTeacher` (stage `fdd_personal`, METHOD.md section 8: other adapter pairs): the
  backbone with a subject or style LoRA fused into it, per frame on the output caption. It
  stands where the video teacher stands; the student is that same UNet with its own LoRA.

Every call runs under `torch.no_grad()`: the teachers are the stop-gradient of the SDS loss.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from ..diffusion import NoiseSchedule, ddim_sample
from ..models.adapters import EditVideoModel, is_motion_unet, load_lora, with_first_frame
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


def with_lora_merged(unet: Any, directory: str | Path, name: str) -> Any:
    """A copy of `unet` with the LoRA saved in `directory` (diffusers' layout, as stage `loras`
    writes it) fused into its weights: a plain UNet that draws the subject or style. The
    original is untouched, so the edit teacher keeps the bare backbone."""
    merged = load_lora(copy.deepcopy(unet), directory, name)
    merged.fuse_lora(adapter_names=[name])
    merged.unload_lora()
    return merged.requires_grad_(False).eval()


def guided(cond: torch.Tensor, uncond: torch.Tensor | None, scale: float) -> torch.Tensor:
    """Classifier-free guidance: uncond + scale (cond - uncond); `cond` itself at scale 1."""
    return cond if uncond is None or scale == 1.0 else uncond + scale * (cond - uncond)


def _guided_copy(teacher: Any, scale: float) -> Any:
    if scale != 1.0 and teacher.empty_emb is None:
        raise ValueError(f"{type(teacher).__name__}: guidance {scale} needs empty_emb (the encoded empty text)")
    other = copy.copy(teacher)
    other.guidance_scale = scale
    return other


class _FromOutput:
    """x̂0 and DDIM samples of a teacher that defines `output(x_t, t, batch)`."""

    schedule: NoiseSchedule

    def output(self, x_t: torch.Tensor, t: torch.Tensor, batch: EditBatch) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def x0(self, x_t: torch.Tensor, t: torch.Tensor, batch: EditBatch) -> torch.Tensor:
        """x̂0 of every frame of the noisy clips x_t (B, C, F, H, W) at timesteps t (B,)."""
        return self.schedule.split(self.output(x_t, t, batch), x_t, t)[0]

    @torch.no_grad()
    def sample(self, noise: torch.Tensor, batch: EditBatch, timesteps: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """Clips (B, C, F, H, W) by DDIM from `noise`, frame by frame for an image teacher."""
        return ddim_sample(lambda x, t: self.output(x, t, batch), noise, self.schedule, timesteps)


class EditTeacher(_FromOutput):
    """Backbone + edit adapter, per frame. `guidance_scale` > 1: classifier-free guidance on
    the texts (caption and instruction replaced by `empty_emb`, the encoded ""), the input
    frame and task label conditioning both branches, as the edit adapter was trained."""

    role = "edit"

    def __init__(self, unet: Any, controlnet: Any, schedule: NoiseSchedule, guidance_scale: float = 1.0,
                 empty_emb: torch.Tensor | None = None):
        if is_motion_unet(unet):
            raise ValueError("EditTeacher: expected the image backbone (UNet2DConditionModel), got a UNetMotionModel")
        if guidance_scale != 1.0 and empty_emb is None:
            raise ValueError("EditTeacher: guidance_scale != 1 needs empty_emb (the encoded empty text)")
        self.model = EditVideoModel(unet, controlnet)
        self.schedule = schedule
        self.guidance_scale = guidance_scale
        self.empty_emb = empty_emb

    def with_guidance(self, scale: float) -> "EditTeacher":
        """The same teacher (same modules) at another guidance scale."""
        return _guided_copy(self, scale)

    @torch.no_grad()
    def output(self, x_t: torch.Tensor, t: torch.Tensor, batch: EditBatch, source: torch.Tensor | None = None) -> torch.Tensor:
        """The model output (the schedule's prediction type) at clips or images x_t; `source`
        (the edit adapter's condition, in pixels) defaults to the batch's input video (an image
        batch passes its own input frames)."""
        source = batch.condition if source is None else source
        cond = self.model(x_t, t, batch.caption_emb, batch.instruction_emb, source, batch.tasks)
        if self.guidance_scale == 1.0:
            return cond
        empty = self.empty_emb.expand(x_t.shape[0], *self.empty_emb.shape[1:])
        return guided(cond, self.model(x_t, t, empty, empty, source, batch.tasks), self.guidance_scale)

    @torch.no_grad()
    def edit_first_frame(self, noise: torch.Tensor, batch: EditBatch, timesteps: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """The edited first frame (B, C, H, W) that conditions the video adapter, from `noise` (B, C, H, W)."""
        source = batch.condition[:, :, 0]
        return ddim_sample(lambda x, t: self.output(x, t, batch, source), noise, self.schedule, timesteps)


class VideoTeacher:
    """Backbone + temporal layers on whole clips, first-frame conditioned, LoRA off.
    `guidance_scale` > 1: classifier-free guidance on the caption (against `empty_emb`)."""

    role = "video"
    needs_first = True  # the pool makes the edited first frame it is conditioned on

    def __init__(self, unet: Any, schedule: NoiseSchedule, guidance_scale: float = 1.0, empty_emb: torch.Tensor | None = None):
        if not is_motion_unet(unet):
            raise ValueError(f"VideoTeacher: expected a UNetMotionModel (backbone + temporal layers), got {type(unet).__name__}")
        if guidance_scale != 1.0 and empty_emb is None:
            raise ValueError("VideoTeacher: guidance_scale != 1 needs empty_emb (the encoded empty text)")
        self.model = EditVideoModel(unet)
        self.schedule = schedule
        self.guidance_scale = guidance_scale
        self.empty_emb = empty_emb

    def with_guidance(self, scale: float) -> "VideoTeacher":
        """The same teacher (same modules) at another guidance scale."""
        return _guided_copy(self, scale)

    @torch.no_grad()
    def output(self, x_t: torch.Tensor, t: torch.Tensor, batch: EditBatch) -> torch.Tensor:
        x_t = with_first_frame(x_t, batch.needs_first())
        with lora_off(self.model.unet):
            cond = self.model(x_t, t, batch.caption_emb)
            if self.guidance_scale == 1.0:
                return cond
            return guided(cond, self.model(x_t, t, self.empty_emb.expand(x_t.shape[0], *self.empty_emb.shape[1:])), self.guidance_scale)

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


class ConceptTeacher(_FromOutput):
    """Backbone + a subject or style LoRA (fused, `with_lora_merged`), frame by frame on the
    output caption, with the student's LoRA off. `guidance_scale` > 1: classifier-free
    guidance against `empty_emb`, as the LoRA's own samples are drawn (stage `loras`).
    `draw` makes the inputs of `fdd_personal`: METHOD.md section 3, "the input image is
    generated from the input caption by the LoRA adapter itself"."""

    role = "concept"
    needs_first = False

    def with_guidance(self, scale: float) -> "ConceptTeacher":
        """The same teacher (same modules) at another guidance scale."""
        return _guided_copy(self, scale)

    def __init__(self, unet: Any, schedule: NoiseSchedule, guidance_scale: float = 1.0, empty_emb: torch.Tensor | None = None):
        if is_motion_unet(unet):
            raise ValueError("ConceptTeacher: expected the image backbone with the LoRA fused (UNet2DConditionModel), got a UNetMotionModel")
        if guidance_scale != 1.0 and empty_emb is None:
            raise ValueError("ConceptTeacher: guidance_scale != 1 needs empty_emb (the encoded empty text)")
        self.model = EditVideoModel(unet)
        self.schedule = schedule
        self.guidance_scale = guidance_scale
        self.empty_emb = empty_emb

    @torch.no_grad()
    def predict(self, x_t: torch.Tensor, t: torch.Tensor, caption_emb: torch.Tensor) -> torch.Tensor:
        """The model output at images (B, C, H, W) or clips (B, C, F, H, W) for captions (B, L, D)."""
        with lora_off(self.model.unet):
            cond = self.model(x_t, t, caption_emb)
            if self.guidance_scale == 1.0:
                return cond
            return guided(cond, self.model(x_t, t, self.empty_emb.expand(x_t.shape[0], *self.empty_emb.shape[1:])), self.guidance_scale)

    @torch.no_grad()
    def output(self, x_t: torch.Tensor, t: torch.Tensor, batch: EditBatch) -> torch.Tensor:
        return self.predict(x_t, t, batch.caption_emb)

    @torch.no_grad()
    def draw(self, noise: torch.Tensor, caption_emb: torch.Tensor, timesteps: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) of captions (B, L, D), by DDIM from `noise`."""
        return ddim_sample(lambda x, t: self.predict(x, t, caption_emb), noise, self.schedule, timesteps)
