"""The model stages on the full profile, given weights: they resolve them (a hub id or a local
directory, here tiny models of the same classes saved to a temp dir), record where they are,
and fail with a message naming the key when they cannot (training them: test_teachers_full.py)."""

from __future__ import annotations

import json

import pytest

from eve_fdd.config import Config
from eve_fdd.data import tables
from eve_fdd.models.adapters import add_lora, edit_adapter, video_adapter
from eve_fdd.models.backbone import tiny_backbone
from eve_fdd.models.registry import trained_path
from eve_fdd.stages import edit_adapter as s_edit
from eve_fdd.stages import lora as s_lora
from eve_fdd.stages import video_adapter as s_video

from conftest import TINY_BACKBONE

SHAPES = Config(models={"backbone": {"tiny": TINY_BACKBONE}})


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Tiny ControlNet, MotionAdapter and LoRA in the layouts the hub uses."""
    root = tmp_path_factory.mktemp("pretrained")
    bb = tiny_backbone(SHAPES.models.backbone.tiny, 16, 0)
    edit_adapter(bb.unet).save_pretrained(root / "controlnet")
    video_adapter(bb.unet, heads=2).save_motion_modules(str(root / "motion"))
    add_lora(bb.unet, "style", rank=2)
    bb.unet.save_lora_adapter(str(root / "lora"), adapter_name="style")
    return root


def _full(**sections) -> Config:
    if "concepts" in sections.get("loras", {}):  # FDD aligns the user's own LoRAs (config checks they exist)
        sections.setdefault("fdd_personal", {"concepts": sections["loras"]["concepts"]})
    return Config(profile="full", **sections)


def test_edit_adapter_resolves_a_pretrained_controlnet(saved, tmp_path):
    out = s_edit.build(_full(edit_adapter={"pretrained": str(saved / "controlnet")}), tmp_path / "pairs.parquet", tmp_path / "bb", tmp_path / "out")
    assert out.metrics == {"trained": 0} and trained_path(tmp_path / "out") == str(saved / "controlnet")
    # without given weights it trains on the ingested pairs: none ingested is an error naming both ways out
    with pytest.raises(FileNotFoundError, match="pairs.parquet"):
        s_edit.build(_full(), tmp_path / "pairs.parquet", tmp_path / "bb", tmp_path / "out2")
    tables.write_table(tables.EDIT_PAIRS, [], tmp_path / "pairs.parquet")
    with pytest.raises(ValueError, match=r"no edit pairs.*edit_pairs.ingest.source.*edit_adapter.pretrained"):
        s_edit.build(_full(), tmp_path / "pairs.parquet", tmp_path / "bb", tmp_path / "out2")


def test_video_adapter_resolves_a_pretrained_motion_adapter(saved, tmp_path):
    out = s_video.build(_full(video_adapter={"pretrained": str(saved / "motion")}), tmp_path / "bb", tmp_path / "out")
    assert out.metrics == {"trained": 0} and trained_path(tmp_path / "out") == str(saved / "motion")
    with pytest.raises(OSError):
        s_video.build(_full(video_adapter={"pretrained": str(tmp_path / "missing")}), tmp_path / "bb", tmp_path / "out2")


def test_loras_resolve_a_directory_per_concept(saved, tmp_path):
    cfg = _full(loras={"concepts": ["watercolour"], "pretrained": {"watercolour": str(saved / "lora")}})
    out = s_lora.build(cfg, "watercolour", tmp_path / "bb", tmp_path / "out")
    assert out.metrics == {"trained": 0} and json.loads((tmp_path / "out/model.json").read_text())["concept"] == "watercolour"
    with pytest.raises(ValueError, match="loras.pretrained"):
        s_lora.build(_full(loras={"concepts": ["watercolour"]}), "watercolour", tmp_path / "bb", tmp_path / "out2")
    with pytest.raises(FileNotFoundError, match="pytorch_lora_weights.safetensors"):
        s_lora.build(_full(loras={"concepts": ["ink"], "pretrained": {"ink": str(tmp_path)}}), "ink", tmp_path / "bb", tmp_path / "out3")
