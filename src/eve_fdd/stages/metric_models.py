"""Stage `metric_models` (DVC foreach: clip, xclip): the models the paper's automatic metrics
read (METHOD.md section 7; evaluate/paper_metrics.py).

Shapes: train a small `CLIPModel` (CLIPFrame and PickScore) or `XCLIPModel` (ViCLIP_out,
ViCLIP_dir) on scenes the stage renders from its own seed stream, with the world's tokenizer,
in the shared loop (checkpoints in `data/checkpoints/metric_models/<kind>`); check on held-out
scenes that each scene and its edit are closer to their own caption than to the other's, per
task. Full: resolve the hub ids or directories of `metric_models` and check that they load.
Either way `data/metric_models/<kind>/model.json` says where the model is.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from ..config import Config
from ..data.splits import METRIC_MODELS_EVAL_STREAM, METRIC_MODELS_TRAIN_STREAM
from ..evaluate import metric_models as mm
from ..evaluate.paper_metrics import frame_processor, load_image_text, load_video_text
from ..models.text import shapes_tokenizer
from ..train.loop import Objective, TrainingOutputs, train

STAGE = "metric_models"
PARAMS = ("profile", "seed", "world", "metric_models")


def build(cfg: Config, kind: str, out_dir: Path, checkpoints: Path | None = None, progress: bool = True,
          on_log: Callable[[dict[str, float]], None] | None = None) -> TrainingOutputs:
    if kind not in mm.KINDS:
        raise ValueError(f"metric_models: unknown model {kind!r}; expected one of {list(mm.KINDS)}")
    m = cfg.metric_models
    out_dir.mkdir(parents=True, exist_ok=True)
    if cfg.profile == "full":
        if kind == "clip":
            load_image_text(m.clip), load_image_text(m.pick, m.pick_processor)  # a clear error now, not at evaluation
            info = {"path": m.clip, "pick": m.pick, "pick_processor": m.pick_processor, "trained": False}
        else:
            load_video_text(m.xclip)
            info = {"path": m.xclip, "trained": False}
        (out_dir / "model.json").write_text(json.dumps(info, indent=2) + "\n")
        return TrainingOutputs({"trained": 0})

    w = cfg.world
    tokenizer = shapes_tokenizer(eos_last=kind == "xclip")  # XCLIPModel pools text at the highest id (models/text.py)
    processor = frame_processor(w.size)
    args = (tokenizer.vocab_size, w.size, m.hidden_size, m.layers, m.heads, m.patch_size, tokenizer.model_max_length)
    model = mm.tiny_clip(*args, seed=cfg.seed) if kind == "clip" else mm.tiny_xclip(*args, frames=w.frames, seed=cfg.seed)
    train_cfg, batch_size = (m.clip_train, m.clip_batch_size) if kind == "clip" else (m.xclip_train, m.xclip_batch_size)
    obj = Objective({kind: model}, lambda step: mm.pairs(w, cfg.seed, METRIC_MODELS_TRAIN_STREAM, range(step * batch_size, (step + 1) * batch_size),
                                                        single_frame=kind == "clip"),
                    lambda data, g: mm.contrastive_loss(kind, model, tokenizer, processor, data, g), batch_size)
    result = train(obj.modules, obj.step_fn, train_cfg, checkpoints or Path("data/checkpoints/metric_models") / kind,
                   progress=progress, on_log=on_log, fingerprint=cfg.fingerprint(PARAMS) + kind)
    model.requires_grad_(False).eval()
    model_dir = out_dir / "model"
    for part in (model, tokenizer, processor):
        part.save_pretrained(model_dir)
    info = {"path": str(model_dir), "trained": True}
    if kind == "clip":
        info |= {"pick": str(model_dir), "pick_processor": str(model_dir)}  # ours: no preferences in Shapes (see evaluate/metric_models.py)
    (out_dir / "model.json").write_text(json.dumps(info, indent=2) + "\n")

    encoder = load_image_text(model_dir) if kind == "clip" else load_video_text(model_dir)
    held_out = mm.pairs(w, cfg.seed, METRIC_MODELS_EVAL_STREAM, range(m.eval_scenes))
    metrics = {**result.summary(batch_size), "params": sum(p.numel() for p in model.parameters()), **mm.check(kind, encoder, held_out)}
    return TrainingOutputs(metrics, result.curve, [out_dir / "model.json"])
