"""The ablation variants of METHOD.md section 8, as FDD settings (one param: the variant name).

  full         SDS from both teachers, then SDS + adversarial terms; K-bin timesteps; LoRA only
  no_align     the plug-and-play student: both adapters attached, no training at all
  no_sds       adversarial terms only (ours: from the first iteration, since without SDS the
               SDS-only phase would train nothing)
  no_disc      SDS only, for every iteration
  uniform_k    the k student steps always the same evenly spread ones ("w/o K-bin")
  random_init  ControlNet copied from the backbone's encoder (untrained) and temporal layers
               initialised as identity, then ControlNet + temporal layers + LoRA trained
               with the full FDD losses (the teachers stay the trained adapters)
"""

from __future__ import annotations

from ..config import FDD_VARIANTS, FddConfig
from .fdd import Settings


def trains(variant: str) -> bool:
    _check(variant)
    return variant != "no_align"


def student_trainable(variant: str) -> str:
    _check(variant)
    return "all" if variant == "random_init" else "lora"


def settings(cfg: FddConfig, variant: str, inference_steps: int, iterations: int | None = None) -> Settings:
    """`iterations`: the run's length when not `cfg.iterations` (stage `fdd_personal`'s own)."""
    _check(variant)
    iterations = cfg.iterations if iterations is None else iterations
    return Settings(
        k=cfg.k, inference_steps=inference_steps, timesteps="uniform" if variant == "uniform_k" else "kbin", kbin_first=cfg.kbin_first,
        sds=variant != "no_sds", adversarial=variant != "no_disc",
        adversarial_start=round(cfg.sds_only_fraction * iterations), discriminator_warmup=cfg.discriminator.warmup,
        alpha=cfg.alpha, beta=cfg.beta, lam=cfg.lam, sds_weighting=cfg.sds_weighting, sds_t_range=tuple(cfg.sds_t_range),
        sds_t_range_second=None if cfg.sds_t_range_second is None else tuple(cfg.sds_t_range_second),
    )


def _check(variant: str) -> None:
    if variant not in FDD_VARIANTS:
        raise ValueError(f"unknown FDD variant {variant!r}; expected one of {list(FDD_VARIANTS)}")
