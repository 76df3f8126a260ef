"""Stage `report`: the reproduction's tables, figure and side-by-side grids (evaluate/report.py)
from stages `evaluate` and `baselines`, written under `report/`:

- `tables.md`: the ablation table (Table 2 analogue) with, where `results/fdd_seeds.json` has
  other seeds, mean ± sd over them; the baseline table (Table 1 analogue); `full - X` for every
  other method paired by data point (and by seed where the seeds file has them), with 95%
  intervals;
- `metrics.png`: a bar per method for every column;
- `grids/item-NN.gif` and `grid.png`: input | ground truth (Shapes) | each method, for a few held-out
  data points (evaluate.samples, spread over the tasks);
and `plots/report/methods.json` (a row per method, every column), a DVC plot (`dvc plots show`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..config import Config
from ..data.video import contact_sheet, display_scale, write_gif
from ..distill.data import ground_truth, has_ground_truth
from ..evaluate import report
from ..train.edit_adapter import round_robin
from .evaluate import Dirs, held_out

STAGE = "report"
PARAMS = ("profile", "world", "videos.fps", "videos.ingest", "fdd.variants", "fdd.seed", "evaluate")
SEEDS = Path("results/fdd_seeds.json")
FDD_METRICS = Path("metrics/fdd")  # each variant's current `setup`: only its seed runs are averaged
REFERENCE = "full"  # the paired differences are full - each other method (or the first variant's, without full)


def methods(cfg: Config) -> tuple[list[str], list[str]]:
    """(the ablation table's variants, the baseline table's methods)."""
    variants = list(cfg.fdd.variants)
    return variants, [m for m in ("full", "no_align") if m in variants] + list(cfg.evaluate.baselines)


def _plot_key(key: str) -> str:
    """`gt.fidelity.changed.mean` -> `changed_error`, `paper.viclip_dir.mean` -> `viclip_dir`."""
    name = key.removesuffix(".mean").split(".")[-1]
    return f"{name}_error" if key.startswith(("gt.fidelity", "gt.temporal")) else name


def build(cfg: Config, dirs: Dirs, metrics_dir: Path, evaluate_dir: Path, out_dir: Path, seeds: Path = SEEDS,
          plots_dir: Path | None = None, fdd_metrics: Path = FDD_METRICS) -> tuple[dict[str, float], list[Path]]:
    variants, baselines = methods(cfg)
    everything = list(dict.fromkeys(variants + baselines))
    if not everything:
        raise ValueError("report: fdd.variants and evaluate.baselines are both empty; nothing to report")
    metrics = report.load_metrics(metrics_dir, everything)
    stage_runs = report.load_stage_runs(fdd_metrics, variants)
    seed_runs, left_out = report.current_setup(report.with_stage_runs(report.load_seeds(seeds), stage_runs, cfg.fdd.seed),
                                               {v: stage_runs.get(v, {}).get("setup") for v in variants})
    truth = any(k.startswith("gt.") for m in everything for k in metrics[m])
    parts = [f"# Reproduction report ({cfg.profile.capitalize()} profile)", "",
             f"Held-out data points: {metrics[everything[0]]['items']:.0f} (test-split videos, spread over the tasks); "
             + ("errors on [0, 1] pixels over frames 1.. (frame 0 of an FDD edit is the edit teacher's). " if truth else
                "the clips have no ground truth: the paper's automatic metrics only. ")
             + "Written by `dvc repro report` from metrics/evaluate/*.json.", ""]
    if variants:
        parts += ["## Ablations (paper Table 2 analogue)", "", report.table(metrics, variants), ""]
        if any(v in seed_runs for v in variants):
            parts += [f"Over seeds (fdd.seed; stage fdd's own evaluation: this pipeline's run at fdd.seed {cfg.fdd.seed} and the "
                      f"other seeds from {seeds}):", "", report.seed_table(seed_runs, variants), ""]
        if left_out:
            parts += [f"Left out of the over-seeds table: {sum(left_out.values())} runs in {seeds} of another setup than "
                      f"stage fdd's current one (other teachers, code or params, or none recorded): "
                      + ", ".join(f"{report.label(v)} {n}" for v, n in left_out.items())
                      + ". Rerun their seeds with `benchmarks/fdd_seeds.py`.", ""]
    if baselines:
        parts += ["## Baselines (paper Table 1 analogue)", "", report.table(metrics, baselines), ""]
    paired: dict[str, float] = {}
    reference = REFERENCE if REFERENCE in variants else (variants or [None])[0]
    if truth and reference is not None and len(everything) > 1:
        scores = report.load_scores(evaluate_dir, everything)
        others = [m for m in everything if m != reference]
        parts += [f"## Paired differences: {report.label(reference)} − each method", "",
                  "Per held-out data point (every method edits the same data points with the same noise), the task-balanced "
                  "mean difference of errors and its 95% interval (normal approximation, tasks as strata); negative: "
                  f"{report.label(reference)} is better; bold: the interval excludes zero. The standard error of "
                  f"{report.label(reference)}'s own means: {report.standard_errors(scores, reference)}.", "",
                  report.paired_table(scores, reference, others), ""]
        for m in others:
            for key, _ in report.PAIRED_COLUMNS:
                if key in scores[reference]["scores"]:
                    mean, se, _ = report.paired_differences(scores, reference, key, m)
                    paired |= {f"paired.{m}.{key}.diff": round(mean, 5), f"paired.{m}.{key}.ci95": round(report.Z95 * se, 5)}
        goal, met = report.goal_check(scores, seed_runs, reference) if reference == REFERENCE else ([], {})
        if goal:
            parts += ["## The goal: what is met", "",
                      "Each claim from its paired difference per data point (95% interval above); \"beats\" also needs the "
                      f"lower error at every seed where {seeds} holds two or more of the current setup.", "", *goal, ""]
            paired |= met
        by_seed = report.seed_paired_table(seed_runs, reference, variants)
        if by_seed:
            parts += [f"Paired by seed (stage fdd's own held-out means, seeds of the current setup in {seeds}; 95% t-interval; "
                      f"at how many seeds {report.label(reference)} has the lower error):", "", by_seed, ""]
    out_dir.mkdir(parents=True, exist_ok=True)
    tables = out_dir / "tables.md"
    tables.write_text("\n".join(parts))
    artifacts = [tables, report.bar_figure(metrics, everything, out_dir / "metrics.png")]
    artifacts += grids(cfg, dirs, evaluate_dir, everything, out_dir)
    plot = Path("plots") / "report" / "methods.json" if plots_dir is None else plots_dir / "methods.json"
    plot.parent.mkdir(parents=True, exist_ok=True)
    plot.write_text(json.dumps([{"method": report.label(m), **{_plot_key(k): metrics[m].get(k) for k, _, _ in report.COLUMNS}}
                                for m in everything], indent=1) + "\n")
    summary = {f"{m}.{k}": metrics[m][k] for m in everything for k, _, _ in report.COLUMNS if k in metrics[m]}
    return summary | paired, artifacts


def grids(cfg: Config, dirs: Dirs, evaluate_dir: Path, methods_: list[str], out_dir: Path) -> list[Path]:
    n = cfg.evaluate.samples
    if not n:
        return []
    items = held_out(cfg, dirs)
    edits = {}
    for m in methods_:
        info = json.loads((evaluate_dir / m / "items.json").read_text())
        if info["row_ids"] != items.row_ids:
            raise ValueError(f"{evaluate_dir / m / 'items.json'}: evaluated on other data points than evaluate.items selects now; "
                             f"rerun `dvc repro evaluate baselines`")
        edits[m] = np.load(evaluate_dir / m / "edits.npy", allow_pickle=False)
    w = cfg.world
    truth_known = has_ground_truth(items)
    rows, labels, paths = [], [], []
    scale = display_scale(cfg.frame_size)
    (out_dir / "grids").mkdir(parents=True, exist_ok=True)
    for k, j in enumerate(round_robin(items.tasks, n)):
        truth = [ground_truth(items, j, w.frames, w.size, w.supersample)] if truth_known else []
        clips = [items.frames[j], *truth, *(edits[m][j] for m in methods_)]
        gif = out_dir / "grids" / f"item-{k:02d}.gif"
        write_gif(np.concatenate(clips, axis=2), gif, fps=cfg.videos.fps, scale=scale)
        paths.append(gif)
        rows += clips
        labels += [f"{items.tasks[j]}: {items.instructions[j]}", *(["ground truth"] if truth_known else []),
                   *(report.label(m) for m in methods_)]
    sheet = out_dir / "grid.png"
    contact_sheet(rows, sheet, scale=scale, captions=labels)
    return [sheet, *paths]
