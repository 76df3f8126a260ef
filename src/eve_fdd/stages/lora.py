"""Stage `loras` (one DVC foreach entry per concept): a subject or style LoRA on the frozen
backbone (METHOD.md section 8, "other adapters"; FDD later aligns each with the edit adapter).

Shapes: train a peft LoRA on the trained backbone's UNet (train/lora.py; shared loop,
checkpoints in `data/checkpoints/loras/<concept>`), save it in diffusers' LoRA layout under
`data/loras/<concept>/model` (with the concept words' learned token embeddings,
`learned_embeds.safetensors`, when `loras.token_embeddings`), and check that the concept
appears when prompted and not otherwise. Full: resolve `loras.pretrained[<concept>]` and record it.
Either way `data/loras/<concept>/model.json` says where the LoRA is.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch

from ..config import Config
from ..data.splits import LORA_TRAIN_STREAM
from ..data.video import contact_sheet, display_scale
from ..diffusion import NoiseSchedule, make_scheduler
from ..models.adapters import LORA_WEIGHTS, ConceptTokens, add_lora
from ..models.placement import Placement
from ..models.registry import build_backbone, trained_path
from ..train import backbone as tb
from ..train import lora as tl
from ..train.loop import Objective, TrainingOutputs, train
from ..world import vocab

STAGE = "loras"
PARAMS = ("profile", "seed", "world", "diffusion", "loras")


def objective(cfg: Config, concept: str, backbone, schedule: NoiseSchedule, tokens: ConceptTokens | None = None) -> Objective:
    """The LoRA (the only trainable weights of the UNet) learns the concept, with prior
    preservation; with `tokens` (attached), the concept words' embeddings learn with it."""
    lo = cfg.loras
    modules = {"unet": backbone.unet} if tokens is None else {"unet": backbone.unet, "tokens": tokens}
    return Objective(modules,
                     lambda step: tl.batch(cfg.world, cfg.seed, LORA_TRAIN_STREAM, step, lo.batch_size, concept),
                     lambda data, g: tb.v_loss(backbone, schedule, data[0], data[1], g, lo.caption_dropout), lo.batch_size)


def build(cfg: Config, concept: str, backbone_dir: Path, out_dir: Path, checkpoints: Path | None = None,
          progress: bool = True, on_log: Callable[[dict[str, float]], None] | None = None) -> TrainingOutputs:
    known = vocab.SUBJECTS + vocab.RESERVED_STYLES
    if cfg.profile == "shapes" and concept not in known:
        raise ValueError(f"loras: unknown Shapes concept {concept!r}; expected one of {list(known)}")
    if concept not in cfg.loras.concepts:
        raise ValueError(f"loras: {concept!r} is not in loras.concepts {list(cfg.loras.concepts)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    lo = cfg.loras
    if cfg.profile == "full":
        if concept not in lo.pretrained:
            raise ValueError(f"loras.pretrained: the full profile needs a LoRA directory for {concept!r} "
                             "(train one on your own subject or style images); Shapes trains its own")
        path = Path(lo.pretrained[concept])
        if not (path / LORA_WEIGHTS).is_file():
            raise FileNotFoundError(f"loras.pretrained.{concept}: {path / LORA_WEIGHTS} not found")
        (out_dir / "model.json").write_text(json.dumps({"path": str(path), "trained": False, "concept": concept}, indent=2) + "\n")
        return TrainingOutputs({"trained": 0})

    checkpoints = checkpoints or Path("data/checkpoints/loras") / concept
    backbone_path = trained_path(backbone_dir)
    placement = Placement.resolve(lo.train.mixed_precision)  # accelerate's device (models/placement.py)
    backbone = build_backbone(cfg, backbone_path).freeze(placement)
    torch.manual_seed(lo.train.seed)  # the LoRA's and the concept tokens' initial weights
    add_lora(backbone.unet, concept, rank=lo.rank, targets=lo.target_modules)
    tokens = ConceptTokens(backbone.text_encoder, backbone.tokenizer, vocab.CONCEPT_WORDS[concept]).attach() if lo.token_embeddings else None
    placement.trained([backbone.unet] + ([tokens] if tokens is not None else []))
    scheduler = make_scheduler(cfg.diffusion)
    schedule = NoiseSchedule.from_scheduler(scheduler)

    obj = objective(cfg, concept, backbone, schedule, tokens)
    weights = Path(backbone_path) / "unet" / "diffusion_pytorch_model.safetensors"
    result = train(obj.modules, obj.step_fn, lo.train, checkpoints, progress=progress, on_log=on_log,
                   fingerprint=cfg.fingerprint(PARAMS, (weights,)) + concept, placement=placement)
    backbone.unet.requires_grad_(False)
    backbone.unet.save_lora_adapter(str(out_dir / "model"), adapter_name=concept)
    embeddings = str(tokens.save(out_dir / "model")) if tokens is not None else None
    (out_dir / "model.json").write_text(json.dumps({"path": str(out_dir / "model"), "trained": True, "concept": concept,
                                                    "token_embeddings": embeddings, "backbone": str(backbone_path)}, indent=2) + "\n")
    with placement.inference():
        found = tl.check(backbone, concept, scheduler, cfg.world, cfg.seed, concept, lo.eval_samples, lo.eval_steps,
                         lo.guidance_scale, lo.detector_steps, lo.detector_renders, tokens)
    artifacts = [out_dir / "model.json"]
    n = min(lo.samples, len(found.samples))
    if n:
        sheet = out_dir / "samples.png"
        contact_sheet([img[None] for img in found.samples[:n]], sheet, scale=display_scale(cfg.world.size), captions=found.captions[:n])
        artifacts.append(sheet)
    metrics = {
        **result.summary(lo.batch_size),
        **placement.metrics(),
        "params_lora": sum(p.numel() for n, p in backbone.unet.named_parameters() if "lora_" in n),
        "params_token_embeddings": tokens.rows.numel() if tokens is not None else 0,
        **{f"check.{k}": round(v, 5) for k, v in found.metrics.items()},
    }
    return TrainingOutputs(metrics, result.curve, artifacts)
