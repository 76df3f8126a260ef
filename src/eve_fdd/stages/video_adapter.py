"""Stage `video_adapter`: the temporal layers that make the image model a video model
(METHOD.md section 2; AnimateDiff's motion modules in diffusers).

Shapes: motion modules inserted into the frozen trained backbone (`UNetMotionModel`), trained
on rendered clips, conditioned on the first frame (shared loop: checkpoints in
`data/checkpoints/video_adapter`, resumed when interrupted), saved as a `MotionAdapter` under
`data/video_adapter/model`, and checked before and after training (train/video_adapter.py:
before training the temporal layers are zero, which is the image model sampling each frame
independently: the baseline).
Full: resolve the AnimateDiff motion adapter in `video_adapter.pretrained` and record it.
Either way `data/video_adapter/model.json` says where the adapter is.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch

from ..config import Config
from ..data.splits import VIDEO_ADAPTER_TRAIN_STREAM
from ..data.video import contact_sheet, display_scale, write_gif
from ..diffusion import NoiseSchedule, make_scheduler
from ..models.adapters import EditVideoModel, motion_parameters, video_adapter
from ..models.placement import Placement
from ..models.registry import build_backbone, trained_path
from ..train import video_adapter as tv
from ..train.loop import Objective, TrainingOutputs, train

STAGE = "video_adapter"
PARAMS = ("profile", "seed", "world", "videos.fps", "diffusion", "video_adapter")
CHECKPOINTS = Path("data/checkpoints/video_adapter")


def objective(cfg: Config, backbone, model: EditVideoModel, schedule: NoiseSchedule) -> Objective:
    """The temporal layers learn frames 1.. of freshly rendered clips from frame 0 and the caption."""
    v, w = cfg.video_adapter, cfg.world

    def batch(step: int):
        x0, captions, _ = tv.clips(w, cfg.seed, VIDEO_ADAPTER_TRAIN_STREAM, range(step * v.batch_size, (step + 1) * v.batch_size))
        return x0, captions

    def loss(data, g):
        with torch.no_grad():  # the text encoder is frozen
            emb = backbone.encode_text(data[1])
        return tv.video_loss(model, schedule, data[0], emb, g)

    return Objective({"unet": model.unet}, batch, loss, v.batch_size)


def build(cfg: Config, backbone_dir: Path, out_dir: Path, checkpoints: Path = CHECKPOINTS, progress: bool = True,
          on_log: Callable[[dict[str, float]], None] | None = None) -> TrainingOutputs:
    out_dir.mkdir(parents=True, exist_ok=True)
    v, w = cfg.video_adapter, cfg.world
    if cfg.profile == "full":
        from diffusers import MotionAdapter

        MotionAdapter.from_pretrained(v.pretrained)  # a clear error now, not in FDD
        (out_dir / "model.json").write_text(json.dumps({"path": v.pretrained, "trained": False}, indent=2) + "\n")
        return TrainingOutputs({"trained": 0})

    backbone_path = trained_path(backbone_dir)
    placement = Placement.resolve(v.train.mixed_precision)  # accelerate's device (models/placement.py)
    backbone = build_backbone(cfg, backbone_path).freeze(placement)
    unet = video_adapter(backbone.unet, heads=v.heads, max_frames=max(32, w.frames))
    unet.requires_grad_(False)
    for p in motion_parameters(unet):
        p.requires_grad_(True)
    placement.trained([unet])
    model = EditVideoModel(unet)
    scheduler = make_scheduler(cfg.diffusion)
    schedule = NoiseSchedule.from_scheduler(scheduler)

    def check():
        unet.eval()
        with placement.inference():
            return tv.check(model, backbone.encode_text, scheduler, w, cfg.seed, v.eval_clips, v.eval_steps)

    before = check()  # temporal layers at zero: every frame sampled independently

    obj = objective(cfg, backbone, model, schedule)
    weights = Path(backbone_path) / "unet" / "diffusion_pytorch_model.safetensors"
    result = train(obj.modules, obj.step_fn, v.train, checkpoints, progress=progress, on_log=on_log,
                   fingerprint=cfg.fingerprint(PARAMS, (weights,)), placement=placement)
    unet.requires_grad_(False)
    after = check()
    unet.save_motion_modules(str(out_dir / "model"))
    (out_dir / "model.json").write_text(json.dumps({"path": str(out_dir / "model"), "trained": True, "backbone": str(backbone_path)}, indent=2) + "\n")

    artifacts = [out_dir / "model.json"]
    n = min(v.samples, len(after.samples))
    if n:
        scale = display_scale(w.size)
        sheet = out_dir / "samples.png"
        rows = [clip for i in range(n) for clip in (after.truth[i], after.samples[i], before.samples[i])]
        labels = [f"{kind}: {after.captions[i]}" for i in range(n) for kind in ("ground truth", "video adapter", "independent frames")]
        contact_sheet(rows, sheet, scale=scale, captions=labels)
        artifacts.append(sheet)
        for i in range(n):
            gif = out_dir / "samples" / f"clip-{i:02d}.gif"
            gif.parent.mkdir(parents=True, exist_ok=True)
            write_gif(after.samples[i], gif, fps=cfg.videos.fps, scale=scale)
            artifacts.append(gif)
    metrics = {
        **result.summary(v.batch_size),
        **placement.metrics(),
        "params_motion": sum(p.numel() for p in motion_parameters(unet)),
        **{f"check.{k}": round(val, 5) for k, val in after.metrics.items()},
        **{f"check.independent.{k}": round(val, 5) for k, val in before.metrics.items() if "ground_truth" not in k},
    }
    return TrainingOutputs(metrics, result.curve, artifacts)
