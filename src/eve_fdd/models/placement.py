"""Placement: the device every model and tensor of a stage lives on, and its precision (one
place, both profiles; Deliver 5 of the full-scale issue).

- The device is accelerate's (`PartialState().device`): CUDA when there is one (under
  `accelerate launch`, each process's own GPU), else the CPU.
- Precision follows the stage's `mixed_precision` param (`resolve_precision`: "auto" is bf16
  where the device computes bfloat16 natively). With bf16, the training steps run under
  bfloat16 autocast (`autocast`), the trained weights (LoRA, adapters, discriminator heads) and their
  optimiser stay float32, and on CUDA the frozen parts (VAE, text encoder, backbone,
  teachers, DINOv2, metric models) are *stored* in bfloat16 (half their memory). On a CPU
  frozen weights stay float32: autocast already computes the matmuls in bf16 there, and
  the Shapes results keep the numbers they were measured with. Forwards outside the training
  steps (`inference`) run under autocast exactly where frozen weights are bf16.
- Random numbers are drawn from CPU generators and then moved (`randn`), so one seed gives
  the same noise on every device.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import torch


def randn(shape: Sequence[int] | torch.Size, generator: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
    """Standard normal noise from a CPU `generator` (the same numbers on every device), float32,
    on `like`'s device."""
    return torch.randn(tuple(shape), generator=generator).to(like.device)


def module_device(module: Any) -> torch.device:
    """The device of a module's first parameter (CPU for a module without any)."""
    for p in module.parameters():
        return p.device
    return torch.device("cpu")


def move(module: Any, device: torch.device, dtype: torch.dtype | None = None) -> Any:
    """`module` on `device`, its floating-point weights in `dtype` (None: as they are). The dtype
    is cast only where it differs (diffusers warns on every `.to(dtype)` of its models)."""
    module.to(device)
    if dtype is not None and any(p.is_floating_point() and p.dtype != dtype for p in module.parameters()):
        module.to(dtype)
    return module


def native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX; on this 2-core machine
    the small Llama trains ~1.4x and the Shapes UNets 1.1-1.2x faster in bf16); elsewhere
    autocast would emulate it, slower than float32."""
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # private helpers moved: stay in float32
        return False


def resolve_precision(mixed_precision: str, device: torch.device | None = None) -> str:
    """accelerate's `mixed_precision` for a TrainConfig value: "auto" becomes "bf16" where
    `device` (by default CUDA when there is one, else the CPU) computes bfloat16 natively, else "no"."""
    if mixed_precision != "auto":
        return mixed_precision
    if device is None:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "no"
    return "bf16" if native_bf16() else "no"


@dataclass(frozen=True)
class Placement:
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    bf16: bool = False  # forwards under bfloat16 autocast
    frozen_dtype: torch.dtype = torch.float32  # what frozen weights are stored in

    @classmethod
    def resolve(cls, mixed_precision: str = "no") -> "Placement":
        """accelerate's device for this process, with `mixed_precision` ("no" | "bf16" | "auto")
        resolved for it."""
        from accelerate import PartialState

        device = PartialState(cpu=not torch.cuda.is_available()).device
        bf16 = resolve_precision(mixed_precision, device) == "bf16"
        return cls(device, bf16, torch.bfloat16 if bf16 and device.type == "cuda" else torch.float32)

    def frozen(self, *modules: Any) -> Any:
        """Frozen modules (no gradients, eval mode) on the device in `frozen_dtype`; returns the first."""
        for m in modules:
            if m is not None:
                move(m.requires_grad_(False).eval(), self.device, self.frozen_dtype)
        return modules[0] if modules else None

    def trained(self, modules: Iterable[Any]) -> None:
        """Modules on the device, every parameter that requires gradients in float32 (a LoRA or
        adapter on a bf16 base keeps float32 weights; the optimiser's moments follow them)."""
        for m in modules:
            m.to(self.device)
            for p in m.parameters():
                if p.requires_grad and p.dtype != torch.float32:
                    p.data = p.data.float()

    def autocast(self) -> AbstractContextManager:
        """bfloat16 autocast on the device, or a no-op without bf16."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def inference(self) -> AbstractContextManager:
        """Autocast for forwards outside the training steps (sampling, evaluation, editing): on
        where frozen weights are stored in bf16 (they need it), off elsewhere, so an evaluation
        on the CPU runs in float32 as the Shapes results were measured."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.frozen_dtype == torch.bfloat16)

    def metrics(self, trains: bool = True) -> dict[str, float | str]:
        """What ran, for a stage's metrics: the device type (an MLflow tag), whether its forwards
        ran under bf16 autocast (the training steps' when it `trains`, else `inference`'s) and
        whether frozen weights were stored in bf16."""
        frozen_bf16 = self.frozen_dtype == torch.bfloat16
        return {"device": self.device.type, "bf16": float(self.bf16 if trains else frozen_bf16), "frozen_bf16": float(frozen_bf16)}
