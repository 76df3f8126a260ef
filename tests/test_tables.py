import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from eve_fdd.data import tables
from eve_fdd.data.tables import SchemaError


def _row(video_id="v0", frames=None, **over):
    frames = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3) if frames is None else frames
    row = dict(
        video_id=video_id, split="train", caption="a red circle on a black background", num_frames=frames.shape[0],
        height=frames.shape[1], width=frames.shape[2], fps=8.0, frames=tables.frames_to_bytes(frames),
        source="shapes", scene=None, seed=3,
    )
    row.update(over)
    return row


def test_round_trip_keeps_values_and_frames(tmp_path):
    frames = np.random.default_rng(0).integers(0, 256, size=(3, 5, 6, 3), dtype=np.uint8)
    rows = [_row("a", frames), _row("b", scene='{"x": 1}', seed=None)]
    path = tmp_path / "videos.parquet"
    assert tables.write_table(tables.VIDEOS, rows, path) == 2
    back = tables.read_table(tables.VIDEOS, path)
    assert back == rows
    np.testing.assert_array_equal(tables.frames_from_row(back[0]), frames)
    assert not list(tmp_path.glob("*.tmp"))  # atomic write leaves nothing behind


def test_empty_table_round_trips(tmp_path):
    path = tmp_path / "rejects.parquet"
    tables.write_table(tables.REJECTS, [], path)
    assert tables.read_table(tables.REJECTS, path) == []
    assert pq.read_schema(path).names == tables.REJECTS.schema.names


def test_write_rejects_bad_frame_bytes_naming_the_row(tmp_path):
    bad = _row("broken", frames=None)
    bad["frames"] = bad["frames"][:-1]
    with pytest.raises(SchemaError, match=r"row 1 \('broken'\).*expected num_frames\*height\*width\*3 = 96"):
        tables.write_table(tables.VIDEOS, [_row("ok"), bad], tmp_path / "v.parquet")
    assert not (tmp_path / "v.parquet").exists()


def test_write_rejects_missing_and_extra_columns(tmp_path):
    row = _row()
    del row["caption"]
    row["colour"] = "red"
    with pytest.raises(SchemaError, match=r"missing columns \['caption'\] and unexpected columns \['colour'\]"):
        tables.write_table(tables.VIDEOS, [row], tmp_path / "v.parquet")


def test_write_rejects_wrong_types(tmp_path):
    with pytest.raises(SchemaError, match="declared schema"):
        tables.write_table(tables.VIDEOS, [_row(num_frames="two")], tmp_path / "v.parquet")


def test_write_rejects_bad_split_and_empty_caption(tmp_path):
    with pytest.raises(SchemaError, match="split must be"):
        tables.write_table(tables.VIDEOS, [_row(split="val")], tmp_path / "v.parquet")
    with pytest.raises(SchemaError, match="caption is empty"):
        tables.write_table(tables.VIDEOS, [_row(caption="  ")], tmp_path / "v.parquet")


def _write_raw(path, table):
    pq.write_table(table, path)
    return path


def test_read_names_missing_column(tmp_path):
    good = pa.Table.from_pylist([_row()], schema=tables.VIDEOS.schema)
    path = _write_raw(tmp_path / "v.parquet", good.drop_columns(["fps"]))
    with pytest.raises(SchemaError, match=r"v\.parquet: videos table has no column 'fps' \(expected float\)"):
        tables.read_table(tables.VIDEOS, path)


def test_read_names_wrong_column_type(tmp_path):
    good = pa.Table.from_pylist([_row()], schema=tables.VIDEOS.schema)
    idx = good.schema.get_field_index("height")
    path = _write_raw(tmp_path / "v.parquet", good.set_column(idx, "height", pa.array(["4"])))
    with pytest.raises(SchemaError, match="column 'height' has type string, expected int32"):
        tables.read_table(tables.VIDEOS, path)


def test_read_names_nulls_and_bad_rows(tmp_path):
    loose = pa.schema([f.with_nullable(True) for f in tables.VIDEOS.schema])
    path = _write_raw(tmp_path / "n.parquet", pa.Table.from_pylist([_row(caption=None)], schema=loose))
    with pytest.raises(SchemaError, match="column 'caption' has 1 null values"):
        tables.read_table(tables.VIDEOS, path)
    short = _row("cut")
    short["frames"] = b"\x00" * 10
    path = _write_raw(tmp_path / "s.parquet", pa.Table.from_pylist([_row(), short], schema=tables.VIDEOS.schema))
    with pytest.raises(SchemaError, match=r"s\.parquet: videos row 1 \('cut'\): frames has 10 bytes"):
        tables.read_table(tables.VIDEOS, path)


def test_read_rejects_extra_columns_and_non_parquet(tmp_path):
    good = pa.Table.from_pylist([_row()], schema=tables.VIDEOS.schema)
    path = _write_raw(tmp_path / "x.parquet", good.append_column("extra", pa.array([1])))
    with pytest.raises(SchemaError, match=r"unexpected columns \['extra'\]"):
        tables.read_table(tables.VIDEOS, path)
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"not parquet at all")
    with pytest.raises(SchemaError, match="not a readable parquet file"):
        tables.read_table(tables.VIDEOS, junk)
    with pytest.raises(SchemaError, match="not found"):
        tables.read_table(tables.VIDEOS, tmp_path / "absent.parquet")


def test_frames_to_bytes_checks_layout():
    with pytest.raises(ValueError, match="uint8"):
        tables.frames_to_bytes(np.zeros((2, 4, 4, 3), dtype=np.float32))
    with pytest.raises(ValueError, match=r"\(F, H, W, 3\)"):
        tables.frames_to_bytes(np.zeros((4, 4, 3), dtype=np.uint8))


def test_inspect_checks_and_summarises_an_edit_pairs_table(tmp_path, capsys):
    from eve_fdd.cli import main
    from eve_fdd.config import Config
    from eve_fdd.stages import edit_pairs

    out = edit_pairs.run(Config(edit_pairs={"count": 8, "test_fraction": 0.25, "shard_size": 8, "samples": 0}), tmp_path)
    assert main(["inspect", str(out.pairs), "--rows", "1"]) == 0
    text = capsys.readouterr().out
    assert "edit_pairs table, 8 rows, schema valid" in text and "split: {" in text and "task: {" in text
    assert "bytes>" in text  # the images are shown as their size
