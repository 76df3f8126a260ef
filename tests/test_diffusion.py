"""diffusion/: zero-SNR schedule, conversions, K-bin timesteps, the DDIM sampler, sliding windows."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler

from eve_fdd.config import DiffusionConfig
from eve_fdd.diffusion import (
    NoiseSchedule,
    ddim_sample,
    ddim_step,
    inference_timesteps,
    kbin_timesteps,
    make_scheduler,
    student_timesteps,
    uniform_timesteps,
    windowed,
)
from eve_fdd.diffusion.sampler import windows

CFG = DiffusionConfig()


@pytest.fixture()
def scheduler() -> DDIMScheduler:
    return make_scheduler(CFG)


def test_zero_terminal_snr_needs_v_prediction(scheduler):
    assert scheduler.alphas_cumprod[-1] == 0 and scheduler.alphas_cumprod[0] > 0.99
    assert (scheduler.alphas_cumprod[1:] < scheduler.alphas_cumprod[:-1]).all()
    assert inference_timesteps(scheduler, 24)[0] == 999  # trailing spacing: sampling starts at pure noise
    with pytest.raises(ValueError, match="v_prediction"):
        DiffusionConfig(prediction_type="epsilon")
    eps = DiffusionConfig(prediction_type="epsilon", zero_terminal_snr=False)
    assert make_scheduler(eps).alphas_cumprod[-1] > 0  # SD 1.5's schedule, kept
    with pytest.raises(ValueError, match="zero_terminal_snr"):
        make_scheduler(DiffusionConfig.model_construct(**{**eps.model_dump(), "zero_terminal_snr": True}))


@pytest.mark.parametrize("shape", [(2, 3, 8, 8), (2, 3, 4, 8, 8)])  # images and clips
def test_conversions_round_trip_for_every_prediction_type(scheduler, shape):
    gen = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(shape, generator=gen), torch.randn(shape, generator=gen)
    t = torch.tensor([10, 700])
    for kind in ("v_prediction", "epsilon", "sample"):
        sched = NoiseSchedule(scheduler.alphas_cumprod, kind)
        x_t = sched.add_noise(x0, eps, t)
        got_x0, got_eps = sched.split(sched.target(x0, eps, t), x_t, t)
        assert torch.allclose(got_x0, x0, atol=1e-4) and torch.allclose(got_eps, eps, atol=1e-4), kind
    v = NoiseSchedule.from_scheduler(scheduler)
    # the diffusers scheduler agrees on x_t and on v
    assert torch.allclose(v.add_noise(x0, eps, t), scheduler.add_noise(x0, eps, t), atol=1e-5)
    assert torch.allclose(v.velocity(x0, eps, t), scheduler.get_velocity(x0, eps, t), atol=1e-5)
    # at the zero-SNR step x_t is pure noise and v still gives x0
    x_T = v.add_noise(x0, eps, 999)
    assert torch.allclose(x_T, eps)
    assert torch.allclose(v.split(v.velocity(x0, eps, 999), x_T, 999)[0], x0, atol=1e-5)
    with pytest.raises(ValueError, match="zero-SNR"):
        NoiseSchedule(scheduler.alphas_cumprod, "epsilon").split(eps, x_T, 999)
    with pytest.raises(ValueError, match=r"\[-1, 999\]"):
        v.coefficients(1000, x0)


def test_conversions_are_differentiable(scheduler):
    sched = NoiseSchedule.from_scheduler(scheduler)
    out = torch.randn(1, 3, 4, 4, requires_grad=True)
    x0, eps = sched.split(out, torch.randn(1, 3, 4, 4), torch.tensor([500]))
    (x0.sum() + eps.sum()).backward()
    assert out.grad is not None and out.grad.abs().sum() > 0


def test_min_snr_weights_cap_the_clean_timesteps_and_keep_the_loss_scale(scheduler):
    v = NoiseSchedule.from_scheduler(scheduler)
    t = torch.tensor([0, 50, 300, 600, 999])
    a = scheduler.alphas_cumprod[t].double()
    snr = a / (1 - a).clamp(min=1e-12)
    w = v.min_snr_weights(t, 5.0)
    assert w.shape == (5,) and w.dtype == torch.float32 and torch.isclose(w.mean(), torch.tensor(1.0))
    assert w[-1] == 0  # zero terminal SNR: nothing to learn about x0 there
    # in x0 terms the v-loss weights SNR + 1; with Min-SNR it is min(SNR, gamma), up to the batch normalisation
    x0_weight = w.double() * (snr + 1)
    expected = snr.clamp(max=5.0)
    assert torch.allclose(x0_weight / x0_weight[2], expected / expected[2], rtol=1e-4)
    assert snr[0] > 5 and snr[2] < 5 and w[0] < w[2]  # the nearly clean step no longer dominates
    eps = NoiseSchedule(make_scheduler(DiffusionConfig(prediction_type="epsilon", zero_terminal_snr=False)).alphas_cumprod, "epsilon")
    assert torch.allclose(eps.min_snr_weights(torch.tensor([0, 500, 999]), 1e9), torch.ones(3))  # gamma above every SNR: plain MSE


def test_kbin_draws_one_step_from_each_bin():
    inference = torch.arange(23, -1, -1) * 40 + 39  # 24 descending steps
    gen = torch.Generator().manual_seed(0)
    seen = [set() for _ in range(3)]
    for _ in range(400):
        ts = kbin_timesteps(inference, 3, gen, first="drawn")
        assert len(ts) == 3 and (ts[1:] < ts[:-1]).all()
        for i, t in enumerate(ts.tolist()):
            assert t in inference[i * 8 : (i + 1) * 8].tolist()  # step i from bin i
            seen[i].add(t)
    assert all(len(s) == 8 for s in seen)  # every step of every bin is drawn sometimes
    with pytest.raises(ValueError, match="equal bins"):
        kbin_timesteps(inference, 5)
    # ours by default: the first step where the pure-noise start belongs, the others still drawn from their bins
    firsts, rest = set(), [set(), set()]
    for _ in range(200):
        ts = kbin_timesteps(inference, 3, gen).tolist()
        firsts.add(ts[0])
        for i, t in enumerate(ts[1:], 1):
            assert t in inference[i * 8 : (i + 1) * 8].tolist()
            rest[i - 1].add(t)
    assert firsts == {int(inference[0])} and all(len(s) == 8 for s in rest)
    with pytest.raises(ValueError, match="'last' or 'drawn'"):
        kbin_timesteps(inference, 3, gen, first="top")


def test_uniform_is_always_the_same_spread(scheduler):
    a, b = uniform_timesteps(scheduler, 3), student_timesteps(scheduler, 24, 3, "uniform")
    assert a.tolist() == b.tolist() == [999, 666, 332]  # trailing spacing
    kb = student_timesteps(scheduler, 24, 3, "kbin", torch.Generator().manual_seed(1))
    assert len(kb) == 3 and kb[0] == 999  # the first step where inference starts
    drawn = [student_timesteps(scheduler, 24, 3, "kbin", torch.Generator().manual_seed(s), "drawn")[0] for s in range(20)]
    assert all(707 <= t <= 999 for t in drawn) and min(drawn) < 999  # bin 0 of 24 steps: 999 ... 707
    with pytest.raises(ValueError, match="unknown timestep mode"):
        student_timesteps(scheduler, 24, 3, "random")


def _oracle(sched: NoiseSchedule, x0: torch.Tensor):
    """A perfect model of a one-point data set: it knows x0 and answers the exact v."""

    def model(x_t, t):
        alpha, sigma = sched.coefficients(t, x_t)
        eps = x_t if (alpha == 0).all() else (x_t - alpha * x0) / sigma
        return sched.velocity(x0, eps, t)

    return model


@pytest.mark.parametrize("shape", [(2, 3, 8, 8), (1, 3, 8, 8, 8)])
def test_ddim_with_a_perfect_model_lands_on_the_data(scheduler, shape):
    sched = NoiseSchedule.from_scheduler(scheduler)
    gen = torch.Generator().manual_seed(2)
    x0, noise = torch.randn(shape, generator=gen), torch.randn(shape, generator=gen)
    for ts in (inference_timesteps(scheduler, 24), kbin_timesteps(inference_timesteps(scheduler, 24), 3, gen), [999]):
        assert torch.allclose(ddim_sample(_oracle(sched, x0), noise, sched, ts), x0, atol=1e-4)


def test_ddim_matches_diffusers_step_on_its_own_timesteps(scheduler):
    sched = NoiseSchedule.from_scheduler(scheduler)
    weights = torch.randn(3, 3, generator=torch.Generator().manual_seed(3)) * 0.3

    def model(x, t):  # any deterministic function of (x, t)
        return torch.einsum("ij,bjhw->bihw", weights, x) * (1 + t.float().reshape(-1, 1, 1, 1) / 1000)

    noise = torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(4))
    # 10 steps: evenly 100 apart, where diffusers' own `t - 1000 // steps` previous step is exact
    ours = ddim_sample(model, noise, sched, inference_timesteps(scheduler, 10))
    x = noise
    for t in scheduler.timesteps:  # set by inference_timesteps(scheduler, 10)
        x = scheduler.step(model(x, torch.full((2,), int(t))), t, x, eta=0.0).prev_sample
    assert torch.allclose(ours, x, atol=1e-4)
    with pytest.raises(ValueError, match="descending"):
        ddim_sample(model, noise, sched, [10, 500])


def test_gradients_flow_through_every_student_step(scheduler):
    sched = NoiseSchedule.from_scheduler(scheduler)
    scale = torch.ones(3, requires_grad=True)  # stands in for the student's trainable weights
    calls = []

    def model(x, t):
        out = x * scale.reshape(1, 3, 1, 1)
        out.register_hook(lambda g: calls.append(int(t[0])))
        return out

    ts = [999, 666, 333]
    ddim_sample(model, torch.randn(1, 3, 4, 4), sched, ts).square().mean().backward()
    assert sorted(calls, reverse=True) == ts  # the loss reached the model's output at all k steps
    assert scale.grad is not None and scale.grad.abs().sum() > 0
    x_prev, x0 = ddim_step(sched, torch.zeros(1, 3, 4, 4), torch.ones(1, 3, 4, 4), 500, -1)
    assert torch.equal(x_prev, x0)  # the last step returns the clean prediction


def test_sliding_windows_cover_long_clips_and_average_overlaps():
    assert windows(8, 8, 4) == [slice(0, 8)]
    assert windows(16, 8, 4) == [slice(0, 8), slice(4, 12), slice(8, 16)]
    assert windows(13, 8, 4) == [slice(0, 8), slice(4, 12), slice(5, 13)]
    with pytest.raises(ValueError, match="stride"):
        windows(16, 4, 8)

    seen = []

    def per_frame(x, t, frames):  # frame-wise model: windowing must not change its output
        seen.append(frames)
        return x * 2 + torch.arange(frames.start, frames.stop, dtype=x.dtype).reshape(1, 1, -1, 1, 1)

    x = torch.randn(1, 2, 13, 3, 3)
    out = windowed(per_frame, 8, 4)(x, torch.tensor([5]))
    assert torch.allclose(out, x * 2 + torch.arange(13.0).reshape(1, 1, -1, 1, 1))
    assert seen == windows(13, 8, 4)

    def window_mean(x, t, frames):  # each window sees only its own frames
        return x.mean(dim=2, keepdim=True).expand_as(x)

    y = torch.arange(16.0).reshape(1, 1, 16, 1, 1)
    out = windowed(window_mean, 8, 4)(y, torch.tensor([5]))
    # frames 0-3 only in window 0 (mean 3.5); 4-7 in windows 0 and 1 (3.5, 7.5); 12-15 only in window 2 (11.5)
    assert out[0, 0, :, 0, 0].tolist() == [3.5] * 4 + [5.5] * 4 + [9.5] * 4 + [11.5] * 4
    with pytest.raises(ValueError, match="clips"):
        windowed(window_mean, 8, 4)(torch.zeros(1, 3, 4, 4), torch.tensor([1]))
