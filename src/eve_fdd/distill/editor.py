"""Edit a video of any length with a trained FDD student (`eve-fdd edit`).

The student edits clips of the video adapter's length (`Config.clip_frames`, 8 by default). The
first frame of the video is edited by the edit teacher, as in training and in the stage's
evaluation (METHOD.md section 6); the student makes the rest window after window, each
window conditioned on the last edited frame of the window before it (windows overlap by that
one frame, the last one may be shorter). Ours: the paper says only "sliding window over the
input video"; this form keeps the video adapter's image-to-video conditioning on a clean frame
in every window, where averaging overlapping windows would give it a noisy one.

On a clip no longer than one window the editor does exactly what stage `fdd` evaluates (the
same noise, drawn in the same order, for the same seed).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import Config
from ..diffusion import NoiseSchedule, inference_timesteps, make_scheduler
from ..models.adapters import load_video_adapter, untrained_video_adapter
from ..models.placement import Placement, randn
from ..models.registry import build_backbone, load_edit_adapter, load_pretrained, trained_path
from ..train.video_adapter import clips_to_uint8
from ..world.vocab import TASKS
from .batch import EditBatch
from .data import clip_batch, edit_labels
from .student import Student
from .teachers import EditTeacher

LORA = "fdd"  # the adapter name stage fdd trains and saves its LoRA under


def chained_windows(frames: int, window: int) -> list[slice]:
    """Windows of at most `window` frames covering 0..frames-1, each starting on the last
    frame of the one before (the frame it is conditioned on)."""
    if window < 2:
        raise ValueError(f"window must be at least 2 frames (a conditioning frame and one more), got {window}")
    if frames < 2:
        return []  # nothing after the first frame
    return [slice(s, min(s + window, frames)) for s in range(0, frames - 1, window - 1)]


@dataclass
class VideoEditor:
    student: Student
    edit_teacher: EditTeacher
    backbone: Any  # models.backbone.Backbone (frozen): the text encoder, its tokenizer and the model space
    timesteps: torch.Tensor  # the T DDIM inference timesteps, descending
    window: int
    size: int  # the model's frame size (pixels)
    placement: Placement = field(default_factory=Placement)  # where the models are, and their precision (models/placement.py)

    @property
    def space(self) -> Any:
        return self.backbone.space

    @torch.no_grad()
    def edit_batch(self, batch: EditBatch, generator: torch.Generator, on_window: Any = None) -> torch.Tensor:
        """Edited clips (B, C, F, H, W) in model space for the batch's input clips."""
        with self.placement.inference():
            return self._edit_batch(batch, generator, on_window)

    def _edit_batch(self, batch: EditBatch, generator: torch.Generator, on_window: Any) -> torch.Tensor:
        first = self.edit_teacher.edit_first_frame(randn(batch.source[:, :, 0].shape, generator, like=batch.source), batch,
                                                   self.timesteps)
        out = batch.source.new_empty(batch.source.shape)
        out[:, :, 0] = first
        for w in chained_windows(batch.frames, self.window):
            part = replace(batch.frames_of(w), first=out[:, :, w.start])
            out[:, :, w] = self.student.generate(randn(part.source.shape, generator, like=part.source), part, self.timesteps)
            if on_window is not None:
                on_window()
        return out

    def edit(self, frames: np.ndarray, instruction: str, caption: str, task: str, seed: int = 0, progress: bool = True) -> np.ndarray:
        """A uint8 video (F, size, size, 3), already at the model's size, edited by `instruction`
        towards the output `caption`."""
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[1:] != (self.size, self.size, 3):
            raise ValueError(f"expected uint8 frames (F, {self.size}, {self.size}, 3), got {frames.dtype} {frames.shape}")
        if task not in TASKS:
            raise ValueError(f"task {task!r}: expected one of {list(TASKS)}")
        for what, text in (("instruction", instruction), ("caption", caption)):
            unknown = unknown_words(self.backbone.tokenizer, text)
            if unknown:
                raise ValueError(f"{what} {text!r}: the text encoder does not know {unknown} (this model reads the words "
                                 f"it was trained on; see `eve-fdd params` for the profile)")
        with torch.no_grad():
            batch = clip_batch(frames[None], self.backbone.encode_text([caption]), self.backbone.encode_text([instruction]),
                               edit_labels([task]), self.space)
        windows = chained_windows(len(frames), self.window)
        from tqdm.auto import tqdm

        with tqdm(total=len(windows), desc="edit (windows)", unit="window", disable=not progress) as bar:
            out = self.edit_batch(batch, torch.Generator().manual_seed(seed), on_window=lambda: bar.update())
        with torch.no_grad(), self.placement.inference():
            return clips_to_uint8(self.space.decode(out))[0]


def unknown_words(tokenizer: Any, text: str) -> list[str]:
    """Words of `text` that the tokenizer can only read as its unknown token (the Shapes
    profile's word-level tokenizer knows the world's words only; CLIP's BPE knows all)."""
    unk = tokenizer.unk_token_id
    if unk is None:
        return []
    return [w for w in text.split() if unk in tokenizer(w, add_special_tokens=False).input_ids]


EVAL_CHUNK = 8  # held-out data points edited per batch by stage fdd (stage evaluate's batch_size must match to reuse its edits)


def eval_noise_seed(seed: int) -> int:
    """The generator seed of the held-out edits, stage fdd's (fdd.seed) and evaluate's (evaluate.seed) alike."""
    return seed * 7919 + 5


