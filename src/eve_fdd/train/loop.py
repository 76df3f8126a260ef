"""The one training loop every adapter stage uses (backbone, edit adapter, video adapter, LoRAs).

A stage gives it the modules to train (only parameters with `requires_grad` are trained and
saved) and a `step_fn(step, generator, shard) -> (loss, logs)` that computes micro-batch
`shard` of the step's batch (train/parallel.py: `TrainConfig.micro_batches`, spread over the
processes `accelerate launch` started, the rest accumulated) and draws its randomness from the
generator, which is seeded by (seed, step, micro-batch); torch's global generator (dropout, LoRA
dropout, anything a library draws without a generator) is reseeded from them too. So a run
interrupted and resumed from a checkpoint takes exactly the steps the uninterrupted run would
have taken, and two runs of the same config end with the same weights (bit-identical in
float32 on the CPU; CUDA kernels with atomic adds are not deterministic unless torch is told
to be, which this loop does not do). A second role (a `Critic`,
FDD's discriminators) can train in the same loop with its own optimiser, after the main role
at every step where it is active; both are checkpointed together.

Checkpoints (every `checkpoint_every` steps and at the end) are directories
`checkpoints/step-000123/` holding `weights.safetensors` (trainable parameters by name),
`optimizer.safetensors` (AdamW moments), `ema.safetensors` (when EMA is on), `extra.safetensors`
(the state of whatever else the run carries from step to step, e.g. FDD's teacher-sample pool)
and `state.json` (step, loss curve); each is written to a temporary directory and renamed into place, so a
crash never leaves a half checkpoint. Nothing is pickled.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from ..config import TrainConfig
from ..models.placement import Placement, native_bf16, resolve_precision  # noqa: F401 (the loop's precision, re-exported)
from .parallel import RankDone, Shard, micro_seed, my_shards, replicate_trained, weights_agree

StepFn = Callable[[int, torch.Generator, Shard], tuple[torch.Tensor, dict[str, float]]]


@dataclass
class Objective:
    """What a stage trains, split so that data and compute can be timed apart
    (benchmarks/train_throughput.py): `batch(step)` makes the step's batch (rendering,
    table reads), `loss(batch, generator)` runs the model."""

    modules: dict[str, torch.nn.Module]
    batch: Callable[[int], Any]
    loss: Callable[[Any, torch.Generator], torch.Tensor]
    batch_size: int
    _made: tuple[int, Any] | None = field(default=None, init=False, repr=False)

    def step_fn(self, step: int, generator: torch.Generator, shard: Shard = Shard()) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss of micro-batch `shard` of the step's batch (made once per step)."""
        if self._made is None or self._made[0] != step:
            self._made = (step, self.batch(step))
        return self.loss(shard.take(self._made[1]), generator), {}


