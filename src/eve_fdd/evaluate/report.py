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


PAIRED_COLUMNS: tuple[tuple[str, str], ...] = (
    ("gt.fidelity.changed", "changed err"),
    ("gt.fidelity.kept", "kept err"),
    ("gt.temporal", "temporal err"),
)
Z95 = 1.959964
# two-sided 95% quantiles of Student's t by degrees of freedom (the over-seeds intervals; 1.96 beyond 30)
T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
       2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def load_scores(evaluate_dir: Path, methods: Sequence[str]) -> dict[str, dict]:
    """Each method's per-data-point scores (stage evaluate's `scores.json`)."""
    out = {}
    for m in methods:
        path = evaluate_dir / m / "scores.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: not found; the report pairs methods by data point (`dvc repro evaluate baselines`)")
        out[m] = json.loads(path.read_text())
    return out


def _values(scores: dict, key: str) -> np.ndarray:
    return np.array([np.nan if x is None else x for x in scores["scores"][key]], dtype=float)


def balanced_mean(values: np.ndarray, tasks: Sequence[str]) -> tuple[float, float, int]:
    """(mean, standard error, data points): the mean over tasks of each task's mean (every task
    weighing the same, as the tables' means), its standard error with the tasks as strata, and
    how many finite values went in. The error is NaN where a task has a single value."""
    tasks_arr = np.asarray(tasks)
    means, variances, n = [], [], 0
    for task in sorted(set(tasks)):
        v = values[(tasks_arr == task) & np.isfinite(values)]
        if len(v):
            means.append(v.mean())
            variances.append(v.var(ddof=1) / len(v) if len(v) > 1 else np.nan)
            n += len(v)
    if not means:
        return float("nan"), float("nan"), 0
    return float(np.mean(means)), float(np.sqrt(np.sum(variances)) / len(means)), n


def paired_differences(scores: dict[str, dict], reference: str, key: str, other: str) -> tuple[float, float, int]:
    """`reference - other` on `key` per data point (the same held-out data points, edited with
    the same noise), as a task-balanced mean with its standard error."""
    a, b = scores[reference], scores[other]
    if a["row_ids"] != b["row_ids"]:
        raise ValueError(f"report: {reference} and {other} were evaluated on different data points; rerun `dvc repro evaluate baselines`")
    return balanced_mean(_values(a, key) - _values(b, key), a["tasks"])


def _interval(mean: float, half: float) -> str:
    if not np.isfinite(mean):
        return "–"
    if not np.isfinite(half):
        return f"{mean:+.4f}"
    text = f"{mean:+.4f} [{mean - half:+.4f}, {mean + half:+.4f}]"
    return f"**{text}**" if mean - half > 0 or mean + half < 0 else text


def paired_table(scores: dict[str, dict], reference: str, others: Sequence[str]) -> str:
    """`reference - X` per data point for each other method: the task-balanced mean difference
    and its 95% interval (normal approximation, tasks as strata); bold where the interval
    excludes zero. Errors: negative = `reference` better."""
    keys = [(k, t) for k, t in PAIRED_COLUMNS if k in scores[reference]["scores"]]
    head = f"| {label(reference)} − method | pairs | " + " | ".join(t for _, t in keys) + " |"
    rule = "| --- | ---: |" + " ---: |" * len(keys)
    rows = []
    for m in others:
        found = [paired_differences(scores, reference, k, m) for k, _ in keys]
        cells = [_interval(mean, Z95 * se) for mean, se, _ in found]
        rows.append(f"| {label(m)} | {max(n for _, _, n in found)} | " + " | ".join(cells) + " |")
    return "\n".join([head, rule, *rows])


def standard_errors(scores: dict[str, dict], method: str) -> str:
    """`changed err 0.0041, kept err 0.0012, ...`: the standard error of `method`'s means."""
    found = [(t, balanced_mean(_values(scores[method], k), scores[method]["tasks"])[1]) for k, t in PAIRED_COLUMNS
             if k in scores[method]["scores"]]
    return ", ".join(f"{t} {se:.4f}" for t, se in found)


def seed_differences(seeds: dict[str, dict[str, dict[str, float]]], reference: str, other: str, key: str) -> np.ndarray:
    """`reference - other` on the metric `key` at each seed both have it for (sorted by seed)."""
    ref, oth = seeds.get(reference, {}), seeds.get(other, {})
    return np.array([ref[s][key] - oth[s][key] for s in sorted(set(ref) & set(oth)) if key in ref[s] and key in oth[s]], dtype=float)


