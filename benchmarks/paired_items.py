"""Paired, per-data-point comparison of FDD runs from the held-out edits stage fdd saved
(`<out_dir>/eval/edits.npy` and `key.json`): for each run against a reference run of the same
seed (the same data points, edited with the same noise), the task-balanced mean difference of
changed-pixel, kept-pixel and temporal error with its 95% interval, over the data points of
every seed pooled (tasks as strata; data point x seed pairs treated as independent), the same
per task (`...by_task`), plus each run's own standard error. `--leave-out TASK` leaves a task's
data points out of every number. Reads the Shapes ground truth as stage fdd scores it.

    python benchmarks/paired_items.py --reference full \
        --run full:0=data/fdd/full --run no_align:0=data/fdd/no_align --run features:0=.cache/x/full-0 ... \
        [--leave-out background] [--out results/paired.json]
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

KEYS = (("fidelity.changed", "changed"), ("fidelity.kept", "kept"), ("temporal", "temporal"))
DATA = Path("data")


def per_item(cfg, folder: Path) -> tuple[dict[str, np.ndarray], list[str], list[str]]:
    """Errors per data point of the edits in `folder/eval`, their tasks and row ids."""
    from eve_fdd.distill.data import ground_truth, load_items
    from eve_fdd.evaluate.video_edits import video_errors
    from eve_fdd.models.space import pixels_from_uint8
    from eve_fdd.train.edit_adapter import round_robin

    key = json.loads((folder / "eval" / "key.json").read_text())
    edits = np.load(folder / "eval" / "edits.npy", allow_pickle=False)
    items = load_items(DATA / "instructions" / "instructions.parquet", DATA / "videos" / "videos.parquet", "test")
    items = items.take(round_robin(items.tasks, cfg.fdd.eval_items))
    if list(items.row_ids) != key["row_ids"]:
        raise SystemExit(f"{folder}/eval/key.json: its data points are not stage fdd's current held-out ones")
    w = cfg.world
    truth = pixels_from_uint8(np.stack([ground_truth(items, j, w.frames, w.size, w.supersample, edited=edits[j], speed=w.speed)
                                        for j in range(len(items))]))
    errors = video_errors(pixels_from_uint8(edits), pixels_from_uint8(items.frames), truth)
    return errors, list(items.tasks), list(items.row_ids)


def main() -> None:
    from eve_fdd.config import load_config
    from eve_fdd.evaluate.report import Z95, balanced_mean

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--run", action="append", required=True, metavar="NAME:SEED=DIR")
    parser.add_argument("--reference", required=True)
    parser.add_argument("--leave-out", action="append", default=[], metavar="TASK", help="a task left out of every number (repeatable)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    cfg = load_config(args.params)
    runs: dict[str, dict[str, Path]] = defaultdict(dict)
    for spec in args.run:
        name_seed, _, folder = spec.partition("=")
        name, _, seed = name_seed.partition(":")
        if not folder or not seed:
            raise SystemExit(f"--run {spec!r}: expected NAME:SEED=DIR")
        runs[name][seed] = Path(folder)
    if args.reference not in runs:
        raise SystemExit(f"--reference {args.reference!r} is not among the runs {sorted(runs)}")
    scored = {(n, s): _without(per_item(cfg, d), args.leave_out) for n, seeds in runs.items() for s, d in seeds.items()}
    out: dict[str, dict] = {}
    for name, seeds in runs.items():
        rows: dict[str, dict] = {"seeds": sorted(seeds)}
        tasks = [t for s in sorted(seeds) for t in scored[(name, s)][1]]
        for key, short in KEYS:
            values = np.concatenate([scored[(name, s)][0][key] for s in sorted(seeds)])
            mean, se, n = balanced_mean(values, tasks)
            rows[short] = {"mean": round(mean, 5), "se": round(se, 5), "n": n}
        common = sorted(set(seeds) & set(runs[args.reference]))
        if name != args.reference and common:
            for key, short in KEYS:
                diff = np.concatenate([scored[(args.reference, s)][0][key] - scored[(name, s)][0][key] for s in common])
                pair_tasks = np.array([t for s in common for t in scored[(name, s)][1]])
                mean, se, n = balanced_mean(diff, pair_tasks)
                rows[f"{args.reference}-{name}.{short}"] = {"diff": round(mean, 5), "ci95": round(Z95 * se, 5), "pairs": n,
                                                             "seeds": common}
                by_task = {t: balanced_mean(diff[pair_tasks == t], pair_tasks[pair_tasks == t]) for t in sorted(set(pair_tasks))}
                rows[f"{args.reference}-{name}.{short}.by_task"] = {
                    t: {"diff": round(m, 5), "ci95": round(Z95 * e, 5), "pairs": k} for t, (m, e, k) in by_task.items() if k}
        out[name] = rows
    text = json.dumps(out, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


def _without(scored: tuple[dict[str, np.ndarray], list[str], list[str]], tasks: list[str]) -> tuple[dict[str, np.ndarray], list[str], list[str]]:
    """per_item's errors, tasks and row ids without the data points of `tasks`."""
    errors, item_tasks, row_ids = scored
    keep = np.array([t not in tasks for t in item_tasks])
    return ({k: v[keep] for k, v in errors.items()}, [t for t, k in zip(item_tasks, keep) if k],
            [r for r, k in zip(row_ids, keep) if k])


if __name__ == "__main__":
    main()
