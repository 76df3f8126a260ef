"""FDD in the project's shared training loop (train/loop.py), for both stages that run it:
`fdd` (EVE: edit adapter + video adapter) and `fdd_personal` (edit adapter + a subject or
style LoRA). Two roles, each with its own optimiser and a constant learning rate, no warm-up
(METHOD.md section 6): the student (its LoRA; every adapter for random_init) and the
discriminators' heads, which train while the adversarial terms are on (and `fdd.discriminator.warmup`
iterations before).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import DiscriminatorConfig, TrainConfig
from ..data.video import write_gif
from ..evaluate.plots import timestep_histogram
from ..models.placement import Placement
from ..models.space import PixelSpace
from ..train.loop import Critic, TrainResult, train
from ..train.parallel import Shard
from ..train.video_adapter import clips_to_uint8
from .discriminators import EditDiscriminator, FrozenFeatures, VideoDiscriminator
from .fdd import FDD
from .pool import TeacherPool


@dataclass(frozen=True)
class RunSettings:
    iterations: int
    batch_size: int
    lr: float
    grad_clip: float
    checkpoint_every: int
    log_every: int
    gradient_checkpointing: bool
    seed: int
    discriminator_lr: float
    micro_batches: int = 1  # train/parallel.py: each draws batch_size / micro_batches clips from the pool


def discriminators(d: DiscriminatorConfig, text_dim: int, frames: int, network: Any) -> tuple[EditDiscriminator, VideoDiscriminator]:
    """D_e and the second teacher's D (D_v) on one shared frozen feature network
    (`models.registry.feature_network`: DINOv2, or the Shapes profile's seeded small one)."""
    feats = FrozenFeatures(network.model, d.feature_layers, network.size, network.mean, network.std)
    return (EditDiscriminator(feats, text_dim, d.head_width, d.head_heads),
            VideoDiscriminator(feats, text_dim, d.head_width, d.head_heads, max(32, frames)))


# (step, the step's batch, the student's clips, the edit teacher's, the second teacher's)
Snapshot = Callable[[int, Any, torch.Tensor, torch.Tensor, torch.Tensor], None]


def train_fdd(fdd: FDD, pool: TeacherPool, run: RunSettings, checkpoints: Path, fingerprint: str, progress: bool = True,
              on_log: Callable[[dict[str, float]], None] | None = None, snapshot: Snapshot | None = None,
              snapshot_every: int = 0, placement: Placement | None = None) -> tuple[TrainResult, np.ndarray]:
    """`run.iterations` of student step then discriminator step, batches drawn from the pool
    (filled at the first step, refreshed as it goes, checkpointed with the weights).
    `snapshot` sees the student's generation beside the teachers' samples every
    `snapshot_every` steps and at the last. `placement`: the device and precision the stage
    placed its models with (float32 on the CPU when None). Returns the result and the student
    timesteps of every step this run took, (steps, k)."""
    held: dict[str, Any] = {}
    timesteps: list[list[float]] = []

    def student_step(step: int, g: torch.Generator, shard: Shard):
        if held.get("pool_step") != step:  # once per step, whatever the micro-batches (the same on every rank)
            if pool.batch is None:
                pool.fill()
            else:
                pool.refresh(step)
            held["pool_step"] = step
        batch, edit_real, video_real = pool.draw(shard.size(run.batch_size), g)
        loss, logs, fake, pixels = fdd.student_step(batch, step, g)
        held[shard.index] = dict(batch=batch, fake=fake, pixels=pixels, edit_real=edit_real, video_real=video_real)
        timesteps.append([logs[f"timestep.{i}"] for i in range(fdd.settings.k)])
        if snapshot is not None and snapshot_every and shard.index == 0 and (step % snapshot_every == 0 or step == run.iterations - 1):
            snapshot(step, batch, fake, edit_real, video_real)
        return loss, logs

    def discriminator_step(step: int, g: torch.Generator, shard: Shard):
        h = held.pop(shard.index)
        return fdd.discriminator_step(h["batch"], h["fake"], h["edit_real"], h["video_real"], h["pixels"])

    train_cfg = TrainConfig(steps=run.iterations, lr=run.lr, warmup_steps=0, grad_clip=run.grad_clip,
                            checkpoint_every=run.checkpoint_every, log_every=run.log_every,
                            gradient_checkpointing=run.gradient_checkpointing, seed=run.seed, micro_batches=run.micro_batches)
    critic = Critic({"d_edit": fdd.d_edit, "d_video": fdd.d_video}, discriminator_step, run.discriminator_lr,
                    active=fdd.settings.discriminators_train)
    result = train(fdd.student.modules(), student_step, train_cfg, checkpoints, progress=progress, on_log=on_log,
                   fingerprint=fingerprint, critic=critic, placement=placement or Placement(), state=pool)
    return result, np.array(timesteps, dtype=float).reshape(-1, fdd.settings.k)


class ProgressSamples:
    """A `Snapshot` that writes the first data point of the step's batch as one GIF under
    `folder`, side by side: input | student | edit teacher | second teacher (the pool's real
    samples for that data point, made from other noise), decoded from the model's `space`.
    `paths` lists what it wrote."""

    def __init__(self, folder: Path, fps: float, scale: int = 1, space: Any = None):
        self.folder, self.fps, self.scale = Path(folder), fps, scale
        self.space = PixelSpace() if space is None else space
        self.paths: list[Path] = []

    @torch.no_grad()
    def __call__(self, step: int, batch: Any, fake: torch.Tensor, edit_real: torch.Tensor, video_real: torch.Tensor) -> None:
        decoded = [self.space.decode(x[:1].detach()) for x in (fake, edit_real, video_real)]
        clips = [clips_to_uint8(x)[0] for x in (batch.condition[:1], *decoded)]
        path = self.folder / f"step-{step:06d}.gif"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_gif(np.concatenate(clips, axis=2), path, fps=self.fps, scale=self.scale)
        self.paths.append(path)


def timestep_plot(timesteps: np.ndarray, scheduler: Any, out_dir: Path, name: str) -> list[Path]:
    """`out_dir/timesteps.png`, the student's timesteps of this run (none when it trained nothing)."""
    if not len(timesteps):
        return []
    path = Path(out_dir) / "timesteps.png"
    timestep_histogram(timesteps, scheduler.config.num_train_timesteps, path, f"{name}: student timesteps, {len(timesteps)} iterations")
    return [path]
