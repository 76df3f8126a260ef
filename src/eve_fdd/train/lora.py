"""Training and checking a subject or style LoRA on the backbone (stage `loras`, METHOD.md
section 8: "other adapters").

Data: half of each batch shows the concept with captions that name it; the other half is
prior preservation (as in DreamBooth), so the backbone keeps its behaviour where the concept
is not asked for. Shapes: scenes with the concept (a shape replaced by the subject, or the
scene in the style) and base-world scenes, rendered. Full: the user's images of the concept
(data/image_folder.py) and as many images (`loras.prior_images`) that the frozen backbone
sampled, before the LoRA was added, from the same captions with the concept's words removed
(`prior_caption`); both shuffled anew each epoch. Only the LoRA (peft, on the UNet's attention)
learns, and, with `loras.token_embeddings`, the concept words' token embeddings
(models.adapters.ConceptTokens); the rest is frozen.
Check, Shapes: a classifier for the concept (evaluate/concepts.py, trained on renders) reads
DDIM samples of held-out captions: with the concept in the caption and the LoRA on, without the
concept in the caption and the LoRA on, and with the concept but the LoRA (and the learned
embeddings) off, i.e. the plain backbone. Full (no classifier, no ground truth): how much the
LoRA changes samples, from the same noise, of the concept's captions (it should) and of the
prior captions (it should not), `check_change`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..data.splits import CONCEPT_DETECTOR_EVAL_STREAM, CONCEPT_DETECTOR_TRAIN_STREAM, LORA_EVAL_STREAM
from ..diffusion import NoiseSchedule, inference_timesteps
from ..evaluate.concepts import renders, train_detector
from ..world import caption
from .backbone import sample, to_unit
from .loop import epoch_batch


def batch(world: Any, seed: int, stream: int, step: int, batch_size: int, concept: str) -> tuple[torch.Tensor, list[str]]:
    """Batch `step`: the first half with the concept, the rest without (prior preservation)."""
    half = batch_size // 2 or 1
    start = step * batch_size
    with_c, s1 = renders(world, seed, stream, range(start, start + half), concept)
    without, s0 = renders(world, seed, stream, range(start + half, start + batch_size), None) if batch_size > half else (np.zeros((0,) + with_c.shape[1:], np.uint8), [])
    return to_unit(np.concatenate([with_c, without])), [caption(s) for s in s1 + s0]


@contextmanager
def concept_off(backbone: Any, tokens: Any = None) -> Iterator[None]:
    """The plain backbone for the duration: its LoRA adapters and the learned concept-word
    embeddings (`tokens`, if any) off; both back on after, also when sampling fails."""
    backbone.unet.disable_adapters()
    if tokens is not None:
        tokens.detach()
    try:
        yield
    finally:
        backbone.unet.enable_adapters()
        if tokens is not None:
            tokens.attach()


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
    _, with_c = renders(world, seed, LORA_EVAL_STREAM, range(count), concept)
    _, without = renders(world, seed, LORA_EVAL_STREAM, range(count, 2 * count), None)
    prompted, unprompted = [caption(s) for s in with_c], [caption(s) for s in without]

    def draw(captions: list[str], offset: int) -> np.ndarray:
        return draw_samples(backbone, scheduler, captions, world.size, seed, steps, guidance_scale, offset)

    backbone.unet.eval()
    backbone.unet.set_adapters([adapter])
    on_prompted, on_unprompted = draw(prompted, 0), draw(unprompted, 10_000)
    with concept_off(backbone, tokens):
        off_prompted = draw(prompted, 0)
    metrics = {
        "detector_accuracy": detector.held_out_accuracy,
        "present.prompted": float(detector(on_prompted).mean()),
        "present.unprompted": float(detector(on_unprompted).mean()),
        "present.prompted_without_lora": float(detector(off_prompted).mean()),
    }
    return LoraCheck(metrics, on_prompted, prompted)


# full scale: the user's images and the backbone's own (prior preservation)

def concept_words(concept: str) -> tuple[str, ...]:
    """The words of a concept's name: split on `_` and `-` ("my_dog" -> my, dog)."""
    return tuple(w for w in re.split(r"[_\-\s]+", concept) if w)


