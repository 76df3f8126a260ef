"""A folder of real clips + captions.csv -> videos and rejects rows (eve_fdd.data.ingest)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from clips import encode_gif, encode_mp4
from eve_fdd.config import IngestConfig
from eve_fdd.data import tables
from eve_fdd.data.ingest import IngestError, ingest_folder, video_id

FRAMES, STRIDE, SIZE = 4, 2, 16  # a clip needs 4*2 - 1 = 7 frames


def moving_square(n: int, h: int = 40, w: int = 48) -> np.ndarray:
    frames = np.full((n, h, w, 3), 40, np.uint8)
    for i in range(n):
        frames[i, 10:20, 2 * i : 2 * i + 10] = (250, 30, 30)
    return frames


def write_captions(root: Path, rows: list[tuple[str, str]], header: tuple[str, ...] = ("file", "caption")) -> None:
    with (root / "captions.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def config(root: Path) -> IngestConfig:
    return IngestConfig(source_dir=str(root), frames=FRAMES, stride=STRIDE, size=SIZE)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """One clip or row per outcome the stage distinguishes."""
    root = tmp_path / "clips"
    good = encode_mp4(moving_square(16), root / "good.mp4")
    (root / "sub").mkdir()
    encode_gif(moving_square(10), root / "sub" / "waving hand.gif")
    (root / "cut.mp4").write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    (root / "notes.mp4").write_text("not a video, just text\n" * 40)
    encode_mp4(moving_square(16), root / "uncaptioned.mp4")
    encode_mp4(moving_square(5), root / "short.mp4")
    encode_mp4(moving_square(16), root / "silent.mp4")
    (root / "README.txt").write_text("ignored: neither a clip nor listed")
    write_captions(
        root,
        [
            ("good.mp4", "a red square slides right"),
            ("sub/waving hand.gif", "a red square in a gif"),
            ("cut.mp4", "truncated file"),
            ("notes.mp4", "text renamed to mp4"),
            ("gone.mp4", "the file was deleted"),
            ("short.mp4", "only five frames"),
            ("silent.mp4", "   "),
            ("good.mp4", "a second caption for the same clip"),
            ("README.txt", "not a clip type"),
        ],
    )
    return root


EXPECTED_REJECTS = {
    "cut.mp4": "unreadable",
    "notes.mp4": "unreadable",
    "gone.mp4": "missing_file",
    "short.mp4": "too_short",
    "silent.mp4": "empty_caption",
    "uncaptioned.mp4": "missing_caption",
    "README.txt": "unsupported_extension",
}


def test_accepts_good_clips_and_rejects_the_rest(folder: Path) -> None:
    videos, rejects = ingest_folder(config(folder))
    assert [v["video_id"] for v in videos] == ["good", "sub_waving_hand"]
    by_id = {v["video_id"]: v for v in videos}
    assert by_id["good"]["caption"] == "a red square slides right"  # the first of the duplicates
    assert by_id["good"]["source"] == str(folder / "good.mp4")
    assert by_id["good"]["fps"] == pytest.approx(6.0)  # 12 fps at stride 2
    for row in videos:
        assert (row["num_frames"], row["height"], row["width"]) == (FRAMES, SIZE, SIZE)
        assert row["scene"] is None and row["seed"] is None

    got = {(Path(r["item"]).name, r["reason"]) for r in rejects}
    assert got == {(name, reason) for name, reason in EXPECTED_REJECTS.items()} | {("good.mp4", "duplicate_caption")}
    for row in rejects:
        assert row["stage"] == "videos"
        assert Path(row["item"]).name in row["detail"]
    short = next(r for r in rejects if r["reason"] == "too_short")
    assert "5 frames" in short["detail"] and "7" in short["detail"]


def test_every_clip_and_row_is_accounted_for(folder: Path) -> None:
    videos, rejects = ingest_folder(config(folder))
    with (folder / "captions.csv").open() as handle:
        csv_rows = sum(1 for _ in csv.DictReader(handle))
    uncaptioned = 1
    assert len(videos) + len(rejects) == csv_rows + uncaptioned


def test_rows_round_trip_through_the_tables(folder: Path, tmp_path: Path) -> None:
    videos, rejects = ingest_folder(config(folder))
    assert all(set(row) == set(tables.VIDEOS.schema.names) - {"split"} for row in videos)
    for row in videos:
        row["split"] = "train"  # assigned by the stage, from videos.test_fraction
    assert tables.write_table(tables.VIDEOS, videos, tmp_path / "videos.parquet") == len(videos)
    assert tables.write_table(tables.REJECTS, rejects, tmp_path / "rejects.parquet") == len(rejects)
    back = tables.read_table(tables.VIDEOS, tmp_path / "videos.parquet")
    assert [r["video_id"] for r in back] == [r["video_id"] for r in videos]
    frames = tables.frames_from_row(back[0])
    assert frames.shape == (FRAMES, SIZE, SIZE, 3)
    np.testing.assert_array_equal(frames, tables.frames_from_row(videos[0]))
    assert tables.read_table(tables.REJECTS, tmp_path / "rejects.parquet") == rejects


def test_output_is_deterministic(folder: Path) -> None:
    assert ingest_folder(config(folder)) == ingest_folder(config(folder))


def test_missing_captions_csv_names_the_path(tmp_path: Path) -> None:
    encode_mp4(moving_square(8), tmp_path / "a.mp4")
    with pytest.raises(IngestError, match="captions.csv") as err:
        ingest_folder(config(tmp_path))
    assert str(tmp_path / "captions.csv") in str(err.value) and "file, caption" in str(err.value)


def test_captions_csv_without_caption_column(tmp_path: Path) -> None:
    write_captions(tmp_path, [("a.mp4", "a clip")], header=("file", "text"))
    with pytest.raises(IngestError, match=r"missing columns \['caption'\]"):
        ingest_folder(config(tmp_path))


def test_missing_source_dir(tmp_path: Path) -> None:
    with pytest.raises(IngestError, match="clip folder not found"):
        ingest_folder(config(tmp_path / "nowhere"))


def test_video_id_flattens_folders_and_spaces() -> None:
    assert video_id("sub/my clip.mp4") == "sub_my_clip"
    assert video_id("plain.webm") == "plain"


def test_clashing_ids_are_rejected(tmp_path: Path) -> None:
    encode_mp4(moving_square(8), tmp_path / "a.mp4")
    encode_gif(moving_square(8), tmp_path / "a.gif")
    write_captions(tmp_path, [("a.mp4", "mp4 version"), ("a.gif", "gif version")])
    videos, rejects = ingest_folder(config(tmp_path))
    assert [v["source"] for v in videos] == [str(tmp_path / "a.gif")]  # sorted by file: a.gif first
    assert [(Path(r["item"]).name, r["reason"]) for r in rejects] == [("a.mp4", "duplicate_id")]
