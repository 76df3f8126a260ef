"""FDD's data: input-only (METHOD.md section 3). A data point is one accepted instruction of
the `instructions` stage (video set) with its input video from the `videos` stage:
y = (output caption, instruction, input video), plus the task label. No edited video is
ever read; for Shapes the instruction row's edit spec lets the evaluation render the ground
truth (`ground_truth`), which training never touches.

Other adapter pairs (stage `fdd_personal`, METHOD.md sections 3 and 8) read the subject/style
set instead (`load_concept_items`): one concept's accepted instructions, single images. Their
training inputs are drawn by the concept's LoRA from the input caption (`draw_inputs`), no
image is stored; the held-out part (`split_items`) is evaluated on the rendered scene, whose
edit has a ground truth.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data import tables
from ..models.adapters import task_ids
from ..models.placement import randn
from ..models.space import PixelSpace, pixels_from_uint8
from ..train.backbone import to_uint8
from ..world import EditSpec, Scene, apply_edit, render_video
from ..world.detect import fit_added_motion
from .batch import EditBatch
from .pool import DataFn


class Clips:
    """The input clips of data points, each video's frames held once: the seven instructions of
    a clip share its frames (stacked per instruction, the paper's set of clips x seven tasks
    would hold seven copies of every clip). Reads like the (N, F, H, W, 3) uint8 array it
    stands for: `len`, `shape`, `dtype`, `clips[i]`, `clips[index]`, `np.asarray(clips)`."""

    def __init__(self, videos: np.ndarray, index: Sequence[int] | np.ndarray | None = None):
        self.videos = videos  # (V, F, H, W, 3): each distinct clip once
        self.index = np.arange(len(videos)) if index is None else np.asarray(index, dtype=np.int64)  # data point -> video

    @classmethod
    def shared(cls, items: Sequence[Any], key: Callable[[Any], str], frames: Callable[[Any], np.ndarray]) -> "Clips":
        """The clips of `items`: those with the same `key(item)` (a video id) share one
        `frames(item)`, computed once."""
        position: dict[str, int] = {}
        kept: list[Any] = []  # the first item of each key, in order
        index: list[int] = []
        for item in items:
            k = key(item)
            if k not in position:
                position[k] = len(kept)
                kept.append(item)
            index.append(position[k])
        return cls(np.stack([frames(item) for item in kept]), index)

    def __len__(self) -> int:
        return len(self.index)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.index), *self.videos.shape[1:])

    @property
    def dtype(self) -> np.dtype:
        return self.videos.dtype

    def __getitem__(self, key: Any) -> np.ndarray:
        return self.videos[self.index[key]]

    def take(self, index: Sequence[int]) -> "Clips":
        return Clips(self.videos, self.index[list(index)])

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self.videos[self.index]
        return out if dtype is None else out.astype(dtype)


@dataclass
class FddItems:
    """The data points of one split, in instruction-table order."""

    row_ids: list[str]
    video_ids: list[str]
    tasks: list[str]
    instructions: list[str]
    input_captions: list[str]
    output_captions: list[str]
    edit_specs: list[str | None]
    scenes: list[str | None]
    frames: Clips  # (N, F, H, W, 3) uint8, the input video of each data point (an array given is wrapped)
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> rows left out (counted, never silent)

    def __post_init__(self) -> None:
        if not isinstance(self.frames, Clips):
            self.frames = Clips(np.asarray(self.frames))

    def __len__(self) -> int:
        return len(self.row_ids)

    def take(self, index: Sequence[int]) -> "FddItems":
        index = list(index)
        pick = lambda xs: [xs[i] for i in index]  # noqa: E731
        return FddItems(pick(self.row_ids), pick(self.video_ids), pick(self.tasks), pick(self.instructions),
                        pick(self.input_captions), pick(self.output_captions), pick(self.edit_specs), pick(self.scenes),
                        self.frames.take(index), dict(self.skipped))


def load_items(instructions: str | Path, videos: str | Path, split: str, tasks: Sequence[str] | None = None) -> FddItems:
    """Accepted video-set instructions whose video is in `split` ("train" or "test"),
    optionally only `tasks`. Rejected instructions are counted in `skipped`; an instruction
    whose video is missing from the videos table is an error naming both files."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    keep, skipped = _accepted(instructions, videos, ("videos",), "FDD reads the `instructions` stage's video set (data/instructions/videos.parquet)",
                              lambda row, video: video["split"] == split and (tasks is None or row["task"] in tasks))
    if not keep:
        raise ValueError(f"{instructions}: no accepted instructions for {split!r} videos"
                         + (f" and tasks {list(tasks)}" if tasks is not None else "") + f" (left out: {dict(skipped)})")
    return _items(keep, Clips.shared([v for _, v in keep], _video_id, tables.frames_from_row), skipped)


