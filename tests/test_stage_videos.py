import json

import numpy as np

from eve_fdd.data import tables
from eve_fdd.stages import videos
from eve_fdd.world import Scene, caption, render_video


def test_shapes_stage_writes_valid_deterministic_tables(small_cfg, tmp_path):
    out = videos.run(small_cfg, tmp_path / "a", progress=False)
    rows = tables.read_table(tables.VIDEOS, out.videos)
    assert [r["video_id"] for r in rows] == [f"shapes-{i:05d}" for i in range(12)]
    assert tables.read_table(tables.REJECTS, out.rejects) == []
    again = videos.run(small_cfg, tmp_path / "b", progress=False)
    assert tables.read_table(tables.VIDEOS, again.videos) == rows
    assert out.metrics["videos"] == 12 and out.metrics["train"] + out.metrics["test"] == 12
    assert out.metrics["rejected"] == 0 and out.metrics["frames"] == 12 * 8


def test_stored_scene_regenerates_frames_and_caption(small_cfg, tmp_path):
    rows = tables.read_table(tables.VIDEOS, videos.run(small_cfg, tmp_path, progress=False).videos)
    for row in rows:
        scene = Scene.from_json(row["scene"])
        assert caption(scene) == row["caption"]
        frames = render_video(scene, row["num_frames"], row["height"], small_cfg.world.supersample)
        np.testing.assert_array_equal(frames, tables.frames_from_row(row))


def test_videos_differ_and_move(small_cfg, tmp_path):
    rows = tables.read_table(tables.VIDEOS, videos.run(small_cfg, tmp_path, progress=False).videos)
    assert len({r["frames"] for r in rows}) == len(rows)
    assert len({r["seed"] for r in rows}) == len(rows)
    for r in rows:
        f = tables.frames_from_row(r)
        assert not np.array_equal(f[0], f[-1]), r["video_id"]


def test_seed_changes_the_set(small_cfg, tmp_path):
    a = tables.read_table(tables.VIDEOS, videos.run(small_cfg, tmp_path / "a", progress=False).videos)
    other = small_cfg.model_copy(update={"seed": 1})
    b = tables.read_table(tables.VIDEOS, videos.run(other, tmp_path / "b", progress=False).videos)
    assert [r["caption"] for r in a] != [r["caption"] for r in b]


def test_samples_are_written(small_cfg, tmp_path):
    out = videos.run(small_cfg, tmp_path, progress=False)
    names = sorted(p.name for p in out.samples)
    assert names == ["contact_sheet.png", "shapes-00000.gif", "shapes-00001.gif"]
    assert all(p.stat().st_size > 0 for p in out.samples)


def test_split_is_stable_and_near_fraction():
    ids = [f"shapes-{i:05d}" for i in range(4000)]
    splits = [videos.split_of(i, 0.125) for i in ids]
    assert abs(splits.count("test") / len(ids) - 0.125) < 0.02
    assert videos.split_of("shapes-00042", 0.125) == videos.split_of("shapes-00042", 0.125)
    assert all(videos.split_of(i, 0.0) == "train" for i in ids[:50])


def test_shards_cover_every_index_once():
    got = [i for r in videos.shards(130, 64) for i in r]
    assert got == list(range(130))


def test_full_profile_ingests_a_folder(tmp_path, small_cfg):
    from eve_fdd.data.video import write_gif

    clips = tmp_path / "clips"
    clips.mkdir()
    frames = np.stack([np.full((20, 24, 3), 10 * i, np.uint8) for i in range(12)])
    write_gif(frames, clips / "ok.gif", fps=8)
    write_gif(frames[:2], clips / "short.gif", fps=8)
    (clips / "captions.csv").write_text("file,caption\nok.gif,a grey fade\nshort.gif,too short\n")
    cfg = small_cfg.model_copy(
        update={"profile": "full", "videos": small_cfg.videos.model_copy(
            update={"ingest": small_cfg.videos.ingest.model_copy(update={"source_dir": str(clips), "size": 16, "frames": 4, "stride": 2})}
        )}
    )
    out = videos.run(cfg, tmp_path / "out", progress=False)
    rows = tables.read_table(tables.VIDEOS, out.videos)
    rejects = tables.read_table(tables.REJECTS, out.rejects)
    assert [r["video_id"] for r in rows] == ["ok"] and rows[0]["height"] == 16 and rows[0]["num_frames"] == 4
    assert [(r["reason"], r["stage"]) for r in rejects] == [("too_short", "videos")]
    assert "short.gif" in rejects[0]["item"]
    assert out.metrics["rejected"] == 1 and out.metrics["rejected.too_short"] == 1
    assert json.loads(json.dumps(out.metrics)) == out.metrics