def epoch_batch(n: int, batch_size: int, step: int, seed: int) -> np.ndarray:
    """Indices of batch `step` of a run over `n` items that shuffles them anew every epoch
    (deterministic in (seed, epoch), so a resumed run draws the same batches)."""
    per_epoch = max(1, n // batch_size)
    epoch, i = divmod(step, per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(n)
    return order[i * batch_size : (i + 1) * batch_size] if n >= batch_size else order


def lr_at(step: int, lr: float, warmup_steps: int, steps: int, schedule: str = "constant") -> float:
    """The learning rate of `step`: a linear warm-up over `warmup_steps`, then `lr` (constant)
    or a cosine decay from `lr` to lr/10 at the last step (cosine). Computed from the step, so
    a resumed run continues the same schedule."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return lr
    progress = min(1.0, (step - warmup_steps) / max(1, steps - warmup_steps))
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


class Stateful(Protocol):
    """Something besides the weights that a run carries from step to step (FDD's teacher-sample
    pool): checkpointed with them as tensors, so a resumed run continues from the same state."""

    def state_dict(self) -> dict[str, torch.Tensor]: ...

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None: ...


@dataclass
class Critic:
    """A second role trained after the main one at each step where `active(step)` holds:
    its own modules (names distinct from the main role's), step function (it may read what
    the main step left for it) and AdamW at a constant learning rate `lr`."""

    modules: dict[str, torch.nn.Module]
    step_fn: StepFn
    lr: float
    active: Callable[[int], bool] = lambda step: True


@dataclass
class TrainResult:
    step: int
    resumed_from: int
    curve: list[dict[str, float]] = field(default_factory=list)  # {"step", "loss", ...logs}
    seconds: float = 0.0
    checkpoint: Path | None = None
    bf16: bool = False  # the steps ran under bfloat16 autocast (TrainConfig.mixed_precision resolved)

    def summary(self, batch_size: int) -> dict[str, float]:
        """The head of every training stage's metrics: steps (and where a resumed run
        started), time and samples/s of the steps taken in this run, mean loss of the last 8
        logged steps, and whether they ran in bf16 (1) or float32 (0)."""
        tail = self.curve[-8:]
        taken = self.step - self.resumed_from
        return {
            "steps": self.step,
            "resumed_from": self.resumed_from,
            "train_seconds": round(self.seconds, 1),
            "samples_per_second": round(taken * batch_size / max(self.seconds, 1e-9), 3),
            "final_loss": sum(r["loss"] for r in tail) / max(1, len(tail)),
            "bf16": float(self.bf16),
        }


@dataclass
class TrainingOutputs:
    """What a training stage's `build` returns to its flow (flows/training.py): the metrics
    json (numbers; text such as fdd's `setup` becomes an MLflow tag), the loss curve (a DVC
    plot) and the files logged to MLflow."""

    metrics: dict[str, float | str]
    curve: list[dict[str, float]] = field(default_factory=list)
    artifacts: list[Path] = field(default_factory=list)


def global_seed(seed: int, step: int, shard: int = 0) -> int:
    """The seed of torch's global generator at `step` (micro-batch `shard`): from them like the
    micro-batch's own generator, but a different number, so dropout masks and the step's noise
    are independent."""
    return micro_seed(seed, step, shard) ^ 0x5DEECE66D


def trainable(modules: dict[str, torch.nn.Module]) -> dict[str, torch.nn.Parameter]:
    """Parameters that require gradients, named `<module>.<parameter>`."""
    return {f"{m}.{n}": p for m, module in modules.items() for n, p in module.named_parameters() if p.requires_grad}


def latest_checkpoint(out_dir: Path) -> Path | None:
    found = sorted((out_dir / "checkpoints").glob("step-*[0-9]"))
    return found[-1] if found else None


def train(
    modules: dict[str, torch.nn.Module],
    step_fn: StepFn,
    cfg: TrainConfig,
    out_dir: str | Path,
    progress: bool = True,
    on_log: Callable[[dict[str, float]], None] | None = None,
    fingerprint: str = "",
    critic: Critic | None = None,
    placement: Placement | None = None,
    state: Stateful | None = None,
) -> TrainResult:
    """Train until `cfg.steps`, resuming from the newest checkpoint in `out_dir` if any.
    `fingerprint` names what is being trained (e.g. a hash of its config): checkpoints
    written under another fingerprint are removed instead of resumed. Logged rows carry the
    gradient norm before clipping (`grad_norm`, and `critic.grad_norm` with a critic).
    `placement` (models/placement.py; by default resolved from `cfg.mixed_precision`) is where
    the trained modules go and whether the steps run under bf16 autocast; the stage places its
    frozen models and `step_fn` makes its tensors on that device. `state` is checkpointed with
    the weights and restored (on that device) when the run resumes.

    Under `accelerate launch` with several processes (train/parallel.py) each computes its
    share of the micro-batches, the trained modules (and the critic's) are DDP replicas, the
    logged loss and terms are the means over all micro-batches, rank 0 alone writes
    checkpoints and calls `on_log`, and every other rank raises `RankDone` at the end."""
    from accelerate import Accelerator
    from diffusers.training_utils import EMAModel
    from tqdm import tqdm

    out_dir = Path(out_dir)
    params = trainable(modules)
    if not params:
        raise ValueError(f"nothing to train: no parameter of {sorted(modules)} requires gradients")
    placement = placement or Placement.resolve(cfg.mixed_precision)
    accelerator = Accelerator(cpu=placement.device.type == "cpu")
    world, main = accelerator.num_processes, accelerator.is_main_process
    mine = my_shards(cfg.micro_batches, world, accelerator.process_index)
    # bf16 autocast by hand, not Accelerator(mixed_precision=...): accelerate's state is one per
    # process and refuses a second setting, and one process may train several models (tests, FDD)
    bf16 = placement.bf16
    placement.trained(modules.values())
    if critic is not None:
        placement.trained(critic.modules.values())
    if cfg.gradient_checkpointing:
        for module in modules.values():
            if hasattr(module, "enable_gradient_checkpointing"):
                module.enable_gradient_checkpointing()
    for module in modules.values():
        module.train()
    if world > 1:
        replicate_trained(modules)
        if critic is not None:
            replicate_trained(critic.modules)
    opt = torch.optim.AdamW(list(params.values()), lr=cfg.lr, weight_decay=cfg.weight_decay)
    opt = accelerator.prepare(opt)
    roles = [(params, opt)]
    if critic is not None:
        critic_params = trainable(critic.modules)
        clash = sorted(set(critic_params) & set(params))
        if not critic_params or clash:
            raise ValueError(f"critic: {'no parameter of ' + str(sorted(critic.modules)) + ' requires gradients' if not critic_params else 'parameter names shared with the main role: ' + str(clash[:3])}")
        for module in critic.modules.values():
            module.train()
        copt = accelerator.prepare(torch.optim.AdamW(list(critic_params.values()), lr=critic.lr, weight_decay=0.0))
        roles.append((critic_params, copt))
    ema = EMAModel(list(params.values()), decay=cfg.ema_decay) if cfg.ema_decay > 0 else None

    result = TrainResult(step=0, resumed_from=0)
    ckpt = latest_checkpoint(out_dir)
    if ckpt is not None and json.loads((ckpt / "state.json").read_text()).get("fingerprint", "") != fingerprint:
        accelerator.wait_for_everyone()  # every rank has read it before rank 0 removes it
        if main:
            print(f"train: {ckpt.parent} holds checkpoints of another run (fingerprint differs): starting over")
            shutil.rmtree(ckpt.parent)
        ckpt = None
    accelerator.wait_for_everyone()
    if ckpt is not None:
        result = _load(ckpt, roles, ema, state, placement.device)
    result.bf16 = bf16
    start = time.perf_counter()
    bar = tqdm(range(result.step, cfg.steps), initial=result.step, total=cfg.steps, desc="train", disable=not (progress and main), mininterval=1.0)
    shards = [Shard(j, cfg.micro_batches) for j in mine]
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg.lr, cfg.warmup_steps, cfg.steps, cfg.lr_schedule)
        opt.zero_grad(set_to_none=True)
        gens = [torch.Generator().manual_seed(micro_seed(cfg.seed, step, shard.index)) for shard in shards]
        losses, terms = _accumulate(accelerator, placement, step_fn, step, shards, gens, out_dir, "loss", reseed=cfg.seed)
        logs = {"grad_norm": float(accelerator.clip_grad_norm_(list(params.values()), cfg.grad_clip))}
        opt.step()
        if ema is not None:
            ema.step(list(params.values()))
        if critic is not None and critic.active(step):
            copt.zero_grad(set_to_none=True)
            critic_losses, critic_terms = _accumulate(accelerator, placement, critic.step_fn, step, shards, gens, out_dir, "critic loss")
            norm = accelerator.clip_grad_norm_(list(critic_params.values()), cfg.grad_clip)
            copt.step()
            terms = [{**t, **c, "critic.loss": cl} for t, c, cl in zip(terms, critic_terms, critic_losses)]
            logs["critic.grad_norm"] = float(norm)
        result.step = step + 1
        if step % cfg.log_every == 0 or result.step == cfg.steps:
            row = {"step": step, "loss": _mean(accelerator, losses), **_means(accelerator, terms), **logs}
            result.curve.append(row)
            bar.set_postfix(loss=f"{row['loss']:.4f}", refresh=False)
            if on_log and main:
                on_log(row)
        if result.step % cfg.checkpoint_every == 0 and result.step < cfg.steps:
            _checkpoint(accelerator, out_dir, result, roles, ema, cfg.keep_checkpoints, fingerprint, state)
    result.seconds = time.perf_counter() - start
    last = latest_checkpoint(out_dir)
    done = last is not None and last.name == f"step-{result.step:06d}"
    result.checkpoint = last if done else _checkpoint(accelerator, out_dir, result, roles, ema, cfg.keep_checkpoints, fingerprint, state)
    if ema is not None:
        ema.copy_to(list(params.values()))  # the modules end with the averaged weights
    if not main:
        raise RankDone(f"rank {accelerator.process_index} of {world}: training done at step {result.step}")
    return result


def _accumulate(accelerator: Any, placement: Placement, step_fn: StepFn, step: int, shards: list[Shard],
                gens: list[torch.Generator], out_dir: Path, what: str, reseed: int | None = None) -> tuple[list[torch.Tensor], list[dict]]:
    """One role's backward over this rank's micro-batches (gradients accumulated, each loss
    divided by their count; DDP averages over the ranks). `reseed`: the run's seed, from which
    torch's global generator is reseeded before each micro-batch (the main role; its critic
    continues the same streams). Returns the detached losses and the logged terms."""
    losses, terms = [], []
    for shard, gen in zip(shards, gens):
        if reseed is not None:
            torch.manual_seed(global_seed(reseed, step, shard.index))  # not gen's stream: the two must not coincide
        with placement.autocast():
            loss, logs = step_fn(step, gen, shard)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{what} is {loss.item()} at step {step}; last checkpoint: {latest_checkpoint(out_dir)}")
        accelerator.backward(loss / len(shards))
        losses.append(loss.detach())
        terms.append(logs)
    return losses, terms


def _mean(accelerator: Any, values: list[torch.Tensor]) -> float:
    """The mean of this rank's micro-batch values, averaged over the ranks (all micro-batches alike)."""
    local = values[0] if len(values) == 1 else torch.stack(values).mean()
    if accelerator.num_processes > 1:
        local = accelerator.reduce(local.float().clone(), reduction="mean")
    return float(local)


def _means(accelerator: Any, rows: list[dict[str, Any]]) -> dict[str, float]:
    """Each logged term's mean over every micro-batch of the step (the keys of the first)."""
    keys = list(rows[0]) if rows else []
    return {k: _mean(accelerator, [torch.as_tensor(r[k], dtype=torch.float64, device=accelerator.device) for r in rows]) for k in keys}


def _checkpoint(accelerator: Any, out_dir: Path, result: TrainResult, roles: Roles, ema: Any, keep: int, fingerprint: str,
                state: Stateful | None) -> Path:
    """Rank 0 writes the checkpoint (every rank holds the same weights: checked first when there
    are several) and the others wait for it."""
    if accelerator.num_processes > 1:
        differ = weights_agree({n: p for role, _ in roles for n, p in role.items()})
        if differ:
            raise RuntimeError(f"train: after step {result.step} the processes hold different weights for {differ[:5]}: their "
                               "gradients were not averaged (a trained module must run its own forward for DDP to see it)")
    path = _save(out_dir, result, roles, ema, keep, fingerprint, state) if accelerator.is_main_process else None
    accelerator.wait_for_everyone()
    return path or latest_checkpoint(out_dir)


Roles = list[tuple[dict[str, torch.nn.Parameter], Any]]  # (trainable parameters by name, their optimiser) per role


def _save(out_dir: Path, result: TrainResult, roles: Roles, ema: Any, keep: int, fingerprint: str = "",
          state: Stateful | None = None) -> Path:
    from safetensors.torch import save_file

    root = out_dir / "checkpoints"
    final = root / f"step-{result.step:06d}"
    tmp = root / f".tmp-step-{result.step:06d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    params = {n: p for role, _ in roles for n, p in role.items()}
    save_file({n: p.detach().contiguous() for n, p in params.items()}, tmp / "weights.safetensors")
    moments = {}
    for role, opt in roles:
        index = {id(p): n for n, p in role.items()}
        for p, moment in opt.state.items():
            for key, value in moment.items():
                moments[f"{index[id(p)]}::{key}"] = value.detach().contiguous() if torch.is_tensor(value) else torch.tensor(value)
    save_file(moments, tmp / "optimizer.safetensors")
    params = roles[0][0]  # EMA follows the main role only
    if ema is not None:
        save_file({n: s.contiguous() for n, s in zip(params, ema.shadow_params)}, tmp / "ema.safetensors")
    if state is not None:
        save_file({k: v.detach().contiguous() for k, v in state.state_dict().items()}, tmp / "extra.safetensors")
    info = {"step": result.step, "curve": result.curve, "ema_step": ema.optimization_step if ema is not None else None, "fingerprint": fingerprint}
    (tmp / "state.json").write_text(json.dumps(info))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in sorted(root.glob("step-*[0-9]"))[:-keep]:
        shutil.rmtree(old)
    return final


def _load(ckpt: Path, roles: Roles, ema: Any, extra: Stateful | None = None, device: Any = "cpu") -> TrainResult:
    from safetensors.torch import load_file

    params = {n: p for role, _ in roles for n, p in role.items()}
    weights = load_file(ckpt / "weights.safetensors")
    if set(weights) != set(params):
        extra, missing = sorted(set(weights) - set(params)), sorted(set(params) - set(weights))
        raise ValueError(f"{ckpt}: checkpoint does not match the model's trainable parameters (missing {missing[:5]}, unexpected {extra[:5]})")
    wrong = [f"{n} {tuple(weights[n].shape)} (model: {tuple(p.shape)})" for n, p in params.items() if weights[n].shape != p.shape]
    if wrong:
        raise ValueError(f"{ckpt}: checkpoint of another model configuration: shapes differ for {wrong[:3]}; remove "
                         f"{ckpt.parent} to start over, or restore the config it was written with")
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(weights[n])
    states: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in load_file(ckpt / "optimizer.safetensors").items():
        name, moment = key.split("::", 1)
        states.setdefault(name, {})[moment] = value
    for role, opt in roles:
        for n, p in role.items():
            if n in states:  # moments on the parameter's device; AdamW keeps its `step` count on the CPU
                opt.state[p] = {k: v if k == "step" else v.to(p.device) for k, v in states[n].items()}
    params = roles[0][0]
    state = json.loads((ckpt / "state.json").read_text())
    if ema is not None:
        if (ckpt / "ema.safetensors").is_file():
            shadow = load_file(ckpt / "ema.safetensors")
            ema.shadow_params = [shadow[n].to(params[n].device) for n in params]
            ema.optimization_step = state.get("ema_step") or state["step"]
        else:
            raise ValueError(f"{ckpt}: EMA is on but the checkpoint has no ema.safetensors")
    if extra is not None:
        if not (ckpt / "extra.safetensors").is_file():
            raise ValueError(f"{ckpt}: the run carries state between steps ({type(extra).__name__}) but the checkpoint has no extra.safetensors")
        extra.load_state_dict({k: v.to(device) for k, v in load_file(ckpt / "extra.safetensors").items()})
    return TrainResult(step=state["step"], resumed_from=state["step"], curve=state["curve"])