def _video_id(video: dict) -> str:
    return video["video_id"]


def _accepted(instructions: str | Path, videos: str | Path, sets: tuple[str, ...], expected: str,
              wanted: Callable[[dict, dict], bool]) -> tuple[list[tuple[dict, dict]], Counter[str]]:
    """(instruction row, video row) of the accepted instructions that are `wanted`, and the
    wanted ones left out by status. A row of another set than `sets` (`expected` says which
    file to read instead) or naming a video not in `videos` is an error naming both."""
    video_rows = {r["video_id"]: r for r in tables.read_table(tables.VIDEOS, videos)}
    skipped: Counter[str] = Counter()
    keep = []
    for row in tables.read_table(tables.INSTRUCTIONS, instructions):
        if row["set"] not in sets:
            raise ValueError(f"{instructions}: row {row['row_id']!r} belongs to the {row['set']!r} set; {expected}")
        video = video_rows.get(row["video_id"])
        if video is None:
            raise ValueError(f"{instructions}: row {row['row_id']!r} names video {row['video_id']!r}, which is not in {videos}")
        if not wanted(row, video):
            continue
        if row["status"] != "accepted":
            skipped[f"instruction_{row['status']}"] += 1
            continue
        keep.append((row, video))
    return keep, skipped


def _items(keep: list[tuple[dict, dict]], frames: Clips, skipped: Counter[str]) -> FddItems:
    """FddItems from (instruction row, video row) pairs and each one's input frames."""
    return FddItems(
        row_ids=[r["row_id"] for r, _ in keep], video_ids=[r["video_id"] for r, _ in keep], tasks=[r["task"] for r, _ in keep],
        instructions=[r["instruction"] for r, _ in keep], input_captions=[r["input_caption"] for r, _ in keep],
        output_captions=[r["output_caption"] for r, _ in keep], edit_specs=[r["edit_spec"] for r, _ in keep],
        scenes=[v["scene"] for _, v in keep], frames=frames, skipped=dict(skipped),
    )


# ours: the edit adapter learned the seven tasks' labels; "replace" (the subject set's, a shape
# becomes the subject) is a change of one object, so the adapter gets the "local" label for it
EDIT_LABEL_FOR = {"replace": "local"}


def edit_labels(tasks: Sequence[str]) -> torch.Tensor:
    """The edit adapter's task label ids of data points' tasks."""
    return task_ids([EDIT_LABEL_FOR.get(t, t) for t in tasks])


def load_concept_items(instructions: str | Path, videos: str | Path, concept: str, size: int, supersample: int) -> FddItems:
    """The accepted subject/style-set instructions (stage `subject_style_instructions`) for
    `concept`, each with the first frame of its scene rendered, (N, 1, H, W, 3) (black for
    videos without a scene, whose inputs `draw_inputs` makes). Rejected rows
    are counted in `skipped`; none accepted is an error naming the file and the concept."""
    concepts: set[str] = set()

    def wanted(row: dict, video: dict) -> bool:
        concepts.add(row["concept"])
        return row["concept"] == concept

    keep, skipped = _accepted(instructions, videos, ("subject", "style"),
                              "fdd_personal reads the subject/style set (data/instructions/subject_style_instructions.parquet)", wanted)
    if not keep:
        raise ValueError(f"{instructions}: no accepted instructions for concept {concept!r} "
                         f"(concepts in the file: {sorted(c for c in concepts if c)}; left out: {dict(skipped)})")
    blank = np.zeros((1, size, size, 3), np.uint8)  # the user's own set: drawn by the LoRA (`draw_inputs`), nothing to render
    first_frame = lambda v: blank if v["scene"] is None else render_video(Scene.from_json(v["scene"]), 1, size, supersample)  # noqa: E731
    return _items(keep, Clips.shared([v for _, v in keep], _video_id, first_frame), skipped)


