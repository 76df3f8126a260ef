"""train/loop.py: only trainable parameters train and are saved; checkpoints are atomic and a
resumed run ends exactly where the uninterrupted one does; EMA; clear errors."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from eve_fdd.train.loop import TrainConfig, latest_checkpoint, lr_at, train
from eve_fdd.train.parallel import Shard


def _model(seed: int = 0) -> dict[str, torch.nn.Module]:
    torch.manual_seed(seed)
    frozen = torch.nn.Linear(4, 4).requires_grad_(False)
    head = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    return {"frozen": frozen, "head": head}


def _step_fn(modules):
    target = torch.tensor([[1.0, -2.0, 0.5, 3.0]])

    def step(i, gen, shard=Shard()):
        x = torch.randn(shard.size(16), 4, generator=gen)
        y = (x * target).sum(1, keepdim=True)
        pred = modules["head"](modules["frozen"](x))
        return ((pred - y) ** 2).mean(), {"x_mean": float(x.mean())}

    return step


def _state(modules):
    return {f"{m}.{n}": p.detach().clone() for m, mod in modules.items() for n, p in mod.state_dict().items()}


CFG = TrainConfig(steps=12, lr=1e-2, warmup_steps=3, checkpoint_every=4, keep_checkpoints=2, log_every=1, seed=5)


def test_trains_only_what_requires_grad_and_saves_only_that(tmp_path):
    m = _model()
    frozen_before = m["frozen"].weight.clone()
    res = train(m, _step_fn(m), CFG, tmp_path, progress=False)
    assert res.step == 12 and res.resumed_from == 0 and len(res.curve) == 12
    assert res.curve[-1]["loss"] < res.curve[0]["loss"]
    assert torch.equal(m["frozen"].weight, frozen_before)
    weights = load_file(res.checkpoint / "weights.safetensors")
    assert set(weights) == {f"head.{n}" for n, _ in m["head"].named_parameters()}
    assert [p.name for p in sorted((tmp_path / "checkpoints").iterdir())] == ["step-000008", "step-000012"]  # keep 2, no temp dirs
    assert json.loads((res.checkpoint / "state.json").read_text())["step"] == 12


@pytest.mark.parametrize("ema", [0.0, 0.9])
def test_an_interrupted_run_resumes_to_the_same_weights(tmp_path, ema):
    cfg = CFG.model_copy(update={"ema_decay": ema})
    full = _model()
    train(full, _step_fn(full), cfg, tmp_path / "full", progress=False)

    first = _model()
    part = train(first, _step_fn(first), cfg.model_copy(update={"steps": 6}), tmp_path / "cut", progress=False)
    assert part.step == 6 and latest_checkpoint(tmp_path / "cut").name == "step-000006"
    again = _model()  # a new process: fresh weights, the checkpoint on disk
    res = train(again, _step_fn(again), cfg, tmp_path / "cut", progress=False)
    assert res.resumed_from == 6 and res.step == 12
    assert [r["step"] for r in res.curve] == list(range(12))  # the curve continues
    for k, v in _state(full).items():
        assert torch.equal(_state(again)[k], v), k  # bit-identical in float32
    # nothing left to do: a rerun loads the final checkpoint and trains no step
    calls = []
    done = train(_model(), lambda i, g: calls.append(i), cfg, tmp_path / "cut", progress=False)
    assert done.step == 12 and not calls


class _Buffer:
    """State a run carries between steps (as FDD's teacher pool does): each step replaces one
    slot with a fresh draw, and the loss reads the whole buffer."""

    def __init__(self):
        self.values = torch.zeros(4)

    def state_dict(self):
        return {"values": self.values}

    def load_state_dict(self, state):
        self.values = state["values"].clone()


def test_a_killed_run_with_dropout_and_carried_state_resumes_bit_identically(tmp_path):
    """What resume must restore beyond the weights: torch's global generator (dropout here,
    which takes no generator) and the run's carried state (`state=`), so a run killed between
    checkpoints ends with the uninterrupted run's weights, bit for bit."""

    def run(out, kill_at=None):
        torch.manual_seed(123)  # each "process" starts from another global generator state
        torch.rand(kill_at or 1)
        m = _model()
        m["head"].insert(1, torch.nn.Dropout(0.3))
        buf = _Buffer()
        base = _step_fn(m)

        def step(i, gen, shard=Shard()):
            buf.values[i % 4] = torch.rand(())  # the global generator, reseeded per step by the loop
            loss, logs = base(i, gen, shard)
            if kill_at is not None and i == kill_at:
                raise KeyboardInterrupt  # killed mid-run, after the step-4 checkpoint
            return loss + buf.values.sum() * 1e-2, logs

        res = train(m, step, CFG, out, progress=False, state=buf)
        return res, _state(m), buf

    whole, weights, buf = run(tmp_path / "whole")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "killed", kill_at=6)
    assert latest_checkpoint(tmp_path / "killed").name == "step-000004"
    assert set(load_file(tmp_path / "killed/checkpoints/step-000004/extra.safetensors")) == {"values"}
    resumed, again, buf_again = run(tmp_path / "killed")
    assert resumed.resumed_from == 4 and resumed.step == 12
    assert all(torch.equal(again[k], v) for k, v in weights.items())
    assert torch.equal(buf.values, buf_again.values)
    assert [r["loss"] for r in resumed.curve] == [r["loss"] for r in whole.curve]


