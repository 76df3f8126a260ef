"""The Shapes world's vocabulary: every word a caption or an instruction can use.

The reserved subjects and styles are never produced by `random_scene` nor by the seven
base edits; they exist only for the subject/style LoRA experiment (METHOD.md section 8).
"""

from __future__ import annotations

KINDS = ("circle", "square", "triangle", "diamond")
SUBJECTS = ("star", "cross")  # reserved: shapes the base world never shows
# a subject's own look, as a personal subject has one: its body, in the caption's colour, on a disc
# of this colour (no base colour or background). Geometry alone is not enough at this scale: the
# 32-pixel backbone draws base kinds at chance (README, "Models"), so no LoRA on it could draw a
# star told apart from a blob, while a colour it learns in a few hundred steps.
SUBJECT_RIMS: dict[str, tuple[int, int, int]] = {"star": (0, 230, 230), "cross": (230, 40, 230)}

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (50, 90, 230),
    "yellow": (240, 210, 40),
    "purple": (150, 60, 200),
    "orange": (245, 140, 30),
    "white": (245, 245, 245),
    "pink": (245, 130, 190),
}

BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "black": (15, 15, 15),
    "gray": (110, 110, 110),
    "navy": (20, 30, 80),
    "beige": (225, 210, 175),
    "teal": (20, 110, 110),
}

# diameter as a fraction of the image side
SIZES: dict[str, float] = {"small": 0.22, "medium": 0.30, "large": 0.38}

TEXTURES = ("solid", "striped", "dotted", "checkered")

STYLES = ("flat", "outline", "blocky")
RESERVED_STYLES = ("scanlines", "sketch")  # reserved: renderings the base world never shows
# the words a caption names each reserved subject or style with, and no base-world caption uses
# (their token embeddings learn with the concept's LoRA: models.adapters.ConceptTokens)
CONCEPT_WORDS: dict[str, tuple[str, ...]] = {"star": ("star",), "cross": ("cross",), "scanlines": ("scanlines",), "sketch": ("pencil", "sketch")}

LIGHTINGS = ("normal", "dusk", "bright", "warm", "cool")

REGIONS: dict[str, tuple[float, float]] = {
    "top left": (0.28, 0.28),
    "top right": (0.72, 0.28),
    "bottom left": (0.28, 0.72),
    "bottom right": (0.72, 0.72),
    "center": (0.5, 0.5),
}

TASKS = ("add", "remove", "background", "texture", "local", "style", "global")
SUBJECT_TASKS = ("replace",)  # only in the subject set: a shape becomes a reserved subject
ALL_TASKS = TASKS + SUBJECT_TASKS