def eval_key(cfg: Config, row_ids: list[str], seed: int, chunk: int) -> dict[str, Any]:
    """What fixes a student's held-out edits beyond its weights: the data points, the noise
    (seed and batching: the generator draws per batch) and the inference settings. Stage fdd
    saves its edits with this key; stage evaluate reuses them when its own key is equal."""
    return {"row_ids": list(row_ids), "noise_seed": eval_noise_seed(seed), "chunk": chunk, "inference_steps": cfg.diffusion.inference_steps,
            "teacher_guidance": cfg.fdd.teacher_guidance, "inference_guidance": cfg.fdd.inference_guidance,
            "mixed_precision": cfg.fdd.mixed_precision, "clip_frames": cfg.clip_frames}


def save_edits(model_dir: Path, edits: np.ndarray, key: dict[str, Any]) -> None:
    (model_dir / "eval").mkdir(parents=True, exist_ok=True)
    np.save(model_dir / "eval" / "edits.npy", edits, allow_pickle=False)
    (model_dir / "eval" / "key.json").write_text(json.dumps(key, indent=1) + "\n")


def saved_edits(model_dir: Path, key: dict[str, Any]) -> np.ndarray | None:
    """The held-out edits stage fdd saved in `model_dir/eval` if they were made under `key`."""
    path = model_dir / "eval" / "key.json"
    if not path.is_file() or json.loads(path.read_text()) != key:
        return None
    return np.load(model_dir / "eval" / "edits.npy", allow_pickle=False)


def load_editor(cfg: Config, model_dir: str | Path, backbone_dir: str | Path = "data/backbone",
                edit_dir: str | Path = "data/edit_adapter", video_dir: str | Path = "data/video_adapter",
                placement: Placement | None = None) -> VideoEditor:
    """The student stage `fdd` saved in `model_dir` (its model.json), on the teachers it was
    trained with (the stage directories of `backbone`, `edit_adapter`, `video_adapter`), placed
    by `placement` (by default accelerate's device with `fdd.mixed_precision`)."""
    info = _model_info(Path(model_dir))
    from diffusers import ControlNetModel

    placement = placement or Placement.resolve(cfg.fdd.mixed_precision)
    backbone = build_backbone(cfg, trained_path(backbone_dir)).freeze(placement)
    expected = str(Path(trained_path(backbone_dir)))
    for name, stage_dir in (("edit_adapter", edit_dir), ("video_adapter", video_dir)):
        on = json.loads((Path(stage_dir) / "model.json").read_text()).get("backbone") if (Path(stage_dir) / "model.json").is_file() else None
        if on is not None and str(Path(on)) != expected:
            raise ValueError(f"{Path(stage_dir) / 'model.json'}: the {name} was trained on backbone {on}, not {expected}")
    teacher_cn = load_edit_adapter(edit_dir, backbone)
    scheduler = make_scheduler(cfg.diffusion)
    schedule = NoiseSchedule.from_scheduler(scheduler)
    if info.get("trainable") == "all":  # random_init: the student trained its own adapters
        unet = untrained_video_adapter(backbone.unet, trained_path(video_dir))
        _load_motion(unet, Path(info["motion_modules"]))
        student_cn = load_pretrained(ControlNetModel, info["controlnet"], f"{Path(model_dir) / 'model.json'} (controlnet)")
    else:
        unet, student_cn = load_video_adapter(backbone.unet, trained_path(video_dir)), teacher_cn
    with torch.no_grad():
        empty = backbone.encode_text([""])
    student = Student(unet, student_cn, schedule, lora_name=LORA, lora=info["lora"]).guide(cfg.fdd.inference_guidance, empty)
    placement.frozen(student.unet, student.controlnet)  # the trained student's own parts and its LoRA too
    size = backbone.frame_size  # pixels: the UNet's sample size times the VAE's scale (1 in pixel space)
    if size != cfg.frame_size:
        raise ValueError(f"{trained_path(backbone_dir)}: the backbone makes {size}x{size} frames but params.yaml has "
                         f"{cfg.frame_size_key}={cfg.frame_size}; use the params the model was trained with")
    return VideoEditor(student, EditTeacher(backbone.unet, teacher_cn, schedule, cfg.fdd.teacher_guidance, empty), backbone,
                       inference_timesteps(scheduler, cfg.diffusion.inference_steps), cfg.clip_frames, size, placement)


def _model_info(model_dir: Path) -> dict[str, Any]:
    path = model_dir / "model.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; expected a trained student (stage fdd writes data/fdd/<variant>/model.json; "
                                f"run `dvc repro fdd` first)")
    try:
        info = json.loads(path.read_text())
    except ValueError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    need: Sequence[str] = ("lora", "controlnet", "motion_modules") if info.get("trainable") == "all" else ("lora",)
    missing = [k for k in need if k not in info]
    if missing:
        raise ValueError(f"{path}: missing {missing}; expected the model.json stage fdd writes")
    return info


def _load_motion(unet: Any, path: Path) -> None:
    from safetensors.torch import load_file

    saved = load_file(path)
    names = {n for n, _ in unet.named_parameters() if "motion_modules" in n}
    if set(saved) != names:
        raise ValueError(f"{path}: its temporal-layer weights do not match the video adapter built from params.yaml "
                         f"({len(set(saved) ^ names)} names differ)")
    params = dict(unet.named_parameters())
    with torch.no_grad():
        for n, value in saved.items():
            params[n].copy_(value)
