"""Edit fidelity as image-quality numbers (METHOD.md section 10): PSNR and SSIM of each edited
clip against its rendered ground-truth edit (scikit-image's implementations), over frames 1..
as `video_edits` scores (frame 0 of an FDD edit is the edit teacher's, for every variant alike).
PSNR pools the squared error of a video's frames; a video equal to its ground truth is capped
at `MAX_PSNR` dB so that means stay finite. SSIM is the mean over frames (7x7 windows, colour
channels averaged).
"""

from __future__ import annotations

import numpy as np

from .video_edits import SCORED

MAX_PSNR = 100.0


def _check(edited: np.ndarray, truth: np.ndarray) -> None:
    if edited.shape != truth.shape or edited.ndim != 5 or edited.dtype != np.uint8 or truth.dtype != np.uint8:
        raise ValueError(f"psnr_ssim: expected two uint8 clip batches (B, F, H, W, 3) of one shape, got "
                         f"{edited.dtype} {edited.shape} and {truth.dtype} {truth.shape}")


def psnr_ssim(edited: np.ndarray, truth: np.ndarray) -> dict[str, np.ndarray]:
    """{"psnr": (B,), "ssim": (B,)} for uint8 clips (B, F, H, W, 3)."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    _check(edited, truth)
    psnr, ssim = [], []
    for e, g in zip(edited[:, SCORED], truth[:, SCORED]):
        psnr.append(MAX_PSNR if np.array_equal(e, g) else min(MAX_PSNR, peak_signal_noise_ratio(g, e, data_range=255)))
        ssim.append(np.mean([structural_similarity(gf, ef, channel_axis=-1, data_range=255) for ef, gf in zip(e, g)]))
    return {"psnr": np.array(psnr), "ssim": np.array(ssim)}
