"""Stage `loras` (one DVC foreach entry per concept): a subject or style LoRA on the frozen
backbone (METHOD.md section 8, "other adapters"; FDD later aligns each with the edit adapter).

A peft LoRA on the backbone's UNet (train/lora.py; shared loop, checkpoints in
`data/checkpoints/loras/<concept>`), saved in diffusers' LoRA layout under
`data/loras/<concept>/model` (with the concept words' learned token embeddings,
`learned_embeds.safetensors`, when `loras.token_embeddings` and the concept has Shapes words).
Shapes: trained on renders, checked that the concept appears when prompted and not otherwise.
Full: `loras.pretrained[<concept>]` resolved and recorded when given (models.registry.given_teacher);
else trained from the user's images in `<loras.images_dir>/<concept>/` (captions.csv; rejects
in `rejects.parquet`) with prior preservation from the backbone's own samples, in its model
space (SD's VAE latents), and checked by how much the LoRA changes samples of the concept's
captions and of the prior captions.
Either way `data/loras/<concept>/model.json` says where the LoRA is.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import Config
from ..data import tables
from ..data.image_folder import read_image_folder
from ..data.ingest import IngestError
from ..data.splits import LORA_TRAIN_STREAM
from ..data.video import contact_sheet, display_scale
from ..diffusion import NoiseSchedule, make_scheduler
from ..models.adapters import LORA_WEIGHTS, ConceptTokens, add_lora
from ..models.placement import Placement
from ..models.registry import build_backbone, given_teacher, trained_path
from ..train import backbone as tb
from ..train import lora as tl
from ..train.loop import Objective, TrainingOutputs, train
from ..world import vocab

STAGE = "loras"
PARAMS = ("profile", "seed", "world", "diffusion", "loras")


@dataclass(frozen=True)
class UserImages:
    """Full scale: the concept's images and captions, the backbone's prior images and their
    captions (uint8 (N, size, size, 3) each; none until `with_prior`), the folder's reject rows."""

    folder: Path
    images: np.ndarray
    captions: list[str]
    rejects: list[dict[str, Any]]
    prior: np.ndarray | None = None
    prior_captions: list[str] = field(default_factory=list)


def read_user_images(cfg: Config, concept: str) -> UserImages:
    """The concept's folder, `<loras.images_dir>/<concept>/` (data/image_folder.py)."""
    folder = Path(cfg.loras.images_dir) / concept
    if not folder.is_dir():
        raise IngestError(f"{folder}: not found; put images of {concept!r} there with a captions.csv (file,caption; "
                          f"raw/loras/README.md) to train its LoRA, or give a LoRA to use as it is (loras.pretrained.{concept})")
    images, captions, rejects = read_image_folder(folder, cfg.loras.size, f"{STAGE}@{concept}")
    return UserImages(folder, images, captions, rejects)


def with_prior(cfg: Config, concept: str, user: UserImages, backbone, scheduler, placement: Placement) -> UserImages:
    """`user` with `loras.prior_images` (0: as many as the concept's) prior images that the
    frozen backbone, without any LoRA yet, samples from its captions without the concept's
    words (train/lora.py, prior_caption): seeded, so a resumed run samples the same ones."""
    lo = cfg.loras
    with placement.inference():
        prior, captions = tl.prior_samples(backbone, scheduler, user.captions, concept, lo.prior_images or len(user.images), lo.size,
                                           cfg.seed, lo.eval_steps, lo.guidance_scale)
    return replace(user, prior=prior, prior_captions=captions)


def objective(cfg: Config, concept: str, backbone, schedule: NoiseSchedule, tokens: ConceptTokens | None = None,
              user: UserImages | None = None) -> Objective:
    """The LoRA (the only trainable weights of the UNet) learns the concept, with prior
    preservation; with `tokens` (attached), the concept words' embeddings learn with it.
    Shapes renders each batch; at full scale `user` holds the images."""
    lo = cfg.loras
    modules = {"unet": backbone.unet} if tokens is None else {"unet": backbone.unet, "tokens": tokens}

    def batch(step: int) -> tuple[torch.Tensor, list[str]]:
        if user is None:
            return tl.batch(cfg.world, cfg.seed, LORA_TRAIN_STREAM, step, lo.batch_size, concept)
        return tl.folder_batch(user.images, user.captions, user.prior, user.prior_captions, step, lo.batch_size, cfg.seed)

    return Objective(modules, batch, lambda data, g: tb.v_loss(backbone, schedule, data[0], data[1], g, lo.caption_dropout), lo.batch_size)


