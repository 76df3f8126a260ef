"""Stage `edit_pairs`: balanced tasks, images that match the edit, rejects kept, held-out split."""

from __future__ import annotations

import numpy as np
import pytest

from eve_fdd.config import Config
from eve_fdd.data import tables
from eve_fdd.stages import edit_pairs
from eve_fdd.stages.edit_pairs import image, make_pairs, pair_seed
from eve_fdd.stages.videos import scene_seed
from eve_fdd.world import EditSpec, apply_edit, caption, render_frame, vocab
from eve_fdd.world.scene import Scene

CFG = Config(edit_pairs={"count": 70, "shard_size": 30, "samples": 7, "test_fraction": 0.2})


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    return edit_pairs.run(CFG, tmp_path_factory.mktemp("pairs"))


def test_pairs_cover_every_task_and_kept_rejects(out):
    rows = tables.read_table(tables.EDIT_PAIRS, out.pairs)
    rejects = tables.read_table(tables.REJECTS, out.rejects)
    assert len(rows) + len(rejects) == 70
    assert {r["task"] for r in rows} == set(vocab.TASKS)
    assert all(r["reason"] == "not_applicable" for r in rejects)
    assert out.metrics["pairs"] == len(rows) and out.metrics["rejected"] == len(rejects)
    assert sum(out.metrics[f"task.{t}"] for t in vocab.TASKS if f"task.{t}" in out.metrics) == len(rows)
    assert 0 < out.metrics["test"] < len(rows)
    assert out.samples and out.samples[0].stat().st_size > 0


def test_each_pair_is_the_edit_rendered_on_the_same_frame(out):
    for row in tables.read_table(tables.EDIT_PAIRS, out.pairs):
        scene = Scene.from_json(row["scene"])
        spec = EditSpec.from_json(row["edit_spec"])
        edited = apply_edit(scene, spec)
        assert caption(scene) == row["input_caption"] and caption(edited) == row["output_caption"]
        assert np.array_equal(image(row, "input_image"), render_frame(scene, row["frame"], 32, 2))
        assert np.array_equal(image(row, "output_image"), render_frame(edited, row["frame"], 32, 2))
        assert not np.array_equal(image(row, "input_image"), image(row, "output_image")), row["pair_id"]
        assert spec.task == row["task"] and spec.kind not in vocab.SUBJECTS and spec.style not in vocab.RESERVED_STYLES


def test_seeds_differ_from_the_video_sets_and_the_stage_is_deterministic(out):
    video_seeds = {scene_seed(0, i) for i in range(5000)}
    assert not video_seeds & {pair_seed(0, i) for i in range(5000)}
    again, _ = make_pairs(CFG, range(0, 10))
    first = {r["pair_id"]: r for r in tables.read_table(tables.EDIT_PAIRS, out.pairs)}
    assert all(first[r["pair_id"]] == r for r in again)


def test_a_task_that_does_not_apply_is_a_reject_row_with_its_reason():
    cfg = Config(world={"min_shapes": 1, "max_shapes": 1})  # one shape: nothing to remove
    rows, rejects = make_pairs(cfg, range(0, 14))
    assert {r["task"] for r in rows} == set(vocab.TASKS) - {"remove"}
    assert [r["item"] for r in rejects] == ["pair-000001-remove", "pair-000008-remove"]
    assert all(r["reason"] == "not_applicable" and "'remove' does not apply" in r["detail"] for r in rejects)


def test_full_profile_without_a_dataset_writes_no_pairs_and_says_the_edit_adapter_is_pretrained(tmp_path):
    from pathlib import Path

    from eve_fdd.data import tables

    root = Path(__file__).resolve().parents[1]  # the repository's raw/edit_pairs/: only its README
    cfg = Config(profile="full", edit_pairs={"ingest": {"source": str(root / "raw" / "edit_pairs")}})
    with pytest.raises(ValueError, match="ingests"):
        make_pairs(cfg, range(3))
    out = edit_pairs.run(cfg, tmp_path)
    assert out.metrics["pairs"] == 0 and out.metrics["pretrained_edit_adapter"] == 1
    assert tables.read_table(tables.EDIT_PAIRS, out.pairs) == []
