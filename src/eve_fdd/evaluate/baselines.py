"""Baselines, edited and scored by the same code as the FDD variants (METHOD.md section 7):

- `edit_frames`: the edit adapter alone, frame by frame (the edit teacher on every input frame,
  each from its own noise): per-frame edits with nothing tying the frames together.
- `sdedit@<level>`: SDEdit (Meng et al. 2022) on the backbone, frame by frame: each input frame
  is noised to the DDIM step at `level` of the schedule (0.75 in the paper, chosen over several
  levels; a sweep here) and denoised with the output caption, classifier-free guided like the
  backbone's own samples; at full scale the VAE's latents are noised, not the pixels. Ours:
  frames are edited independently (the backbone is an image
  model), each from its own noise.
The plug-and-play baseline is FDD's `no_align` variant (stage `evaluate`). The backbone denoiser
is a `ConceptTeacher` on the bare backbone (no LoRA to fuse): the same guided prediction.
"""

from __future__ import annotations

import torch

from ..diffusion import NoiseSchedule, ddim_sample
from ..distill.batch import EditBatch
from ..distill.teachers import ConceptTeacher, EditTeacher
from ..models.adapters import batch_to_frames, frames_to_batch
from ..models.placement import randn


def frames_as_images(batch: EditBatch) -> EditBatch:
    """Each frame of each clip as its own one-frame data point (texts and task repeated)."""
    f = batch.frames
    pixels = None if batch.pixels is None else frames_to_batch(batch.pixels).unsqueeze(2)
    return EditBatch(frames_to_batch(batch.source).unsqueeze(2), batch.caption_emb.repeat_interleave(f, 0),
                     batch.instruction_emb.repeat_interleave(f, 0), batch.tasks.repeat_interleave(f, 0), pixels=pixels)


@torch.no_grad()
def edit_frames(teacher: EditTeacher, batch: EditBatch, timesteps: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Clips (B, C, F, H, W): every frame edited by the edit adapter on its own."""
    images = frames_as_images(batch)
    noise = randn(images.source[:, :, 0].shape, generator, like=images.source)
    return batch_to_frames(teacher.edit_first_frame(noise, images, timesteps), batch.frames)


def sdedit_start(timesteps: torch.Tensor, level: float) -> int:
    """Index of the first of the (descending) inference timesteps SDEdit runs at `level` in
    [0, 1]: level 1 runs all of them from pure noise, level 0 none (the input comes back)."""
    if not 0.0 <= level <= 1.0:
        raise ValueError(f"SDEdit level must be in [0, 1], got {level}")
    return len(timesteps) - int(round(level * len(timesteps)))


@torch.no_grad()
def sdedit(backbone_teacher: ConceptTeacher, schedule: NoiseSchedule, batch: EditBatch, timesteps: torch.Tensor, level: float,
           generator: torch.Generator) -> torch.Tensor:
    """Clips (B, C, F, H, W): every input frame noised to `level` and denoised by the backbone
    towards the output caption."""
    images = frames_as_images(batch)
    x0 = images.source[:, :, 0]
    noise = randn(x0.shape, generator, like=x0)
    start = sdedit_start(timesteps, level)
    if start == len(timesteps):
        return batch.source.clone()
    t = timesteps[start : start + 1].expand(x0.shape[0])
    x_t = schedule.add_noise(x0, noise, t)
    edited = ddim_sample(lambda x, s: backbone_teacher.predict(x, s, images.caption_emb), x_t, schedule, timesteps[start:])
    return batch_to_frames(edited, batch.frames)

