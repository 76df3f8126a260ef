"""Renderer: scene + frame index -> RGB frame (numpy only).

Shapes are rasterised at `size * supersample` and box-downsampled (anti-aliasing), drawn
in order over the background, then the rendering style and the lighting are applied to the
whole frame. Textures live in the shape's own coordinates, so they move with the shape. A
reserved subject sits on a disc of its own colour (vocab.SUBJECT_RIMS), drawn just before it.
"""

from __future__ import annotations

import numpy as np

from . import vocab
from .scene import Scene, Shape

TEXTURE_PERIOD = 0.125  # image fractions: 4 pixels at 32x32, so textures survive the resolution
OUTLINE_WIDTH = 0.06  # image fractions
RIM_SCALE = 1.35  # a subject's disc (vocab.SUBJECT_RIMS), radii of the shape


def _grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    c = (np.arange(n, dtype=np.float64) + 0.5) / n
    return np.meshgrid(c, c)  # X varies along columns, Y along rows


def _inside(kind: str, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    # every kind fits in the centred square of half-side r: the bounce keeps that square
    # inside the frame, so no shape is ever clipped
    if kind == "circle":
        return dx * dx + dy * dy <= r * r
    if kind == "square":
        return np.maximum(np.abs(dx), np.abs(dy)) <= 0.86 * r
    if kind == "diamond":
        return np.abs(dx) + np.abs(dy) <= r
    if kind == "triangle":  # apex up, base at 0.75 r
        half_width = 1.0 * r * (dy + r) / (1.75 * r)
        return (dy <= 0.75 * r) & (np.abs(dx) <= half_width)
    if kind == "cross":
        arm = 0.34 * r
        return ((np.abs(dx) <= arm) & (np.abs(dy) <= r)) | ((np.abs(dy) <= arm) & (np.abs(dx) <= r))
    if kind == "star":
        return _in_polygon(dx, dy, _star(r))
    raise ValueError(f"unknown shape kind {kind!r}")


def _star(r: float, points: int = 5, inner: float = 0.45) -> np.ndarray:
    a = -np.pi / 2 + np.arange(2 * points) * np.pi / points
    rad = np.where(np.arange(2 * points) % 2 == 0, r, inner * r)
    return np.stack([rad * np.cos(a), rad * np.sin(a)], axis=1)


def _in_polygon(x: np.ndarray, y: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Even-odd rule, vectorised over points."""
    inside = np.zeros(x.shape, dtype=bool)
    for (x0, y0), (x1, y1) in zip(poly, np.roll(poly, -1, axis=0)):
        crosses = (y0 > y) != (y1 > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            xi = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
        inside ^= crosses & (x < xi)
    return inside


def _texture(texture: str, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """True where the texture shows its darker second tone."""
    p = TEXTURE_PERIOD
    if texture == "solid":
        return np.zeros(dx.shape, dtype=bool)
    if texture == "striped":
        return np.floor((dx + dy) / (p / 2)) % 2 == 0
    if texture == "checkered":
        return (np.floor(dx / (p / 2)) + np.floor(dy / (p / 2))) % 2 == 0
    if texture == "dotted":
        fx, fy = np.mod(dx, p) - p / 2, np.mod(dy, p) - p / 2
        return fx * fx + fy * fy <= (0.3 * p) ** 2
    raise ValueError(f"unknown texture {texture!r}")


def _kind_pixels(kind: str, dx: np.ndarray, dy: np.ndarray, r: float, outline: bool) -> np.ndarray:
    mask = _inside(kind, dx, dy, r)
    if outline:
        mask &= ~_inside(kind, dx, dy, r - OUTLINE_WIDTH)
    return mask


def _shape_pixels(shape: Shape, frame: int, X: np.ndarray, Y: np.ndarray, outline: bool) -> np.ndarray:
    cx, cy = shape.position(frame)
    return _kind_pixels(shape.kind, X - cx, Y - cy, shape.radius, outline)


def _rim_pixels(shape: Shape, frame: int, X: np.ndarray, Y: np.ndarray, outline: bool) -> np.ndarray:
    """A subject's disc, drawn behind its body; unlike the body it may reach past the frame."""
    cx, cy = shape.position(frame)
    return _kind_pixels("circle", X - cx, Y - cy, RIM_SCALE * shape.radius, outline)


def _downsample(a: np.ndarray, k: int) -> np.ndarray:
    if k == 1:
        return a
    h, w = a.shape[:2]
    return a.reshape(h // k, k, w // k, k, *a.shape[2:]).mean(axis=(1, 3))


def _apply_style(img: np.ndarray, style: str) -> np.ndarray:
    if style in ("flat", "outline"):  # outline is drawn at rasterisation time
        return img
    if style == "blocky":
        h, w = img.shape[:2]
        block = _downsample(img[: h - h % 2, : w - w % 2], 2)
        out = img.copy()
        out[: h - h % 2, : w - w % 2] = block.repeat(2, axis=0).repeat(2, axis=1)
        return out
    if style == "scanlines":
        out = img.copy()
        out[1::2] *= 0.45
        return out
    if style == "sketch":
        gray = img @ np.array([0.299, 0.587, 0.114])
        gy, gx = np.gradient(gray)
        paper = 170.0 + 0.33 * gray
        paper = np.where(np.hypot(gx, gy) > 30.0, 40.0, paper)
        return paper[..., None] * np.array([1.0, 0.97, 0.9])
    raise ValueError(f"unknown style {style!r}")


def _apply_lighting(img: np.ndarray, lighting: str) -> np.ndarray:
    if lighting == "normal":
        return img
    if lighting == "dusk":
        return img * 0.5 + np.array([0.0, 0.0, 12.0])
    if lighting == "bright":
        return img * 0.6 + 100.0
    if lighting == "warm":
        return img * np.array([1.0, 0.82, 0.6])
    if lighting == "cool":
        return img * np.array([0.6, 0.82, 1.0])
    raise ValueError(f"unknown lighting {lighting!r}")


def render_frame(scene: Scene, frame: int, size: int = 32, supersample: int = 2) -> np.ndarray:
    """One uint8 (size, size, 3) frame."""
    n = size * supersample
    X, Y = _grid(n)
    img = np.empty((n, n, 3), dtype=np.float64)
    img[:] = vocab.BACKGROUNDS[scene.background]
    outline = scene.style == "outline"
    for shape in scene.shapes:
        if shape.kind in vocab.SUBJECT_RIMS:
            img[_rim_pixels(shape, frame, X, Y, outline)] = vocab.SUBJECT_RIMS[shape.kind]
        mask = _shape_pixels(shape, frame, X, Y, outline)
        cx, cy = shape.position(frame)
        second = _texture(shape.texture, X - cx, Y - cy)
        color = np.array(vocab.COLORS[shape.color], dtype=np.float64)
        img[mask & ~second] = color
        img[mask & second] = color * 0.45
    img = _downsample(img, supersample)
    img = _apply_lighting(_apply_style(img, scene.style), scene.lighting)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def render_video(scene: Scene, frames: int = 8, size: int = 32, supersample: int = 2) -> np.ndarray:
    """uint8 (frames, size, size, 3): the scene's shapes moving along their fixed motion."""
    return np.stack([render_frame(scene, f, size, supersample) for f in range(frames)])


def shape_coverage(scene: Scene, frames: int = 8, size: int = 32, supersample: int = 2) -> np.ndarray:
    """float (n_shapes, frames, size, size): each shape's own pixel coverage in [0, 1] (a
    subject's body, not its disc), ignoring occlusion (where a shape is, not what is seen there)."""
    n = size * supersample
    X, Y = _grid(n)
    out = np.zeros((len(scene.shapes), frames, size, size))
    for i, shape in enumerate(scene.shapes):
        for f in range(frames):
            out[i, f] = _downsample(_shape_pixels(shape, f, X, Y, False).astype(np.float64), supersample)
    return out
