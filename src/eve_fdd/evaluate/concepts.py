"""Does an image show a subject or style concept (star, cross, scanlines, sketch)?

The world's colour detector (world/detect.py) cannot tell a star from a circle of the same
colour, nor a rendering style, so each concept gets a small CNN classifier trained on exact
renders: scenes with the concept (a shape replaced by the subject, or the scene rendered in
the style) against base-world scenes. Renders are blurred and noised at random in training,
so the classifier also reads the softer images a diffusion model makes. Its accuracy on
held-out renders is reported with every use, so a reader can judge how far to trust it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data.splits import stream_seed
from ..world import make_edit, random_scene, render_frame, vocab


def concept_scene(scene: Any, concept: str, rng: np.random.Generator, speed: tuple[float, float]) -> Any:
    """`scene` with `concept`: one shape replaced by the subject, or rendered in the style."""
    if concept in vocab.SUBJECTS:
        return make_edit(scene, "replace", rng, speed, allow_reserved=True, concept=concept).scene
    if concept in vocab.RESERVED_STYLES:
        return make_edit(scene, "style", rng, speed, allow_reserved=True, concept=concept).scene
    raise ValueError(f"unknown concept {concept!r}; expected one of {vocab.SUBJECTS + vocab.RESERVED_STYLES}")


def renders(world: Any, seed: int, stream: int, indices: range, concept: str | None) -> tuple[np.ndarray, list[Any]]:
    """uint8 (N, H, W, 3) frames of scenes `indices` of a seed stream, with `concept` or without."""
    images, scenes = [], []
    for i in indices:
        s = stream_seed(seed, i, stream)
        rng = np.random.default_rng(s)
        scene = random_scene(s, world.min_shapes, world.max_shapes, world.speed)
        if concept is not None:
            scene = concept_scene(scene, concept, rng, tuple(world.speed))
        images.append(render_frame(scene, int(rng.integers(world.frames)), world.size, world.supersample))
        scenes.append(scene)
    return np.stack(images), scenes


class ConceptNet(nn.Module):
    """Four 3x3 convolutions, one stride-2 (a subject is a few pixels wide: keep resolution)."""

    def __init__(self, width: int = 24):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.SiLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.SiLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.SiLU(),
            # max, not mean: a small subject anywhere in the image is the signal
            nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(2 * width, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


def _tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def _soften(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random blur (a 3x3 box mixed in with a random weight) and pixel noise."""
    w = torch.rand(x.shape[0], 1, 1, 1, generator=g)
    blurred = nn.functional.avg_pool2d(nn.functional.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    x = (1 - w) * x + w * blurred
    return x + 0.1 * torch.rand(x.shape[0], 1, 1, 1, generator=g) * torch.randn(x.shape, generator=g)


@dataclass
class ConceptDetector:
    concept: str
    net: ConceptNet
    held_out_accuracy: float

    @torch.no_grad()
    def __call__(self, images: np.ndarray) -> np.ndarray:
        """Boolean per uint8 (N, H, W, 3) image: is the concept there?"""
        self.net.eval()
        return (self.net(_tensor(images)) > 0).numpy()


def train_detector(concept: str, world: Any, seed: int, train_stream: int, eval_stream: int, count: int = 2048,
                   steps: int = 300, batch_size: int = 64) -> ConceptDetector:
    """A classifier for `concept` trained on `count` renders with it and `count` without."""
    pos, _ = renders(world, seed, train_stream, range(count), concept)
    neg, _ = renders(world, seed, train_stream, range(count, 2 * count), None)
    x = _tensor(np.concatenate([pos, neg]))
    y = torch.cat([torch.ones(count), torch.zeros(count)])
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = ConceptNet()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    with torch.enable_grad():  # also when called from a sampling (no_grad) context
        for _ in range(steps):
            idx = torch.randint(0, len(x), (batch_size,), generator=g)
            loss = nn.functional.binary_cross_entropy_with_logits(net(_soften(x[idx], g)), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    test_pos, _ = renders(world, seed, eval_stream, range(256), concept)
    test_neg, _ = renders(world, seed, eval_stream, range(256, 512), None)
    detector = ConceptDetector(concept, net, 0.0)
    detector.held_out_accuracy = float((detector(test_pos).mean() + (1 - detector(test_neg).mean())) / 2)
    return detector
