"""A detector for generated images: does an image show what its scene's caption says?

Positions are not in the caption (a text-to-image model may put shapes anywhere), so the
detector looks for colours and areas: for each captioned shape, the colour it takes in a
reference render of that shape alone (with the scene's style and lighting) and how many
pixels it covers there; the shape counts as present when the image has at least
`area_fraction` of that many pixels within `tolerance` of the colour. The background counts
as present when at least `background_fraction` of the image is its colour. The pencil-sketch
style turns everything grey, so its colours are not checkable (`checkable` is False).
Numbers only (numpy): evaluation and the backbone's check both use it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .render import render_frame
from .scene import Scene

UNCHECKABLE_STYLES = ("sketch",)


@dataclass(frozen=True)
class Detection:
    shapes: tuple[bool, ...]  # one per shape of the scene, in caption order
    background: bool
    checkable: bool

    @property
    def all_present(self) -> bool:
        return self.checkable and self.background and all(self.shapes)

    @property
    def shape_recall(self) -> float:
        return sum(self.shapes) / len(self.shapes) if self.shapes else 1.0


def _close(image: np.ndarray, colour: np.ndarray, tolerance: float) -> np.ndarray:
    return np.abs(image.astype(np.int16) - colour.astype(np.int16)).max(axis=-1) <= tolerance


def signature(scene: Scene, size: int = 32, supersample: int = 2, empty: np.ndarray | None = None) -> list[tuple[np.ndarray, int]]:
    """(colour, pixel count) of each shape rendered alone on the scene's background: the
    most frequent colour among the pixels it changes. `empty`: the scene rendered without
    shapes, when the caller has it already."""
    if empty is None:
        empty = render_frame(replace(scene, shapes=()), 0, size, supersample)
    out = []
    for shape in scene.shapes:
        alone = render_frame(replace(scene, shapes=(shape,)), 0, size, supersample)
        changed = np.abs(alone.astype(np.int16) - empty).max(axis=-1) > 24
        pixels = alone[changed]
        if len(pixels) == 0:
            out.append((np.zeros(3, dtype=np.uint8), 0))
            continue
        colours, counts = np.unique(pixels // 8, axis=0, return_counts=True)  # quantised mode
        mode = colours[counts.argmax()]
        members = pixels[(pixels // 8 == mode).all(axis=1)]
        out.append((np.median(members, axis=0).astype(np.uint8), int(changed.sum())))
    return out


def detect(image: np.ndarray, scene: Scene, tolerance: float = 40, area_fraction: float = 0.25, background_fraction: float = 0.25, supersample: int = 2) -> Detection:
    """Which of `scene`'s captioned shapes (and its background) `image` (H, W, 3 uint8) shows."""
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise ValueError(f"detect needs a uint8 (H, W, 3) image, got {image.dtype} {image.shape}")
    size = image.shape[0]
    empty = render_frame(replace(scene, shapes=()), 0, size, supersample)
    bg_ok = bool(_close(image, empty[0, 0], tolerance).mean() >= background_fraction)
    found = tuple(
        bool(area > 0 and _close(image, colour, tolerance).sum() >= area_fraction * area)
        for colour, area in signature(scene, size, supersample, empty)
    )
    return Detection(found, bg_ok, scene.style not in UNCHECKABLE_STYLES)


def fit_added_motion(scene: Scene, edited: np.ndarray, speed: tuple[float, float], source: np.ndarray | None = None,
                     tolerance: float = 40, area_fraction: float = 0.25, supersample: int = 2,
                     speeds: int = 9, directions: int = 48) -> tuple[float, float] | None:
    """The velocity a world shape could have (a speed in `speed`, any direction) that best
    explains where the last shape of `scene` (an add edit's new shape, which starts where the
    instruction put it) is in `edited` (F, H, W, 3 uint8): its pixels are those of its colour
    that `source` (the input video, F, H, W, 3; `scene` without it rendered when None) does not
    have, its centre their centroid, in every frame where at least `area_fraction` of its area
    shows. None when it shows in fewer than two frames after the first: there is no motion
    to fit, and the caller keeps the instruction's own ground truth."""
    frames, size = edited.shape[0], edited.shape[1]
    new = scene.shapes[-1]
    if source is None:
        from .render import render_video

        source = render_video(replace(scene, shapes=scene.shapes[:-1]), frames, size, supersample)
    colour, area = signature(replace(scene, shapes=(new,)), size, supersample)[0]
    if area == 0:
        return None
    ys, xs = np.mgrid[0:size, 0:size]
    seen, centres = [], []
    for f in range(frames):
        mask = _close(edited[f], colour, tolerance) & ~_close(source[f], colour, tolerance)
        if mask.sum() >= area_fraction * area:
            seen.append(f)
            centres.append(((xs[mask].mean() + 0.5) / size, (ys[mask].mean() + 0.5) / size))
    if sum(f > 0 for f in seen) < 2:
        return None
    at, centres = np.array(seen), np.array(centres)
    v = np.linspace(speed[0], speed[1], speeds)[:, None]
    a = np.linspace(0, 2 * np.pi, directions, endpoint=False)[None, :]
    vx, vy = (v * np.cos(a)).ravel(), (v * np.sin(a)).ravel()
    shapes = replace(new, vx=vx[:, None], vy=vy[:, None])  # every candidate at once: positions (candidates, seen frames)
    px, py = shapes.position(at[None, :])
    cost = ((px - centres[:, 0]) ** 2 + (py - centres[:, 1]) ** 2).mean(axis=1)
    best = int(cost.argmin())
    return float(vx[best]), float(vy[best])
