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


def trained_path(stage_dir: str | Path) -> str:
    """Where a model stage put its model: the `path` in `<stage_dir>/model.json` (a local
    directory, or a hub id for the full profile's pretrained parts)."""
    import json

    info = Path(stage_dir) / "model.json"
    if not info.is_file():
        raise FileNotFoundError(f"{info}: not found; run the stage that writes it first (e.g. `dvc repro {Path(stage_dir).name}`)")
    try:
        return str(json.loads(info.read_text())["path"])
    except (ValueError, KeyError) as exc:
        raise ValueError(f"{info}: expected JSON with a 'path' key ({exc})") from None
