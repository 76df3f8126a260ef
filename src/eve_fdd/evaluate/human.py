"""Human evaluation, TGVE style (METHOD.md section 7): pairwise comparison sets for raters and
preference rates from their answers.

Export (`eve-fdd human-eval export`): for each comparison "A vs B" and each held-out data point,
one pair: the input video, the output caption and the two edited videos, sides drawn at random
(seeded) and hidden from the rater. Files: `videos/*.mp4`, `pairs.csv` (what a rater tool shows),
`key.csv` (which method is on which side; for scoring only), `answers_template.csv`, and
`index.html`, a self-contained page that shows every pair with the three questions and saves
the answers as a CSV in the template's format.

Score (`eve-fdd human-eval score`): answers (pair_id, rater, text_alignment, structure, quality;
each "left", "right" or "tie") -> per comparison and question, A's preference rate = (wins +
ties / 2) / answers with a 95% Wilson interval; "overall" averages the three questions (the
paper's overall score). A row naming an unknown pair or an answer other than left/right/tie
stops with the file and row; pairs nobody answered are counted.
"""

from __future__ import annotations

import csv
import html
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

QUESTIONS = {"text_alignment": "Which edited video follows the output caption better?",
             "structure": "Which edited video keeps the structure of the input video better?",
             "quality": "Which edited video looks better (quality, smoothness)?"}
CHOICES = ("left", "right", "tie")


@dataclass
class Pair:
    pair_id: str
    comparison: str  # "A vs B"
    row_id: str
    input_video: str
    output_caption: str
    left: str  # video file
    right: str
    left_method: str
    right_method: str


