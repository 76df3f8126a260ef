"""One short, prepared check for a GPU machine (the full-scale issue, Deliver 5): the tiny
full-profile `fdd` (variant `full`) and `evaluate` stages, and one Shapes training stage
(`backbone`, a few steps), run through the real stage code; each prints the device and dtype
its models ran in (the stage metrics `device`, `bf16`, `frozen_bf16`) and the peak CUDA memory.
On this CPU it runs too (device "cpu"), so the script itself is checked before a GPU is lent.

    PYTHONPATH=src:tests python benchmarks/device_check.py --out results/device_check.json

On the device machine (its image has torch, transformers, peft, accelerate, pyarrow, but not
diffusers or pydantic): carry their wheels (the device tool's README says how) — diffusers
0.42.1, pydantic with pydantic-core, annotated-types, typing-inspection, and av for the mp4
clips — then `PYTHONPATH=src:tests:/tmp/site python3 benchmarks/device_check.py --out $OUT/device_check.json`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def _peak() -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**20, 1) if torch.cuda.is_available() else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    ap.add_argument("--precision", default="auto", help="fdd.mixed_precision for the full-profile stages (default auto)")
    args = ap.parse_args()

    from full_profile import build_tiny_full, full_stage_inputs, metric_models_dir
    from test_stage_fdd_full import FRAME, full_cfg

    from eve_fdd.config import Config
    from eve_fdd.stages import backbone, evaluate, fdd

    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        models = build_tiny_full(root / "models", frame_size=FRAME)
        cfg = full_cfg(models, iterations=4, sds_only_fraction=0.5, mixed_precision=args.precision)
        inputs = full_stage_inputs(models, root / "inputs", cfg.videos.ingest)

        start = time.perf_counter()
        out = fdd.build(cfg, "full", inputs["instructions"], inputs["videos"], inputs["backbone_dir"], inputs["edit_dir"],
                        inputs["video_dir"], root / "fdd" / "full", root / "ckpt", progress=False)
        rows.append({"stage": "fdd@full (tiny full profile)", "seconds": round(time.perf_counter() - start, 1), "peak_mib": _peak(),
                     **{k: out.metrics[k] for k in ("device", "bf16", "frozen_bf16")}, "final_loss": out.metrics["final_loss"]})

        metric_dir = metric_models_dir(models, root / "metric_models")
        dirs = evaluate.Dirs(inputs["instructions"], inputs["videos"], inputs["backbone_dir"], inputs["edit_dir"],
                             inputs["video_dir"], root / "fdd", metric_dir)
        ecfg = cfg.model_copy(update={"evaluate": cfg.evaluate.model_copy(update={"items": 2, "batch_size": 2, "samples": 0})})
        start = time.perf_counter()
        metrics, _ = evaluate.build(ecfg, "full", dirs, root / "eval", progress=False)
        rows.append({"stage": "evaluate@full (tiny full profile)", "seconds": round(time.perf_counter() - start, 1), "peak_mib": _peak(),
                     **{k: metrics[k] for k in ("device", "bf16", "frozen_bf16")}, "paper.pick_score.mean": metrics["paper.pick_score.mean"]})

        shapes = Config()
        shapes = shapes.model_copy(update={"backbone": shapes.backbone.model_copy(update={
            "train": shapes.backbone.train.model_copy(update={"steps": 20, "checkpoint_every": 20, "log_every": 5}),
            "eval_samples": 4, "eval_steps": 4})})
        start = time.perf_counter()
        out = backbone.build(shapes, root / "backbone", root / "ckpt-backbone", progress=False)
        rows.append({"stage": "backbone (Shapes, 20 steps)", "seconds": round(time.perf_counter() - start, 1), "peak_mib": _peak(),
                     **{k: out.metrics[k] for k in ("device", "bf16", "frozen_bf16")}, "final_loss": out.metrics["final_loss"]})

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip() or None
    result = {"commit": commit, "torch": torch.__version__, "gpu": gpu, "precision": args.precision, "rows": rows}
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(main())