def prior_caption(text: str, concept: str) -> str:
    """`text` without the concept: its name and its name's words (`concept_words`), whole
    words, case-insensitive; then tidied: spaces collapsed, no space before a comma, no empty
    or doubled commas, none at either end. "a red square, Watercolour painting" -> "a red
    square, painting" for `watercolour`; "my_dog on grass, my dog" -> "on grass" for `my_dog`
    (every "my" goes too); a caption of nothing but the concept becomes "" (the unconditional
    prior)."""
    for word in (concept, *concept_words(concept)):
        text = re.sub(rf"(?<!\w){re.escape(word)}(?!\w)", " ", text, flags=re.IGNORECASE)
    text = re.sub(r"\s+", " ", text)
    text = re.sub(r"\s*,(?:\s*,)*\s*", ", ", text)  # " , ," -> ", "
    return text.strip(" ,")


def draw_samples(backbone: Any, scheduler: Any, captions: list[str], size: int, seed: int, steps: int, guidance_scale: float,
                 offset: int = 0) -> np.ndarray:
    """uint8 DDIM samples of `captions`, 16 at a time, each chunk's noise from its own seeded
    generator (`seed`, `offset`, its first index), so the same call draws the same noise."""
    schedule = NoiseSchedule.from_scheduler(scheduler)
    timesteps = inference_timesteps(scheduler, steps)
    return np.concatenate([
        sample(backbone, schedule, timesteps, captions[i : i + 16], size, torch.Generator().manual_seed(seed * 7919 + offset + i), guidance_scale)
        for i in range(0, len(captions), 16)
    ])


PRIOR_OFFSET = 20_000  # the prior images' noise: apart from the check's


def prior_samples(backbone: Any, scheduler: Any, captions: list[str], concept: str, count: int, size: int, seed: int, steps: int,
                  guidance_scale: float) -> tuple[np.ndarray, list[str]]:
    """`count` images the (frozen, LoRA-free) backbone samples from the concept's captions
    with its words removed, cycling through them; and those captions."""
    prior = [prior_caption(captions[i % len(captions)], concept) for i in range(count)]
    was_training = backbone.unet.training
    backbone.unet.eval()
    images = draw_samples(backbone, scheduler, prior, size, seed, steps, guidance_scale, PRIOR_OFFSET)
    backbone.unet.train(was_training)
    return images, prior


def folder_batch(images: np.ndarray, captions: list[str], prior: np.ndarray, prior_captions: list[str], step: int,
                 batch_size: int, seed: int) -> tuple[torch.Tensor, list[str]]:
    """Batch `step`: the first half from the concept's images, the rest from the prior
    images, each its own stream shuffled anew every epoch (train/loop.py's epoch_batch)."""
    half = batch_size // 2
    c = epoch_batch(len(images), half, step, seed)
    p = epoch_batch(len(prior), batch_size - half, step, seed + 1)
    return to_unit(np.concatenate([images[c], prior[p]])), [captions[i] for i in c] + [prior_captions[i] for i in p]


@dataclass
class ChangeCheck:
    metrics: dict[str, float]
    on: np.ndarray  # uint8 (N, H, W, 3): the concept's captions, then the prior captions, LoRA on
    off: np.ndarray  # the same captions and noise, LoRA (and learned embeddings) off
    captions: list[str]


@torch.no_grad()
def check_change(backbone: Any, adapter: str, scheduler: Any, captions: list[str], prior_captions: list[str], size: int, seed: int,
                 steps: int, guidance_scale: float, tokens: Any = None) -> ChangeCheck:
    """Samples of the concept's and the prior captions with the LoRA on and off, from the same
    noise; lora_change: mean |on - off| on [0, 1] pixels over the concept's captions (how much
    the LoRA does where the concept is asked), prior_change: the same over the prior captions
    (how much it changes the backbone where it is not; lower is better)."""
    texts = list(captions) + list(prior_captions)
    backbone.unet.eval()
    backbone.unet.set_adapters([adapter])
    on = draw_samples(backbone, scheduler, texts, size, seed, steps, guidance_scale)
    with concept_off(backbone, tokens):
        off = draw_samples(backbone, scheduler, texts, size, seed, steps, guidance_scale)
    change = np.abs(on.astype(np.float32) - off.astype(np.float32)).reshape(len(texts), -1).mean(1) / 255.0
    n = len(captions)
    metrics = {"lora_change": float(change[:n].mean()), "prior_change": float(change[n:].mean()) if len(texts) > n else 0.0}
    return ChangeCheck(metrics, on, off, texts)