def export(out_dir: Path, row_ids: Sequence[str], inputs: np.ndarray, output_captions: Sequence[str], edits: dict[str, np.ndarray],
           comparisons: Sequence[tuple[str, str]], seed: int, fps: float, scale: int = 1) -> list[Pair]:
    """Write the comparison set; `edits[method]` are uint8 clips (N, F, H, W, 3) in the order of
    `row_ids`, `inputs` the input clips."""
    from ..data.video import write_mp4

    for a, b in comparisons:
        for m in (a, b):
            if m not in edits:
                raise ValueError(f"human-eval export: no edits of method {m!r} (have {sorted(edits)})")
            if len(edits[m]) != len(row_ids):
                raise ValueError(f"human-eval export: {len(edits[m])} edits of {m!r} for {len(row_ids)} data points")
    videos = out_dir / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(len(row_ids)):
        write_mp4(inputs[i], videos / f"input-{i:03d}.mp4", fps=fps, scale=scale)
    methods = sorted({m for c in comparisons for m in c})
    # opaque file names (a shuffled number per method and data point): the page must not name the method
    number = dict(zip([(m, i) for m in methods for i in range(len(row_ids))], rng.permutation(len(methods) * len(row_ids))))
    name = {k: f"videos/edit-{n:04d}.mp4" for k, n in number.items()}
    for (m, i), path in name.items():
        write_mp4(edits[m][i], out_dir / path, fps=fps, scale=scale)
    pairs = []
    for a, b in comparisons:
        for i, row in enumerate(row_ids):
            left, right = (a, b) if rng.random() < 0.5 else (b, a)
            pairs.append(Pair(f"p{len(pairs):04d}", f"{a} vs {b}", row, f"videos/input-{i:03d}.mp4", output_captions[i],
                              name[(left, i)], name[(right, i)], left, right))
    order = rng.permutation(len(pairs))  # raters see the comparisons mixed
    shown = [pairs[k] for k in order]
    _write_csv(out_dir / "pairs.csv", ["pair_id", "input_video", "output_caption", "left_video", "right_video"],
               [[p.pair_id, p.input_video, p.output_caption, p.left, p.right] for p in shown])
    _write_csv(out_dir / "key.csv", ["pair_id", "comparison", "row_id", "left_method", "right_method", "left_video", "right_video"],
               [[p.pair_id, p.comparison, p.row_id, p.left_method, p.right_method, p.left, p.right] for p in pairs])
    _write_csv(out_dir / "answers_template.csv", ["pair_id", "rater", *QUESTIONS], [[p.pair_id, "", "", "", ""] for p in shown])
    (out_dir / "index.html").write_text(_page(shown))
    return pairs


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def _page(pairs: list[Pair]) -> str:
    blocks = []
    for p in pairs:
        qs = "".join(
            f'<p>{html.escape(text)} ' + "".join(
                f'<label><input type="radio" name="{p.pair_id}:{q}" value="{c}"> {c}</label> ' for c in CHOICES) + "</p>"
            for q, text in QUESTIONS.items())
        blocks.append(
            f'<section id="{p.pair_id}"><h3>{p.pair_id}</h3><p>Output caption: <b>{html.escape(p.output_caption)}</b></p>'
            f'<div class="row"><figure><video src="{p.input_video}" autoplay loop muted></video><figcaption>input</figcaption></figure>'
            f'<figure><video src="{p.left}" autoplay loop muted></video><figcaption>left</figcaption></figure>'
            f'<figure><video src="{p.right}" autoplay loop muted></video><figcaption>right</figcaption></figure></div>{qs}</section>')
    ids = json.dumps([p.pair_id for p in pairs])
    questions = json.dumps(list(QUESTIONS))
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>eve-fdd human evaluation</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:auto}}.row{{display:flex;gap:1em}}video{{width:192px;image-rendering:pixelated}}
section{{border-bottom:1px solid #ccc;padding:.5em 0}}</style></head><body>
<h1>Which edit is better?</h1><p>Rater: <input id="rater"> Answer every question, then
<button onclick="save()">save answers.csv</button></p>
{''.join(blocks)}
<script>
const ids = {ids}, questions = {questions};
function save() {{
  const rater = document.getElementById("rater").value.replace(/[,\\n]/g, " ");
  const lines = ["pair_id,rater," + questions.join(",")];
  for (const id of ids) {{
    const cells = questions.map(q => (document.querySelector(`input[name="${{id}}:${{q}}"]:checked`) || {{value: ""}}).value);
    lines.push([id, rater, ...cells].join(","));
  }}
  const a = document.createElement("a");
  a.href = URL.createObjectURL(new Blob([lines.join("\\n") + "\\n"], {{type: "text/csv"}}));
  a.download = "answers.csv"; a.click();
}}
</script></body></html>
"""


def wilson(successes: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion (ties count half a success)."""
    if n == 0:
        return (float("nan"), float("nan"))
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def score(key_path: Path, answer_paths: Sequence[Path]) -> dict[str, dict[str, dict[str, float]]]:
    """{comparison "A vs B": {question | "overall": {rate, low, high, answers}}}, A's preference."""
    with key_path.open(newline="") as f:
        key = {r["pair_id"]: r for r in csv.DictReader(f)}
    votes: dict[str, dict[str, list[float]]] = {}
    answered: set[str] = set()
    for path in answer_paths:
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            missing = {"pair_id", *QUESTIONS} - set(reader.fieldnames or ())
            if missing:
                raise ValueError(f"{path}: missing columns {sorted(missing)}; expected pair_id, rater, {', '.join(QUESTIONS)}")
            for line, row in enumerate(reader, start=2):
                pid = row["pair_id"]
                if pid not in key:
                    raise ValueError(f"{path}, row {line}: unknown pair_id {pid!r} (not in {key_path})")
                if all(not row[q] for q in QUESTIONS):
                    continue  # not answered
                a = key[pid]["comparison"].split(" vs ")[0]
                for q in QUESTIONS:
                    choice = row[q].strip().lower()
                    if choice not in CHOICES:
                        raise ValueError(f"{path}, row {line}: {q}={row[q]!r}; expected one of {', '.join(CHOICES)}")
                    side = key[pid]["left_method"] if choice == "left" else key[pid]["right_method"] if choice == "right" else None
                    votes.setdefault(key[pid]["comparison"], {}).setdefault(q, []).append(0.5 if side is None else float(side == a))
                answered.add(pid)
    out: dict[str, dict[str, dict[str, float]]] = {}
    for comparison in sorted({r["comparison"] for r in key.values()}):
        per_q = votes.get(comparison, {})
        res: dict[str, dict[str, float]] = {}
        for q in QUESTIONS:
            v = per_q.get(q, [])
            low, high = wilson(sum(v), len(v))
            res[q] = {"rate": float(np.mean(v)) if v else float("nan"), "low": low, "high": high, "answers": len(v)}
        res["overall"] = {"rate": float(np.mean([res[q]["rate"] for q in QUESTIONS])), "answers": res["quality"]["answers"],
                          "unanswered_pairs": sum(1 for p, r in key.items() if r["comparison"] == comparison and p not in answered)}
        out[comparison] = res
    return out


def markdown(result: dict[str, dict[str, dict[str, float]]]) -> str:
    lines = ["| comparison | " + " | ".join(QUESTIONS) + " | overall | answers |", "| --- |" + " ---: |" * (len(QUESTIONS) + 2)]
    for comparison, res in result.items():
        cells = [f"{res[q]['rate']:.1%} [{res[q]['low']:.1%}, {res[q]['high']:.1%}]" for q in QUESTIONS]
        lines.append(f"| {comparison} | " + " | ".join(cells) + f" | {res['overall']['rate']:.1%} | {res['overall']['answers']} |")
    return "\n".join(lines)