def seed_paired_table(seeds: dict[str, dict[str, dict[str, float]]], reference: str, variants: Sequence[str]) -> str:
    """`reference - X` paired by seed (stage fdd's own held-out means of the same seed): the
    mean difference with its 95% t-interval over the seeds both have, and at how many seeds
    `reference` is the better one."""
    head = f"| {label(reference)} − variant | seeds | " + " | ".join(t for _, t in SEED_COLUMNS) + " |"
    rule = "| --- | ---: |" + " ---: |" * len(SEED_COLUMNS)
    rows = []
    ref = seeds.get(reference, {})
    for v in variants:
        common = sorted(set(ref) & set(seeds.get(v, {})))
        if v == reference or not common:
            continue
        cells = []
        for key, _ in SEED_COLUMNS:
            d = seed_differences(seeds, reference, v, key)
            half = T95[min(len(d), 31) - 2] * d.std(ddof=1) / np.sqrt(len(d)) if 1 < len(d) <= 31 else (
                Z95 * d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 31 else float("nan"))
            cells.append(f"{_interval(float(d.mean()), half)} ({int((d < 0).sum())}/{len(d)} better)" if len(d) else "–")
        rows.append(f"| {label(v)} | {len(common)} | " + " | ".join(cells) + " |")
    return "\n".join([head, rule, *rows]) if rows else ""


# What the reproduction sets out to show (issue 29's goal): (other method, key, claim). "beats": the
# paired interval lies below zero and, where two or more seeds of both are known, the sign is the same at every
# seed; "no worse": the paired interval does not lie above zero.
GOALS: tuple[tuple[str, str, str], ...] = (
    ("no_align", "gt.fidelity.changed", "beats"),
    ("no_align", "gt.fidelity.kept", "beats"),
    ("no_align", "gt.temporal", "beats"),
    ("edit_frames", "gt.temporal", "beats"),
    ("edit_frames", "gt.fidelity.changed", "no worse"),
)


def goal_check(scores: dict[str, dict], seeds: dict[str, dict[str, dict[str, float]]], reference: str) -> tuple[list[str], dict[str, float]]:
    """(markdown lines, metrics) of each claim of GOALS whose methods were evaluated: met or not,
    with the paired difference per data point (`reference - other`, 95%) and, for FDD variants
    with seed runs (`seeds`, the current setup's), at how many seeds `reference` is lower."""
    titles = dict(PAIRED_COLUMNS)
    seed_keys = {paired: seed for (paired, _), (seed, _) in zip(PAIRED_COLUMNS, SEED_COLUMNS)}  # the same errors, in the same order
    lines, metrics = [], {}
    for other, key, claim in GOALS:
        if other not in scores or reference not in scores or key not in scores[reference]["scores"]:
            continue
        mean, se, _ = paired_differences(scores, reference, key, other)
        half = Z95 * se
        met = bool(mean + half < 0) if claim == "beats" else bool(mean - half <= 0)
        d = seed_differences(seeds, reference, other, seed_keys[key])
        by_seed = ""
        if len(d) >= 2:
            lower = int((d < 0).sum())
            by_seed = f"; lower at {lower}/{len(d)} seeds"
            if claim == "beats":
                met = met and lower == len(d)
        verb = "beats" if claim == "beats" else "is no worse than"
        lines.append(f"- {label(reference)} {verb} {label(other)} on {titles[key]}: **{'met' if met else 'not met'}** "
                     f"({_interval(mean, half).strip('*')} per data point{by_seed})")
        metrics[f"goal.{other}.{key}.met"] = float(met)
    return lines, metrics


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


def load_stage_runs(fdd_metrics: Path, variants: Sequence[str]) -> dict[str, dict]:
    """Stage fdd's metrics json of each variant that has one: its current setup and the
    held-out means of the pipeline's own run."""
    return {v: json.loads(p.read_text()) for v in variants if (p := fdd_metrics / f"{v}.json").is_file()}


def seed_row(metrics: dict) -> dict:
    """What a seed run keeps of stage fdd's metrics: its setup and held-out means (not the
    "return the input" reference's)."""
    return {k: metrics[k] for k in sorted(metrics) if k == "setup" or k.startswith("eval.") and "identity" not in k}


def with_stage_runs(seeds: dict[str, dict[str, dict]], stage_runs: dict[str, dict], seed: int) -> dict[str, dict[str, dict]]:
    """`seeds` with each variant's own pipeline run as its seed `seed` (params.yaml's
    fdd.seed), in place of the row that file holds for it: a fresh `dvc repro` counts its own
    runs, and the seeds file need only hold the other seeds. A run without the table's errors
    (clips without ground truth: the full profile's own) is no seed run."""
    out = {v: dict(runs) for v, runs in seeds.items()}
    for v, metrics in stage_runs.items():
        if any(key in metrics for key, _ in SEED_COLUMNS):
            out.setdefault(v, {})[str(seed)] = seed_row(metrics)
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
