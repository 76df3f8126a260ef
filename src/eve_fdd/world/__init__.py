"""The Shapes world: scenes, motion, rendering, captions and the seven edits (numpy only)."""

from .captions import caption
from .grammar import InstructionError, parse_instruction
from .edits import Edit, EditSpec, apply_edit, applicable, instruction, make_edit, sample_edit, valid_edits
from .render import render_frame, render_video, shape_coverage
from .scene import Scene, SceneError, Shape, random_scene
from .vocab import RESERVED_STYLES, SUBJECT_TASKS, SUBJECTS, TASKS

__all__ = [
    "Edit", "EditSpec", "InstructionError", "RESERVED_STYLES", "SUBJECT_TASKS", "SUBJECTS", "Scene", "SceneError", "Shape", "TASKS",
    "applicable", "apply_edit", "caption", "instruction", "make_edit", "parse_instruction", "random_scene",
    "render_frame", "render_video", "sample_edit", "shape_coverage", "valid_edits",
]
