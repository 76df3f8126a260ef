"""Stage `features`: the frozen feature network both FDD discriminators read (METHOD.md
section 5), for stages `fdd` and `fdd_personal`.

Full: resolve DINOv2 (`fdd.discriminator.pretrained`), check that it loads and is deep
enough for `fdd.discriminator.feature_layers`, record it. Shapes (`features.network`):
`trained` trains the small `Dinov2Model` of `fdd.discriminator` on world renders to name
what covers each patch (distill/shapes_features.py says why it stands in for DINO) with the
shared loop (checkpoints in `data/checkpoints/features`), then checks it on held-out frames;
`random` records that FDD seeds its own untrained one (the network before this stage).
Either way `data/features/model.json` says where the network is (models.registry.feature_network reads it).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from ..config import Config
from ..data.splits import FEATURES_EVAL_STREAM, FEATURES_TRAIN_STREAM
from ..distill import shapes_features as sf
from ..distill.discriminators import tiny_dino
from ..models.placement import Placement
from ..models.registry import load_dino
from ..train.loop import Objective, TrainingOutputs, train

STAGE = "features"
PARAMS = ("profile", "seed", "world", "fdd.discriminator.pretrained", "fdd.discriminator.hidden_size", "fdd.discriminator.layers",
          "fdd.discriminator.heads", "fdd.discriminator.patch_size", "fdd.discriminator.feature_layers", "features")
CHECKPOINTS = Path("data/checkpoints/features")


def build(cfg: Config, out_dir: Path, checkpoints: Path = CHECKPOINTS, progress: bool = True,
          on_log: Callable[[dict[str, float]], None] | None = None) -> TrainingOutputs:
    out_dir.mkdir(parents=True, exist_ok=True)
    d, f, w = cfg.fdd.discriminator, cfg.features, cfg.world
    if cfg.profile == "full":
        load_dino(cfg, d.pretrained)  # a clear error now, not in fdd
        return _record(out_dir, {"path": d.pretrained, "trained": False}, {"trained": 0})
    if f.network == "random":
        return _record(out_dir, {"path": "", "random": True, "trained": False}, {"trained": 0})
    if w.size % d.patch_size:
        raise ValueError(f"features: world.size {w.size} is not a multiple of fdd.discriminator.patch_size {d.patch_size}")

    placement = Placement.resolve(f.train.mixed_precision)
    model = tiny_dino(d.hidden_size, d.layers, d.heads, w.size, d.patch_size, cfg.seed).requires_grad_(True).train()
    heads = sf.Heads(d.hidden_size)
    placement.trained([model, heads])
    obj = Objective({"features": model, "heads": heads},
                    lambda step: sf.frames(w, cfg.seed, FEATURES_TRAIN_STREAM, range(step * f.batch_size, (step + 1) * f.batch_size), d.patch_size),
                    lambda data, g: sf.loss(model, heads, _to(data, placement)), f.batch_size)
    result = train(obj.modules, obj.step_fn, f.train, checkpoints, progress=progress, on_log=on_log,
                   fingerprint=cfg.fingerprint(PARAMS), placement=placement)
    model.requires_grad_(False).eval()
    heads.eval()
    found = sf.check(model, heads, _to(sf.frames(w, cfg.seed, FEATURES_EVAL_STREAM, range(f.eval_frames), d.patch_size), placement))
    model_dir = out_dir / "model"
    model.save_pretrained(model_dir)
    metrics = {**result.summary(f.batch_size), **placement.metrics(), "params": sum(p.numel() for p in model.parameters()), **found}
    return _record(out_dir, {"path": str(model_dir), "trained": True}, metrics, result.curve)


def _to(data: sf.Frames, placement: Placement) -> sf.Frames:
    return sf.Frames(data.images.to(placement.device), data.object.to(placement.device), data.texture.to(placement.device),
                     data.scene.to(placement.device))


def _record(out_dir: Path, info: dict, metrics: dict, curve: list | None = None) -> TrainingOutputs:
    (out_dir / "model.json").write_text(json.dumps(info, indent=2) + "\n")
    return TrainingOutputs(metrics, curve or [], [out_dir / "model.json"])
