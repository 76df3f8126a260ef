"""Stage `edit_adapter`: the ControlNet that edits single images (METHOD.md section 2).

A ControlNet copied from the backbone's down/mid blocks (or started from the ControlNet
`edit_adapter.init` names), with a task-label embedding, trained on the `edit_pairs` train
split with the backbone frozen, in the backbone's model space (Shapes: pixels; full: SD's VAE
latents, the input image conditioning the ControlNet in pixels). As EVE trains it: the output
caption to the backbone, the instruction, input image and task label to the ControlNet.
Shared loop: checkpoints in `data/checkpoints/edit_adapter`, resumed when interrupted; saved
under `data/edit_adapter/model` and checked on the held-out pairs per task against the
"return the input unchanged" baseline (train/edit_adapter.py says how).
Or, at full scale with `edit_adapter.pretrained` set, that ControlNet is resolved and recorded
as it is (models.registry.given_teacher).
Either way `data/edit_adapter/model.json` says where the adapter is.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch

from ..config import Config
from ..data import tables
from ..data.video import contact_sheet, display_scale
from ..diffusion import NoiseSchedule, make_scheduler
from ..models.adapters import EditVideoModel, edit_adapter
from ..models.placement import Placement
from ..models.registry import build_backbone, given_teacher, load_pretrained, trained_path
from ..models.space import check_compatible
from ..train import edit_adapter as te
from ..train.loop import Objective, TrainingOutputs, epoch_batch, train

STAGE = "edit_adapter"
PARAMS = ("profile", "seed", "world.size", "diffusion", "edit_adapter")
# what the trained weights depend on: a change to the check's knobs (guidance, eval pairs,
# samples) resumes from the finished checkpoint and only re-runs the check
TRAIN_PARAMS = ("profile", "seed", "diffusion", "edit_adapter.train", "edit_adapter.batch_size", "edit_adapter.init",
                "edit_adapter.conditioning_channels", "edit_adapter.text_dropout")
CHECKPOINTS = Path("data/checkpoints/edit_adapter")



def objective(cfg: Config, backbone, model: EditVideoModel, schedule: NoiseSchedule, pairs: te.EditPairs) -> Objective:
    """The ControlNet learns the edited image from the input image, instruction and task
    (the backbone frozen), over the pairs shuffled anew each epoch."""
    e = cfg.edit_adapter
    return Objective({"controlnet": model.controlnet},
                     lambda step: pairs.take(epoch_batch(len(pairs), e.batch_size, step, cfg.seed)),
                     lambda batch, g: te.edit_loss(backbone, model, schedule, batch, g, e.text_dropout), e.batch_size)


def train_fingerprint(cfg: Config, backbone_dir: Path, pairs_path: Path) -> str:
    """What the adapter's weights depend on (its checkpoints resume only under the same one):
    its params, the backbone stage's output and the pairs."""
    return cfg.fingerprint(TRAIN_PARAMS, (backbone_dir, pairs_path))


def build(cfg: Config, pairs_path: Path, backbone_dir: Path, out_dir: Path, checkpoints: Path = CHECKPOINTS,
          progress: bool = True, on_log: Callable[[dict[str, float]], None] | None = None) -> TrainingOutputs:
    out_dir.mkdir(parents=True, exist_ok=True)
    e = cfg.edit_adapter
    given = given_teacher(cfg, STAGE)
    if given:
        from diffusers import ControlNetModel

        load_pretrained(ControlNetModel, given, "edit_adapter.pretrained")  # a clear error now, not in FDD
        (out_dir / "model.json").write_text(json.dumps({"path": given, "trained": False}, indent=2) + "\n")
        return TrainingOutputs({"trained": 0})
    if tables.count_rows(pairs_path) == 0:
        raise ValueError(f"{pairs_path}: no edit pairs to train the edit adapter on; give an image-edit dataset "
                         "(edit_pairs.ingest.source) or a ControlNet to use as it is (edit_adapter.pretrained)")

    backbone_path = trained_path(backbone_dir)
    placement = Placement.resolve(e.train.mixed_precision)  # accelerate's device (models/placement.py)
    backbone = build_backbone(cfg, backbone_path).freeze(placement)
    base = None
    if e.init:
        from diffusers import ControlNetModel

        base = load_pretrained(ControlNetModel, e.init, "edit_adapter.init")
    torch.manual_seed(e.train.seed)  # the new layers' initial weights (task embedding, condition encoder)
    controlnet = edit_adapter(backbone.unet, e.conditioning_channels, base)
    check_compatible(backbone.space, backbone.unet, controlnet, "edit_adapter.init" if e.init else "edit_adapter.conditioning_channels")
    placement.trained([controlnet])
    model = EditVideoModel(backbone.unet, controlnet)
    scheduler = make_scheduler(cfg.diffusion)
    schedule = NoiseSchedule.from_scheduler(scheduler)
    train_pairs, test_pairs = te.load_pairs(pairs_path, "train"), te.load_pairs(pairs_path, "test")
    test_pairs = test_pairs.take(te.round_robin(test_pairs.tasks, e.eval_pairs))  # every task, evenly

    obj = objective(cfg, backbone, model, schedule, train_pairs)
    # the backbone stage's output (Shapes: its weights; full: model.json naming the pretrained backbone)
    result = train(obj.modules, obj.step_fn, e.train, checkpoints, progress=progress, on_log=on_log,
                   fingerprint=train_fingerprint(cfg, backbone_dir, pairs_path), placement=placement)
    controlnet.requires_grad_(False).eval()
    controlnet.save_pretrained(out_dir / "model")
    (out_dir / "model.json").write_text(json.dumps({"path": str(out_dir / "model"), "trained": True, "backbone": str(backbone_path)}, indent=2) + "\n")

    with placement.inference():
        found = te.check(backbone, model, scheduler, test_pairs, e.eval_steps, cfg.seed, e.samples, e.guidance_scale)
    artifacts = [out_dir / "model.json"]
    if len(found.samples):
        sheet = out_dir / "samples.png"
        contact_sheet(list(found.samples), sheet, scale=display_scale(found.samples.shape[-2]), captions=found.labels)
        artifacts.append(sheet)
    metrics = {
        **result.summary(e.batch_size),
        **placement.metrics(),
        "params_controlnet": sum(p.numel() for p in controlnet.parameters()),
        "train_pairs": len(train_pairs),
        "test_pairs": len(test_pairs),
        **{f"check.{k}": v for k, v in found.metrics.items()},
    }
    return TrainingOutputs(metrics, result.curve, artifacts)
