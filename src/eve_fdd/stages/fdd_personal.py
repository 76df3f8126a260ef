"""Stage `fdd_personal` (one DVC foreach entry per concept of `fdd_personal.concepts`, each a LoRA of `loras.concepts`): FDD aligning the
edit adapter with a subject or style LoRA (METHOD.md section 8, "other adapters"; data:
section 3).

Teachers: the edit teacher (the bare backbone + the edit ControlNet) and the concept teacher
(the backbone with the concept's LoRA fused in, classifier-free guided). Student: that fused
backbone + the frozen ControlNet + a new LoRA, trained by the same FDD iteration as stage
`fdd` (distill/), on single images: the concept teacher stands where the video teacher
stands, with its own discriminator.
Data: the concept's accepted subject/style instructions. A seeded share
(`fdd_personal.held_out`, drawn with the top-level seed so every fdd.seed holds out the same
ones) is kept for the evaluation; the inputs of the rest are drawn by the concept teacher
from their input captions (no image is stored, as in the paper).
Evaluation, the paper's three settings on the held-out instructions: the rendered scene is
edited by (i) the edit adapter alone (`edit_only`), (ii) both adapters attached without
alignment (`plug_and_play`), (iii) the aligned student (`aligned`), from the same noise, and
each is scored for fidelity (changed/kept-pixel error against the Shapes ground truth) and for
concept presence (the concept classifier stage `loras` checks with, evaluate/concepts.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import Config, FddPersonalConfig
from ..data.splits import CONCEPT_DETECTOR_EVAL_STREAM, CONCEPT_DETECTOR_TRAIN_STREAM
from ..data.video import contact_sheet, display_scale
from ..diffusion import NoiseSchedule, inference_timesteps, make_scheduler
from ..distill import variants
from ..distill.data import FddItems, data_fn, draw_inputs, ground_truth, has_ground_truth, load_concept_items, split_items
from ..distill.fdd import FDD
from ..distill.pool import TeacherPool
from ..distill.run import ProgressSamples, RunSettings, discriminators, timestep_plot, train_fdd
from ..distill.student import Student
from ..distill.teachers import ConceptTeacher, EditTeacher, lora_off, with_lora_merged
from ..evaluate import per_task_means
from ..evaluate.concepts import ConceptDetector, train_detector
from ..models.adapters import frames_to_batch, load_token_embeddings
from ..models.placement import Placement, randn
from ..models.registry import build_backbone, feature_network, load_edit_adapter, trained_path
from ..models.space import pixels_from_uint8
from ..train.edit_adapter import region_errors, round_robin
from ..train.loop import TrainingOutputs
from ..train.video_adapter import clips_to_uint8

STAGE = "fdd_personal"
# fdd's knobs this stage shares (the losses, schedule, k, discriminators, LoRA rank, seed)
SHARED = ("seed", "k", "kbin_first", "sds_only_fraction", "alpha", "beta", "lam", "sds_weighting", "sds_t_range", "sds_t_range_second",
          "lora_rank", "lora_targets", "grad_clip", "gradient_checkpointing", "mixed_precision", "teacher_steps", "discriminator", "checkpoint_every", "log_every", "sample_every")
PARAMS = ("profile", "seed", "world", "videos.ingest.size", "diffusion", "loras.concepts",
          "loras.detector_steps", "loras.detector_renders", *(f"fdd.{k}" for k in SHARED),
          *(f"fdd_personal.{k}" for k in FddPersonalConfig.model_fields if k != "concepts"))  # as dvc.yaml: adding a concept reruns no other
LORA = "fdd"
SETTINGS = ("edit_only", "plug_and_play", "aligned")


def checkpoints_for(concept: str) -> Path:
    return Path("data/checkpoints/fdd_personal") / concept


def concept_backbone(cfg: Config, concept: str, backbone_dir: Path, lora_dir: Path, placement: Placement | None = None) -> tuple[Any, str]:
    """The frozen backbone, with the concept words' token embeddings that stage `loras` learned
    with the LoRA (if it did), and the LoRA's directory, from `lora_dir/model.json`."""
    lora_json = Path(lora_dir) / "model.json"
    if not lora_json.is_file():
        raise FileNotFoundError(f"fdd_personal: {lora_json} not found; run stage loras@{concept} first")
    info = json.loads(lora_json.read_text())
    backbone = build_backbone(cfg, trained_path(backbone_dir)).freeze(placement)
    if info.get("token_embeddings"):
        load_token_embeddings(backbone.text_encoder, backbone.tokenizer, info["token_embeddings"])
    return backbone, info["path"]


