"""Stage `fdd` (one DVC foreach entry per ablation variant): align the edit adapter and the
video adapter into a video editor by Factorized Diffusion Distillation (METHOD.md sections 4-8).

Inputs: the trained backbone, edit adapter and video adapter (the frozen teachers), the
`instructions` video set (train split: the only data FDD sees; no edited video), and for the
evaluation the held-out videos with their Shapes ground truth.
Training (distill/): a teacher-sample pool, then `fdd.iterations` of student step (k steps
with gradients, SDS from both teachers, adversarial terms after the SDS-only phase) and
discriminator step, in the shared loop (checkpoints in `data/checkpoints/fdd/<variant>`,
resumed when interrupted; NaN stops with the step and the last checkpoint named).
Evaluation: held-out data points, spread evenly over the tasks, edited with T DDIM steps and
scored against the ground truth (evaluate/video_edits.py), beside "return the input" as a
reference. Outputs under `data/fdd/<variant>`: the LoRA (and, for random_init, the adapters
it trained), model.json, the held-out edits with what made them (`eval/`: stage evaluate
reuses them when it edits the same data points with the same noise), a contact sheet and GIFs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import Config, FddConfig
from ..data.video import contact_sheet, display_scale, write_gif
from ..diffusion import NoiseSchedule, inference_timesteps, make_scheduler
from ..distill import variants
from ..distill.data import FddItems, data_fn, ground_truth, has_ground_truth, load_items
from ..distill.editor import EVAL_CHUNK, VideoEditor, eval_key, eval_noise_seed, save_edits
from ..distill.fdd import FDD
from ..distill.pool import TeacherPool
from ..distill.run import ProgressSamples, RunSettings, discriminators, timestep_plot, train_fdd
from ..distill.student import Student
from ..distill.teachers import EditTeacher, VideoTeacher
from ..evaluate.video_edits import summarize, video_errors
from ..models.adapters import edit_adapter, load_video_adapter, untrained_video_adapter
from ..models.registry import build_backbone, feature_network, load_edit_adapter, trained_path
from ..models.placement import Placement
from ..models.space import pixels_from_uint8
from ..train.edit_adapter import round_robin
from ..train.loop import TrainingOutputs
from ..train.video_adapter import clips_to_uint8

STAGE = "fdd"
# what dvc.yaml declares: every fdd knob but the variant list (adding a variant reruns no other)
PARAMS = ("profile", "seed", "world", "videos.fps", "videos.ingest.frames", "videos.ingest.size", "diffusion",
          *(f"fdd.{k}" for k in FddConfig.model_fields if k != "variants"))
LORA = "fdd"


def checkpoints_for(variant: str) -> Path:
    return Path("data/checkpoints/fdd") / variant


def fingerprints(cfg: Config, inputs: tuple[Path, ...]) -> tuple[str, str]:
    """(run, setup): `run` names everything a run depends on (params, code, the bytes of its
    inputs: data and teachers), so a checkpoint is resumed only by the same run (retrained
    teachers under unchanged params are another run); `setup` is the same without `fdd.seed`,
    so runs that differ only by their seed can be told apart from runs of other teachers
    (metrics key `setup`; stage `report` averages seeds of the current setup only). The inputs
    (videos, teacher weights) are hashed once, for `setup`; `run` adds the seed to it. The code
    hashed is the files this module runs (config.module_sources, the stage's DVC deps), not the
    whole package: a change to the report or another stage keeps the seeds already measured."""
    setup = cfg.fingerprint(tuple(k for k in PARAMS if k != "fdd.seed"), inputs, code=__name__)
    return hashlib.sha256(f"{setup}/fdd.seed={cfg.fdd.seed}".encode()).hexdigest()[:16], setup


def build(cfg: Config, variant: str, instructions: Path, videos: Path, backbone_dir: Path, edit_dir: Path, video_dir: Path,
          out_dir: Path, checkpoints: Path | None = None, progress: bool = True,
          on_log: Callable[[dict[str, float]], None] | None = None, features_dir: Path | None = None) -> TrainingOutputs:
    """Every model on accelerate's device, in the precision `fdd.mixed_precision` gives (models/placement.py).
    `features_dir`: stage features' output, the discriminators' feature network (None: the
    network that stage records untrained: DINOv2, or Shapes' seeded random one)."""
    placement = Placement.resolve(cfg.fdd.mixed_precision)
    with placement.inference():  # the training steps open bf16 autocast themselves
        return _build(cfg, variant, instructions, videos, backbone_dir, edit_dir, video_dir, out_dir, checkpoints, progress, on_log,
                      placement, features_dir)


def _build(cfg: Config, variant: str, instructions: Path, videos: Path, backbone_dir: Path, edit_dir: Path, video_dir: Path,
           out_dir: Path, checkpoints: Path | None, progress: bool, on_log: Callable[[dict[str, float]], None] | None,
           placement: Placement, features_dir: Path | None = None) -> TrainingOutputs:
    f = cfg.fdd
    settings = variants.settings(f, variant, cfg.diffusion.inference_steps)  # a wrong variant stops here
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoints = checkpoints or checkpoints_for(variant)
    torch.manual_seed(f.seed)

    backbone = build_backbone(cfg, trained_path(backbone_dir)).freeze(placement)
    space = backbone.space  # pixels (Shapes) or the VAE's latents (full): models/space.py
    motion_source = trained_path(video_dir)
    controlnet = load_edit_adapter(edit_dir, backbone)
    teacher_unet = load_video_adapter(backbone.unet, motion_source).requires_grad_(False).eval()
    scheduler = make_scheduler(cfg.diffusion)
    schedule = NoiseSchedule.from_scheduler(scheduler)
    with torch.no_grad():
        empty = backbone.encode_text([""])
    # the teachers as SDS reads them (fdd.sds_guidance); their samples use fdd.teacher_guidance
    edit_teacher = EditTeacher(backbone.unet, controlnet, schedule, f.sds_guidance, empty)
    video_teacher = VideoTeacher(teacher_unet, schedule, f.sds_guidance, empty)
    if variants.student_trainable(variant) == "all":  # random_init: untrained adapters of the teachers' architectures
        channels = tuple(controlnet.config.conditioning_embedding_out_channels)
        student = Student(untrained_video_adapter(backbone.unet, motion_source), edit_adapter(backbone.unet, channels), schedule,
                          lora_name=LORA, lora_rank=f.lora_rank, lora_targets=f.lora_targets, trainable="all",
                          gradient_checkpointing=f.gradient_checkpointing)
    else:  # the student shares the video teacher's UNet; the teacher runs it with the LoRA off
        student = Student(teacher_unet, controlnet, schedule, lora_name=LORA, lora_rank=f.lora_rank, lora_targets=f.lora_targets,
                          gradient_checkpointing=f.gradient_checkpointing)

    train_items, test_items = load_items(instructions, videos, "train"), load_items(instructions, videos, "test")
    test_items = test_items.take(round_robin(test_items.tasks, f.eval_items))
    run_fingerprint, setup = fingerprints(cfg, (instructions, videos, backbone_dir, edit_dir, video_dir,
                                                *(() if features_dir is None else (features_dir,))))
    metrics: dict[str, float | str] = {"setup": setup, **placement.metrics(), "train_items": len(train_items), "eval_items": len(test_items),
                                       **{f"skipped.{k}": v for k, v in train_items.skipped.items()}}
    curve: list[dict[str, float]] = []
    progress_files: list[Path] = []
    if variants.trains(variant):
        d_edit, d_video = discriminators(f.discriminator, backbone.text_encoder.config.hidden_size, cfg.clip_frames,
                                         feature_network(cfg, placement, features_dir))
        fdd = FDD(student, edit_teacher, video_teacher, d_edit, d_video, scheduler, schedule, settings, space)
        pool = TeacherPool(data_fn(train_items, backbone.encode_text, space), len(train_items),
                           edit_teacher.with_guidance(f.teacher_guidance), video_teacher.with_guidance(f.teacher_guidance),
                           inference_timesteps(scheduler, f.teacher_steps), f.pool_size, f.pool_refresh, f.seed)
        samples = ProgressSamples(out_dir / "progress", fps=cfg.videos.fps, scale=display_scale(backbone.frame_size), space=space)
        result, timesteps = train_fdd(fdd, pool, run_settings(f), checkpoints, run_fingerprint, progress, on_log,
                                      samples, f.sample_every, placement)
        curve = result.curve
        progress_files = [*samples.paths, *timestep_plot(timesteps, scheduler, out_dir, f"fdd@{variant}")]
        metrics.update(result.summary(f.batch_size))
        metrics["pool.generated"] = pool.generated
    student.unet.requires_grad_(False)
    student.controlnet.requires_grad_(False)
    _save(student, variant, out_dir)

    student.guide(f.inference_guidance, empty)
    found, sheet_rows, labels, per_row, edits = evaluate(student, edit_teacher.with_guidance(f.teacher_guidance), backbone, scheduler,
                                                         test_items, cfg, chunk=EVAL_CHUNK, placement=placement)
    save_edits(out_dir, edits, eval_key(cfg, test_items.row_ids, f.seed, EVAL_CHUNK))
    metrics.update(found)
    metrics.update(backbone.text_metrics())
    artifacts = [out_dir / "model.json", *progress_files]
    if f.samples and sheet_rows:
        n = min(f.samples, len(sheet_rows) // per_row)
        sheet = out_dir / "samples.png"
        scale = display_scale(backbone.frame_size)
        contact_sheet(sheet_rows[: per_row * n], sheet, scale=scale, captions=labels[: per_row * n])
        artifacts.append(sheet)
        for i in range(n):
            gif = out_dir / "samples" / f"edit-{i:02d}.gif"
            gif.parent.mkdir(parents=True, exist_ok=True)
            write_gif(np.concatenate(sheet_rows[per_row * i : per_row * (i + 1)], axis=2), gif, fps=cfg.videos.fps, scale=scale)
            artifacts.append(gif)
    return TrainingOutputs(metrics, curve, artifacts)


def run_settings(f: FddConfig) -> RunSettings:
    return RunSettings(f.iterations, f.batch_size, f.lr, f.grad_clip, f.checkpoint_every, f.log_every, f.gradient_checkpointing,
                       f.seed, f.discriminator.lr, f.micro_batches)


@torch.no_grad()
def evaluate(student: Student, edit_teacher: EditTeacher, backbone: Any, scheduler: Any, items: FddItems, cfg: Config,
             chunk: int = EVAL_CHUNK, placement: Placement | None = None) -> tuple[dict[str, float], list[np.ndarray], list[str], int, np.ndarray]:
    """Edit held-out data points with T DDIM steps (first frame by the edit teacher, the rest
    by the student). With a ground truth (Shapes) they are scored against it, "return the
    input unchanged" beside them (`identity.*`); clips of the user's own set have none, and
    are only shown (stage `evaluate` scores them by the paper's metrics). Returns the metrics,
    contact-sheet rows (input | edited [| ground truth] per data point), their labels, the
    rows per data point and the edits (uint8, in data-point order)."""
    timesteps = inference_timesteps(scheduler, cfg.diffusion.inference_steps)  # T, as K-bin trains for
    editor = VideoEditor(student, edit_teacher, backbone, timesteps, cfg.clip_frames, backbone.frame_size, placement or Placement())
    load = data_fn(items, backbone.encode_text, backbone.space)
    g = torch.Generator().manual_seed(eval_noise_seed(cfg.fdd.seed))
    truth_known = has_ground_truth(items)
    w = cfg.world
    edited = []
    for i in range(0, len(items), chunk):
        index = list(range(i, min(i + chunk, len(items))))
        edited.append(backbone.space.decode(editor.edit_batch(load(index), g)).cpu())
    edited_t, source_t = torch.cat(edited), pixels_from_uint8(items.frames)
    metrics: dict[str, float] = {"eval.ground_truth": float(truth_known)}
    src_u8, out_u8 = clips_to_uint8(source_t), clips_to_uint8(edited_t)
    gt_u8 = None
    if truth_known:  # an add's truth follows the motion the edit gave its new shape (distill.data.ground_truth)
        def truth(of: np.ndarray | None) -> torch.Tensor:
            return pixels_from_uint8(np.stack([ground_truth(items, j, w.frames, w.size, w.supersample, edited=None if of is None else of[j],
                                                            speed=w.speed) for j in range(len(items))]))

        truth_t = truth(out_u8)
        metrics |= {f"eval.{k}": v for k, v in summarize(video_errors(edited_t, source_t, truth_t), items.tasks).items()}
        metrics |= {f"eval.identity.{k}": v for k, v in summarize(video_errors(source_t, source_t, truth(None)), items.tasks).items()
                    if not k.startswith("frame_change_ground_truth")}
        gt_u8 = clips_to_uint8(truth_t)
    rows: list[np.ndarray] = []
    labels: list[str] = []
    for j in round_robin(items.tasks, len(items)):
        rows += [src_u8[j], out_u8[j]]
        labels += [f"input: {items.input_captions[j]}", f"{items.tasks[j]}: {items.instructions[j]}"]
        if gt_u8 is not None:
            rows.append(gt_u8[j])
            labels.append("ground truth")
    return metrics, rows, labels, 3 if gt_u8 is not None else 2, out_u8


def _save(student: Student, variant: str, out_dir: Path) -> None:
    model = out_dir / "model"
    student.unet.save_lora_adapter(str(model / "lora"), adapter_name=LORA)
    info: dict[str, Any] = {"variant": variant, "lora": str(model / "lora"), "trainable": student.trainable}
    if student.trainable == "all":  # random_init trained its own adapters
        student.controlnet.save_pretrained(model / "controlnet")
        from safetensors.torch import save_file

        save_file({n: p.detach().contiguous() for n, p in student.unet.named_parameters() if "motion_modules" in n},
                  model / "motion_modules.safetensors")
        info |= {"controlnet": str(model / "controlnet"), "motion_modules": str(model / "motion_modules.safetensors")}
    (out_dir / "model.json").write_text(json.dumps(info, indent=2) + "\n")
