"""The full profile's `edit_pairs` ingest (data/edit_ingest.py): InstructPix2Pix's parquet files
and the images + pairs.jsonl/csv folder, the task rule, every bad row a counted, named reject."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from eve_fdd.config import Config, EditIngestConfig
from eve_fdd.data import tables
from eve_fdd.data.edit_ingest import IngestError, assign_task, ingest_edit_pairs, nothing_to_ingest
from eve_fdd.data.video import resize_center_crop
from eve_fdd.stages import edit_pairs


def png(width: int = 20, height: int = 12, mode: str = "RGB", value: int = 0) -> bytes:
    rng = np.random.default_rng(value)
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    pixels = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels[..., 0] if channels == 1 else pixels, mode).save(buf, "PNG")
    return buf.getvalue()


def ip2p_row(i: int, **overrides) -> dict:
    row = dict(original_prompt=f"a photo of a cat {i}", original_image=png(value=2 * i), edit_prompt="remove the cat",
               edited_prompt=f"a photo of an empty room {i}", edited_image=png(value=2 * i + 1))
    return row | overrides


def write_parquet(path: Path, rows: list[dict], struct: bool, task: bool = False) -> Path:
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())]) if struct else pa.binary()
    fields = [("original_prompt", pa.string()), ("original_image", image), ("edit_prompt", pa.string()),
              ("edited_prompt", pa.string()), ("edited_image", image)] + ([("task", pa.string())] if task else [])
    if struct:
        rows = [r | {k: {"bytes": r[k], "path": f"{k}.png"} for k in ("original_image", "edited_image")} for r in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=pa.schema(fields)), path, row_group_size=2)
    return path


def write_folder(root: Path, rows: list[dict], kind: str, images: dict[str, bytes]) -> Path:
    """A folder layout: `images` written under root, `rows` as pairs.jsonl or pairs.csv."""
    root.mkdir(parents=True, exist_ok=True)
    for name, data in images.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    if kind == "jsonl":
        (root / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        with (root / "pairs.csv").open("w", newline="") as handle:
            writer = csv.DictWriter(handle, ["input_image", "edited_image", "instruction", "input_caption", "output_caption", "task"])
            writer.writeheader()
            writer.writerows(rows)
    return root


def folder_row(i: int, **overrides) -> dict:
    return dict(input_image=f"in/{i}.png", edited_image=f"out/{i}.png", instruction="make it a watercolor painting",
                input_caption=f"a dog {i}", output_caption=f"a watercolor painting of a dog {i}", task="") | overrides


def check_rows(rows: list[dict], size: int, tmp_path: Path) -> None:
    assert tables.write_table(tables.EDIT_PAIRS, rows, tmp_path / "pairs.parquet") == len(rows)  # every column, of its type
    for r in rows:
        assert r["height"] == r["width"] == size and len(r["input_image"]) == size * size * 3
        assert r["scene"] is None and r["edit_spec"] is None and r["seed"] is None and r["frame"] == 0
        assert r["split"] in ("train", "test")


@pytest.mark.parametrize("struct", [True, False], ids=["struct-images", "binary-images"])
def test_parquet_layout_is_read_and_images_resized_as_video_frames_are(tmp_path, struct):
    src = write_parquet(tmp_path / "ip2p" / "data" / "train-00000.parquet", [ip2p_row(i) for i in range(5)], struct)
    rows, rejects, counts = ingest_edit_pairs(EditIngestConfig(source=str(tmp_path / "ip2p"), size=8), 0.5)
    assert rejects == [] and len(rows) == 5 and counts == {"task_from_data": 0, "task_from_rule": 5}
    assert [r["pair_id"] for r in rows] == [f"ip2p-data_train-00000-{i:07d}" for i in range(5)]
    check_rows(rows, 8, tmp_path)
    first = rows[0]
    assert (first["input_caption"], first["instruction"], first["output_caption"], first["task"]) == (
        "a photo of a cat 0", "remove the cat", "a photo of an empty room 0", "remove")
    expected = resize_center_crop(np.asarray(Image.open(io.BytesIO(png(value=1)))), 8)
    assert np.array_equal(edit_pairs.image(first, "output_image"), expected)
    # the same file named directly, and a limit
    again, _, _ = ingest_edit_pairs(EditIngestConfig(source=str(src), size=8, limit=3), 0.5)
    assert [r["pair_id"] for r in again] == [f"ip2p-train-00000-{i:07d}" for i in range(3)]


@pytest.mark.parametrize("kind", ["jsonl", "csv"])
def test_folder_layout_is_read_from_jsonl_or_csv(tmp_path, kind):
    images = {f"{d}/{i}.png": png(16, 16, value=10 * i + (d == "out")) for i in range(3) for d in ("in", "out")}
    root = write_folder(tmp_path / "pairs", [folder_row(i, task="style" if i == 0 else "") for i in range(3)], kind, images)
    rows, rejects, counts = ingest_edit_pairs(EditIngestConfig(source=str(root), size=16), 0.0)
    assert rejects == [] and [r["pair_id"] for r in rows] == [f"in_{i}--out_{i}" for i in range(3)]
    assert counts == {"task_from_data": 1, "task_from_rule": 2} and {r["task"] for r in rows} == {"style"}
    assert np.array_equal(edit_pairs.image(rows[1], "input_image"), np.asarray(Image.open(root / "in/1.png")))
    check_rows(rows, 16, tmp_path)


def test_the_task_rule_and_the_datas_task_wins(tmp_path):
    cases = {
        "remove the hat": "remove", "Get rid of the car": "remove", "add a dog next to him": "add",
        "put a hat on the man": "add", "change the background to a beach": "background",
        "make it a watercolor painting": "style", "in the style of Van Gogh": "style", "make it look like a cartoon": "style",
        "make the table wooden": "texture", "make it made of glass": "texture", "make it winter": "global",
        "turn it into a sunset": "global", "turn the cat into a dog": "local", "make her hair red": "local",
    }
    assert {text: assign_task(text) for text in cases} == cases
    rows = [ip2p_row(0, task="texture"), ip2p_row(1, task=""), ip2p_row(2, task="Background")]
    write_parquet(tmp_path / "d.parquet", rows, struct=True, task=True)
    got, rejects, counts = ingest_edit_pairs(EditIngestConfig(source=str(tmp_path / "d.parquet"), size=8), 0.0)
    assert rejects == [] and [r["task"] for r in got] == ["texture", "remove", "background"]
    assert counts == {"task_from_data": 2, "task_from_rule": 1}


def test_every_bad_row_is_one_reject_with_its_reason_naming_the_row(tmp_path):
    def ok(i):
        return {f"in/{i}.png": png(value=i), f"out/{i}.png": png(value=100 + i)}

    images = ok(0) | ok(1) | ok(5) | ok(6) | ok(7) | ok(8) | {
        "in/2.png": b"not an image at all", "out/2.png": png(),
        "in/3.png": png(mode="RGBA"), "out/3.png": png(),
        "in/4.png": png(), "out/4.png": png(mode="L"),
        "in/9.png": png(20, 12), "out/9.png": png(12, 20),
    }
    long = "a very long caption " * 5  # 20 words; the limit below is 10
    bad = {  # line in pairs.jsonl -> (row, reason)
        2: (folder_row(1, edited_image="out/missing.png"), "missing_file"),
        3: (folder_row(2), "undecodable"),
        4: (folder_row(3), "not_rgb"),
        5: (folder_row(4), "not_rgb"),
        6: (folder_row(9), "size_mismatch"),
        7: (folder_row(5, instruction="  "), "missing_field"),
        8: (folder_row(6, output_caption=long), "caption_too_long"),
        9: (folder_row(7, task="recolour"), "unknown_task"),
        10: (folder_row(0), "duplicate_id"),
    }
    rows = [folder_row(0)] + [r for r, _ in bad.values()] + [folder_row(8)]
    root = write_folder(tmp_path / "pairs", rows, "jsonl", images)
    got, rejects, _ = ingest_edit_pairs(EditIngestConfig(source=str(root), size=8), 0.0, count_tokens=lambda t: len(t.split()), max_tokens=10)
    assert len(got) + len(rejects) == len(rows)
    assert [r["pair_id"] for r in got] == ["in_0--out_0", "in_8--out_8"]
    by_line = {int(r["item"].rsplit(" line ", 1)[1]): r for r in rejects}
    assert {line: r["reason"] for line, r in by_line.items()} == {line: reason for line, (_, reason) in bad.items()}
    for line, r in by_line.items():
        assert f"pairs.jsonl line {line}" in r["detail"] and r["stage"] == "edit_pairs"
    assert "output_caption is 20 tokens" in by_line[8]["detail"] and "instruction" in by_line[7]["detail"]
    assert "mode RGBA" in by_line[4]["detail"] and "mode L" in by_line[5]["detail"]
    assert "line 1" in by_line[10]["detail"]  # the row that kept the id
    tables.write_table(tables.REJECTS, rejects, tmp_path / "rejects.parquet")


def test_bad_parquet_bytes_and_unusable_sources(tmp_path):
    rows = [ip2p_row(0), ip2p_row(1, original_image=b"\x89PNG broken"), ip2p_row(2, edited_image=None), ip2p_row(3, edit_prompt=None)]
    src = write_parquet(tmp_path / "a.parquet", rows, struct=False)
    got, rejects, _ = ingest_edit_pairs(EditIngestConfig(source=str(src), size=8), 0.0)
    assert len(got) == 1 and [(r["item"], r["reason"]) for r in rejects] == [
        (f"{src}:row 1", "undecodable"), (f"{src}:row 2", "missing_field"), (f"{src}:row 3", "missing_field")]
    pq.write_table(pa.table({"original_prompt": ["x"]}), tmp_path / "b.parquet")
    with pytest.raises(IngestError, match="missing columns"):
        ingest_edit_pairs(EditIngestConfig(source=str(tmp_path / "b.parquet")), 0.0)
    with pytest.raises(IngestError, match="not found"):
        ingest_edit_pairs(EditIngestConfig(source=str(tmp_path / "nowhere")), 0.0)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "README.md").write_text("put a dataset here")
    assert nothing_to_ingest(EditIngestConfig(source=str(tmp_path / "empty")))
    with pytest.raises(IngestError, match="pairs.jsonl or pairs.csv"):
        ingest_edit_pairs(EditIngestConfig(source=str(tmp_path / "empty")), 0.0)
    (tmp_path / "empty" / "a.png").write_bytes(png())
    assert not nothing_to_ingest(EditIngestConfig(source=str(tmp_path / "empty")))


def test_the_stage_at_full_scale_writes_a_readable_table_with_no_scene(tmp_path):
    from full_profile import tiny_clip_tokenizer

    backbone = tmp_path / "sd"
    tiny_clip_tokenizer().save_pretrained(backbone / "tokenizer")
    rows = [ip2p_row(i) for i in range(6)] + [ip2p_row(6, edit_prompt="make it winter " * 30)]  # > 77 CLIP tokens
    write_parquet(tmp_path / "ip2p" / "train.parquet", rows, struct=True)
    cfg = Config(profile="full", models={"backbone": {"pretrained": str(backbone)}},
                 edit_pairs={"samples": 2, "test_fraction": 0.5, "ingest": {"source": str(tmp_path / "ip2p"), "size": 16}})
    out = edit_pairs.run(cfg, tmp_path / "out")
    pairs = tables.read_table(tables.EDIT_PAIRS, out.pairs)
    rejects = tables.read_table(tables.REJECTS, out.rejects)
    assert len(pairs) == 6 and all(r["scene"] is None and r["edit_spec"] is None and r["seed"] is None for r in pairs)
    assert [r["reason"] for r in rejects] == ["caption_too_long"] and "instruction is" in rejects[0]["detail"]
    m = out.metrics
    assert (m["pairs"], m["rejected"], m["task_from_rule"], m["task_from_data"], m["task.remove"]) == (6, 1, 6, 0, 6)
    assert m["pretrained_edit_adapter"] == 0 and m["train"] + m["test"] == 6
    assert out.samples and out.samples[0].stat().st_size > 0
