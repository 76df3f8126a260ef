"""Stage `backbone`: the frozen text-to-image model every adapter is trained on.

Shapes: train the tiny pixel-space UNet + text encoder (train/backbone.py) with the shared
loop (checkpoints in `data/checkpoints/backbone`, resumed when the stage is interrupted),
save it in diffusers' layout under `data/backbone/model`, and check it: DDIM samples of
held-out captions scored by the world's detector, before and after training.
Full: resolve SD 1.5 (`models.backbone.pretrained`), check that it loads, record it.
Either way `data/backbone/model.json` says where the backbone is.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from ..config import Config
from ..data.splits import BACKBONE_TRAIN_STREAM
from ..data.video import contact_sheet, display_scale
from ..diffusion import NoiseSchedule, make_scheduler
from ..models.backbone import load_backbone, tiny_backbone
from ..models.placement import Placement
from ..train import backbone as tb
from ..train.loop import Objective, TrainingOutputs, train

STAGE = "backbone"
PARAMS = ("profile", "seed", "world", "diffusion", "models.backbone", "backbone")
CHECKPOINTS = Path("data/checkpoints/backbone")



def objective(cfg: Config, backbone, schedule: NoiseSchedule) -> Objective:
    """UNet and text encoder learn v-prediction on freshly rendered captioned frames."""
    b, w = cfg.backbone, cfg.world

    def batch(step: int):
        x0, captions, _ = tb.batch(w, cfg.seed, BACKBONE_TRAIN_STREAM, range(step * b.batch_size, (step + 1) * b.batch_size))
        return x0, captions

    return Objective({"unet": backbone.unet, "text_encoder": backbone.text_encoder}, batch,
                     lambda data, g: tb.v_loss(backbone, schedule, data[0], data[1], g, b.caption_dropout, b.min_snr_gamma), b.batch_size)


def build(cfg: Config, out_dir: Path, checkpoints: Path = CHECKPOINTS, progress: bool = True,
          on_log: Callable[[dict[str, float]], None] | None = None) -> TrainingOutputs:
    out_dir.mkdir(parents=True, exist_ok=True)
    if cfg.profile == "full":
        source = cfg.models.backbone.pretrained
        load_backbone(source)  # a clear error now, not in the adapter stages
        (out_dir / "model.json").write_text(json.dumps({"path": source, "trained": False}, indent=2) + "\n")
        return TrainingOutputs({"trained": 0})

    b, w = cfg.backbone, cfg.world
    backbone = tiny_backbone(cfg.models.backbone.tiny, w.size, cfg.seed)
    placement = Placement.resolve(b.train.mixed_precision)  # accelerate's device (models/placement.py)
    placement.trained([backbone.unet, backbone.text_encoder])
    scheduler = make_scheduler(cfg.diffusion)
    schedule = NoiseSchedule.from_scheduler(scheduler)
    before = tb.check(backbone, scheduler, w, cfg.seed, b.eval_samples, b.eval_steps, b.guidance_scale)

    obj = objective(cfg, backbone, schedule)
    result = train(obj.modules, obj.step_fn, b.train, checkpoints, progress=progress, on_log=on_log, fingerprint=cfg.fingerprint(PARAMS),
                   placement=placement)
    backbone.freeze()
    model_dir = backbone.save(out_dir / "model")
    after = tb.check(backbone, scheduler, w, cfg.seed, b.eval_samples, b.eval_steps, b.guidance_scale)
    (out_dir / "model.json").write_text(json.dumps({"path": str(model_dir), "trained": True}, indent=2) + "\n")

    sheet = out_dir / "samples.png"
    n = min(16, len(after.captions))
    contact_sheet([img[None] for img in after.samples[:n]], sheet, scale=display_scale(w.size), captions=after.captions[:n])
    metrics = {
        **result.summary(b.batch_size),
        **placement.metrics(),
        "params_unet": sum(p.numel() for p in backbone.unet.parameters()),
        "params_text_encoder": sum(p.numel() for p in backbone.text_encoder.parameters()),
        "check.all_present": after.all_present,
        "check.shape_recall": after.shape_recall,
        "check.shape_recall_other_caption": after.shape_recall_other,
        "check.background": after.background,
        "check.untrained.all_present": before.all_present,
        "check.untrained.shape_recall": before.shape_recall,
        "check.untrained.shape_recall_other_caption": before.shape_recall_other,
        "check.untrained.background": before.background,
    }
    return TrainingOutputs(metrics, result.curve, [sheet, out_dir / "model.json"])
