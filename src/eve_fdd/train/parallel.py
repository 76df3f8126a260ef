"""Several processes (GPUs, machines) for the training loop, through accelerate and torch's DDP.

A training step is split into `micro_batches` (a TrainConfig key): micro-batch j of step s
computes `batch_size / micro_batches` items of the step's batch with its own random streams,
seeded by (seed, s, j). The micro-batches are spread over the processes (j = rank*m .. rank*m+m-1,
m = micro_batches / processes) and each process accumulates the gradients of its m; DDP
averages them over the processes. So what a step computes depends on `micro_batches`, never
on how many processes share it: 1 process with micro_batches=2 and 2 processes with 1 each
take the same steps (up to the order of floating-point sums), and a run checkpointed with one
process count resumes exactly with another.

Processes come from `accelerate launch` (`train.launcher` in params.yaml; flows/training.py
starts it): accelerate sets up the process group (NCCL on GPUs, gloo on CPUs) and each rank's
device (`PartialState`). The trained modules get torch's DDP in place (`replicate`, the
composable DDP torchtitan applies), because the stages call their modules directly (through
closures, not through a wrapper `accelerator.prepare` would return); a trained module must
therefore run its own forward for its gradients to be averaged (checked: the ranks' weights
are compared at every checkpoint). Rank 0 writes checkpoints and logs; the other ranks end
after the last step (`RankDone`) and leave the stage's check and outputs to rank 0.
"""

from __future__ import annotations

import dataclasses
import shlex
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


class RankDone(Exception):
    """Raised in every process but rank 0 when training ends: the stage's check and outputs are
    rank 0's (flows/worker.py catches it)."""


@dataclass(frozen=True)
class Shard:
    """Micro-batch `index` of the `count` a step is split into."""

    index: int = 0
    count: int = 1

    def size(self, batch_size: int) -> int:
        return batch_size // self.count

    def take(self, batch: Any) -> Any:
        """This micro-batch's part of a step's batch: rows index*n .. index*n+n-1 (n = its
        length / count) of every tensor, array or list in it; a tuple or dict is a record of
        fields (each taken), an object with `take(indices)` and a length (EditPairs) takes its
        rows; numbers and strings are kept. One micro-batch: the batch itself."""
        if self.count == 1:
            return batch
        if isinstance(batch, tuple):
            return tuple(self.take(b) for b in batch)
        if isinstance(batch, dict):
            return {k: self.take(v) for k, v in batch.items()}
        if isinstance(batch, (torch.Tensor, np.ndarray, list)):
            return batch[self._rows(len(batch))]
        if hasattr(batch, "take") and hasattr(batch, "__len__"):
            return batch.take(list(range(len(batch)))[self._rows(len(batch))])
        if dataclasses.is_dataclass(batch):
            return dataclasses.replace(batch, **{f.name: self.take(getattr(batch, f.name)) for f in dataclasses.fields(batch)})
        return batch

    def _rows(self, n: int) -> slice:
        if n % self.count:
            raise ValueError(f"a batch of {n} items cannot be split into {self.count} equal micro-batches")
        per = n // self.count
        return slice(self.index * per, (self.index + 1) * per)


def micro_seed(seed: int, step: int, shard: int = 0) -> int:
    """The seed of micro-batch `shard`'s generator at `step` (micro-batch 0: the one-micro-batch
    run's seed, so a run with micro_batches=1 draws what it always drew)."""
    base = seed * 1_000_003 + step
    if shard == 0:
        return base
    return int(np.random.SeedSequence([seed, step, shard]).generate_state(1, np.uint64)[0] >> 1)


def my_shards(micro_batches: int, processes: int, rank: int, key: str = "micro_batches") -> list[int]:
    """The micro-batches this rank computes (m = micro_batches / processes of them)."""
    if micro_batches % processes:
        raise ValueError(f"{key}={micro_batches} cannot be spread over {processes} processes: make it a multiple of "
                         f"the process count (train.launcher)")
    m = micro_batches // processes
    return list(range(rank * m, (rank + 1) * m))


def replicate_trained(modules: dict[str, torch.nn.Module]) -> None:
    """torch's DDP, in place, on every module with trained parameters (gradients averaged over
    the processes in its backward). Buffers are not broadcast at each forward: rank 0 alone runs
    the stage's check after training, and a forward there must not wait for the other ranks."""
    from torch.distributed._composable.replicate import replicate

    for module in modules.values():
        if any(p.requires_grad for p in module.parameters()) and not getattr(module, "_eve_replicated", False):
            replicate(module, broadcast_buffers=False)
            # DDP now, not at the first forward (its default): that may be a teacher's, with the
            # LoRA switched off (peft then marks it frozen) and so nothing to train in sight
            replicate.state(module).lazy_init()
            module._eve_replicated = True


def weights_agree(params: dict[str, torch.nn.Parameter]) -> list[str]:
    """Names of trained parameters whose values differ between the processes (a checksum per
    parameter, gathered on their device): empty when DDP kept the replicas equal."""
    import torch.distributed as dist

    names = sorted(params)
    sums = torch.stack([params[n].detach().double().sum() for n in names])
    gathered = [torch.zeros_like(sums) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, sums)
    spread = (torch.stack(gathered).amax(0) - torch.stack(gathered).amin(0)).tolist()
    return [n for n, s in zip(names, spread) if s != 0]


def launcher_command(launcher: str, key: str = "train.launcher") -> list[str]:
    """The launcher of params.yaml as an argv prefix (`accelerate launch [options]`), checked
    with accelerate's own argument parser: options it does not know, or values it refuses,
    are an error naming `key`. '' = no launcher (the stage trains in its flow's process)."""
    argv = shlex.split(launcher)
    if not argv:
        return []
    if argv[:2] != ["accelerate", "launch"]:
        raise ValueError(f"{key}: {launcher!r} is not an accelerate launch command (expected 'accelerate launch [options]', "
                         f"e.g. 'accelerate launch --multi_gpu --num_processes 8')")
    import contextlib
    import io

    from accelerate.commands.launch import launch_command_parser

    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            args = launch_command_parser().parse_args([*argv[2:], "script.py"])
    except SystemExit:
        message = errors.getvalue().strip().splitlines()
        raise ValueError(f"{key}: accelerate does not accept {launcher!r}: {message[-1] if message else 'invalid options'}") from None
    if args.training_script != "script.py" or args.training_script_args:
        raise ValueError(f"{key}: {launcher!r} names a script or its arguments; give only accelerate's options "
                         f"(the stage's module is added by the flow)")
    if args.module or args.no_python:
        raise ValueError(f"{key}: {launcher!r}: --module / --no_python are the flow's to set")
    return argv
