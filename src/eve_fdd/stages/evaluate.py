"""Stages `evaluate` (DVC foreach over the FDD variants) and `baselines` (foreach over
`evaluate.baselines`): edit the held-out data points with one method and score them with the
same code (METHOD.md section 7; Shapes: section 10).

Held-out data points: accepted instructions on test-split videos (never used in training),
`evaluate.items` of them spread evenly over the tasks. Methods: an FDD variant's student
(distill/editor.py: first frame by the edit teacher, the rest by the student), or a baseline
(evaluate/baselines.py: `input` = the input returned unchanged, `edit_frames`, `sdedit_<NN>` =
SDEdit at noise level NN/100).
Scores, per task and their mean (every task weighing the same):
- `gt.*` (Shapes ground truth): fidelity on all / changed / kept pixels, temporal error, frame
  change (evaluate/video_edits.py), PSNR and SSIM (evaluate/fidelity.py);
- `paper.*`: CLIPFrame, PickScore, ViCLIP_out, ViCLIP_dir with the models of stage
  `metric_models` (evaluate/paper_metrics.py).
Outputs: `data/evaluate/<method>/edits.npy` (uint8 (N, F, H, W, 3), the edited clips in
data-point order, for the report's grids and the human-evaluation export), `scores.json`
(every score per data point, for the report's paired differences), a contact sheet, and the
metrics.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import FDD_VARIANTS, Config
from ..data import tables
from ..data.benchmark import read_benchmark
from ..data.video import contact_sheet, display_scale
from ..diffusion import NoiseSchedule, inference_timesteps, make_scheduler
from ..distill.batch import EditBatch
from ..distill.data import Clips, FddItems, data_fn, ground_truth, has_ground_truth, load_items
from ..distill.editor import eval_key, eval_noise_seed, load_editor, saved_edits
from ..distill.teachers import ConceptTeacher, EditTeacher
from ..evaluate import per_task_means
from ..evaluate.baselines import edit_frames, sdedit
from ..evaluate.fidelity import psnr_ssim
from ..evaluate.paper_metrics import MetricModels, load_image_text, load_video_text, paper_metrics
from ..evaluate.video_edits import video_errors
from ..models.placement import Placement
from ..models.registry import build_backbone, load_edit_adapter, trained_path
from ..models.space import pixels_from_uint8
from ..train.edit_adapter import round_robin
from ..train.video_adapter import clips_to_uint8

# what dvc.yaml declares (not evaluate.baselines: adding a baseline reruns no other method)
PARAMS = ("profile", "seed", "world", "videos.ingest", "diffusion", "fdd.teacher_guidance",
          "fdd.inference_guidance", "fdd.mixed_precision", "evaluate.items", "evaluate.seed", "evaluate.batch_size",
          "evaluate.metric_batch_size", "evaluate.samples", "evaluate.benchmark")
BASELINE_PARAMS = PARAMS + ("backbone.guidance_scale",)
Edit = Callable[[EditBatch, torch.Generator], torch.Tensor]


def stage_of(method: str) -> str:
    """`evaluate` for an FDD variant, `baselines` for a baseline (as dvc.yaml names them)."""
    return "evaluate" if method in FDD_VARIANTS else "baselines"


def sdedit_level(method: str) -> float:
    """`sdedit_75` -> 0.75."""
    try:
        level = int(method.removeprefix("sdedit_")) / 100
    except ValueError:
        raise ValueError(f"baseline {method!r}: SDEdit is named sdedit_<NN>, NN the noise level in percent (e.g. sdedit_75)") from None
    if not 0 < level <= 1:
        raise ValueError(f"baseline {method!r}: the noise level must be in (0, 1], got {level}")
    return level


@dataclass
class Dirs:
    instructions: Path
    videos: Path
    backbone: Path
    edit_adapter: Path
    video_adapter: Path
    fdd: Path  # data/fdd: one directory per variant
    metric_models: Path  # data/metric_models: clip/, xclip/


def held_out(cfg: Config, dirs: Dirs) -> FddItems:
    """What the methods edit: the benchmark of `evaluate.benchmark` when it names a CSV (all of
    its items; its rejects counted in `skipped`), else `evaluate.items` held-out data points of
    the video set, spread over the tasks."""
    if cfg.evaluate.benchmark.csv:
        return benchmark_items(cfg)[0]
    items = load_items(dirs.instructions, dirs.videos, "test")
    if not len(items):
        raise ValueError(f"{dirs.instructions}: no accepted instruction on a test-split video; nothing to evaluate")
    return items.take(round_robin(items.tasks, cfg.evaluate.items))


def benchmark_items(cfg: Config) -> tuple[FddItems, list[dict]]:
    """The benchmark's items as data points (no scene: scored by the paper's metrics) and its rejects."""
    b = cfg.evaluate.benchmark
    root = Path(b.dir)
    found, rejects = read_benchmark(root / b.csv, root / b.videos, cfg.videos.ingest, stage="evaluate")
    if not found:
        raise ValueError(f"{root / b.csv}: no usable item ({len(rejects)} rejected: "
                         f"{dict(Counter(r['reason'] for r in rejects))}); nothing to evaluate")
    items = FddItems(row_ids=[i.row_id for i in found], video_ids=[i.video_id for i in found], tasks=[i.task for i in found],
                     instructions=[i.instruction for i in found], input_captions=[i.input_caption for i in found],
                     output_captions=[i.output_caption for i in found], edit_specs=[None] * len(found), scenes=[None] * len(found),
                     frames=Clips.shared(found, lambda i: i.video_id, lambda i: i.frames),
                     skipped={f"benchmark_{k}": v for k, v in Counter(r["reason"] for r in rejects).items()})
    return items, rejects


def method_editor(cfg: Config, method: str, dirs: Dirs, placement: Placement | None = None) -> tuple[Edit, Any]:
    """The method's edit function (EditBatch, generator) -> edited clips in pixels (decoded
    from the model's space; `input` returns the input's own pixels), and the backbone (whose
    text encoder reads the data points); the models placed by `placement` (CPU, float32 when None)."""
    placement = placement or Placement()
    if method in FDD_VARIANTS:
        editor = load_editor(cfg, dirs.fdd / method, dirs.backbone, dirs.edit_adapter, dirs.video_adapter, placement)
        return (lambda batch, g: editor.space.decode(editor.edit_batch(batch, g))), editor.backbone
    backbone = build_backbone(cfg, trained_path(dirs.backbone)).freeze(placement)
    space = backbone.space
    scheduler = make_scheduler(cfg.diffusion)
    schedule = NoiseSchedule.from_scheduler(scheduler)
    timesteps = inference_timesteps(scheduler, cfg.diffusion.inference_steps)
    if method == "input":
        return (lambda batch, g: batch.condition.clone()), backbone
    if method == "edit_frames":
        controlnet = load_edit_adapter(dirs.edit_adapter, backbone)
        with torch.no_grad():
            teacher = EditTeacher(backbone.unet, controlnet, schedule, cfg.fdd.teacher_guidance, backbone.encode_text([""]))
        return (lambda batch, g: space.decode(edit_frames(teacher, batch, timesteps, g))), backbone
    if method.startswith("sdedit_"):
        level = sdedit_level(method)
        with torch.no_grad():
            denoiser = ConceptTeacher(backbone.unet, schedule, cfg.backbone.guidance_scale, backbone.encode_text([""]))
        return (lambda batch, g: space.decode(sdedit(denoiser, schedule, batch, timesteps, level, g))), backbone
    raise ValueError(f"evaluate: unknown method {method!r}; expected an FDD variant {list(FDD_VARIANTS)}, "
                     "input, edit_frames or sdedit_<NN>")


def load_metric_models(directory: Path, placement: Placement | None = None) -> MetricModels:
    info = {}
    for kind in ("clip", "xclip"):
        path = directory / kind / "model.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: not found; run `dvc repro metric_models` first")
        info[kind] = json.loads(path.read_text())
    clip = info["clip"]
    image_text = load_image_text(clip["path"])
    pick = image_text if clip["pick"] == clip["path"] else load_image_text(clip["pick"], clip.get("pick_processor"))
    models = MetricModels(image_text, pick, load_video_text(info["xclip"]["path"]))
    if placement is not None:
        placement.frozen(models.image_text.model, models.pick.model, models.video_text.model)
    return models


def score(items: FddItems, edited: np.ndarray, cfg: Config, models: MetricModels) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """`paper.*` means per task and overall for uint8 edited clips of `items`, and `gt.*` where
    the items have a ground truth (Shapes; the user's own clips have none); and every score per
    data point (the report pairs methods by data point)."""
    paper = paper_metrics(models, edited, items.frames, items.input_captions, items.output_captions, cfg.evaluate.metric_batch_size)
    per_item = {f"paper.{k}": np.asarray(v, dtype=float) for k, v in paper.items()}
    if has_ground_truth(items):
        w = cfg.world
        truth = np.stack([ground_truth(items, i, w.frames, w.size, w.supersample, edited=edited[i], speed=w.speed)
                          for i in range(len(items))])
        gt = video_errors(pixels_from_uint8(edited), pixels_from_uint8(items.frames), pixels_from_uint8(truth)) | psnr_ssim(edited, truth)
        per_item = {f"gt.{k}": np.asarray(v, dtype=float) for k, v in gt.items()} | per_item
    return per_task_means(per_item, items.tasks), per_item


def write_scores(path: Path, items: FddItems, method: str, per_item: dict[str, np.ndarray]) -> None:
    """`scores.json`: each data point's scores (null where a region is empty), by row id."""
    clean = {k: [None if not np.isfinite(x) else round(float(x), 6) for x in v] for k, v in per_item.items()}
    path.write_text(json.dumps({"method": method, "row_ids": items.row_ids, "tasks": items.tasks, "scores": clean}) + "\n")


def fdd_edits(cfg: Config, method: str, dirs: Dirs, items: FddItems) -> np.ndarray | None:
    """An FDD variant's held-out edits as stage fdd saved them, when they are of these items
    with this stage's noise (the same seed and batching) and inference settings: the same
    edits this stage would make, so it scores them instead of making them again."""
    if method not in FDD_VARIANTS:
        return None
    return saved_edits(dirs.fdd / method, eval_key(cfg, items.row_ids, cfg.evaluate.seed, cfg.evaluate.batch_size))


def edit_items(cfg: Config, method: str, dirs: Dirs, items: FddItems, placement: Placement,
               progress: bool) -> tuple[np.ndarray, dict[str, int]]:
    """The method's edits of `items` (uint8, in order) and its text encoder's counts."""
    from tqdm.auto import tqdm

    edit, backbone = method_editor(cfg, method, dirs, placement)
    load = data_fn(items, backbone.encode_text, backbone.space)
    g = torch.Generator().manual_seed(eval_noise_seed(cfg.evaluate.seed))  # stage fdd's evaluation draws the same noise
    size = cfg.evaluate.batch_size
    chunks = [list(range(i, min(i + size, len(items)))) for i in range(0, len(items), size)]
    edited = []
    with torch.no_grad():
        for index in tqdm(chunks, desc=f"edit ({method})", unit="batch", disable=not progress):
            edited.append(clips_to_uint8(edit(load(index), g)))
    return np.concatenate(edited), backbone.text_metrics()


def build(cfg: Config, method: str, dirs: Dirs, out_dir: Path, progress: bool = True) -> tuple[dict[str, float | str], list[Path]]:
    """Every model on accelerate's device, in the precision `fdd.mixed_precision` gives (models/placement.py)."""
    placement = Placement.resolve(cfg.fdd.mixed_precision)
    with placement.inference():  # the training steps open bf16 autocast themselves
        return _build(cfg, method, dirs, out_dir, progress, placement)


def _build(cfg: Config, method: str, dirs: Dirs, out_dir: Path, progress: bool, placement: Placement) -> tuple[dict[str, float | str], list[Path]]:
    items, rejects = benchmark_items(cfg) if cfg.evaluate.benchmark.csv else (held_out(cfg, dirs), [])
    models = load_metric_models(dirs.metric_models, placement)
    start = time.perf_counter()
    edited_u8, text = fdd_edits(cfg, method, dirs, items), {}
    reused = edited_u8 is not None
    if not reused:
        edited_u8, text = edit_items(cfg, method, dirs, items, placement, progress)
    edit_seconds = time.perf_counter() - start
    start = time.perf_counter()
    means, per_item = score(items, edited_u8, cfg, models)
    metrics = {"items": len(items), **placement.metrics(trains=False), **means, **text,
               "edits.reused": float(reused), **{f"skipped.{k}": v for k, v in items.skipped.items()}}
    metrics |= {"seconds.edit": round(edit_seconds, 1), "seconds.score": round(time.perf_counter() - start, 1)}

    out_dir.mkdir(parents=True, exist_ok=True)
    if cfg.evaluate.benchmark.csv:  # the benchmark's rejects, kept beside the edits
        tables.write_table(tables.REJECTS, rejects, out_dir / "benchmark_rejects.parquet")
    np.save(out_dir / "edits.npy", edited_u8, allow_pickle=False)
    (out_dir / "items.json").write_text(json.dumps({"method": method, "row_ids": items.row_ids, "tasks": items.tasks}, indent=1) + "\n")
    write_scores(out_dir / "scores.json", items, method, per_item)
    artifacts = [out_dir / "items.json", out_dir / "scores.json"]
    n = min(cfg.evaluate.samples, len(items))
    if n:
        sheet = out_dir / "samples.png"
        rows, labels = [], []
        for j in round_robin(items.tasks, n):
            rows += [items.frames[j], edited_u8[j]]
            labels += [f"input: {items.input_captions[j]}", f"{method} | {items.tasks[j]}: {items.instructions[j]}"]
        contact_sheet(rows, sheet, scale=display_scale(cfg.frame_size), captions=labels)
        artifacts.append(sheet)
    return metrics, artifacts
