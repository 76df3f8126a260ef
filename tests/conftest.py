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