def test_a_checkpoint_without_the_runs_carried_state_is_refused(tmp_path):
    m = _model()
    train(m, _step_fn(m), CFG.model_copy(update={"steps": 4}), tmp_path, progress=False)
    m = _model()
    with pytest.raises(ValueError, match="extra.safetensors"):
        train(m, _step_fn(m), CFG, tmp_path, progress=False, state=_Buffer())


def test_learning_rate_warms_up_then_stays_or_decays_to_a_tenth():
    assert [lr_at(s, 1.0, 4, 20) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert lr_at(19, 1.0, 0, 20) == 1.0
    cosine = [lr_at(s, 1.0, 4, 20, "cosine") for s in range(22)]
    assert cosine[:5] == [0.25, 0.5, 0.75, 1.0, 1.0]
    assert all(a > b for a, b in zip(cosine[4:20], cosine[5:21]))
    assert cosine[12] == pytest.approx(0.55) and cosine[20] == pytest.approx(0.1) and cosine[21] == pytest.approx(0.1)


def test_a_cosine_schedule_resumes_where_the_run_was_killed(tmp_path):
    cfg = CFG.model_copy(update={"lr_schedule": "cosine"})
    full = _model()
    train(full, _step_fn(full), cfg, tmp_path / "full", progress=False)
    first = _model()
    step = _step_fn(first)

    def killed_at_7(i, gen, shard=Shard()):
        if i == 7:
            raise KeyboardInterrupt
        return step(i, gen, shard)

    with pytest.raises(KeyboardInterrupt):
        train(first, killed_at_7, cfg, tmp_path / "cut", progress=False)
    again = _model()
    res = train(again, _step_fn(again), cfg, tmp_path / "cut", progress=False)
    assert res.resumed_from == 4 and res.step == 12
    for k, v in _state(full).items():
        assert torch.allclose(_state(again)[k], v, atol=1e-6), k
    constant = _model()  # the schedule is applied: the constant rate ends elsewhere
    train(constant, _step_fn(constant), CFG, tmp_path / "constant", progress=False)
    assert any(not torch.allclose(_state(constant)[k], v, atol=1e-4) for k, v in _state(full).items())


def test_ema_ends_with_the_averaged_weights(tmp_path):
    m = _model()
    res = train(m, _step_fn(m), CFG.model_copy(update={"ema_decay": 0.5}), tmp_path, progress=False)
    ema = load_file(res.checkpoint / "ema.safetensors")
    raw = load_file(res.checkpoint / "weights.safetensors")
    assert all(torch.equal(p, ema[f"head.{n}"]) for n, p in m["head"].named_parameters())
    assert any(not torch.equal(ema[k], raw[k]) for k in raw)


def test_clear_errors(tmp_path):
    frozen = {"frozen": torch.nn.Linear(2, 2).requires_grad_(False)}
    with pytest.raises(ValueError, match="nothing to train"):
        train(frozen, lambda i, g, s: (torch.zeros(()), {}), CFG, tmp_path / "a", progress=False)
    m = _model()
    with pytest.raises(FloatingPointError, match="step 0"):
        train(m, lambda i, g, s: (torch.tensor(float("nan"), requires_grad=True), {}), CFG, tmp_path / "b", progress=False)
    m = _model()
    train(m, _step_fn(m), CFG.model_copy(update={"steps": 4}), tmp_path / "c", progress=False)
    other = {"head": torch.nn.Linear(4, 1)}
    with pytest.raises(ValueError, match="does not match the model's trainable parameters"):
        train(other, lambda i, g, s: (other["head"](torch.ones(1, 4)).sum(), {}), CFG, tmp_path / "c", progress=False)
    wider = _model()  # the same names, another width (a checkpoint of another model config under the same fingerprint)
    wider["head"][0], wider["head"][2] = torch.nn.Linear(4, 16), torch.nn.Linear(16, 1)
    with pytest.raises(ValueError, match=r"another model configuration: shapes differ for \['head.0.weight \(8, 4\) \(model: \(16, 4\)\)"):
        train(wider, _step_fn(wider), CFG, tmp_path / "c", progress=False)


def test_checkpoints_of_another_run_are_not_resumed(tmp_path):
    m = _model()
    train(m, _step_fn(m), CFG.model_copy(update={"steps": 4}), tmp_path, progress=False, fingerprint="a")
    m2 = _model()
    res = train(m2, _step_fn(m2), CFG.model_copy(update={"steps": 4}), tmp_path, progress=False, fingerprint="b")
    assert res.resumed_from == 0 and len(res.curve) == 4
    assert json.loads((res.checkpoint / "state.json").read_text())["fingerprint"] == "b"


def _with_critic(seed: int = 0):
    from eve_fdd.train.loop import Critic

    m = _model(seed)
    torch.manual_seed(seed + 1)
    critic_modules = {"critic": torch.nn.Linear(1, 1)}
    main = _step_fn(m)
    seen = []

    def step(i, gen, shard=Shard()):
        loss, logs = main(i, gen, shard)
        return loss, logs

    def critic_step(i, gen, shard=Shard()):
        seen.append(i)
        x = torch.randn(8, 1, generator=gen)
        return ((critic_modules["critic"](x) - 2 * x) ** 2).mean(), {"critic_x": float(x.mean())}

    return m, critic_modules, step, Critic(critic_modules, critic_step, lr=5e-2, active=lambda i: i >= 4), seen


def test_a_critic_trains_when_active_and_resumes_with_the_main_role(tmp_path):
    m, c, step, critic, seen = _with_critic()
    before = _state(c)
    res = train(m, step, CFG, tmp_path / "full", progress=False, critic=critic)
    assert seen == list(range(4, 12))
    assert "critic.loss" in res.curve[5] and "critic.loss" not in res.curve[3] and "grad_norm" in res.curve[0]
    assert not torch.equal(_state(c)["critic.weight"], before["critic.weight"])
    weights = load_file(res.checkpoint / "weights.safetensors")
    assert {"critic.weight", "critic.bias"} <= set(weights) and any(k.startswith("head.") for k in weights)

    m1, c1, step1, critic1, _ = _with_critic()
    train(m1, step1, CFG.model_copy(update={"steps": 6}), tmp_path / "cut", progress=False, critic=critic1)
    m2, c2, step2, critic2, seen2 = _with_critic()  # a new process
    again = train(m2, step2, CFG, tmp_path / "cut", progress=False, critic=critic2)
    assert again.resumed_from == 6 and seen2 == list(range(6, 12))
    for k, v in (_state(m) | _state(c)).items():
        assert torch.allclose((_state(m2) | _state(c2))[k], v, atol=1e-6), k


def test_a_critic_must_train_something_of_its_own(tmp_path):
    from eve_fdd.train.loop import Critic

    m = _model()
    with pytest.raises(ValueError, match="shared with the main role"):
        train(m, _step_fn(m), CFG, tmp_path, progress=False, critic=Critic({"head": m["head"]}, _step_fn(m), lr=1e-2))
    with pytest.raises(ValueError, match="requires gradients"):
        train(m, _step_fn(m), CFG, tmp_path, progress=False, critic=Critic({"frozen": m["frozen"]}, _step_fn(m), lr=1e-2))


@pytest.mark.parametrize("precision", ["no", "bf16"])
def test_mixed_precision_autocasts_the_step_and_keeps_float32_weights(tmp_path, precision):
    m = _model()
    inner = _step_fn(m)
    seen = []

    def step(i, gen, shard=Shard()):
        seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
        return inner(i, gen, shard)

    res = train(m, step, CFG.model_copy(update={"mixed_precision": precision}), tmp_path, progress=False)
    assert all(on == (precision == "bf16") for on, _ in seen) and len(seen) == 12
    if precision == "bf16":
        assert {dtype for _, dtype in seen} == {torch.bfloat16}
    assert res.curve[-1]["loss"] < res.curve[0]["loss"]  # it still learns
    assert res.summary(16)["bf16"] == float(precision == "bf16")
    assert all(p.dtype == torch.float32 for p in m["head"].parameters())
    assert load_file(res.checkpoint / "weights.safetensors")["head.0.weight"].dtype == torch.float32


def test_auto_precision_is_bf16_only_where_the_device_computes_it():
    from eve_fdd.train.loop import native_bf16, resolve_precision

    assert resolve_precision("no") == "no" and resolve_precision("bf16") == "bf16"
    expected = ("bf16" if torch.cuda.is_bf16_supported() else "no") if torch.cuda.is_available() else ("bf16" if native_bf16() else "no")
    assert resolve_precision("auto") == expected
    with pytest.raises(ValueError, match="mixed_precision"):
        TrainConfig(mixed_precision="fp8")
