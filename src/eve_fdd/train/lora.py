"""Training and checking a subject or style LoRA on the backbone (stage `loras`, METHOD.md
section 8: "other adapters").

Data: half of each batch is scenes with the concept (a shape replaced by the subject, or the
scene in the style) with their captions, which name it; the other half is base-world scenes
(prior preservation, as in DreamBooth), so the backbone keeps its behaviour where the concept
is not asked for. Only the LoRA (peft, on the UNet's attention) learns, and, with
`loras.token_embeddings`, the concept words' token embeddings (models.adapters.ConceptTokens);
the rest is frozen. Check: a classifier for the concept (evaluate/concepts.py, trained on
renders) reads DDIM samples of held-out captions: with the concept in the caption and the LoRA
on, without the concept in the caption and the LoRA on, and with the concept but the LoRA (and
the learned embeddings) off, i.e. the plain backbone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..data.splits import CONCEPT_DETECTOR_EVAL_STREAM, CONCEPT_DETECTOR_TRAIN_STREAM, LORA_EVAL_STREAM
from ..diffusion import NoiseSchedule, inference_timesteps
from ..evaluate.concepts import renders, train_detector
from ..world import caption
from .backbone import sample, to_unit


def batch(world: Any, seed: int, stream: int, step: int, batch_size: int, concept: str) -> tuple[torch.Tensor, list[str]]:
    """Batch `step`: the first half with the concept, the rest without (prior preservation)."""
    half = batch_size // 2 or 1
    start = step * batch_size
    with_c, s1 = renders(world, seed, stream, range(start, start + half), concept)
    without, s0 = renders(world, seed, stream, range(start + half, start + batch_size), None) if batch_size > half else (np.zeros((0,) + with_c.shape[1:], np.uint8), [])
    return to_unit(np.concatenate([with_c, without])), [caption(s) for s in s1 + s0]


@dataclass
class LoraCheck:
    metrics: dict[str, float]
    samples: np.ndarray  # uint8 (N, H, W, 3): prompted with the concept, LoRA on
    captions: list[str]


@torch.no_grad()
def check(backbone: Any, adapter: str, scheduler: Any, world: Any, seed: int, concept: str, count: int, steps: int,
          guidance_scale: float, detector_steps: int, detector_renders: int = 2048, tokens: Any = None) -> LoraCheck:
    """How often the concept shows: prompted (LoRA on), unprompted (LoRA on), prompted (LoRA
    and `tokens`, the learned concept-word embeddings, if any, off)."""
    detector = train_detector(concept, world, seed, CONCEPT_DETECTOR_TRAIN_STREAM, CONCEPT_DETECTOR_EVAL_STREAM,
                              count=detector_renders, steps=detector_steps)
    schedule = NoiseSchedule.from_scheduler(scheduler)
    timesteps = inference_timesteps(scheduler, steps)
    _, with_c = renders(world, seed, LORA_EVAL_STREAM, range(count), concept)
    _, without = renders(world, seed, LORA_EVAL_STREAM, range(count, 2 * count), None)
    prompted, unprompted = [caption(s) for s in with_c], [caption(s) for s in without]

    def draw(captions: list[str], offset: int) -> np.ndarray:
        return np.concatenate([
            sample(backbone, schedule, timesteps, captions[i : i + 16], world.size, torch.Generator().manual_seed(seed * 7919 + offset + i), guidance_scale)
            for i in range(0, len(captions), 16)
        ])

    backbone.unet.eval()
    backbone.unet.set_adapters([adapter])
    on_prompted, on_unprompted = draw(prompted, 0), draw(unprompted, 10_000)
    backbone.unet.disable_adapters()
    if tokens is not None:
        tokens.detach()
    try:
        off_prompted = draw(prompted, 0)
    finally:  # the model leaves as it came, also when sampling fails
        backbone.unet.enable_adapters()
        if tokens is not None:
            tokens.attach()
    metrics = {
        "detector_accuracy": detector.held_out_accuracy,
        "present.prompted": float(detector(on_prompted).mean()),
        "present.unprompted": float(detector(on_unprompted).mean()),
        "present.prompted_without_lora": float(detector(off_prompted).mean()),
    }
    return LoraCheck(metrics, on_prompted, prompted)
