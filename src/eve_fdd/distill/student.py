"""The EVE student (METHOD.md section 2): ε_{θ+LoRA,ψ,ϕ}.

The backbone with the video adapter's temporal layers (a `UNetMotionModel`) and a peft LoRA
on its spatial attention, plus the edit ControlNet run frame by frame on the input video.
In the EVE setting only the LoRA is trained (`trainable="lora"`); the ablation "Random
Init" (section 8) trains the ControlNet, the temporal layers and the LoRA (`"all"`; ours:
the backbone's own weights stay frozen there too, the LoRA standing for their fine-tuning).

`generate` runs DDIM from noise over the k given timesteps with gradients through every
step (section 4.1); frame 0 is the edited first frame that conditions the video adapter,
replaced at every step exactly as the video adapter was trained and sampled.

The same student aligns other adapter pairs (section 8, stage `fdd_personal`): there the
backbone is an image UNet (`UNet2DConditionModel`) carrying a subject or style LoRA, the
"clips" are single images and nothing conditions on a first frame (`first_frame=False`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..diffusion import NoiseSchedule, ddim_sample
from ..models.adapters import LORA_TARGETS, EditVideoModel, add_lora, is_motion_unet, load_lora, motion_parameters, with_first_frame
from .batch import EditBatch
from .teachers import guided

TRAINABLE = ("lora", "all")


class Student:
    def __init__(self, unet: Any, controlnet: Any, schedule: NoiseSchedule, *, lora_name: str = "fdd", lora_rank: int = 4,
                 trainable: str = "lora", gradient_checkpointing: bool = False, first_frame: bool = True,
                 lora: str | Path | None = None, lora_targets: Sequence[str] = LORA_TARGETS):
        if first_frame and not is_motion_unet(unet):
            raise ValueError(f"Student: expected a UNetMotionModel (backbone + temporal layers), got {type(unet).__name__}")
        if trainable not in TRAINABLE:
            raise ValueError(f"Student: trainable={trainable!r}; expected one of {TRAINABLE}")
        unet.requires_grad_(False)
        controlnet.requires_grad_(False)
        if lora is None:
            add_lora(unet, lora_name, rank=lora_rank, targets=lora_targets)  # leaves only the LoRA trainable
        else:  # a trained student's LoRA (its saved rank), for editing
            load_lora(unet, lora, lora_name)
        if trainable == "all":
            controlnet.requires_grad_(True)
            for p in motion_parameters(unet):
                p.requires_grad_(True)
        if gradient_checkpointing:
            unet.enable_gradient_checkpointing()
            controlnet.enable_gradient_checkpointing()
        self.model = EditVideoModel(unet, controlnet)
        self.schedule = schedule
        self.lora_name = lora_name
        self.trainable = trainable
        self.first_frame = first_frame  # frame 0 is the edited first frame, not the student's
        self.guidance_scale, self.empty_emb = 1.0, None  # training never guides the student (`guide` for inference)

    def guide(self, scale: float, empty_emb: torch.Tensor | None) -> "Student":
        """Classifier-free guidance at inference: the prediction against the prediction with the
        caption and instruction empty (`empty_emb`, the encoded ""), input video and task kept."""
        if scale != 1.0 and empty_emb is None:
            raise ValueError("Student: guidance != 1 needs empty_emb (the encoded empty text)")
        self.guidance_scale, self.empty_emb = scale, empty_emb
        return self

    @property
    def scored(self) -> slice:
        """The frames the student makes (what its losses and the evaluation read)."""
        return slice(1, None) if self.first_frame else slice(None)

    @property
    def unet(self) -> Any:
        return self.model.unet

    @property
    def controlnet(self) -> Any:
        return self.model.controlnet

    def modules(self) -> dict[str, torch.nn.Module]:
        """What the optimiser and checkpoints see (only parameters that require grad train)."""
        return {"unet": self.unet, "controlnet": self.controlnet}

    def parameters(self) -> list[torch.nn.Parameter]:
        return [p for m in self.modules().values() for p in m.parameters() if p.requires_grad]

    def output(self, x_t: torch.Tensor, t: torch.Tensor, batch: EditBatch) -> torch.Tensor:
        if self.first_frame:
            x_t = with_first_frame(x_t, batch.needs_first())
        cond = self.model(x_t, t, batch.caption_emb, batch.instruction_emb, batch.condition, batch.tasks)
        if self.guidance_scale == 1.0:
            return cond
        empty = self.empty_emb.expand(x_t.shape[0], *self.empty_emb.shape[1:])
        return guided(cond, self.model(x_t, t, empty, empty, batch.condition, batch.tasks), self.guidance_scale)

    def generate(self, noise: torch.Tensor, batch: EditBatch, timesteps: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """The edited clip x'_0 (B, C, F, H, W) from `noise` by DDIM over `timesteps`
        (descending), differentiable through every step unless run under no_grad."""
        x = ddim_sample(lambda x, t: self.output(x, t, batch), noise, self.schedule, timesteps)
        return with_first_frame(x, batch.needs_first()) if self.first_frame else x
