"""A feature network for the Shapes discriminators trained on world renders, standing in
for DINOv2 (stage `features`, `features.network: trained`).

DINO's value to ADD-style discriminators is that its token features already say what is
where in an image (its patch features segment objects and parts), so the small heads on top
only have to compare. A frozen random ViT is a seed-fixed feature map that says nothing of
the kind. The Shapes world knows what is where exactly, so we train the same small
`Dinov2Model` (the class and size of `discriminators.tiny_dino`) to say it: on frames of
fresh random scenes (their own seed streams, never the video set's), each patch token
predicts what covers the patch centre (the background, or which colour and kind of shape)
and that shape's texture, and the CLS token predicts the scene's background, style and
lighting. Supervised dense labels instead of DINO's self-distillation: ours, because the
world gives them for free and a CPU trains it in a minute or two. The heads are dropped; the
network is then frozen like DINOv2 and read as DINOv2 is (ImageNet mean and std).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data.splits import stream_seed
from ..world import vocab
from ..world.render import _grid, _shape_pixels, render_frame
from ..world.scene import random_scene
from .discriminators import IMAGENET_MEAN, IMAGENET_STD

N_OBJECT = 1 + len(vocab.COLORS) * len(vocab.KINDS)  # 0 = background, then (colour, kind)
N_TEXTURE = 1 + len(vocab.TEXTURES)  # 0 = background
SCENE_KEYS = ("background", "style", "lighting")


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


@dataclass(frozen=True)
class Frames:
    images: torch.Tensor   # (B, 3, size, size) in [-1, 1]
    object: torch.Tensor   # (B, patches) object class per patch
    texture: torch.Tensor  # (B, patches)
    scene: torch.Tensor    # (B, 3): background, style, lighting indices

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index) -> "Frames":  # train/parallel.Shard takes micro-batches by slicing
        return Frames(self.images[index], self.object[index], self.texture[index], self.scene[index])


def frames(world: Any, seed: int, stream: int, indices: range, patch: int) -> Frames:
    """One random frame of each scene `indices` of a seed stream, with its labels."""
    images, objs, texs, scene_labels = [], [], [], []
    for i in indices:
        s = stream_seed(seed, i, stream)
        scene = random_scene(s, world.min_shapes, world.max_shapes, world.speed)
        f = int(np.random.default_rng(s).integers(world.frames))
        images.append(render_frame(scene, f, world.size, world.supersample))
        o, t = labels(scene, f, world.size, patch, world.supersample)
        objs.append(o)
        texs.append(t)
        scene_labels.append([list(vocab.BACKGROUNDS).index(scene.background), vocab.STYLES.index(scene.style),
                             vocab.LIGHTINGS.index(scene.lighting)])
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 127.5 - 1
    return Frames(x, torch.from_numpy(np.stack(objs)), torch.from_numpy(np.stack(texs)), torch.tensor(scene_labels))


class Heads(nn.Module):
    """The pre-training heads (dropped after): per patch token and on the CLS token."""

    def __init__(self, width: int):
        super().__init__()
        self.object = nn.Linear(width, N_OBJECT)
        self.texture = nn.Linear(width, N_TEXTURE)
        self.background = nn.Linear(width, len(vocab.BACKGROUNDS))
        self.style = nn.Linear(width, len(vocab.STYLES))
        self.lighting = nn.Linear(width, len(vocab.LIGHTINGS))


def _outputs(model: Any, heads: Heads, data: Frames) -> dict[str, torch.Tensor]:
    mean = torch.tensor(IMAGENET_MEAN, device=data.images.device).reshape(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=data.images.device).reshape(1, 3, 1, 1)
    hidden = model(pixel_values=((data.images + 1) / 2 - mean) / std).last_hidden_state
    cls, tokens = hidden[:, 0], hidden[:, 1:]
    return {"object": heads.object(tokens), "texture": heads.texture(tokens), **{k: getattr(heads, k)(cls) for k in SCENE_KEYS}}


def loss(model: Any, heads: Heads, data: Frames) -> torch.Tensor:
    """Summed cross-entropies of the patch and scene labels."""
    out, ce = _outputs(model, heads, data), nn.functional.cross_entropy
    total = ce(out["object"].flatten(0, 1), data.object.flatten()) + ce(out["texture"].flatten(0, 1), data.texture.flatten())
    return total + sum(ce(out[k], data.scene[:, i]) for i, k in enumerate(SCENE_KEYS))


@torch.no_grad()
def check(model: Any, heads: Heads, data: Frames) -> dict[str, float]:
    """Held-out accuracies: every patch's object class, the shape patches' object and texture
    classes, and the scene's background, style, lighting."""
    out = _outputs(model, heads, data)
    obj_hit = out["object"].argmax(-1) == data.object
    shape = data.object > 0
    acc = {"object": obj_hit.float().mean(), "shape_object": obj_hit[shape].float().mean(),
           "texture": (out["texture"].argmax(-1) == data.texture)[shape].float().mean(),
           **{k: (out[k].argmax(-1) == data.scene[:, i]).float().mean() for i, k in enumerate(SCENE_KEYS)}}
    return {f"check.acc.{k}": round(float(v), 4) for k, v in acc.items()}
