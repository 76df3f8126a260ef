"""Stage `video_adapter`: the temporal layers that make the image model a video model
(METHOD.md section 2; AnimateDiff's motion modules in diffusers).

Motion modules inserted into the frozen backbone (`UNetMotionModel`): new ones (output
projections at zero) or those of the MotionAdapter `video_adapter.init` names, trained
conditioned on the first frame in the backbone's model space (shared loop: checkpoints in
`data/checkpoints/video_adapter`, resumed when interrupted), saved as a `MotionAdapter` under
`data/video_adapter/model`, and checked before and after training (train/video_adapter.py:
before training new temporal layers are zero, which is the image model sampling each frame
independently: the baseline).
Shapes: clips rendered from their own seed stream, held out from another. Full: the user's
clips, the `videos` table's train split, checked on its test split; or, with
`video_adapter.pretrained` set, that adapter (AnimateDiff's by default) resolved as it is.
Either way `data/video_adapter/model.json` says where the adapter is.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch

from ..config import Config
from ..data.splits import VIDEO_ADAPTER_EVAL_STREAM, VIDEO_ADAPTER_TRAIN_STREAM
from ..data.video import contact_sheet, display_scale, write_gif
from ..diffusion import NoiseSchedule, make_scheduler
from ..models.adapters import EditVideoModel, motion_parameters, video_adapter
from ..models.placement import Placement, module_device
from ..models.registry import build_backbone, given_teacher, load_pretrained, trained_path
from ..models.space import pixels_from_uint8
from ..train import video_adapter as tv
from ..train.loop import Objective, TrainingOutputs, epoch_batch, train

STAGE = "video_adapter"
PARAMS = ("profile", "seed", "world", "videos.fps", "diffusion", "video_adapter")
CHECKPOINTS = Path("data/checkpoints/video_adapter")
VIDEOS = Path("data/videos/videos.parquet")  # full scale: the clips it trains on


def objective(cfg: Config, backbone, model: EditVideoModel, schedule: NoiseSchedule, videos: Path) -> Objective:
    """The temporal layers learn frames 1.. of a clip from frame 0 and the caption, in the
    backbone's model space: Shapes renders fresh clips each step; at full scale the user's
    train clips are shuffled anew each epoch."""
    v, w = cfg.video_adapter, cfg.world
    if cfg.profile == "shapes":
        def batch(step: int):
            x0, captions, _ = tv.clips(w, cfg.seed, VIDEO_ADAPTER_TRAIN_STREAM, range(step * v.batch_size, (step + 1) * v.batch_size))
            return x0, captions
    else:
        frames, texts = tv.table_clips(videos, "train")

        def batch(step: int):
            idx = epoch_batch(len(frames), v.batch_size, step, cfg.seed)
            return pixels_from_uint8(frames[idx]), [texts[i] for i in idx]

    def loss(data, g):
        with torch.no_grad():  # the text encoder and the VAE are frozen
            emb = backbone.encode_text(data[1])
            x0 = backbone.space.encode(data[0].to(module_device(model.unet)))
        return tv.video_loss(model, schedule, x0, emb, g)

    return Objective({"unet": model.unet}, batch, loss, v.batch_size)


def held_out(cfg: Config, videos: Path) -> tuple[torch.Tensor, list[str], list]:
    """The check's clips (pixels), captions and Shapes scenes: rendered from the held-out
    stream, or the first `eval_clips` of the videos table's test split (no scenes)."""
    v = cfg.video_adapter
    if cfg.profile == "shapes":
        return tv.clips(cfg.world, cfg.seed, VIDEO_ADAPTER_EVAL_STREAM, range(v.eval_clips))
    frames, texts = tv.table_clips(videos, "test")
    return pixels_from_uint8(frames[: v.eval_clips]), texts[: v.eval_clips], []


def train_fingerprint(cfg: Config, backbone_dir: Path, videos: Path = VIDEOS) -> str:
    """What the temporal layers' weights depend on (their checkpoints resume only under the same
    one): the params, the backbone stage's output and, at full scale, the clips trained on."""
    return cfg.fingerprint(PARAMS, (backbone_dir,) if cfg.profile == "shapes" else (backbone_dir, videos))


def build(cfg: Config, backbone_dir: Path, out_dir: Path, checkpoints: Path = CHECKPOINTS, progress: bool = True,
          on_log: Callable[[dict[str, float]], None] | None = None, videos: Path = VIDEOS) -> TrainingOutputs:
    out_dir.mkdir(parents=True, exist_ok=True)
    v, w = cfg.video_adapter, cfg.world
    given = given_teacher(cfg, STAGE)
    if given:
        from diffusers import MotionAdapter

        load_pretrained(MotionAdapter, given, "video_adapter.pretrained")  # a clear error now, not in FDD
        (out_dir / "model.json").write_text(json.dumps({"path": given, "trained": False}, indent=2) + "\n")
        return TrainingOutputs({"trained": 0})

    truth, captions, scenes = held_out(cfg, videos)
    backbone_path = trained_path(backbone_dir)
    placement = Placement.resolve(v.train.mixed_precision)  # accelerate's device (models/placement.py)
    backbone = build_backbone(cfg, backbone_path).freeze(placement)
    base = None
    if v.init:
        from diffusers import MotionAdapter

        base = load_pretrained(MotionAdapter, v.init, "video_adapter.init")
    torch.manual_seed(v.train.seed)  # the temporal layers' initial weights
    unet = video_adapter(backbone.unet, heads=v.heads, max_frames=max(32, truth.shape[2]), base=base)
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
            return tv.check(model, backbone.encode_text, scheduler, truth, captions, scenes, cfg.seed, v.eval_steps,
                            backbone.space, w.supersample)

    before = check()  # new temporal layers at zero: every frame sampled independently (or the init adapter's)

    obj = objective(cfg, backbone, model, schedule, videos)
    result = train(obj.modules, obj.step_fn, v.train, checkpoints, progress=progress, on_log=on_log,
                   fingerprint=train_fingerprint(cfg, backbone_dir, videos), placement=placement)
    unet.requires_grad_(False)
    after = check()
    unet.save_motion_modules(str(out_dir / "model"))
    (out_dir / "model.json").write_text(json.dumps({"path": str(out_dir / "model"), "trained": True, "backbone": str(backbone_path)}, indent=2) + "\n")

    artifacts = [out_dir / "model.json"]
    n = min(v.samples, len(after.samples))
    if n:
        scale = display_scale(after.samples.shape[-2])
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
        # before training: independent frames, or the adapter training started from (video_adapter.init)
        **{f"check.{'init' if v.init else 'independent'}.{k}": round(val, 5) for k, val in before.metrics.items() if "ground_truth" not in k},
    }
    return TrainingOutputs(metrics, result.curve, artifacts)
