"""Captions: the one canonical sentence that describes a scene.

The caption names every shape (size, colour, texture, kind) in drawing order, the
background, and the style and lighting when they are not the plain ones, so two scenes
that render differently (apart from motion) have different captions.
"""

from __future__ import annotations

from .scene import Scene, Shape

STYLE_PHRASES = {
    "flat": "",
    "outline": ", drawn as outlines",
    "blocky": ", in a blocky pixel style",
    "scanlines": ", with scanlines",
    "sketch": ", as a pencil sketch",
}

LIGHTING_PHRASES = {
    "normal": "",
    "dusk": ", at dusk",
    "bright": ", in bright light",
    "warm": ", in warm light",
    "cool": ", in cool light",
}


def shape_phrase(shape: Shape) -> str:
    texture = "" if shape.texture == "solid" else f" {shape.texture}"
    return f"a {shape.size} {shape.color}{texture} {shape.kind}"


def _join(items: list[str]) -> str:
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " and " + items[-1]


def caption(scene: Scene) -> str:
    shapes = _join([shape_phrase(s) for s in scene.shapes])
    return f"{shapes} on a {scene.background} background{STYLE_PHRASES[scene.style]}{LIGHTING_PHRASES[scene.lighting]}"
