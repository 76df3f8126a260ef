from pathlib import Path

import pytest

from eve_fdd.config import load_config

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def root() -> Path:
    return ROOT


@pytest.fixture
def small_cfg():
    """The project's own params.yaml, shrunk to a few videos."""
    return load_config(ROOT / "params.yaml", overrides={"videos.count": 12, "videos.shard_size": 5, "videos.samples": 2})


# A backbone small enough for tests of the model stages (their code paths, not their quality)
TINY_BACKBONE = {"block_out_channels": [8, 16], "norm_num_groups": 4, "attention_heads": 2,
                 "text_hidden_size": 16, "text_layers": 1, "text_heads": 2}


@pytest.fixture(scope="session")
def tiny_backbone_dir(tmp_path_factory) -> Path:
    """A `backbone` stage output (model.json + diffusers layout) holding an untrained tiny backbone."""
    import json

    from eve_fdd.config import TinyBackboneConfig
    from eve_fdd.models.backbone import tiny_backbone

    root = tmp_path_factory.mktemp("backbone-stage")
    tiny_backbone(TinyBackboneConfig(**TINY_BACKBONE), 32, 0).save(root / "model")
    (root / "model.json").write_text(json.dumps({"path": str(root / "model"), "trained": True}))
    return root
