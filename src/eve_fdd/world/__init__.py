"""The Shapes world: scenes, motion, rendering, captions and the seven edits (numpy only)."""

from .captions import caption
from .edits import Edit, EditSpec, apply_edit, applicable, instruction, make_edit, sample_edit
from .render import render_frame, render_video, shape_coverage
from .scene import Scene, SceneError, Shape, random_scene
from .vocab import RESERVED_STYLES, SUBJECTS, TASKS

__all__ = [
    "Edit", "EditSpec", "RESERVED_STYLES", "SUBJECTS", "Scene", "SceneError", "Shape", "TASKS",
    "applicable", "apply_edit", "caption", "instruction", "make_edit", "random_scene",
    "render_frame", "render_video", "sample_edit", "shape_coverage",
]
