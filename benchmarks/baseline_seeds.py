"""A baseline's held-out edits at other noise seeds, for pairing it with FDD seed by seed.

Stage `baselines` edits the held-out data points with `evaluate.seed` only (the noise of FDD's
`fdd.seed` run), so the report pairs FDD with a baseline at one seed. This script makes the same
method's edits of the same data points through the same code (stages/evaluate.py:
`held_out`, `edit_items`) at `evaluate.seed` = each seed given, and saves them where
`benchmarks/paired_items.py` reads a run (`<dir>/eval/edits.npy` and `key.json`, as stage fdd
saves a student's), so a baseline pairs with the FDD runs of `benchmarks/fdd_seeds.py` by seed
and data point:

    python benchmarks/baseline_seeds.py --method edit_frames --seeds 1 2 [--work .cache/baseline_seeds]
    python benchmarks/paired_items.py --reference full \\
        --run full:0=data/fdd/full --run full:1=.cache/fdd_seeds/default/full-1 --run full:2=.cache/fdd_seeds/default/full-2 \\
        --run edit_frames:0=.cache/baseline_seeds/edit_frames-0 --run edit_frames:1=... --run edit_frames:2=...

Reads the teachers and data that `dvc repro` wrote (data/). Seed s's noise is stage fdd's at
fdd.seed s (distill/editor.py, `eval_noise_seed`). Prints each seed's held-out errors.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

DATA = Path("data")


def one(params: str, method: str, seed: int, work: Path) -> dict:
    """`method`'s edits of the held-out data points at evaluate.seed = `seed`, saved under
    `work/<method>-<seed>/eval`; their errors against the Shapes ground truth."""
    from eve_fdd.config import load_config
    from eve_fdd.distill.data import ground_truth, has_ground_truth
    from eve_fdd.distill.editor import eval_key, save_edits
    from eve_fdd.evaluate import per_task_means
    from eve_fdd.evaluate.video_edits import video_errors
    from eve_fdd.models.placement import Placement
    from eve_fdd.models.space import pixels_from_uint8
    from eve_fdd.stages import evaluate

    cfg = load_config(params, {"evaluate.seed": seed})
    if evaluate.stage_of(method) != "baselines":
        raise SystemExit(f"--method {method!r}: an FDD variant; its seeds are benchmarks/fdd_seeds.py's")
    dirs = evaluate.Dirs(DATA / "instructions" / "instructions.parquet", DATA / "videos" / "videos.parquet", DATA / "backbone",
                         DATA / "edit_adapter", DATA / "video_adapter", DATA / "fdd", DATA / "metric_models")
    items = evaluate.held_out(cfg, dirs)
    if not has_ground_truth(items):
        raise SystemExit("the held-out data points have no ground truth (profile full or a benchmark CSV): nothing to pair")
    placement = Placement.resolve(cfg.fdd.mixed_precision)
    start = time.perf_counter()
    with placement.inference():
        edits, _ = evaluate.edit_items(cfg, method, dirs, items, placement, progress=False)
    seconds = time.perf_counter() - start
    out = work / f"{method}-{seed}"
    save_edits(out, edits, eval_key(cfg, items.row_ids, seed, cfg.evaluate.batch_size))
    w = cfg.world
    truth = np.stack([ground_truth(items, j, w.frames, w.size, w.supersample, edited=edits[j], speed=w.speed) for j in range(len(items))])
    errors = video_errors(pixels_from_uint8(edits), pixels_from_uint8(items.frames), pixels_from_uint8(truth))
    means = per_task_means({k: np.asarray(v, dtype=float) for k, v in errors.items()}, items.tasks)
    return {"method": method, "seed": seed, "dir": str(out), "items": len(items), "edit_seconds": round(seconds, 1),
            **{k: round(v, 5) for k, v in means.items() if k.endswith(".mean")}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--method", default="edit_frames", help="a baseline of stage baselines (edit_frames, sdedit_75, input, ...)")
    parser.add_argument("--seeds", type=int, nargs="+", required=True)
    parser.add_argument("--work", type=Path, default=Path(".cache/baseline_seeds"))
    args = parser.parse_args()
    for seed in args.seeds:
        print(json.dumps(one(args.params, args.method, seed, args.work)), flush=True)


if __name__ == "__main__":
    main()
