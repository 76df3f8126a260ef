"""evaluate/human.py and `eve-fdd human-eval score`: blinded comparison sets and preference rates."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from eve_fdd.cli import main
from eve_fdd.evaluate import human
from eve_fdd.world import random_scene, render_video


def _clips(n: int, seed: int = 0) -> np.ndarray:
    return np.stack([render_video(random_scene(seed + s), 4, 32) for s in range(n)])


@pytest.fixture
def exported(tmp_path):
    rows = [f"v{i}/add" for i in range(6)]
    edits = {"full": _clips(6, 10), "no_align": _clips(6, 20), "sdedit_75": _clips(6, 30)}
    pairs = human.export(tmp_path, rows, _clips(6), [f"caption {i}" for i in range(6)], edits,
                         [("full", "no_align"), ("full", "sdedit_75")], seed=0, fps=8)
    return tmp_path, pairs


def _read(path):
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_export_is_blinded_and_complete(exported):
    folder, pairs = exported
    assert len(pairs) == 12
    shown = _read(folder / "pairs.csv")
    assert {r["pair_id"] for r in shown} == {p.pair_id for p in pairs}
    assert not any(m in ",".join(r.values()) for r in shown for m in ("full", "no_align", "sdedit"))  # methods hidden
    lefts = [p.left_method for p in pairs]
    assert 0 < lefts.count("full") < 12  # sides drawn, not fixed
    for p in pairs:
        for video in (p.input_video, p.left, p.right):
            assert (folder / video).is_file()
    page = (folder / "index.html").read_text()
    assert all(f'id="{p.pair_id}"' in page for p in pairs) and "answers.csv" in page
    assert [r["pair_id"] for r in _read(folder / "answers_template.csv")] == [r["pair_id"] for r in shown]


def _answer(folder, pairs, choose, path):
    """Answers choosing, for every question, what `choose(pair)` says: a method name or 'tie'."""
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["pair_id", "rater", *human.QUESTIONS])
        for p in pairs:
            c = choose(p)
            side = "tie" if c == "tie" else "left" if p.left_method == c else "right"
            w.writerow([p.pair_id, "r1", side, side, side])
    return path


def test_score_counts_wins_ties_and_gives_intervals(exported, tmp_path):
    folder, pairs = exported
    answers = _answer(folder, pairs, lambda p: "full" if p.comparison == "full vs no_align" else "tie", tmp_path / "a.csv")
    result = human.score(folder / "key.csv", [answers])
    first = result["full vs no_align"]
    assert first["text_alignment"]["rate"] == 1.0 and first["overall"]["rate"] == 1.0 and first["quality"]["answers"] == 6
    assert first["structure"]["low"] < 0.9 and first["structure"]["high"] == pytest.approx(1.0)
    assert result["full vs sdedit_75"]["overall"]["rate"] == 0.5
    low, high = human.wilson(5, 10)
    assert low == pytest.approx(0.2366, abs=1e-3) and high == pytest.approx(0.7634, abs=1e-3)


def test_unanswered_pairs_are_counted_and_bad_rows_named(exported, tmp_path):
    folder, pairs = exported
    partial = _answer(folder, pairs[:3], lambda p: "no_align", tmp_path / "p.csv")
    res = human.score(folder / "key.csv", [partial])
    assert res["full vs no_align"]["overall"]["unanswered_pairs"] == 3 and res["full vs no_align"]["text_alignment"]["rate"] == 0.0
    bad = tmp_path / "bad.csv"
    bad.write_text("pair_id,rater,text_alignment,structure,quality\n" + f"{pairs[0].pair_id},r,left,maybe,tie\n")
    with pytest.raises(ValueError, match="bad.csv, row 2: structure='maybe'"):
        human.score(folder / "key.csv", [bad])
    bad.write_text("pair_id,rater,text_alignment,structure,quality\nzzz,r,left,left,left\n")
    with pytest.raises(ValueError, match="unknown pair_id 'zzz'"):
        human.score(folder / "key.csv", [bad])


def test_cli_scores_and_writes_preferences(exported, tmp_path, capsys):
    folder, pairs = exported
    answers = _answer(folder, pairs, lambda p: "full", tmp_path / "a.csv")
    assert main(["human-eval", "score", str(folder), str(answers)]) == 0
    out = capsys.readouterr().out
    assert "| full vs no_align | 100.0%" in out and (folder / "preferences.json").is_file()
    assert main(["human-eval", "score", str(folder), str(tmp_path / "none.csv")]) == 2
    assert "none.csv: no such file" in capsys.readouterr().err
