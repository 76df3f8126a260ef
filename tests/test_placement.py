"""models/placement.py: the device and precision every stage runs in. On this CPU the device is
the CPU; the bf16 path a GPU takes (frozen weights *stored* in bf16, float32 LoRA and heads,
autocast) is forced on the CPU by tests/test_stage_fdd_full.py through the real fdd and evaluate stages."""

from __future__ import annotations

import pytest
import torch

from eve_fdd.models.placement import Placement, randn, resolve_precision



def test_this_cpu_resolves_to_the_cpu_and_keeps_frozen_weights_in_float32():
    no, bf16 = Placement.resolve("no"), Placement.resolve("bf16")
    assert no.device.type == "cpu" and not no.bf16 and no.frozen_dtype == torch.float32
    assert bf16.bf16 and bf16.frozen_dtype == torch.float32  # on a CPU autocast computes bf16; storage stays float32
    assert Placement.resolve("auto").bf16 == (resolve_precision("auto", torch.device("cpu")) == "bf16")
    assert no.metrics() == {"device": "cpu", "bf16": 0.0, "frozen_bf16": 0.0}
    gpu_like = Placement(torch.device("cpu"), True, torch.bfloat16)
    assert gpu_like.metrics(trains=False) == {"device": "cpu", "bf16": 1.0, "frozen_bf16": 1.0}
    assert bf16.metrics(trains=False)["bf16"] == 0.0  # evaluation without bf16 weights runs in float32


def test_noise_is_drawn_on_the_cpu_generator_and_lands_on_the_samples_device():
    like = torch.zeros(1)
    a = randn((2, 3), torch.Generator().manual_seed(4), like=like)
    assert torch.equal(a, torch.randn((2, 3), generator=torch.Generator().manual_seed(4))) and a.device == like.device


def test_frozen_modules_are_stored_in_bf16_and_trained_weights_stay_float32():
    p = Placement(torch.device("cpu"), True, torch.bfloat16)
    frozen, trained = torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)
    p.frozen(frozen)
    model = torch.nn.Sequential(frozen, trained).to(torch.bfloat16)  # a LoRA made in its base's dtype
    p.trained([model])
    assert frozen.weight.dtype == torch.bfloat16 and not frozen.weight.requires_grad and not frozen.training
    assert trained.weight.dtype == torch.float32 and trained.weight.requires_grad
    with p.autocast():
        out = model(torch.randn(2, 4))
    assert out.dtype == torch.bfloat16
    out.float().sum().backward()
    assert trained.weight.grad.dtype == torch.float32 and frozen.weight.grad is None


def test_a_bf16_base_model_without_autocast_is_what_inference_guards_against():
    """Why forwards outside the training steps run under `inference()` where weights are bf16."""
    p = Placement(torch.device("cpu"), True, torch.bfloat16)
    conv = p.frozen(torch.nn.Conv2d(3, 4, 3))
    x = torch.randn(1, 3, 8, 8)
    with pytest.raises(RuntimeError):
        conv(x)
    with torch.no_grad(), p.inference():
        assert torch.isfinite(conv(x)).all()
