"""Plots a researcher looks at in the MLflow UI (PNG artifacts), drawn with matplotlib."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def timestep_histogram(timesteps: np.ndarray, train_timesteps: int, path: str | Path, title: str = "") -> None:
    """Histogram of the student's k timesteps over a run, one colour per step i (K-bin: step i
    stays in bin i; uniform: k spikes). `timesteps`: (iterations, k)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    timesteps = np.asarray(timesteps, dtype=float)
    if timesteps.ndim != 2 or not len(timesteps):
        raise ValueError(f"timestep_histogram: expected (iterations, k) timesteps, got shape {timesteps.shape}")
    fig, ax = plt.subplots(figsize=(6, 3), dpi=100)
    bins = np.linspace(0, train_timesteps, 51)
    for i in range(timesteps.shape[1]):
        ax.hist(timesteps[:, i], bins=bins, alpha=0.7, label=f"step {i + 1}")
    ax.set_xlabel("timestep")
    ax.set_ylabel("iterations")
    ax.set_title(title or f"student timesteps over {len(timesteps)} iterations")
    ax.legend(fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
