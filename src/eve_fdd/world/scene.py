"""Scene graph and motion of the Shapes world.

A scene is a background, a rendering style, a lighting and 1-5 shapes. Each shape has a
start position and a constant velocity and bounces off the frame's edges, so its position
at any frame is a closed-form function of the scene: an edited scene re-rendered with the
same motion is the ground-truth edited video.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from . import vocab


class SceneError(ValueError):
    """A scene (or its JSON) is not valid in the Shapes world."""


@dataclass(frozen=True)
class Shape:
    kind: str
    color: str
    size: str = "medium"
    texture: str = "solid"
    x: float = 0.5  # start position of the centre, image fractions
    y: float = 0.5
    vx: float = 0.0  # velocity, image fractions per frame
    vy: float = 0.0

    @property
    def name(self) -> str:
        """What captions and instructions call this shape; unique within a scene."""
        return f"{self.color} {self.kind}"

    @property
    def radius(self) -> float:
        return vocab.SIZES[self.size] / 2

    def position(self, frame: int | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Centre at `frame`, bouncing so that the shape stays inside the image."""
        return _bounce(self.x + self.vx * np.asarray(frame), self.radius), _bounce(
            self.y + self.vy * np.asarray(frame), self.radius
        )


def _bounce(p: np.ndarray, r: float) -> np.ndarray:
    lo, span = r, 1.0 - 2 * r
    u = np.mod(p - lo, 2 * span)
    return lo + np.where(u > span, 2 * span - u, u)


@dataclass(frozen=True)
class Scene:
    background: str
    shapes: tuple[Shape, ...]
    style: str = "flat"
    lighting: str = "normal"
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    def find(self, name: str) -> int:
        for i, s in enumerate(self.shapes):
            if s.name == name:
                return i
        raise SceneError(f"no {name!r} in the scene (it has: {', '.join(s.name for s in self.shapes)})")

    def with_shape(self, index: int, **changes: Any) -> "Scene":
        """The scene with shape `index` changed; a resized shape's start is clamped so the
        shape still fits, moving it no more than needed (its velocity is kept)."""
        shapes = list(self.shapes)
        shape = replace(shapes[index], **changes)
        r = shape.radius
        shapes[index] = replace(shape, x=float(np.clip(shape.x, r, 1 - r)), y=float(np.clip(shape.y, r, 1 - r)))
        return replace(self, shapes=tuple(shapes))

    def validate(self, allow_reserved: bool = False) -> "Scene":
        kinds = vocab.KINDS + (vocab.SUBJECTS if allow_reserved else ())
        styles = vocab.STYLES + (vocab.RESERVED_STYLES if allow_reserved else ())
        _member("background", self.background, vocab.BACKGROUNDS)
        _member("style", self.style, styles)
        _member("lighting", self.lighting, vocab.LIGHTINGS)
        if not self.shapes:
            raise SceneError("a scene needs at least one shape")
        for i, s in enumerate(self.shapes):
            _member(f"shapes[{i}].kind", s.kind, kinds)
            _member(f"shapes[{i}].color", s.color, vocab.COLORS)
            _member(f"shapes[{i}].size", s.size, vocab.SIZES)
            _member(f"shapes[{i}].texture", s.texture, vocab.TEXTURES)
            for key in ("x", "y", "vx", "vy"):
                value = getattr(s, key)
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
                    raise SceneError(f"shapes[{i}].{key} = {value!r}, expected a finite number")
        names = [s.name for s in self.shapes]
        if len(set(names)) != len(names):
            raise SceneError(f"shape names must be unique within a scene, got {names}")
        return self

    def to_json(self) -> str:
        d = asdict(self)
        d.pop("meta")
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, allow_reserved: bool = True) -> "Scene":
        """Stored scenes may hold reserved subjects and styles (the LoRA experiment's data),
        so they are allowed here unless the caller says otherwise."""
        try:
            d = json.loads(text)
            shapes = tuple(Shape(**s) for s in d.pop("shapes"))
            scene = cls(shapes=shapes, **d)
        except (json.JSONDecodeError, TypeError, KeyError, AttributeError) as exc:
            raise SceneError(f"not a scene JSON: {exc}") from None
        return scene.validate(allow_reserved=allow_reserved)


def _member(key: str, value: str, allowed) -> None:
    if value not in allowed:
        raise SceneError(f"{key} = {value!r}, expected one of {sorted(allowed)}")


def random_velocity(rng: np.random.Generator, speed: tuple[float, float]) -> tuple[float, float]:
    angle = rng.uniform(0, 2 * np.pi)
    v = rng.uniform(*speed)
    return float(v * np.cos(angle)), float(v * np.sin(angle))


def random_shape(
    rng: np.random.Generator,
    taken: set[str],
    speed: tuple[float, float],
    kinds: tuple[str, ...] = vocab.KINDS,
    texture_p: float = 0.4,
    others: tuple[Shape, ...] = (),
    tries: int = 30,
) -> Shape:
    """A shape whose name is not in `taken`, at a random place with a random velocity.
    It starts clear of `others` when one of `tries` positions allows (shapes still cross
    later as they move), so no shape is hidden from the first frame."""
    free = [(c, k) for k in kinds for c in vocab.COLORS if f"{c} {k}" not in taken]
    color, kind = free[rng.integers(len(free))]
    size = list(vocab.SIZES)[rng.integers(len(vocab.SIZES))]
    texture = "solid" if rng.random() > texture_p else vocab.TEXTURES[1 + rng.integers(len(vocab.TEXTURES) - 1)]
    r = vocab.SIZES[size] / 2
    for _ in range(tries):
        x, y = rng.uniform(r, 1 - r, size=2)
        if all(np.hypot(x - o.x, y - o.y) > r + o.radius for o in others):
            break
    vx, vy = random_velocity(rng, speed)
    return Shape(kind, color, size, texture, float(x), float(y), vx, vy)


def random_scene(
    seed: int,
    min_shapes: int = 2,
    max_shapes: int = 4,
    speed: tuple[float, float] = (0.02, 0.06),
    plain_p: float = 0.7,
) -> Scene:
    """A base-world scene, fully determined by `seed` (never reserved subjects or styles)."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(min_shapes, max_shapes + 1))
    shapes: list[Shape] = []
    for _ in range(n):
        shapes.append(random_shape(rng, {s.name for s in shapes}, speed, others=tuple(shapes)))
    background = list(vocab.BACKGROUNDS)[rng.integers(len(vocab.BACKGROUNDS))]
    style = "flat" if rng.random() < plain_p else vocab.STYLES[1 + rng.integers(len(vocab.STYLES) - 1)]
    lighting = "normal" if rng.random() < plain_p else vocab.LIGHTINGS[1 + rng.integers(len(vocab.LIGHTINGS) - 1)]
    return Scene(background, tuple(shapes), style, lighting).validate()
