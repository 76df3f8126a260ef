"""One place that builds every model from the profile (DESIGN.md, models/)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import Config
from .backbone import Backbone, load_backbone, tiny_backbone


def build_backbone(cfg: Config, trained: str | Path | None = None) -> Backbone:
    """The backbone for this profile: a saved one (`trained`, e.g. the `backbone` stage's
    output), SD 1.5 from `models.backbone.pretrained` (full), or a fresh tiny one (Shapes).
    Full: texts longer than CLIP's 77 tokens are cut to them (counted, `Backbone.text_metrics`);
    Shapes: its word-level tokenizer reads every caption the world writes, so a longer one is an error."""
    if trained is not None:
        backbone = load_backbone(trained)
    elif cfg.profile == "full":
        backbone = load_backbone(cfg.models.backbone.pretrained)
    else:
        backbone = tiny_backbone(cfg.models.backbone.tiny, cfg.world.size, cfg.seed)
    backbone.truncate = cfg.profile == "full"
    return backbone


def given_teacher(cfg: Config, stage: str, concept: str | None = None) -> str | None:
    """The weights a teacher stage (`edit_adapter`, `video_adapter`, `loras`) uses as they are
    instead of training its own: at full scale `<stage>.pretrained` when set (for `loras`, the
    concept's entry); None means train. Shapes always trains its own (params.yaml's
    `pretrained` values name SD-size models)."""
    if cfg.profile != "full":
        return None
    given = cfg.section(f"{stage}.pretrained")
    if concept is not None:
        given = given.get(concept, "")
    return str(given) if given else None


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


def load_pretrained(cls: Any, source: str | Path, key: str, **kwargs: Any) -> Any:
    """`cls.from_pretrained(source)` for the params key `key`: a path that does not exist, a
    directory that does not load, or one that holds another class stops with a message naming
    the key, the path and the class expected (a hub id is tried as one)."""
    local = Path(source)
    if str(source) == "":
        raise ValueError(f"{key}: empty; expected a {cls.__name__} directory or hub id")
    if (local.is_absolute() or str(source).startswith(".") or local.exists()) and not local.is_dir():
        raise FileNotFoundError(f"{key}: {source}: no such directory (expected a {cls.__name__} saved with save_pretrained)")
    try:
        model = cls.from_pretrained(str(source), **kwargs)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{key}: could not load a {cls.__name__} from {source} ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
    if not isinstance(model, cls):
        raise ValueError(f"{key}: {source} holds a {type(model).__name__}, expected a {cls.__name__}")
    return model


@dataclass(frozen=True)
class FeatureNetwork:
    """The discriminators' frozen feature network and how it reads images."""

    model: Any  # transformers Dinov2Model, frozen
    size: int | None  # side images are resized to (None: as they come)
    mean: tuple[float, ...]
    std: tuple[float, ...]


def feature_network(cfg: Config, placement: Any = None, features_dir: str | Path | None = None) -> FeatureNetwork:
    """The network stage `features` recorded in `features_dir/model.json`: DINOv2 (full;
    `fdd.discriminator.pretrained`), with its image processor's mean/std when the directory has
    one (ImageNet's otherwise), reading frames resized to `fdd.discriminator.image_size`; or the
    Shapes profile's small Dinov2Model at the world's frame size, trained on world renders
    (distill/shapes_features.py) or, when the stage says random, seeded by `fdd.seed` and
    untrained. Without `features_dir`: what the stage would record without training (DINOv2,
    or the seeded random network). With a `placement` (models/placement.py) it is frozen on
    its device, in its frozen dtype."""
    network = _feature_network(cfg, features_dir)
    if placement is not None:
        placement.frozen(network.model)
    return network


def load_dino(cfg: Config, source: str) -> Any:
    """A frozen `Dinov2Model` from a hub id or directory, deep enough for fdd.discriminator.feature_layers."""
    from transformers import Dinov2Model

    d = cfg.fdd.discriminator
    model = load_pretrained(Dinov2Model, source, "fdd.discriminator.pretrained").requires_grad_(False).eval()
    depth = model.config.num_hidden_layers
    if max(d.feature_layers) > depth:
        raise ValueError(f"fdd.discriminator.feature_layers {list(d.feature_layers)}: {source} has {depth} layers")
    return model


def _feature_network(cfg: Config, features_dir: str | Path | None) -> FeatureNetwork:
    from ..distill.discriminators import IMAGENET_MEAN, IMAGENET_STD, tiny_dino

    d = cfg.fdd.discriminator
    info = {"random": cfg.profile != "full", "path": d.pretrained}
    if features_dir is not None:
        trained_path(features_dir)  # a clear error when stage features has not run
        info = json.loads((Path(features_dir) / "model.json").read_text())
    if info.get("random"):
        return FeatureNetwork(tiny_dino(d.hidden_size, d.layers, d.heads, cfg.world.size, d.patch_size, cfg.fdd.seed), None,
                              IMAGENET_MEAN, IMAGENET_STD)
    source = str(info["path"])
    model = load_dino(cfg, source)
    if cfg.profile != "full":  # trained on world renders at the frame size, read as DINOv2 is
        return FeatureNetwork(model, None, IMAGENET_MEAN, IMAGENET_STD)
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    try:
        from transformers import AutoImageProcessor

        proc = AutoImageProcessor.from_pretrained(source)
        mean, std = tuple(proc.image_mean), tuple(proc.image_std)
    except (OSError, ValueError, AttributeError):
        pass  # no processor saved beside the weights: DINOv2's own are ImageNet's
    return FeatureNetwork(model, d.image_size, mean, std)


def load_edit_adapter(stage_dir: str | Path, backbone: Backbone) -> Any:
    """The frozen edit adapter (a `ControlNetModel`) that `stage_dir/model.json` names, checked
    against the backbone's model space, on the backbone's device and in its dtype: every stage
    that runs it loads it here."""
    from diffusers import ControlNetModel

    from .placement import move
    from .space import check_compatible

    key = f"{stage_dir}/model.json (the edit adapter)"
    controlnet = load_pretrained(ControlNetModel, trained_path(stage_dir), key)
    check_compatible(backbone.space, backbone.unet, controlnet, key)
    return move(controlnet.requires_grad_(False).eval(), backbone.unet.device, backbone.unet.dtype)  # where the backbone is
