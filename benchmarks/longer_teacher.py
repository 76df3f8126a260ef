"""Train a teacher longer than `dvc repro` did, into its own folder, for FDD levers
(`benchmarks/fdd_seeds.py --edit-adapter DIR` / `--video-adapter DIR`): the workspace's
teachers stay as they are.

    python benchmarks/longer_teacher.py edit_adapter --steps 1500 --out .cache/teachers/edit_adapter-1500

The run resumes from the workspace's last checkpoint of that stage (data/checkpoints/<stage>)
when that is the finished run of `dvc repro <stage>`: `dvc status <stage>` clean, the
checkpoint at params.yaml's train.steps, a constant learning rate after the warm-up. The training loop draws each step's batch and noise
from the step's own seed and keeps the optimiser and EMA state in the checkpoint, so the
result is the run of `--steps` steps from scratch (results/resume_determinism_2026-12-03.json
measured the loop's resume as exact), minus the steps already trained. The stage's check
runs on the new weights and its metrics are printed as JSON (and written to OUT/metrics.json).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

BACKBONE = Path("data/backbone")
STAGES = {  # stage: what its train_fingerprint reads besides the config, as flows/<stage>.py gives it
    "edit_adapter": (BACKBONE, Path("data/edit_pairs/pairs.parquet")),
    "video_adapter": (BACKBONE, Path("data/videos/videos.parquet")),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("stage", choices=sorted(STAGES))
    parser.add_argument("--steps", type=int, required=True, help="the stage's train.steps for this run")
    parser.add_argument("--out", type=Path, required=True, help="the teacher's folder (as data/<stage>)")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--no-resume", action="store_true", help="train from scratch even when a checkpoint could be resumed")
    args = parser.parse_args()

    import importlib
    import subprocess

    from eve_fdd.config import load_config
    from eve_fdd.train.loop import latest_checkpoint

    inputs = STAGES[args.stage]
    stage = importlib.import_module(f"eve_fdd.stages.{args.stage}")
    base = load_config(args.params)
    cfg = load_config(args.params, {f"{args.stage}.train.steps": args.steps})
    train = cfg.section(f"{args.stage}.train")
    if getattr(train, "lr_schedule", "constant") != "constant":
        raise SystemExit(f"{args.stage}.train.lr_schedule is {train.lr_schedule!r}: a longer run differs from the start; use --no-resume")
    ckpts = args.out / "checkpoints"
    given = latest_checkpoint(stage.CHECKPOINTS)
    if given is not None and not args.no_resume:
        info = json.loads((given / "state.json").read_text())
        status = subprocess.run(["dvc", "status", args.stage], capture_output=True, text=True).stdout
        if "up to date" not in status:
            raise SystemExit(f"dvc status {args.stage}: not up to date, so {given} may not be its run; use --no-resume\n{status}")
        if info["step"] != base.section(f"{args.stage}.train").steps or info["step"] > args.steps:
            raise SystemExit(f"{given}: step {info['step']}, expected the finished run of params.yaml, short of {args.steps} steps")
        target = ckpts / "checkpoints" / given.name
        if not target.exists():
            shutil.copytree(given, target)
            info["fingerprint"] = stage.train_fingerprint(cfg, *inputs)  # the longer run's name for the same state
            (target / "state.json").write_text(json.dumps(info))
        print(f"resuming {given} (step {info['step']}) to step {args.steps}", flush=True)
    start = time.perf_counter()
    backbone, data = inputs
    if args.stage == "edit_adapter":
        out = stage.build(cfg, data, backbone, args.out, ckpts, progress=False)
    else:
        out = stage.build(cfg, backbone, args.out, ckpts, progress=False, videos=data)
    metrics = {"stage": args.stage, "steps": args.steps, "seconds": round(time.perf_counter() - start, 1),
               "resumed_from": None if given is None or args.no_resume else str(given), **out.metrics}
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    print(json.dumps(metrics))


if __name__ == "__main__":
    main()
