"""Noise schedules (zero terminal SNR), eps / v / x0 conversions, K-bin timesteps, and a
small DDIM sampler for images and clips (with sliding windows for long clips)."""

from .sampler import ddim_sample, ddim_step, windowed
from .schedule import NoiseSchedule, make_scheduler
from .timesteps import inference_timesteps, kbin_timesteps, student_timesteps, uniform_timesteps

__all__ = [
    "NoiseSchedule",
    "ddim_sample",
    "ddim_step",
    "inference_timesteps",
    "kbin_timesteps",
    "make_scheduler",
    "student_timesteps",
    "uniform_timesteps",
    "windowed",
]
