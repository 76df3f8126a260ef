"""One place that builds every model from the profile (DESIGN.md, models/)."""

from __future__ import annotations

from pathlib import Path

from ..config import Config
from .backbone import Backbone, load_backbone, tiny_backbone


def build_backbone(cfg: Config, trained: str | Path | None = None) -> Backbone:
    """The backbone for this profile: a saved one (`trained`, e.g. the `backbone` stage's
    output), SD 1.5 from `models.backbone.pretrained` (full), or a fresh tiny one (Shapes)."""
    if trained is not None:
        return load_backbone(trained)
    if cfg.profile == "full":
        return load_backbone(cfg.models.backbone.pretrained)
    return tiny_backbone(cfg.models.backbone.tiny, cfg.world.size, cfg.seed)
