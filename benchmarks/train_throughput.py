"""Training throughput of each model stage at its default Shapes sizes, and the share of a
step's time spent outside forward/backward/optimiser (data, logging, checkpoints).

For each stage the stage's own `objective` (the modules, batch and loss it trains with) is
timed three ways over the same steps:
  data     `batch(step)` alone (rendering clips, reading table rows)
  compute  loss + backward + gradient clipping + optimiser step on batches made beforehand
  loop     the real training loop (`train.loop.train`: data, compute, logging, and the
           stage's own checkpoint interval), as the stage runs it
samples/s = steps x batch size / loop time; outside = 1 - compute / loop.

    python benchmarks/train_throughput.py [--steps 30] [--stages backbone edit_adapter video_adapter loras]
                                          [--precision no bf16]

Each stage runs at its `train.mixed_precision` from params.yaml, or at every value given to
`--precision` in turn (compute is then autocast the way the loop does it).

Weights do not change speed, so the adapters are put on a freshly initialised backbone of the
configured size; the edit adapter reads `data/edit_pairs/pairs.parquet` when it exists and
otherwise makes pairs in memory. Run it alone: 2 cores are easily shared away.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from eve_fdd.config import load_config
from eve_fdd.diffusion import NoiseSchedule, make_scheduler
from eve_fdd.models.adapters import EditVideoModel, add_lora, edit_adapter, motion_parameters, video_adapter
from eve_fdd.models.backbone import tiny_backbone
from eve_fdd.stages import backbone as s_backbone
from eve_fdd.stages import edit_adapter as s_edit
from eve_fdd.stages import edit_pairs as s_pairs
from eve_fdd.stages import lora as s_lora
from eve_fdd.stages import video_adapter as s_video
from eve_fdd.train import edit_adapter as te
from eve_fdd.models.placement import Placement
from eve_fdd.train.loop import Objective, resolve_precision, train, trainable

VIDEOS = Path("data/videos/videos.parquet")
PAIRS = Path("data/edit_pairs/pairs.parquet")


def objectives(cfg, stages):
    schedule = NoiseSchedule.from_scheduler(make_scheduler(cfg.diffusion))

    def fresh():
        return tiny_backbone(cfg.models.backbone.tiny, cfg.world.size, cfg.seed)

    for name in stages:
        if name == "backbone":
            yield name, cfg.backbone.train, s_backbone.objective(cfg, fresh(), schedule)
        elif name == "edit_adapter":
            bb = fresh().freeze()
            if PAIRS.is_file():
                pairs = te.load_pairs(PAIRS, "train")
            else:
                with tempfile.TemporaryDirectory() as tmp:
                    small = cfg.model_copy(update={"edit_pairs": cfg.edit_pairs.model_copy(update={"count": 700})})
                    pairs = te.load_pairs(s_pairs.run(small, Path(tmp)).pairs, "train")
            model = EditVideoModel(bb.unet, edit_adapter(bb.unet, cfg.edit_adapter.conditioning_channels))
            yield name, cfg.edit_adapter.train, s_edit.objective(cfg, bb, model, schedule, pairs)
        elif name == "video_adapter":
            bb = fresh().freeze()
            unet = video_adapter(bb.unet, heads=cfg.video_adapter.heads, max_frames=max(32, cfg.world.frames))
            unet.requires_grad_(False)
            for p in motion_parameters(unet):
                p.requires_grad_(True)
            # Shapes renders its clips; the video table (full profile: the user's train clips) is read only there
            yield name, cfg.video_adapter.train, s_video.objective(cfg, bb, EditVideoModel(unet), schedule, VIDEOS)
        elif name == "loras":
            bb = fresh().freeze()
            add_lora(bb.unet, "star", rank=cfg.loras.rank)
            yield "loras (star)", cfg.loras.train, s_lora.objective(cfg, "star", bb, schedule)
        else:
            raise SystemExit(f"unknown stage {name!r}")


def time_compute(obj: Objective, batches: list, train_cfg) -> float:
    params = list(trainable(obj.modules).values())
    opt = torch.optim.AdamW(params, lr=train_cfg.lr)
    for m in obj.modules.values():
        m.train()
    placement = Placement(bf16=resolve_precision(train_cfg.mixed_precision, torch.device("cpu")) == "bf16")  # a CPU benchmark
    start = time.perf_counter()
    for i, batch in enumerate(batches):
        with placement.autocast():
            loss = obj.loss(batch, torch.Generator().manual_seed(i))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, train_cfg.grad_clip)
        opt.step()
    return time.perf_counter() - start


def measure(name: str, obj: Objective, train_cfg, steps: int) -> dict:
    """One row: data, compute and loop time of `steps` steps of `obj` at `train_cfg`."""
    obj.loss(obj.batch(0), torch.Generator().manual_seed(0)).backward()  # warm-up (allocations, lazy init)
    for m in obj.modules.values():
        m.zero_grad(set_to_none=True)
    start = time.perf_counter()
    batches = [obj.batch(s) for s in range(steps)]
    data = time.perf_counter() - start
    compute = time_compute(obj, batches, train_cfg)
    with tempfile.TemporaryDirectory() as tmp:
        loop = train(obj.modules, obj.step_fn, train_cfg.model_copy(update={"steps": steps}), tmp, progress=False).seconds
    return {
        "stage": name, "precision": resolve_precision(train_cfg.mixed_precision), "batch_size": obj.batch_size, "steps": steps,
        "seconds_per_step": round(loop / steps, 3), "samples_per_second": round(steps * obj.batch_size / loop, 2),
        "data_seconds_per_step": round(data / steps, 4), "compute_seconds_per_step": round(compute / steps, 3),
        "outside_forward_backward": round(1 - compute / loop, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--stages", nargs="+", default=["backbone", "edit_adapter", "video_adapter", "loras"])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--precision", nargs="+", choices=["no", "bf16", "auto"], help="mixed_precision values to time (default: each stage's own)")
    args = parser.parse_args()
    cfg = load_config(args.params)
    rows = []
    for name, train_cfg, obj in objectives(cfg, args.stages):
        for precision in args.precision or [train_cfg.mixed_precision]:
            rows.append(measure(name, obj, train_cfg.model_copy(update={"mixed_precision": precision}), args.steps))
            print(json.dumps(rows[-1]), flush=True)
    print("\n| stage | precision | batch | s/step | samples/s | data s/step | outside fwd/bwd |\n| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['stage']} | {r['precision']} | {r['batch_size']} | {r['seconds_per_step']} | {r['samples_per_second']} | "
              f"{r['data_seconds_per_step']} | {100 * r['outside_forward_backward']:.1f}% |")


if __name__ == "__main__":
    main()
