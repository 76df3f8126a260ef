"""Training and checking the video adapter (stage `video_adapter`, METHOD.md section 2).

Data: Shapes clips rendered on the fly from their own seed stream (the stand-in for Emu
Video's training videos; never the video set FDD edits), with their captions; at full scale
the user's clips (the `videos` table's train split, `table_clips`), held out by its test split.
The backbone's spatial weights are frozen; only the temporal layers (motion modules) learn,
in the backbone's model space (pixels or VAE latents), conditioned on the clean first frame
(`with_first_frame`), loss on the other frames.
Check, on held-out clips: sample every clip from its real first frame and caption and
measure temporal consistency, the mean absolute change between consecutive frames (on [0, 1]
pixels), against the same sampler with the temporal layers still at zero, which is the
image model sampling each frame independently; the ground-truth clips' own frame-to-frame
change is the reference. Consistency alone would reward a frozen clip, so the check also
reports motion (change from the first to the last frame, also given for ground truth) and
whether each frame still shows the captioned shapes (the world's detector).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..data.splits import stream_seed
from ..diffusion import NoiseSchedule, ddim_sample, inference_timesteps
from ..models.adapters import EditVideoModel, with_first_frame
from ..models.placement import module_device, randn
from ..world import caption, random_scene, render_video
from ..world.detect import UNCHECKABLE_STYLES, detect
from .backbone import to_uint8


def clips(world: Any, seed: int, stream: int, indices: range) -> tuple[torch.Tensor, list[str], list]:
    """Clips (B, 3, F, H, W) in [-1, 1], captions and scenes of scenes `indices` of a seed stream."""
    videos, captions, scenes = [], [], []
    for i in indices:
        scene = random_scene(stream_seed(seed, i, stream), world.min_shapes, world.max_shapes, world.speed)
        videos.append(render_video(scene, world.frames, world.size, world.supersample))
        captions.append(caption(scene))
        scenes.append(scene)
    x = torch.from_numpy(np.stack(videos)).permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0
    return x, captions, scenes


def table_clips(videos: Any, split: str) -> tuple[np.ndarray, list[str]]:
    """The `split` clips of a videos table (uint8 (N, F, H, W, 3)) and their captions."""
    from ..data import tables

    rows = [r for r in tables.read_table(tables.VIDEOS, videos) if r["split"] == split]
    if not rows:
        raise ValueError(f"{videos}: no {split!r} clips for the video adapter (videos.test_fraction holds some out)")
    sizes = {(r["num_frames"], r["height"], r["width"]) for r in rows}
    if len(sizes) > 1:
        raise ValueError(f"{videos}: the {split} clips differ in size {sorted(sizes)}; the videos stage makes them one size")
    return np.stack([tables.frames_from_row(r) for r in rows]), [r["caption"] for r in rows]


def clips_to_uint8(x: torch.Tensor) -> np.ndarray:
    """(B, 3, F, H, W) in [-1, 1] -> uint8 (B, F, H, W, 3)."""
    b, c, f, h, w = x.shape
    return to_uint8(x.transpose(1, 2).reshape(b * f, c, h, w)).reshape(b, f, h, w, 3)


def video_loss(model: EditVideoModel, schedule: NoiseSchedule, x0: torch.Tensor, caption_emb: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Diffusion loss of frames 1.. of clips x0 (in the model's space) given their clean first
    frame and caption."""
    device = module_device(model.unet)
    x0, caption_emb = x0.to(device), caption_emb.to(device)
    t = torch.randint(0, schedule.train_timesteps, (x0.shape[0],), generator=generator).to(x0.device)
    noise = randn(x0.shape, generator, like=x0)
    x_t = with_first_frame(schedule.add_noise(x0, noise, t), x0[:, :, 0])
    out = model(x_t, t, caption_emb)
    return torch.nn.functional.mse_loss(out[:, :, 1:], schedule.target(x0, noise, t)[:, :, 1:])


@torch.no_grad()
def sample_clips(model: EditVideoModel, schedule: NoiseSchedule, timesteps: torch.Tensor, first: torch.Tensor,
                 caption_emb: torch.Tensor, frames: int, generator: torch.Generator) -> torch.Tensor:
    """Clips (B, C, F, H, W) in the model's space that start at `first` (B, C, H, W), by DDIM
    from noise on the model's device; returned on the CPU."""
    b, c, h, w = first.shape
    first = first.to(module_device(model.unet))
    noise = randn((b, c, frames, h, w), generator, like=first)
    x = ddim_sample(lambda x, t: model(with_first_frame(x, first), t, caption_emb), noise, schedule, timesteps)
    return with_first_frame(x, first).float().cpu()


def frame_change(x: torch.Tensor) -> np.ndarray:
    """Per clip: mean absolute change between consecutive frames, on [0, 1] pixels."""
    return ((x[:, :, 1:] - x[:, :, :-1]).abs().mean(dim=(1, 2, 3, 4)) / 2).numpy()


def motion(x: torch.Tensor) -> np.ndarray:
    """Per clip: mean absolute change from the first to the last frame, on [0, 1] pixels."""
    return ((x[:, :, -1] - x[:, :, 0]).abs().mean(dim=(1, 2, 3)) / 2).numpy()


@dataclass
class VideoCheck:
    metrics: dict[str, float]
    samples: np.ndarray  # uint8 (N, F, H, W, 3): generated clips
    truth: np.ndarray  # uint8 (N, F, H, W, 3): the ground-truth clips they start from
    captions: list[str]


def check(model: EditVideoModel, encode_text: Any, scheduler: Any, truth: torch.Tensor, captions: list[str], scenes: list,
          seed: int, steps: int, space: Any, supersample: int = 1, batch_size: int = 8) -> VideoCheck:
    """Sample the held-out clips `truth` (pixels (N, 3, F, H, W) in [-1, 1]) from their first
    frame and caption in the model's `space` and score them; Shapes `scenes` add the detector's
    shape recall (real clips have none)."""
    schedule = NoiseSchedule.from_scheduler(scheduler)
    timesteps = inference_timesteps(scheduler, steps)
    gen = torch.Generator().manual_seed(seed * 7919 + 1)
    parts = []
    for i in range(0, len(truth), batch_size):
        first = space.encode(truth[i : i + batch_size, :, 0])
        x = sample_clips(model, schedule, timesteps, first, encode_text(captions[i : i + batch_size]), truth.shape[2], gen)
        with torch.no_grad():
            parts.append(space.decode(x).float().cpu())
    samples = torch.cat(parts)
    gen_u8, truth_u8 = clips_to_uint8(samples), clips_to_uint8(truth)
    recall = [
        np.mean([detect(frame, scene, supersample=supersample).shape_recall for frame in clip[1:]])
        for clip, scene in zip(gen_u8, scenes) if scene.style not in UNCHECKABLE_STYLES
    ]
    metrics = {
        "frame_change": float(frame_change(samples).mean()),
        "frame_change_ground_truth": float(frame_change(truth).mean()),
        "motion": float(motion(samples).mean()),
        "motion_ground_truth": float(motion(truth).mean()),
    }
    if scenes:
        metrics["shape_recall"] = float(np.mean(recall)) if recall else float("nan")
    return VideoCheck(metrics, gen_u8, truth_u8, captions)
