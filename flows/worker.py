"""One process of a training stage that `train.launcher` started (flows/training.py):
`accelerate launch [options] -m flows.worker FLOW_MODULE --params P --outputs F --run-id R [--item I]`.

Every process runs the flow module's `build` (train/parallel.py: each computes its share of
the micro-batches); rank 0 logs the live loss into the flow's MLflow run `R`, runs the stage's
check and writes its outputs to `F` for the flow; the other ranks end when training does.
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("module", help="the stage's flow module, e.g. flows.edit_adapter")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--outputs", required=True, type=Path)
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--item", default=None)
    args = parser.parse_args()

    import torch
    from accelerate import PartialState

    from eve_fdd import tracking
    from eve_fdd.config import load_config
    from eve_fdd.train.parallel import RankDone

    from .training import live_loss, write_outputs

    # the process group, before any model is built; on a machine without CUDA accelerate sets
    # one up (gloo) only when told the processes run on the CPU (as models/placement.py does)
    state = PartialState(cpu=not torch.cuda.is_available())
    cfg = load_config(args.params)
    # rank 0 alone logs (the loop calls on_log on rank 0 only)
    on_log = live_loss(tracking.client_run(args.run_id)) if state.is_main_process else None

    try:
        out = importlib.import_module(args.module).build(cfg, on_log, args.item)
    except RankDone:
        return
    if state.is_main_process:
        write_outputs(out, args.outputs)


if __name__ == "__main__":
    main()
