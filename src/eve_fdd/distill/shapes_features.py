"""A feature network for the Shapes discriminators trained on world renders, standing in
for DINOv2 (issue 29's lever; `fdd.discriminator.features: trained`).

DINO's value to ADD-style discriminators is that its token features already say what is
where in an image (its patch features segment objects and parts), so the small heads on top
only have to compare. A frozen random ViT is a seed-fixed feature map that says nothing of
the kind. The Shapes world knows what is where exactly, so we train the same small
`Dinov2Model` (the class and size of `discriminators.tiny_dino`) to say it: on frames of
fresh random scenes (`world.random_scene`, seeds from `SEED_BASE` on, never the video set's),
each patch token predicts what covers the patch centre (the background, or which colour and
kind of shape) and that shape's texture, and the CLS token predicts the scene's background,
style and lighting. Supervised dense labels instead of DINO's self-distillation: ours, because
the world gives them for free and a CPU trains it in a minute or two. The heads are dropped;
the network is then frozen like DINOv2.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..world import vocab
from ..world.render import _grid, _shape_pixels, render_frame
from ..world.scene import random_scene
from .discriminators import IMAGENET_MEAN, IMAGENET_STD, tiny_dino

SEED_BASE = 10_000_000  # scene seeds of the pre-training renders (the video set draws far below)
N_OBJECT = 1 + len(vocab.COLORS) * len(vocab.KINDS)  # 0 = background, then (colour, kind)
N_TEXTURE = 1 + len(vocab.TEXTURES)  # 0 = background


@dataclass(frozen=True)
class FeatureTraining:
    steps: int = 600
    batch_size: int = 64
    lr: float = 1e-3
    seed: int = 0


def labels(scene: Any, frame: int, size: int, patch: int, supersample: int) -> tuple[np.ndarray, np.ndarray]:
    """Per patch (row-major, (size/patch)^2): the object class and texture class of the
    topmost shape covering the patch centre (0 where only background shows)."""
    n = size * supersample
    X, Y = _grid(n)
    obj = np.zeros((n, n), dtype=np.int64)
    tex = np.zeros((n, n), dtype=np.int64)
    colors, kinds = list(vocab.COLORS), list(vocab.KINDS)
    for shape in scene.shapes:  # later shapes are drawn on top, as render_frame does
        mask = _shape_pixels(shape, frame, X, Y, False)
        obj[mask] = 1 + colors.index(shape.color) * len(kinds) + kinds.index(shape.kind)
        tex[mask] = 1 + vocab.TEXTURES.index(shape.texture)
    centres = (np.arange(size // patch) * patch + patch // 2) * supersample
    return obj[np.ix_(centres, centres)].reshape(-1), tex[np.ix_(centres, centres)].reshape(-1)


def batch(seeds: np.ndarray, frames: np.ndarray, size: int, patch: int, supersample: int, world_kw: dict) -> dict[str, torch.Tensor]:
    images, objs, texs, scene_labels = [], [], [], []
    for seed, f in zip(seeds, frames):
        scene = random_scene(int(seed), **world_kw)
        images.append(render_frame(scene, int(f), size, supersample))
        o, t = labels(scene, int(f), size, patch, supersample)
        objs.append(o)
        texs.append(t)
        scene_labels.append([list(vocab.BACKGROUNDS).index(scene.background), vocab.STYLES.index(scene.style),
                             vocab.LIGHTINGS.index(scene.lighting)])
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 127.5 - 1
    return {"images": x, "object": torch.from_numpy(np.stack(objs)), "texture": torch.from_numpy(np.stack(texs)),
            "scene": torch.tensor(scene_labels)}


class _Heads(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.object = nn.Linear(width, N_OBJECT)
        self.texture = nn.Linear(width, N_TEXTURE)
        self.background = nn.Linear(width, len(vocab.BACKGROUNDS))
        self.style = nn.Linear(width, len(vocab.STYLES))
        self.lighting = nn.Linear(width, len(vocab.LIGHTINGS))


def pretrain(hidden_size: int, layers: int, heads: int, size: int, patch_size: int, world: Any,
             train: FeatureTraining = FeatureTraining(), progress: bool = True) -> tuple[Any, dict[str, float]]:
    """The trained Dinov2Model (frozen, eval) and its held-out accuracies."""
    if size % patch_size:
        raise ValueError(f"Shapes features: frame size {size} is not a multiple of patch_size {patch_size}")
    torch.manual_seed(train.seed)
    model = tiny_dino(hidden_size, layers, heads, size, patch_size, train.seed).requires_grad_(True).train()
    head = _Heads(hidden_size)
    params = [*model.parameters(), *head.parameters()]
    opt = torch.optim.AdamW(params, lr=train.lr, weight_decay=0.0)
    mean = torch.tensor(IMAGENET_MEAN).reshape(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).reshape(1, 3, 1, 1)
    world_kw = dict(min_shapes=world.min_shapes, max_shapes=world.max_shapes, speed=tuple(world.speed))
    rng = np.random.default_rng(train.seed)

    def draw(n: int, offset: int) -> dict[str, torch.Tensor]:
        return batch(SEED_BASE + offset + rng.integers(0, 1_000_000, n), rng.integers(0, world.frames, n), size, patch_size,
                     world.supersample, world_kw)

    def losses(b: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        hidden = model(pixel_values=((b["images"] + 1) / 2 - mean) / std).last_hidden_state
        cls, tokens = hidden[:, 0], hidden[:, 1:]
        ce = nn.functional.cross_entropy
        lo, lt = head.object(tokens), head.texture(tokens)
        terms = {"object": ce(lo.flatten(0, 1), b["object"].flatten()), "texture": ce(lt.flatten(0, 1), b["texture"].flatten()),
                 **{k: ce(getattr(head, k)(cls), b["scene"][:, i]) for i, k in enumerate(("background", "style", "lighting"))}}
        acc = {"object": float((lo.argmax(-1) == b["object"]).float().mean()),
               "shape_object": float((lo.argmax(-1) == b["object"])[b["object"] > 0].float().mean()),
               "texture": float((lt.argmax(-1) == b["texture"])[b["texture"] > 0].float().mean()),
               **{k: float((getattr(head, k)(cls).argmax(-1) == b["scene"][:, i]).float().mean())
                  for i, k in enumerate(("background", "style", "lighting"))}}
        return sum(terms.values()), acc

    start = time.perf_counter()
    for step in range(train.steps):
        loss, acc = losses(draw(train.batch_size, 0))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if progress and (step % 100 == 0 or step == train.steps - 1):
            print(f"shapes features step {step}: loss {float(loss.detach()):.3f} object acc {acc['shape_object']:.3f}", flush=True)
    model.eval()
    with torch.no_grad():
        _, held = losses(draw(256, 5_000_000))  # fresh scenes, not trained on
    model.requires_grad_(False)
    return model, {f"features.acc.{k}": round(v, 4) for k, v in held.items()} | {"features.seconds": round(time.perf_counter() - start, 1)}
