"""Training and checking the Shapes text-to-image backbone (stage `backbone`).

Data: scenes rendered on the fly from their own seed stream (never the video set's, never a
reserved subject or style), one random frame each, with the scene's caption. The UNet and the
text encoder learn together, v-prediction on the zero-terminal-SNR schedule (uniform t).
Check: DDIM samples for held-out captions, scored by `world.detect` (do the captioned shapes'
colours and the background appear?) against the same score of the untrained model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..data.splits import BACKBONE_EVAL_STREAM, stream_seed
from ..diffusion import NoiseSchedule, ddim_sample, inference_timesteps
from ..models.backbone import Backbone
from ..models.placement import module_device, randn
from ..world import caption, random_scene, render_frame
from ..world.detect import detect


def to_unit(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float (N, 3, H, W) in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def to_uint8(x: torch.Tensor) -> np.ndarray:
    return ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def batch(world: Any, seed: int, stream: int, indices: range, generator: np.random.Generator | None = None) -> tuple[torch.Tensor, list[str], list]:
    """Images, captions and scenes of scenes `indices` of a seed stream (one random frame each)."""
    images, captions, scenes = [], [], []
    for i in indices:
        s = stream_seed(seed, i, stream)
        scene = random_scene(s, world.min_shapes, world.max_shapes, world.speed)
        frame = int((generator or np.random.default_rng(s)).integers(world.frames))
        images.append(render_frame(scene, frame, world.size, world.supersample))
        captions.append(caption(scene))
        scenes.append(scene)
    return to_unit(np.stack(images)), captions, scenes


def v_loss(backbone: Backbone, schedule: NoiseSchedule, x0: torch.Tensor, captions: list[str], generator: torch.Generator,
           caption_dropout: float = 0.0, min_snr_gamma: float | None = None) -> torch.Tensor:
    """The diffusion loss at uniform random t of images `x0` (pixels in [-1, 1], encoded into
    the backbone's model space: pixels on Shapes, VAE latents at full scale): MSE to the
    schedule's target (v or eps), each sample weighted by Min-SNR-gamma when `min_snr_gamma` is
    set (NoiseSchedule.min_snr_weights). A share `caption_dropout` of captions is replaced by ""
    so the model also learns the unconditional prediction that classifier-free guidance needs."""
    drop = torch.rand(len(captions), generator=generator) < caption_dropout
    captions = ["" if d else c for c, d in zip(captions, drop.tolist())]
    x0 = backbone.space.encode(x0.to(module_device(backbone.unet)))
    t = torch.randint(0, schedule.train_timesteps, (x0.shape[0],), generator=generator).to(x0.device)
    noise = randn(x0.shape, generator, like=x0)
    x_t = schedule.add_noise(x0, noise, t)
    out = backbone.unet(x_t, t, encoder_hidden_states=backbone.encode_text(captions)).sample
    if min_snr_gamma is None:
        return torch.nn.functional.mse_loss(out, schedule.target(x0, noise, t))
    per_sample = ((out.float() - schedule.target(x0, noise, t).float()) ** 2).flatten(1).mean(1)
    return (schedule.min_snr_weights(t, min_snr_gamma).to(per_sample.device) * per_sample).mean()


@torch.no_grad()
def sample(backbone: Backbone, schedule: NoiseSchedule, timesteps: torch.Tensor, captions: list[str], size: int, generator: torch.Generator,
           guidance_scale: float = 1.0) -> np.ndarray:
    """uint8 images (`size` pixels a side) for captions, by DDIM over `timesteps` in the
    backbone's model space, decoded; with classifier-free guidance (prediction = uncond +
    scale * (cond - uncond)) when `guidance_scale` > 1."""
    emb = backbone.encode_text(captions)
    space = backbone.space
    noise = randn((len(captions), space.channels, size // space.scale, size // space.scale), generator, like=emb)
    guided = guidance_scale != 1.0
    if guided:
        emb = torch.cat([backbone.encode_text([""] * len(captions)), emb])

    def model(x, t):
        if not guided:
            return backbone.unet(x, t, encoder_hidden_states=emb).sample
        uncond, cond = backbone.unet(torch.cat([x, x]), torch.cat([t, t]), encoder_hidden_states=emb).sample.chunk(2)
        return uncond + guidance_scale * (cond - uncond)

    return to_uint8(space.decode(ddim_sample(model, noise, schedule, timesteps)))


@dataclass
class BackboneCheck:
    all_present: float  # share of samples where every captioned shape and the background show
    shape_recall: float
    shape_recall_other: float  # the same samples scored against another caption's shapes: what chance gives
    background: float
    samples: np.ndarray  # uint8 (N, H, W, 3)
    captions: list[str]


def check(backbone: Backbone, scheduler: Any, world: Any, seed: int, count: int, steps: int, guidance_scale: float = 1.0) -> BackboneCheck:
    """Score DDIM samples of `count` held-out captions with the world's detector, and against
    the next caption's scene as the chance level (colours a sample shows whatever it was asked)."""
    was_training = backbone.unet.training
    backbone.unet.eval()
    backbone.text_encoder.eval()
    schedule = NoiseSchedule.from_scheduler(scheduler)
    timesteps = inference_timesteps(scheduler, steps)
    # base-world scenes: never the reserved sketch style, whose colours the detector cannot check
    scenes = [random_scene(stream_seed(seed, i, BACKBONE_EVAL_STREAM), world.min_shapes, world.max_shapes, world.speed) for i in range(count)]
    captions = [caption(scene) for scene in scenes]
    images = np.concatenate([
        sample(backbone, schedule, timesteps, captions[i : i + 16], world.size, torch.Generator().manual_seed(seed * 7919 + i), guidance_scale)
        for i in range(0, len(captions), 16)
    ])
    found = [detect(img, scene, supersample=world.supersample) for img, scene in zip(images, scenes)]
    other = [detect(img, scenes[(i + 1) % len(scenes)], supersample=world.supersample) for i, img in enumerate(images)]
    if was_training:
        backbone.unet.train()
        backbone.text_encoder.train()
    return BackboneCheck(
        all_present=float(np.mean([d.all_present for d in found])),
        shape_recall=float(np.mean([d.shape_recall for d in found])),
        shape_recall_other=float(np.mean([d.shape_recall for d in other])),
        background=float(np.mean([d.background for d in found])),
        samples=images,
        captions=captions,
    )