def build(cfg: Config, concept: str, backbone_dir: Path, out_dir: Path, checkpoints: Path | None = None,
          progress: bool = True, on_log: Callable[[dict[str, float]], None] | None = None) -> TrainingOutputs:
    known = vocab.SUBJECTS + vocab.RESERVED_STYLES
    if cfg.profile == "shapes" and concept not in known:
        raise ValueError(f"loras: unknown Shapes concept {concept!r}; expected one of {list(known)}")
    if concept not in cfg.loras.concepts:
        raise ValueError(f"loras: {concept!r} is not in loras.concepts {list(cfg.loras.concepts)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    lo = cfg.loras
    given = given_teacher(cfg, STAGE, concept)
    if given:
        path = Path(given)
        if not (path / LORA_WEIGHTS).is_file():
            raise FileNotFoundError(f"loras.pretrained.{concept}: {path / LORA_WEIGHTS} not found")
        (out_dir / "model.json").write_text(json.dumps({"path": str(path), "trained": False, "concept": concept}, indent=2) + "\n")
        return TrainingOutputs({"trained": 0})

    user = None if cfg.profile == "shapes" else read_user_images(cfg, concept)  # full: the images first, before loading SD
    checkpoints = checkpoints or Path("data/checkpoints/loras") / concept
    backbone_path = trained_path(backbone_dir)
    placement = Placement.resolve(lo.train.mixed_precision)  # accelerate's device (models/placement.py)
    backbone = build_backbone(cfg, backbone_path).freeze(placement)
    scheduler = make_scheduler(cfg.diffusion)
    schedule = NoiseSchedule.from_scheduler(scheduler)
    if user is not None:
        user = with_prior(cfg, concept, user, backbone, scheduler, placement)  # the plain backbone's: before the LoRA
    torch.manual_seed(lo.train.seed)  # the LoRA's and the concept tokens' initial weights
    add_lora(backbone.unet, concept, rank=lo.rank, targets=lo.target_modules)
    words = vocab.CONCEPT_WORDS.get(concept) if lo.token_embeddings else None  # full scale: only a concept with Shapes words
    tokens = ConceptTokens(backbone.text_encoder, backbone.tokenizer, words).attach() if words else None
    placement.trained([backbone.unet] + ([tokens] if tokens is not None else []))

    obj = objective(cfg, concept, backbone, schedule, tokens, user)
    # what the weights depend on: the backbone's weights (Shapes), or the backbone stage's output and the concept's folder
    files = (Path(backbone_path) / "unet" / "diffusion_pytorch_model.safetensors",) if user is None else (backbone_dir, user.folder)
    result = train(obj.modules, obj.step_fn, lo.train, checkpoints, progress=progress, on_log=on_log,
                   fingerprint=cfg.fingerprint(PARAMS, files) + concept, placement=placement)
    backbone.unet.requires_grad_(False)
    backbone.unet.save_lora_adapter(str(out_dir / "model"), adapter_name=concept)
    embeddings = str(tokens.save(out_dir / "model")) if tokens is not None else None
    (out_dir / "model.json").write_text(json.dumps({"path": str(out_dir / "model"), "trained": True, "concept": concept,
                                                    "token_embeddings": embeddings, "backbone": str(backbone_path)}, indent=2) + "\n")
    artifacts = [out_dir / "model.json"]
    with placement.inference():
        if user is None:
            found = tl.check(backbone, concept, scheduler, cfg.world, cfg.seed, concept, lo.eval_samples, lo.eval_steps,
                             lo.guidance_scale, lo.detector_steps, lo.detector_renders, tokens)
        else:
            n = lo.eval_samples
            found = tl.check_change(backbone, concept, scheduler, user.captions[:n], user.prior_captions[:n], lo.size, cfg.seed,
                                    lo.eval_steps, lo.guidance_scale, tokens)
    n = min(lo.samples, len(found.captions))
    if n and user is None:
        sheet = out_dir / "samples.png"
        contact_sheet([img[None] for img in found.samples[:n]], sheet, scale=display_scale(cfg.world.size), captions=found.captions[:n])
        artifacts.append(sheet)
    elif n:  # one row per caption: LoRA on | off, the concept's captions first, then the prior captions
        sheet = out_dir / "samples.png"
        rows = [np.stack([found.on[i], found.off[i]]) for i in range(n)]
        contact_sheet(rows, sheet, scale=display_scale(lo.size), captions=[f"LoRA on | off: {c}" for c in found.captions[:n]])
        artifacts.append(sheet)
    metrics = {
        **result.summary(lo.batch_size),
        **placement.metrics(),
        "params_lora": sum(p.numel() for n, p in backbone.unet.named_parameters() if "lora_" in n),
        "params_token_embeddings": tokens.rows.numel() if tokens is not None else 0,
        **{f"check.{k}": round(v, 5) for k, v in found.metrics.items()},
    }
    if user is not None:
        tables.write_table(tables.REJECTS, user.rejects, out_dir / "rejects.parquet")
        metrics |= {"train_images": len(user.images), "prior_images": len(user.prior), "rejected": len(user.rejects)}
    return TrainingOutputs(metrics, result.curve, artifacts)
