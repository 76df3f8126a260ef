"""The instruction grammar: instruction text + scene -> the edit it asks for.

It reads the canonical wording of `edits.instruction` and a few common variants ("delete
the red circle", "put a small blue square at the center"). Words are captured loosely and
then checked against the vocabulary, so a generated instruction that fails says why: it
does not read as the task at all (`unparseable`), it uses a word the world does not have
(`unknown_word`), it names a shape the scene does not have (`unknown_object`), or the edit
does not apply (`invalid_edit`, e.g. a background change to the colour it already has).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from . import vocab
from .edits import LIGHTING_INSTRUCTIONS, STYLE_INSTRUCTIONS, EditSpec, apply_edit
from .scene import Scene, SceneError

W = r"([a-z]+)"
REGION = "|".join(sorted(vocab.REGIONS, key=len, reverse=True))

PATTERNS: dict[str, list[str]] = {
    "add": [rf"(?:add|put|place|insert) an? {W} {W}(?: {W})? {W} (?:in|at) the ({REGION})"],
    "remove": [rf"(?:remove|delete|erase|take out|take away) the {W} {W}"],
    "replace": [rf"(?:replace|swap) the {W} {W} (?:with|for) an? {W}", rf"(?:turn|change) the {W} {W} into an? {W}"],
    "background": [rf"(?:change|turn|make|set) the background(?: colou?r)?(?: to)? {W}"],
    "texture": [rf"(?:make|give) the {W} {W} {W}"],
    "local_color": [rf"(?:turn|make|colou?r|paint) the {W} {W} {W}"],
    "local_size": [rf"make the {W} {W} {W}"],
}

STYLE_PHRASES = {v: k for k, v in STYLE_INSTRUCTIONS.items()}
LIGHTING_PHRASES = {v: k for k, v in LIGHTING_INSTRUCTIONS.items()}


@dataclass
class InstructionError(ValueError):
    reason: str  # unparseable | unknown_word | unknown_object | invalid_edit
    detail: str

    def __str__(self) -> str:
        return self.detail


def normalize(text: str) -> str:
    return " ".join(text.lower().replace(",", " ").split()).rstrip(".!")


def _match(key: str, text: str) -> tuple[str, ...] | None:
    for pattern in PATTERNS[key]:
        m = re.fullmatch(pattern, text)
        if m:
            return m.groups()
    return None


def _word(value: str | None, allowed, what: str, text: str) -> str:
    if value not in allowed:
        raise InstructionError("unknown_word", f"{text!r}: {value!r} is not a {what} (expected one of {sorted(allowed)})")
    return value


def _target(scene: Scene, color: str, kind: str, text: str, kinds) -> str:
    _word(color, vocab.COLORS, "colour", text)
    _word(kind, kinds, "shape", text)
    name = f"{color} {kind}"
    if name not in {s.name for s in scene.shapes}:
        have = ", ".join(s.name for s in scene.shapes)
        raise InstructionError("unknown_object", f"{text!r}: there is no {name} in the scene (it has: {have})")
    return name


def _spec(task: str, text: str, scene: Scene, velocity: tuple[float, float], allow_reserved: bool) -> EditSpec:
    kinds = vocab.KINDS + (vocab.SUBJECTS if allow_reserved else ())
    if task == "add" and (g := _match("add", text)):
        size, color, texture, kind, region = g
        return EditSpec(
            "add", size=_word(size, vocab.SIZES, "size", text), color=_word(color, vocab.COLORS, "colour", text),
            texture=_word(texture or "solid", vocab.TEXTURES, "texture", text), kind=_word(kind, kinds, "shape", text),
            region=region, vx=velocity[0], vy=velocity[1],
        )
    if task == "remove" and (g := _match("remove", text)):
        return EditSpec("remove", target=_target(scene, *g, text, kinds))
    if task == "replace" and (g := _match("replace", text)):
        return EditSpec("replace", target=_target(scene, g[0], g[1], text, kinds), kind=_word(g[2], kinds, "shape", text))
    if task == "background" and (g := _match("background", text)):
        return EditSpec("background", background=_word(g[0], vocab.BACKGROUNDS, "background", text))
    if task == "texture" and (g := _match("texture", text)):
        texture = "solid" if g[2] == "plain" else g[2]
        return EditSpec("texture", target=_target(scene, g[0], g[1], text, kinds), texture=_word(texture, vocab.TEXTURES, "texture", text))
    if task == "local":
        if (g := _match("local_size", text)) and g[2] in vocab.SIZES:
            return EditSpec("local", target=_target(scene, g[0], g[1], text, kinds), size=g[2])
        if g := _match("local_color", text):
            return EditSpec("local", target=_target(scene, g[0], g[1], text, kinds), color=_word(g[2], vocab.COLORS, "colour", text))
    if task == "style" and text in STYLE_PHRASES:
        return EditSpec("style", style=STYLE_PHRASES[text])
    if task == "global" and text in LIGHTING_PHRASES:
        return EditSpec("global", lighting=LIGHTING_PHRASES[text])
    raise InstructionError("unparseable", f"{text!r} does not read as a {task} instruction")


def parse_instruction(
    text: str,
    task: str,
    scene: Scene,
    velocity: tuple[float, float] = (0.0, 0.0),
    allow_reserved: bool = False,
) -> tuple[EditSpec, Scene]:
    """The edit `text` asks for on `scene`, and the edited scene. `velocity` is the motion an
    added shape gets (instructions name only where it starts)."""
    norm = normalize(text)
    spec = _spec(task, norm, scene, velocity, allow_reserved)
    try:
        return spec, apply_edit(scene, spec, allow_reserved=allow_reserved)
    except SceneError as exc:
        raise InstructionError("invalid_edit", f"{text!r}: {exc}") from None


def task_of(text: str) -> str | None:
    """The task an instruction's wording asks for (no scene needed), or None when it reads as
    none of them: how `eve-fdd edit` picks the edit adapter's task label when none is given.
    "replace" answers "local", the label the edit adapter knows it by (distill/data.py)."""
    norm = normalize(text)
    if norm in STYLE_PHRASES:
        return "style"
    if norm in LIGHTING_PHRASES:
        return "global"
    for task in ("add", "remove", "background"):
        if _match(task, norm):
            return task
    if _match("replace", norm):
        return "local"
    if (g := _match("texture", norm)) and ("solid" if g[2] == "plain" else g[2]) in vocab.TEXTURES:
        return "texture"
    if ((g := _match("local_size", norm)) and g[2] in vocab.SIZES) or ((g := _match("local_color", norm)) and g[2] in vocab.COLORS):
        return "local"
    return None
