"""The reproduction report (METHOD.md sections 7, 8): tables, figures and side-by-side grids
from what stages `evaluate` and `baselines` wrote.

- Table 2 analogue (ablations): every FDD variant on the Shapes ground truth and the paper's
  metrics; where `results/fdd_seeds.json` holds other seeds (benchmarks/fdd_seeds.py, DVC
  experiments), a second table gives mean ± sd over the seeds of stage fdd's own evaluation.
- Table 1 analogue (baselines): EVE (`full`) against plug-and-play (`no_align`), the edit
  adapter frame by frame, SDEdit at each level, and the input unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

# (metrics key, column title, higher is better)
COLUMNS: tuple[tuple[str, str, bool], ...] = (
    ("gt.fidelity.changed.mean", "changed err ↓", False),
    ("gt.fidelity.kept.mean", "kept err ↓", False),
    ("gt.temporal.mean", "temporal err ↓", False),
    ("gt.psnr.mean", "PSNR ↑", True),
    ("gt.ssim.mean", "SSIM ↑", True),
    ("paper.clip_frame.mean", "CLIPFrame ↑", True),
    ("paper.pick_score.mean", "PickScore ↑", True),
    ("paper.viclip_dir.mean", "ViCLIP_dir ↑", True),
    ("paper.viclip_out.mean", "ViCLIP_out ↑", True),
)
SEED_COLUMNS: tuple[tuple[str, str], ...] = (
    ("eval.fidelity.changed.mean", "changed err ↓"),
    ("eval.fidelity.kept.mean", "kept err ↓"),
    ("eval.temporal.mean", "temporal err ↓"),
)
LABELS = {"full": "EVE (FDD, full)", "no_align": "plug-and-play (no_align)", "no_sds": "w/o SDS", "no_disc": "w/o discriminators",
          "uniform_k": "w/o K-bin", "random_init": "random init", "input": "input unchanged", "edit_frames": "edit adapter per frame"}


def label(method: str) -> str:
    if method.startswith("sdedit_"):
        return f"SDEdit {int(method.removeprefix('sdedit_')) / 100:.2f}"
    return LABELS.get(method, method)


def load_metrics(metrics_dir: Path, methods: Sequence[str]) -> dict[str, dict[str, float]]:
    out = {}
    for m in methods:
        path = metrics_dir / f"{m}.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: not found; the report needs every method evaluated (`dvc repro evaluate baselines`)")
        out[m] = json.loads(path.read_text())
    return out


def present_columns(metrics: dict[str, dict[str, float]], methods: Sequence[str]) -> tuple[tuple[str, str, bool], ...]:
    """The columns some method has: every one on Shapes; the paper's metrics only on the full
    profile, whose clips have no ground truth."""
    return tuple(c for c in COLUMNS if any(c[0] in metrics[m] for m in methods))


def table(metrics: dict[str, dict[str, float]], methods: Sequence[str]) -> str:
    """A markdown table, one row per method, a column per metric some method has, the best
    value of each column in bold."""
    columns = present_columns(metrics, methods)
    head = "| method | " + " | ".join(title for _, title, _ in columns) + " |"
    rule = "| --- |" + " ---: |" * len(columns)
    best = {}
    for key, _, higher in columns:
        values = [metrics[m][key] for m in methods if key in metrics[m]]
        best[key] = (max if higher else min)(values) if values else None
    rows = []
    for m in methods:
        cells = []
        for key, _, _ in columns:
            v = metrics[m].get(key)
            text = "–" if v is None else f"{v:.4f}"
            cells.append(f"**{text}**" if v is not None and v == best[key] else text)
        rows.append(f"| {label(m)} | " + " | ".join(cells) + " |")
    return "\n".join([head, rule, *rows])


def seed_table(seeds: dict[str, dict[str, dict[str, float]]], variants: Sequence[str]) -> str:
    """mean ± sd (and the number of seeds) of stage fdd's own held-out evaluation per variant."""
    head = "| variant | seeds | " + " | ".join(t for _, t in SEED_COLUMNS) + " |"
    rule = "| --- | ---: |" + " ---: |" * len(SEED_COLUMNS)
    rows = []
    for v in variants:
        runs = list(seeds.get(v, {}).values())
        if not runs:
            continue
        cells = []
        for key, _ in SEED_COLUMNS:
            xs = np.array([r[key] for r in runs if key in r], dtype=float)
            cells.append(f"{xs.mean():.4f} ± {xs.std(ddof=1):.4f}" if len(xs) > 1 else f"{xs.mean():.4f}")
        rows.append(f"| {label(v)} | {len(runs)} | " + " | ".join(cells) + " |")
    return "\n".join([head, rule, *rows])


def current_setup(seeds: dict[str, dict[str, dict]], setups: dict[str, str | None]) -> tuple[dict[str, dict[str, dict]], dict[str, int]]:
    """(kept, left out): of each variant's seed runs, those whose `setup` (stage fdd's
    fingerprint of everything but the seed: params, code, data, teachers) is the variant's
    current one, and how many others there were. Runs of other teachers (say, before a
    retraining) or without a recorded setup do not mix into the mean."""
    kept: dict[str, dict[str, dict]] = {}
    left: dict[str, int] = {}
    for variant, runs in seeds.items():
        setup = setups.get(variant)
        mine = {seed: r for seed, r in runs.items() if setup is not None and r.get("setup") == setup}
        if mine:
            kept[variant] = mine
        if len(mine) < len(runs):
            left[variant] = len(runs) - len(mine)
    return kept, left


def load_setups(fdd_metrics: Path, variants: Sequence[str]) -> dict[str, str | None]:
    """Each variant's current setup, from stage fdd's metrics json (None where it has none)."""
    out: dict[str, str | None] = {}
    for v in variants:
        path = fdd_metrics / f"{v}.json"
        out[v] = json.loads(path.read_text()).get("setup") if path.is_file() else None
    return out


def load_seeds(path: Path) -> dict[str, dict[str, dict[str, float]]]:
    """`{variant: {seed: metrics}}` as benchmarks/fdd_seeds.py writes it; empty when absent."""
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ValueError(f"{path}: expected {{variant: {{seed: {{metric: value}}}}}}")
    return data


def bar_figure(metrics: dict[str, dict[str, float]], methods: Sequence[str], path: Path) -> Path:
    """One panel per column of the tables, a bar per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = present_columns(metrics, methods)
    rows = max(1, -(-len(columns) // 3))
    fig, axes = plt.subplots(rows, 3, figsize=(15, 3.7 * rows), squeeze=False)
    names = [label(m) for m in methods]
    for ax in axes.flat[len(columns):]:
        ax.set_visible(False)
    for ax, (key, title, _) in zip(axes.flat, columns):
        values = [metrics[m].get(key, np.nan) for m in methods]
        ax.barh(names, values, color=["tab:blue" if m == "full" else "tab:gray" for m in methods])
        ax.set_title(title)
        ax.invert_yaxis()
        ax.tick_params(axis="y", labelsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
