"""The seven edit tasks as operations on a scene (METHOD.md sections 3 and 10).

An `EditSpec` says exactly what changes; `apply_edit` turns (scene, spec) into the edited
scene, which keeps every shape's motion, so rendering it gives the ground-truth edited
video. `instruction` is the canonical wording of a spec; `sample_edit` draws a valid spec
for a scene. Where an edit's result is not unique (where an added shape appears and how it
moves), the instruction names the region and the spec stores the exact start and velocity.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from . import vocab
from .captions import caption
from .scene import Scene, SceneError, Shape, random_velocity

MAX_SHAPES = 5  # an `add` never makes a scene with more shapes than this


@dataclass(frozen=True)
class EditSpec:
    task: str
    target: str | None = None  # the shape acted on, by name ("red circle")
    kind: str | None = None  # add
    color: str | None = None  # add, local (recolour)
    size: str | None = None  # add, local (resize)
    texture: str | None = None  # add, texture
    region: str | None = None  # add: where the new shape starts
    vx: float | None = None  # add: the new shape's velocity
    vy: float | None = None
    background: str | None = None
    style: str | None = None
    lighting: str | None = None

    def to_json(self) -> str:
        return json.dumps({k: v for k, v in asdict(self).items() if v is not None}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "EditSpec":
        try:
            return cls(**json.loads(text))
        except (json.JSONDecodeError, TypeError) as exc:
            raise SceneError(f"not an edit spec JSON: {exc}") from None


@dataclass(frozen=True)
class Edit:
    spec: EditSpec
    scene: Scene  # the edited scene
    instruction: str
    output_caption: str


def apply_edit(scene: Scene, spec: EditSpec, allow_reserved: bool = False) -> Scene:
    """The edited scene. Raises SceneError if the edit does not apply to this scene."""
    t = spec.task
    if t == "add":
        if len(scene.shapes) >= MAX_SHAPES:
            raise SceneError(f"cannot add: the scene already has {MAX_SHAPES} shapes")
        x, y = vocab.REGIONS[_need(spec, "region")]
        new = Shape(
            _need(spec, "kind"), _need(spec, "color"), _need(spec, "size"), spec.texture or "solid",
            x, y, _need(spec, "vx"), _need(spec, "vy"),
        )
        edited = replace(scene, shapes=scene.shapes + (new,))
    elif t == "remove":
        i = scene.find(_need(spec, "target"))
        if len(scene.shapes) == 1:
            raise SceneError("cannot remove the only shape")
        edited = replace(scene, shapes=scene.shapes[:i] + scene.shapes[i + 1 :])
    elif t == "background":
        edited = replace(scene, background=_changed(scene.background, _need(spec, "background"), "background"))
    elif t == "texture":
        i = scene.find(_need(spec, "target"))
        edited = scene.with_shape(i, texture=_changed(scene.shapes[i].texture, _need(spec, "texture"), "texture"))
    elif t == "local":
        i = scene.find(_need(spec, "target"))
        if (spec.color is None) == (spec.size is None):
            raise SceneError("a local edit changes exactly one of color or size")
        if spec.color is not None:
            edited = scene.with_shape(i, color=_changed(scene.shapes[i].color, spec.color, "color"))
        else:
            edited = scene.with_shape(i, size=_changed(scene.shapes[i].size, spec.size, "size"))
    elif t == "replace":  # subject set: a shape becomes the subject, keeping colour, size and motion
        i = scene.find(_need(spec, "target"))
        edited = scene.with_shape(i, kind=_changed(scene.shapes[i].kind, _need(spec, "kind"), "kind"))
    elif t == "style":
        edited = replace(scene, style=_changed(scene.style, _need(spec, "style"), "style"))
    elif t == "global":
        edited = replace(scene, lighting=_changed(scene.lighting, _need(spec, "lighting"), "lighting"))
    else:
        raise SceneError(f"unknown task {t!r}, expected one of {vocab.TASKS + vocab.SUBJECT_TASKS}")
    return edited.validate(allow_reserved=allow_reserved)


def _need(spec: EditSpec, key: str) -> Any:
    value = getattr(spec, key)
    if value is None:
        raise SceneError(f"a {spec.task} edit needs {key!r}")
    return value


def _changed(old: str, new: str, what: str) -> str:
    if old == new:
        raise SceneError(f"the {what} is already {new!r}; an edit must change something")
    return new


STYLE_INSTRUCTIONS = {
    "flat": "render it in a flat style",
    "outline": "draw the shapes as outlines",
    "blocky": "make it look blocky and pixelated",
    "scanlines": "add scanlines",
    "sketch": "turn it into a pencil sketch",
}

LIGHTING_INSTRUCTIONS = {
    "normal": "use normal lighting",
    "dusk": "make it dusk",
    "bright": "make the lighting bright",
    "warm": "make the lighting warm",
    "cool": "make the lighting cool",
}


def instruction(spec: EditSpec) -> str:
    """The canonical wording of an edit."""
    t = spec.task
    if t == "add":
        texture = "" if (spec.texture or "solid") == "solid" else f" {spec.texture}"
        return f"add a {spec.size} {spec.color}{texture} {spec.kind} in the {spec.region}"
    if t == "remove":
        return f"remove the {spec.target}"
    if t == "replace":
        return f"replace the {spec.target} with a {spec.kind}"
    if t == "background":
        return f"change the background to {spec.background}"
    if t == "texture":
        return f"make the {spec.target} " + ("plain" if spec.texture == "solid" else spec.texture)
    if t == "local":
        return f"turn the {spec.target} {spec.color}" if spec.color else f"make the {spec.target} {spec.size}"
    if t == "style":
        return STYLE_INSTRUCTIONS[spec.style]
    if t == "global":
        return LIGHTING_INSTRUCTIONS[spec.lighting]
    raise SceneError(f"unknown task {t!r}")


def _pick(rng: np.random.Generator, options) -> Any:
    options = list(options)
    if not options:
        raise SceneError("no valid choice for this edit in this scene")
    return options[rng.integers(len(options))]


def sample_edit(
    scene: Scene,
    task: str,
    rng: np.random.Generator,
    speed: tuple[float, float] = (0.02, 0.06),
    allow_reserved: bool = False,
    concept: str | None = None,
) -> EditSpec:
    """A random edit of `task` that applies to `scene`. Reserved subjects and styles only
    with `allow_reserved` (the LoRA experiment's data); `concept` fixes the subject of an
    add/replace or the style of a style edit."""
    names = {s.name for s in scene.shapes}
    if task == "add":
        kinds = (concept,) if concept else vocab.KINDS + (vocab.SUBJECTS if allow_reserved else ())
        color, kind = _pick(rng, [(c, k) for k in kinds for c in vocab.COLORS if f"{c} {k}" not in names])
        vx, vy = random_velocity(rng, speed)
        return EditSpec(
            "add", kind=kind, color=color, size=_pick(rng, vocab.SIZES), texture="solid",
            region=_pick(rng, vocab.REGIONS), vx=vx, vy=vy,
        )
    if task == "remove":
        return EditSpec("remove", target=_pick(rng, sorted(names)))
    if task == "replace":
        subject = concept or _pick(rng, vocab.SUBJECTS)
        targets = [s for s in scene.shapes if f"{s.color} {subject}" not in names]
        return EditSpec("replace", target=_pick(rng, [s.name for s in targets]), kind=subject)
    if task == "background":
        return EditSpec("background", background=_pick(rng, [b for b in vocab.BACKGROUNDS if b != scene.background]))
    if task == "texture":
        target = scene.shapes[rng.integers(len(scene.shapes))]
        return EditSpec("texture", target=target.name, texture=_pick(rng, [t for t in vocab.TEXTURES if t != target.texture]))
    if task == "local":
        target = scene.shapes[rng.integers(len(scene.shapes))]
        if rng.random() < 0.5:
            colors = [c for c in vocab.COLORS if c != target.color and f"{c} {target.kind}" not in names]
            return EditSpec("local", target=target.name, color=_pick(rng, colors))
        return EditSpec("local", target=target.name, size=_pick(rng, [s for s in vocab.SIZES if s != target.size]))
    if task == "style":
        styles = (concept,) if concept else vocab.STYLES + (vocab.RESERVED_STYLES if allow_reserved else ())
        return EditSpec("style", style=_pick(rng, [s for s in styles if s != scene.style]))
    if task == "global":
        return EditSpec("global", lighting=_pick(rng, [g for g in vocab.LIGHTINGS if g != scene.lighting]))
    raise SceneError(f"unknown task {task!r}, expected one of {vocab.TASKS}")


def _candidates(scene: Scene, task: str, allow_reserved: bool, concept: str | None) -> list[EditSpec]:
    names = [s.name for s in scene.shapes]
    kinds = (concept,) if concept else vocab.KINDS + (vocab.SUBJECTS if allow_reserved else ())
    if task == "add":
        return [EditSpec("add", kind=k, color=c, size=z, texture=t, region=r, vx=0.0, vy=0.0)
                for z in vocab.SIZES for c in vocab.COLORS for t in vocab.TEXTURES for k in kinds for r in vocab.REGIONS]
    if task == "remove":
        return [EditSpec("remove", target=n) for n in names]
    if task == "replace":
        return [EditSpec("replace", target=n, kind=k) for n in names for k in ((concept,) if concept else vocab.SUBJECTS)]
    if task == "background":
        return [EditSpec("background", background=b) for b in vocab.BACKGROUNDS]
    if task == "texture":
        return [EditSpec("texture", target=n, texture=t) for n in names for t in vocab.TEXTURES]
    if task == "local":
        return [EditSpec("local", target=n, color=c) for n in names for c in vocab.COLORS] + [
            EditSpec("local", target=n, size=z) for n in names for z in vocab.SIZES]
    if task == "style":
        styles = (concept,) if concept else vocab.STYLES + (vocab.RESERVED_STYLES if allow_reserved else ())
        return [EditSpec("style", style=s) for s in styles]
    if task == "global":
        return [EditSpec("global", lighting=g) for g in vocab.LIGHTINGS]
    raise SceneError(f"unknown task {task!r}, expected one of {vocab.TASKS + vocab.SUBJECT_TASKS}")


def valid_edits(scene: Scene, task: str, allow_reserved: bool = False, concept: str | None = None) -> list[Edit]:
    """Every edit of `task` that applies to `scene`, in canonical wording: each shape the scene
    has with its own attributes, each value the edit can take (an added shape in any size,
    colour, texture and region; it gets no motion here, since neither its instruction nor its
    caption says how it moves). `concept` fixes the subject of an add / replace or the style
    of a style edit, as in `sample_edit`. The Shapes instruction writer's decoding grammar is
    built from this list (llm/gbnf.py)."""
    edits = []
    for spec in _candidates(scene, task, allow_reserved, concept):
        try:
            edited = apply_edit(scene, spec, allow_reserved)
        except SceneError:
            continue
        edits.append(Edit(spec, edited, instruction(spec), caption(edited)))
    return edits


def applicable(scene: Scene, task: str) -> bool:
    """Whether `task` has at least one valid edit on `scene`."""
    if task == "add":
        return len(scene.shapes) < MAX_SHAPES
    if task == "remove":
        return len(scene.shapes) > 1
    return task in vocab.TASKS + vocab.SUBJECT_TASKS


def make_edit(
    scene: Scene,
    task: str,
    rng: np.random.Generator,
    speed: tuple[float, float] = (0.02, 0.06),
    allow_reserved: bool = False,
    concept: str | None = None,
) -> Edit:
    spec = sample_edit(scene, task, rng, speed, allow_reserved, concept)
    edited = apply_edit(scene, spec, allow_reserved)
    return Edit(spec, edited, instruction(spec), caption(edited))
