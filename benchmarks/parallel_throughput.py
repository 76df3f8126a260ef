"""Data-parallel throughput on this machine: one training stage's steps (its own objective at
the default Shapes sizes, as benchmarks/train_throughput.py builds it) taken by 1 process and
by 2 processes under `accelerate launch` (DDP over gloo on a CPU, NCCL on GPUs), on the same
work: the same steps, global batch and micro-batches, so the loss curves must agree too.

    python benchmarks/parallel_throughput.py [--stage edit_adapter] [--steps 20] [--micro-batches 2]
                                             [--out results/parallel_throughput.json]

Three runs, each in fresh processes: 1 process with every core's threads, 1 process with one
thread, 2 processes with (cores / 2) threads each. samples/s = steps x batch size / rank 0's
loop time (data, compute, gradient all-reduce, logging), after one warm-up step outside it.
Run it alone.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def worker(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(HERE))
    import torch
    from accelerate import PartialState

    from eve_fdd.config import load_config
    from eve_fdd.train.loop import train
    from eve_fdd.train.parallel import RankDone
    from train_throughput import objectives

    state = PartialState(cpu=not torch.cuda.is_available())
    cfg = load_config(ROOT / "params.yaml")
    (_, train_cfg, obj), = objectives(cfg, [args.stage])
    run_cfg = train_cfg.model_copy(update={"steps": args.steps, "micro_batches": args.micro_batches, "checkpoint_every": 10**6,
                                           "log_every": 1, "mixed_precision": "no"})
    obj.loss(obj.batch(0), torch.Generator().manual_seed(0)).backward()  # warm-up (allocations, lazy init), outside the timing
    with tempfile.TemporaryDirectory() as tmp:
        try:
            res = train(obj.modules, obj.step_fn, run_cfg, Path(tmp) / "run", progress=False)
        except RankDone:
            return
    if state.is_main_process:
        Path(args.result).write_text(json.dumps({"seconds": res.seconds, "batch_size": obj.batch_size, "threads": torch.get_num_threads(),
                                                 "processes": state.num_processes, "curve": [r["loss"] for r in res.curve]}))


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(args: argparse.Namespace, processes: int, threads: int, tmp: Path) -> dict:
    result = tmp / f"p{processes}-t{threads}.json"
    me = [str(Path(__file__).resolve()), "--worker", "--stage", args.stage, "--steps", str(args.steps),
          "--micro-batches", str(args.micro_batches), "--result", str(result)]
    launch = [] if processes == 1 else ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
                                        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                                        "--main_process_port", str(_port())]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    start = time.perf_counter()
    subprocess.run([sys.executable, *launch, *me], env=env, check=True, cwd=ROOT)
    out = json.loads(result.read_text())
    out["wall_seconds"] = round(time.perf_counter() - start, 1)
    out["samples_per_second"] = round(args.steps * out["batch_size"] / out["seconds"], 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", default="edit_adapter", choices=["backbone", "edit_adapter", "video_adapter", "loras"])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--micro-batches", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--result", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        runs = {f"1 process x {cores} threads": measure(args, 1, cores, Path(tmp)),
                "1 process x 1 thread": measure(args, 1, 1, Path(tmp)),
                f"2 processes x {max(1, cores // 2)} threads": measure(args, 2, max(1, cores // 2), Path(tmp))}
    base, two = list(runs.values())[0], list(runs.values())[2]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    report = {"benchmark": "parallel_throughput", "commit": commit, "stage": args.stage, "steps": args.steps,
              "micro_batches": args.micro_batches, "cores": cores,
              "runs": {k: {m: v for m, v in r.items() if m != "curve"} for k, r in runs.items()},
              "speedup_2_processes": round(two["samples_per_second"] / base["samples_per_second"], 3),
              "max_loss_difference_1_vs_2_processes": max(abs(a - b) for a, b in zip(base["curve"], two["curve"]))}
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
