"""Edited videos scored against the Shapes ground truth (METHOD.md section 10): the edited
scene re-rendered with the same motion, which FDD never sees.

Per video, on [0, 1] pixels, over frames 1.. (frame 0 is the edited first frame that
conditions the video adapter, made by the edit teacher for every variant alike):
- fidelity.{all,changed,kept}: mean absolute error against the ground truth on the whole
  frame, on the pixels the edit changes, on the pixels it must keep (train/edit_adapter.py's
  regions, frame by frame);
- temporal: mean absolute error of the frame-to-frame differences against the ground truth's
  (x_{f+1} - x_f vs g_{f+1} - g_f): flicker and wrong motion both raise it, a frozen clip scores
  the ground truth's own motion;
- frame_change: mean absolute change between consecutive frames (the ground truth's is
  reported beside it).
"""

from __future__ import annotations

import numpy as np
import torch

from . import per_task_means
from ..models.adapters import frames_to_batch
from ..train.edit_adapter import region_errors

SCORED = slice(1, None)


def video_errors(edited: torch.Tensor, source: torch.Tensor, truth: torch.Tensor) -> dict[str, np.ndarray]:
    """Per-video errors of clips (B, 3, F, H, W) in [-1, 1] against the ground truth."""
    if not (edited.shape == source.shape == truth.shape) or edited.ndim != 5:
        raise ValueError(f"video_errors: expected three clip batches of one shape (B, 3, F, H, W), got "
                         f"{tuple(edited.shape)}, {tuple(source.shape)}, {tuple(truth.shape)}")
    b, f = edited.shape[0], edited.shape[2] - 1
    e, s, g = (x[:, :, SCORED].clamp(-1, 1) for x in (edited, source, truth))
    regions = region_errors(frames_to_batch(e), frames_to_batch(s), frames_to_batch(g))
    out = {f"fidelity.{name}": _nanmean_rows(v.reshape(b, f)) for name, v in regions.items()}
    de, dg = edited.clamp(-1, 1).diff(dim=2), truth.clamp(-1, 1).diff(dim=2)  # every transition, 0 -> 1 included
    out["temporal"] = ((de - dg).abs().mean(dim=(1, 2, 3, 4)) / 2).numpy()
    out["frame_change"] = (de.abs().mean(dim=(1, 2, 3, 4)) / 2).numpy()
    out["frame_change_ground_truth"] = (dg.abs().mean(dim=(1, 2, 3, 4)) / 2).numpy()
    return out


def _nanmean_rows(x: np.ndarray) -> np.ndarray:
    """Row means ignoring NaN (an empty region in a frame); NaN where a row has no value."""
    n = np.isfinite(x).sum(axis=1)
    return np.where(n > 0, np.nansum(x, axis=1) / np.maximum(n, 1), np.nan)


def summarize(errors: dict[str, np.ndarray], tasks: list[str]) -> dict[str, float]:
    """`<metric>.mean` (every task weighing the same) and `<metric>.<task>`."""
    return per_task_means(errors, tasks)
