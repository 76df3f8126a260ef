"""A TGVE / TGVE+ benchmark CSV + clip folder -> BenchmarkItems and rejects (eve_fdd.data.benchmark)."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from eve_fdd.config import IngestConfig
from eve_fdd.data import benchmark
from eve_fdd.data.benchmark import PROMPT_TYPES, TASK_OF, BenchmarkError, read_benchmark
from eve_fdd.data.video import decode_clip, write_mp4
from eve_fdd.world import vocab

INGEST = IngestConfig(frames=4, stride=2, size=16)  # a clip needs 4*2 - 1 = 7 frames
TGVE = ["Video name", "Owner", "Our GT caption", "Style Change Caption", "Object Change Caption",
        "Background Change Caption", "Multiple Changes Caption"]
TGVE_PLUS = ["Remove Instruction", "Remove Caption", "Add Instruction", "Add Caption",
             "Texture Instruction", "Texture Caption"]
ROWS = [  # CSV lines 2..7
    ["red_right", "davis", "a red square moving right", "a red square, watercolour", "a red circle moving right",
     "a red square moving right on a beach", "a red circle on a beach at night",
     "remove the square", "an empty background", "add a green ball", "a red square and a green ball",
     "make the square wooden", ""],
    ["green_down.mp4", "yt", "a green square moving down", "a green square, pixel art", "",
     "a green square on grass", "a blue square on grass, oil painting"] + [""] * 6,
    ["gone", "yt", "a clip that was never downloaded", "x, watercolour", "", "", ""] + [""] * 6,
    ["broken", "yt", "a broken file", "x, watercolour", "", "", ""] + [""] * 6,
    ["blue_up", "yt", "  ", "a blue square, sketch", "", "", ""] + [""] * 6,
    ["", "yt", "a row without a video", "x, watercolour", "", "", ""] + [""] * 6,
]


def moving_rectangle(colour: tuple[int, int, int], step: tuple[int, int], frames: int = 12) -> np.ndarray:
    """(12, 40, 48, 3) uint8: a 12x12 rectangle crossing a gray background."""
    out = np.full((frames, 40, 48, 3), 90, np.uint8)
    for f in range(frames):
        y, x = 14 + step[0] * (f - frames // 2), 18 + step[1] * (f - frames // 2)
        out[f, max(y, 0) : y + 12, max(x, 0) : x + 12] = colour
    return out


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> tuple[Path, Path]:
    """(csv, clip folder): three real clips named without extension in the CSV, one broken file."""
    root = tmp_path_factory.mktemp("tgve")
    clips = root / "videos"
    clips.mkdir()
    write_mp4(moving_rectangle((220, 30, 30), (0, 2)), clips / "red_right.mp4", fps=12)
    write_mp4(moving_rectangle((30, 200, 60), (2, 0)), clips / "green_down.mp4", fps=12)
    write_mp4(moving_rectangle((40, 80, 230), (-2, 0)), clips / "blue_up.mp4", fps=12)
    (clips / "broken.mp4").write_bytes(b"\x00\x01not an mp4\xff")
    return write_csv(root / "tgve.csv", TGVE + TGVE_PLUS, ROWS), clips


@pytest.fixture(scope="module")
def decoded(bench) -> dict:
    """read_benchmark's result, with every decode_clip call counted by path."""
    calls: Counter[str] = Counter()

    def counting(path, *args):
        calls[Path(path).name] += 1
        return decode_clip(path, *args)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(benchmark, "decode_clip", counting)
        items, rejects = read_benchmark(*bench, INGEST)
    return {"items": items, "rejects": rejects, "calls": calls}


def test_items_per_row_and_type(decoded):
    ids = [item.row_id for item in decoded["items"]]
    assert ids == [f"red_right/{t}" for t in PROMPT_TYPES[:6]] + [
        "green_down/style", "green_down/background", "green_down/multiple"]
    assert all(item.task == TASK_OF[item.prompt_type] for item in decoded["items"])
    assert TASK_OF == {"style": "style", "object": "local", "background": "background", "multiple": "global",
                       "remove": "remove", "add": "add", "texture": "texture"}
    assert set(TASK_OF.values()) <= set(vocab.TASKS)


def test_instructions_from_column_or_caption(decoded):
    by_id = {item.row_id: item for item in decoded["items"]}
    remove, style = by_id["red_right/remove"], by_id["green_down/style"]
    assert (remove.instruction, remove.output_caption) == ("remove the square", "an empty background")
    assert by_id["red_right/add"].instruction == "add a green ball"
    # TGVE's four types have no instruction column: the target caption stands in.
    assert style.instruction == style.output_caption == "a green square, pixel art"
    assert style.input_caption == "a green square moving down"
    assert {item.video_id for item in by_id.values()} == {"red_right", "green_down"}