def split_items(items: FddItems, held_out: float, seed: int) -> tuple[FddItems, FddItems]:
    """(train, held out): a seeded share `held_out` of the data points (at least one, and at
    least one left to train on), for sets that have no held-out videos of their own."""
    if len(items) < 2:
        raise ValueError(f"split_items: {len(items)} data point(s); need at least 2 to hold some out")
    n = min(len(items) - 1, max(1, round(held_out * len(items))))
    order = np.random.default_rng(seed).permutation(len(items))
    return items.take(sorted(order[n:].tolist())), items.take(sorted(order[:n].tolist()))


@torch.no_grad()
def draw_inputs(items: FddItems, teacher: Any, encode_text: Any, timesteps: Sequence[int] | torch.Tensor, seed: int,
                chunk: int = 32, space: Any = None) -> np.ndarray:
    """Each data point's input image drawn from its input caption by `teacher.draw` (the
    concept's LoRA, teachers.ConceptTeacher), seeded per data point, in the model's `space`
    and decoded: (N, 1, H, W, 3) uint8 at the items' frame size."""
    space = PixelSpace() if space is None else space
    out = []
    _, h, w, _ = items.frames.shape[1:]
    shape = (space.channels, h // space.scale, w // space.scale)
    for i in range(0, len(items), chunk):
        idx = range(i, min(i + chunk, len(items)))
        emb = encode_text([items.input_captions[j] for j in idx])
        noise = torch.stack([randn(shape, torch.Generator().manual_seed(seed * 1_000_003 + j), like=emb) for j in idx])
        images = space.decode(teacher.draw(noise, emb, timesteps))
        out.append(to_uint8(images)[:, None])
    return np.concatenate(out)


def clip_batch(frames: np.ndarray, caption_emb: torch.Tensor, instruction_emb: torch.Tensor, tasks: torch.Tensor,
               space: Any = None) -> EditBatch:
    """An EditBatch of uint8 input clips (N, F, H, W, 3): the clips in `space` (models/space.py),
    with their pixels beside them when that space is a latent one (the edit adapter's condition);
    on the device of the encoded texts (the text encoder's, where the models are)."""
    pixels = pixels_from_uint8(frames).to(caption_emb.device)
    tasks = tasks.to(caption_emb.device)
    if space is None or not space.latent:
        return EditBatch(pixels, caption_emb, instruction_emb, tasks)
    return EditBatch(space.encode(pixels), caption_emb, instruction_emb, tasks, pixels=pixels)


def data_fn(items: FddItems, encode_text: Any, space: Any = None) -> DataFn:
    """Indices of `items` -> their EditBatch (texts encoded by the frozen text encoder, the
    input video in `space`)."""

    def load(index: Sequence[int]) -> EditBatch:
        part = items.take(index)
        with torch.no_grad():
            return clip_batch(part.frames, encode_text(part.output_captions), encode_text(part.instructions),
                              edit_labels(part.tasks), space)

    return load


def has_ground_truth(items: FddItems) -> bool:
    """Whether every data point has a scene and an edit spec to render its ground truth from
    (Shapes); clips of the user's own set have none."""
    return all(s is not None for s in items.scenes) and all(e is not None for e in items.edit_specs)


def ground_truth(items: FddItems, i: int, frames: int, size: int, supersample: int, allow_reserved: bool = False,
                 edited: np.ndarray | None = None, speed: tuple[float, float] = (0.02, 0.06)) -> np.ndarray:
    """Shapes: the edited video (F, H, W, 3) uint8, the scene re-rendered after the edit with
    the same motion (`allow_reserved`: the subject/style set's edits bring in reserved
    subjects and styles). Only the evaluation reads it.

    An add instruction names where the new shape starts, not how it moves (METHOD.md section
    10): scored against a method's clip `edited`, the new shape moves with the world velocity
    (a speed in `speed`) that best explains where that clip shows it
    (world.detect.fit_added_motion), so the score asks for the named shape where the
    instruction puts it, moving as a world shape moves, the rest unchanged; where the clip
    does not show it, it keeps the velocity the edit spec drew."""
    if items.scenes[i] is None or items.edit_specs[i] is None:
        raise ValueError(f"{items.row_ids[i]}: no scene or edit spec; a ground truth exists for Shapes videos only")
    scene, spec = Scene.from_json(items.scenes[i]), EditSpec.from_json(items.edit_specs[i])
    if edited is not None and spec.task == "add":
        fit = fit_added_motion(apply_edit(scene, spec, allow_reserved), edited, speed, source=items.frames[i], supersample=supersample)
        if fit is not None:
            spec = replace(spec, vx=fit[0], vy=fit[1])
    return render_video(apply_edit(scene, spec, allow_reserved), frames, size, supersample)