def build(cfg: Config, concept: str, instructions: Path, videos: Path, backbone_dir: Path, edit_dir: Path, lora_dir: Path,
          out_dir: Path, checkpoints: Path | None = None, progress: bool = True,
          on_log: Callable[[dict[str, float]], None] | None = None, features_dir: Path | None = None) -> TrainingOutputs:
    """Every model on accelerate's device, in the precision `fdd.mixed_precision` gives (models/placement.py).
    `features_dir`: stage features' output, the discriminators' feature network (None: the
    network that stage records untrained: DINOv2, or Shapes' seeded random one)."""
    if concept not in cfg.loras.concepts:
        raise ValueError(f"fdd_personal: {concept!r} is not in loras.concepts {list(cfg.loras.concepts)}")
    placement = Placement.resolve(cfg.fdd.mixed_precision)
    with placement.inference():  # the training steps open bf16 autocast themselves
        return _build(cfg, concept, instructions, videos, backbone_dir, edit_dir, lora_dir, out_dir, checkpoints, progress, on_log,
                      placement, features_dir)


def _build(cfg: Config, concept: str, instructions: Path, videos: Path, backbone_dir: Path, edit_dir: Path, lora_dir: Path,
           out_dir: Path, checkpoints: Path | None, progress: bool, on_log: Callable[[dict[str, float]], None] | None,
           placement: Placement, features_dir: Path | None = None) -> TrainingOutputs:
    f, p, w = cfg.fdd, cfg.fdd_personal, cfg.world
    backbone, lora_path = concept_backbone(cfg, concept, backbone_dir, lora_dir, placement)
    space = backbone.space
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoints = checkpoints or checkpoints_for(concept)
    torch.manual_seed(f.seed)

    controlnet = load_edit_adapter(edit_dir, backbone)
    scheduler = make_scheduler(cfg.diffusion)
    schedule = NoiseSchedule.from_scheduler(scheduler)
    concept_unet = with_lora_merged(backbone.unet, lora_path, concept)
    edit_teacher = EditTeacher(backbone.unet, controlnet, schedule)
    concept_teacher = ConceptTeacher(concept_unet, schedule, p.guidance_scale, backbone.encode_text([""]))
    student = Student(concept_unet, controlnet, schedule, lora_name=LORA, lora_rank=f.lora_rank, lora_targets=f.lora_targets,
                      gradient_checkpointing=f.gradient_checkpointing, first_frame=False)

    items = load_concept_items(instructions, videos, concept, cfg.frame_size, w.supersample)
    train_items, test_items = split_items(items, p.held_out, cfg.seed)
    teacher_steps = inference_timesteps(scheduler, f.teacher_steps)
    train_items = replace(train_items, frames=draw_inputs(train_items, concept_teacher, backbone.encode_text, teacher_steps, f.seed,
                                                          space=space))
    if not has_ground_truth(test_items):  # the user's own set: the held-out inputs are drawn too (no scene to render)
        test_items = replace(test_items, frames=draw_inputs(test_items, concept_teacher, backbone.encode_text, teacher_steps,
                                                            f.seed + 1, space=space))
    metrics: dict[str, float | str] = {**placement.metrics(), "train_items": len(train_items), "eval_items": len(test_items),
                                 **{f"skipped.{k}": v for k, v in items.skipped.items()}}

    settings = variants.settings(f, "full", cfg.diffusion.inference_steps, iterations=p.iterations)
    d_edit, d_concept = discriminators(f.discriminator, backbone.text_encoder.config.hidden_size, 1, feature_network(cfg, placement, features_dir))
    fdd = FDD(student, edit_teacher, concept_teacher, d_edit, d_concept, scheduler, schedule, settings, space)
    pool = TeacherPool(data_fn(train_items, backbone.encode_text, space), len(train_items), edit_teacher, concept_teacher,
                       teacher_steps, p.pool_size, p.pool_refresh, f.seed)
    run = RunSettings(p.iterations, p.batch_size, p.lr, f.grad_clip, f.checkpoint_every, f.log_every, f.gradient_checkpointing,
                      f.seed, f.discriminator.lr, f.micro_batches)
    scale = display_scale(cfg.frame_size)
    samples = ProgressSamples(out_dir / "progress", fps=1, scale=scale, space=space)
    inputs = (instructions, videos, backbone_dir, edit_dir, lora_dir, *(() if features_dir is None else (features_dir,)))
    result, timesteps = train_fdd(fdd, pool, run, checkpoints, cfg.fingerprint(PARAMS, inputs) + concept, progress, on_log, samples, f.sample_every,
                                  placement)
    metrics.update(result.summary(p.batch_size))
    metrics["pool.generated"] = pool.generated
    student.unet.requires_grad_(False)
    model = out_dir / "model"
    student.unet.save_lora_adapter(str(model / "lora"), adapter_name=LORA)
    (out_dir / "model.json").write_text(json.dumps({"concept": concept, "lora": str(model / "lora"), "concept_lora": lora_path,
                                                    "edit_adapter": str(trained_path(edit_dir))}, indent=2) + "\n")

    detector = None
    if has_ground_truth(test_items):  # Shapes: the concept classifier the LoRA check reads samples with
        detector = train_detector(concept, w, cfg.seed, CONCEPT_DETECTOR_TRAIN_STREAM, CONCEPT_DETECTOR_EVAL_STREAM,
                                  count=cfg.loras.detector_renders, steps=cfg.loras.detector_steps)
    found, rows, labels, per_row = evaluate(student, edit_teacher, backbone, scheduler, test_items, cfg, detector)
    metrics.update(found)
    metrics.update(backbone.text_metrics())
    artifacts = [out_dir / "model.json", *samples.paths, *timestep_plot(timesteps, scheduler, out_dir, f"fdd_personal@{concept}")]
    n = min(p.samples, len(rows) // per_row)
    if n:
        sheet = out_dir / "samples.png"
        contact_sheet(rows[: per_row * n], sheet, scale=scale, captions=labels[: per_row * n])
        artifacts.append(sheet)
    # the drawn training inputs, so a reader sees what the LoRA made from the input captions
    drawn = out_dir / "drawn_inputs.png"
    contact_sheet([train_items.frames[i] for i in range(min(16, len(train_items)))], drawn, scale=scale,
                  captions=train_items.input_captions[:16])
    artifacts.append(drawn)
    return TrainingOutputs(metrics, result.curve, artifacts)


@torch.no_grad()
def evaluate(student: Student, edit_teacher: EditTeacher, backbone: Any, scheduler: Any, items: FddItems, cfg: Config,
             detector: ConceptDetector | None, chunk: int = 16) -> tuple[dict[str, float], list[np.ndarray], list[str], int]:
    """Each held-out instruction `eval_repeats` times, edited in the three settings from the
    same noise. With a ground truth (Shapes) each is scored per task: `eval.<setting>.{all,
    changed,kept}` (error against the ground truth) and `eval.<setting>.present` (the concept
    classifier's verdict); the same for the input itself (`eval.identity.*`) and the
    classifier on the ground truth (`eval.ground_truth.present`, its recall on what a right
    answer looks like). Without one (the user's own set) the edits are only shown. Returns the
    metrics, contact-sheet rows, their labels and the rows per instruction."""
    w, p = cfg.world, cfg.fdd_personal
    space = backbone.space
    timesteps = inference_timesteps(scheduler, cfg.diffusion.inference_steps)
    reps = items.take([i for i in range(len(items)) for _ in range(p.eval_repeats)])
    load = data_fn(reps, backbone.encode_text, space)
    g = torch.Generator().manual_seed(cfg.fdd.seed * 7919 + 11)
    out: dict[str, list[torch.Tensor]] = {name: [] for name in SETTINGS}
    for i in range(0, len(reps), chunk):
        batch = load(list(range(i, min(i + chunk, len(reps)))))
        noise = randn(batch.source.shape, g, like=batch.source)  # one draw for the three settings
        out["edit_only"].append(space.decode(edit_teacher.sample(noise, batch, timesteps)).cpu())
        with lora_off(student.unet):
            out["plug_and_play"].append(space.decode(student.generate(noise, batch, timesteps)).cpu())
        out["aligned"].append(space.decode(student.generate(noise, batch, timesteps)).cpu())
    source = pixels_from_uint8(reps.frames)
    edited = {name: torch.cat(xs) for name, xs in out.items()} | {"identity": source}
    metrics: dict[str, float] = {"eval.ground_truth": float(detector is not None)}
    u8 = {name: clips_to_uint8(x) for name, x in edited.items()}
    if detector is not None:
        truth = pixels_from_uint8(np.stack([ground_truth(reps, j, 1, w.size, w.supersample, allow_reserved=True) for j in range(len(reps))]))
        for name, x in edited.items():
            errors = region_errors(frames_to_batch(x), frames_to_batch(source), frames_to_batch(truth))
            errors["present"] = detector(u8[name][:, 0]).astype(float)
            metrics |= {f"eval.{name}.{k}": v for k, v in per_task_means(errors, reps.tasks).items()}
        truth_present = {"present": detector(clips_to_uint8(truth)[:, 0]).astype(float)}
        metrics |= {f"eval.ground_truth.{k}": v for k, v in per_task_means(truth_present, reps.tasks).items()}
        metrics["eval.detector_accuracy"] = round(detector.held_out_accuracy, 5)
        u8["truth"] = clips_to_uint8(truth)

    names = ["identity", "edit_only", "plug_and_play", "aligned"] + (["truth"] if "truth" in u8 else [])
    rows: list[np.ndarray] = []
    labels: list[str] = []
    for j in (i * p.eval_repeats for i in round_robin(items.tasks, len(items))):  # the first draw of each, tasks in turn
        rows += [u8[name][j] for name in names]
        labels += [f"input: {reps.input_captions[j]}", f"edit adapter: {reps.instructions[j]}", "plug-and-play", "aligned",
                   "ground truth"][: len(names)]
    return metrics, rows, labels, len(names)