def test_frames_decoded_once_per_video(decoded, bench):
    assert decoded["calls"] == {"red_right.mp4": 1, "green_down.mp4": 1, "broken.mp4": 1}
    red = [item for item in decoded["items"] if item.video_id == "red_right"]
    expected, _ = decode_clip(bench[1] / "red_right.mp4", 4, 2, 16)
    for item in red:
        assert item.frames is red[0].frames and not item.frames.flags.writeable
        assert item.frames.dtype == np.uint8 and item.frames.shape == (4, 16, 16, 3)
    np.testing.assert_array_equal(red[0].frames, expected)


def test_rejects_name_reason_and_file(decoded, bench):
    csv_path, clips = bench
    rejects = decoded["rejects"]
    assert all(set(r) == {"stage", "item", "reason", "detail"} and r["stage"] == "evaluate" for r in rejects)
    assert [(r["item"], r["reason"]) for r in rejects] == [
        ("red_right/texture", "empty_caption"),
        (str(clips / "gone"), "missing_video"),
        (str(clips / "broken.mp4"), "unreadable"),
        (str(clips / "blue_up.mp4"), "empty_caption"),
        (f"{csv_path}:7", "missing_file"),
    ]
    details = [r["detail"] for r in rejects]
    assert "'Texture Instruction' is 'make the square wooden'" in details[0] and "line 2" in details[0]
    assert str(clips / "gone") in details[1] and f"{csv_path} line 4" in details[1] and ".mp4" in details[1]
    assert str(clips / "broken.mp4") in details[2] and "line 5" in details[2]
    assert "'Our GT caption' column is empty" in details[3]
    assert "'Video name' column is empty" in details[4]


def test_headers_matched_by_words_and_case(tmp_path, bench):
    header = ["VIDEO_NAME", "Original caption", "style prompt", "texture-instruction", "Texture caption"]
    rows = [["red_right.mp4", "a red square", "a red square, sketch", "", "a wooden square"]]
    items, rejects = read_benchmark(write_csv(tmp_path / "b.csv", header, rows), bench[1], INGEST)
    assert rejects == []
    assert [(i.row_id, i.instruction) for i in items] == [
        ("red_right/style", "a red square, sketch"), ("red_right/texture", "a wooden square")]


@pytest.mark.parametrize(
    "header, expected",
    [
        (["Clip", "Our GT caption", "Style Change Caption"], "a video column"),
        (["Video name", "Style Change Caption"], "a source caption column"),
        (["Video name", "Our GT caption", "Owner"], "an edit-type column"),
    ],
)
def test_csv_without_needed_columns_stops(tmp_path, bench, header, expected):
    csv_path = write_csv(tmp_path / "bad.csv", header, [["red_right"] * len(header)])
    with pytest.raises(ValueError) as info:
        read_benchmark(csv_path, bench[1], INGEST)
    message = str(info.value)
    assert isinstance(info.value, BenchmarkError)
    assert str(csv_path) in message and expected in message and str(header) in message


def test_duplicate_video_and_row_without_edits_are_rejects(tmp_path, bench):
    header = ["Video name", "Our GT caption", "Style Change Caption", "Object Change Caption"]
    rows = [["red_right", "a red square", "", "a red circle"], ["red_right.mp4", "again", "x", ""],
            ["green_down", "a green square", "", ""]]
    csv_path = write_csv(tmp_path / "dup.csv", header, rows)
    items, rejects = read_benchmark(csv_path, bench[1], INGEST, stage="bench")
    assert [(i.row_id, i.task) for i in items] == [("red_right/object", "local")]
    assert [(r["stage"], r["item"], r["reason"]) for r in rejects] == [
        ("bench", str(bench[1] / "red_right.mp4"), "duplicate_id"),
        ("bench", str(bench[1] / "green_down.mp4"), "no_prompts"),
    ]
    assert "already taken by line 2" in rejects[0]["detail"]


def test_header_naming_two_types_stops(tmp_path, bench):
    csv_path = write_csv(tmp_path / "two.csv", ["Video name", "Our GT caption", "Object Remove Caption"], [])
    with pytest.raises(BenchmarkError, match="names several edit types"):
        read_benchmark(csv_path, bench[1], INGEST)
