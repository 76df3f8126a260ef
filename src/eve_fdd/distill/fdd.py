"""One FDD iteration (METHOD.md section 4), split by role as plain methods:
`student_step` (generate through k steps, SDS from both teachers, adversarial terms) and
`discriminator_step` (hinge loss on teacher samples vs the student's). Each returns
(loss, logs); the caller owns the two optimisers and clears gradients between them.

Loss (section 4.5): L = α (L_adv^e + λ L_SDS^e) + β (L_adv^v + λ L_SDS^v). The adversarial
terms are off before `adversarial_start` (the paper: SDS only for the first 1,000 of 1,500
iterations). Frame 0 of every clip is the edited first frame that conditions the video
adapter, made by the edit teacher, not by the student: it is left out of every loss.

The second teacher and its discriminator are the video adapter's in EVE (stage `fdd`); when
FDD aligns another adapter pair (stage `fdd_personal`) they are a subject or style LoRA's
(teachers.ConceptTeacher) on single images, nothing is first-frame conditioned, and the logs
name the teacher by its `role`.

Samples live in the model's space (models/space.py: pixels for Shapes, SD latents at full
scale); the discriminators read pixels, so what they see is decoded first: the student's clip
with gradients (its adversarial gradient flows back through the VAE decoder into its
latents), the teachers' samples without. D_e reads only the student's frames (1..), D_v the
whole clip. The student step decodes the student's clip once for both discriminators and
hands the pixels (detached) to the discriminator step, which reads the same frozen decoder's
output of the same latents: one decode of the student's clip per adversarial iteration.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..diffusion import NoiseSchedule, student_timesteps
from ..models.adapters import frames_to_batch
from ..models.placement import randn
from ..models.space import PixelSpace
from .batch import EditBatch
from .discriminators import EditDiscriminator, VideoDiscriminator
from .losses import hinge_discriminator, hinge_generator, sds_loss, sds_timesteps, sds_weight
from .student import Student
from .teachers import EditTeacher, VideoTeacher


@dataclass(frozen=True)
class Settings:
    k: int = 3                      # student steps, backpropagated through (section 4.1)
    inference_steps: int = 24       # T: K-bin splits them into k bins
    timesteps: str = "kbin"         # kbin | uniform (the "w/o K-bin" ablation)
    kbin_first: str = "last"        # K-bin's first step: last (the last timestep) | drawn (from bin 0)
    sds: bool = True
    adversarial: bool = True
    adversarial_start: int = 0      # iteration from which the adversarial terms count
    discriminator_warmup: int = 0   # iterations before that in which the discriminators already train (ours)
    alpha: float = 0.5              # weight of the edit teacher's terms
    beta: float = 0.5               # weight of the video teacher's terms
    lam: float = 2.5                # λ: SDS vs adversarial
    sds_weighting: str = "uniform"  # c(t), losses.sds_weight
    sds_t_range: tuple[float, float] = (0.02, 0.98)
    sds_t_range_second: tuple[float, float] | None = None  # the second teacher's own t range (None: the edit teacher's t)

    def __post_init__(self) -> None:
        if not (self.sds or self.adversarial):
            raise ValueError("FDD settings: with neither SDS nor the adversarial terms nothing is trained")

    def adversarial_on(self, iteration: int) -> bool:
        return self.adversarial and (iteration >= self.adversarial_start or not self.sds)

    def discriminators_train(self, iteration: int) -> bool:
        """The discriminator step runs: in the adversarial phase, and `discriminator_warmup`
        iterations before it (on the student's clips of an SDS-only step, whose loss they do
        not enter), so the student meets trained discriminators instead of fresh heads."""
        return self.adversarial_on(iteration) or (self.adversarial and iteration >= self.adversarial_start - self.discriminator_warmup)


class FDD:
    def __init__(self, student: Student, edit_teacher: EditTeacher, video_teacher: VideoTeacher,
                 d_edit: EditDiscriminator, d_video: VideoDiscriminator, scheduler, schedule: NoiseSchedule, settings: Settings,
                 space: Any = None):
        self.student, self.edit_teacher, self.video_teacher = student, edit_teacher, video_teacher
        self.d_edit, self.d_video = d_edit, d_video
        self.scheduler, self.schedule, self.settings = scheduler, schedule, settings
        self.space = PixelSpace() if space is None else space  # where the samples live; the discriminators read pixels

    @property
    def second(self) -> str:
        """The second teacher's name in the logs: "video" (EVE) or "concept" (other adapter pairs)."""
        return self.video_teacher.role

    def discriminator_parameters(self) -> list[torch.nn.Parameter]:
        seen, out = set(), []
        for p in list(self.d_edit.parameters()) + list(self.d_video.parameters()):
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                out.append(p)
        return out

    def student_step(self, batch: EditBatch, iteration: int,
                     generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float], torch.Tensor, torch.Tensor | None]:
        """(loss, logs, the generated clips and, when the adversarial terms are on, their decoded
        pixels, both detached for the discriminator step)."""
        s = self.settings
        ts = student_timesteps(self.scheduler, s.inference_steps, s.k, s.timesteps, generator, s.kbin_first)
        fake = self.student.generate(randn(batch.source.shape, generator, like=batch.source), batch, ts)
        logs: dict[str, float] = {f"timestep.{i}": float(t) for i, t in enumerate(ts)}
        edit_terms = fake.new_zeros(())
        video_terms = fake.new_zeros(())
        pixels = None
        if s.sds:
            b = fake.shape[0]
            t = sds_timesteps(self.schedule, b, s.sds_t_range, generator)
            w = sds_weight(self.schedule, t, s.sds_weighting)
            logs["sds.t_mean"] = float(t.float().mean())
            frames = self.student.scored
            le, log_e = sds_loss(fake, lambda x, tt: self.edit_teacher.x0(x, tt, batch), self.schedule, t,
                                 randn(fake.shape, generator, like=fake), w, frames)
            if s.sds_t_range_second is not None:  # the second teacher's own t (drawn only then: the default run is unchanged)
                t = sds_timesteps(self.schedule, b, s.sds_t_range_second, generator)
                w = sds_weight(self.schedule, t, s.sds_weighting)
                logs[f"sds_{self.second}.t_mean"] = float(t.float().mean())
            lv, log_v = sds_loss(fake, lambda x, tt: self.video_teacher.x0(x, tt, batch), self.schedule, t,
                                 randn(fake.shape, generator, like=fake), w, frames)
            edit_terms = edit_terms + s.lam * le
            video_terms = video_terms + s.lam * lv
            logs.update({"sds_edit": log_e["sds"], f"sds_{self.second}": log_v["sds"]})
        if s.adversarial_on(iteration):
            pixels = self.space.decode(fake)  # with gradients, into the student's latents
            with _frozen(self.d_edit, self.d_video):
                ge, _ = hinge_generator(self._d_edit(batch, pixels[:, :, self.student.scored]))
                gv, _ = hinge_generator(self.d_video(pixels, batch.caption_emb))
            edit_terms = edit_terms + ge
            video_terms = video_terms + gv
            logs.update({"adv_edit": float(ge.detach()), f"adv_{self.second}": float(gv.detach())})
        loss = s.alpha * edit_terms + s.beta * video_terms
        logs["loss"] = float(loss.detach())
        return loss, logs, fake.detach(), None if pixels is None else pixels.detach()

    def discriminator_step(self, batch: EditBatch, fake: torch.Tensor, edit_real: torch.Tensor, video_real: torch.Tensor,
                           fake_pixels: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """L_D = L_D^e + L_D^v: the edit teacher's frames and the video teacher's clips are
        real, the student's (detached) clips fake; all in model space, decoded here, except the
        student's when the student step gives its decoded `fake_pixels`."""
        frames = self.student.scored
        with torch.no_grad():
            fake = self.space.decode(fake.detach()) if fake_pixels is None else fake_pixels.detach()
            edit_real, video_real = self.space.decode(edit_real[:, :, frames]), self.space.decode(video_real)
        de, log_e = hinge_discriminator(self._d_edit(batch, edit_real), self._d_edit(batch, fake[:, :, frames]))
        dv, log_v = hinge_discriminator(self.d_video(video_real, batch.caption_emb), self.d_video(fake, batch.caption_emb))
        logs = {f"edit.{k}": v for k, v in log_e.items()} | {f"{self.second}.{k}": v for k, v in log_v.items()}
        return de + dv, logs

    def _d_edit(self, batch: EditBatch, pixels: torch.Tensor) -> torch.Tensor:
        """D_e on the student's frames, `pixels` (B, 3, F', H, W) = those frames (1.. when the
        first frame is the condition) decoded: (input frame, instruction, output frame) per frame."""
        f = pixels.shape[2]
        return self.d_edit(frames_to_batch(batch.condition[:, :, self.student.scored]), batch.instruction_emb.repeat_interleave(f, 0),
                           frames_to_batch(pixels))


class _frozen:
    """Discriminator weights without gradients while the student's loss runs through them."""

    def __init__(self, *modules: torch.nn.Module):
        self.params = [p for m in modules for p in m.parameters() if p.requires_grad]

    def __enter__(self) -> None:
        for p in self.params:
            p.requires_grad_(False)

    def __exit__(self, *exc) -> None:
        for p in self.params:
            p.requires_grad_(True)
