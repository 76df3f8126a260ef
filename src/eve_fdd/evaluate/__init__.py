"""Evaluation: detectors and metrics measured against the Shapes world's ground truth."""

import numpy as np


def per_task_means(errors: dict[str, np.ndarray], tasks: list[str]) -> dict[str, float]:
    """`<metric>.<task>` (NaN-skipping mean; a task with no finite value, e.g. a background
    edit that keeps no pixel, gets none) and `<metric>.mean` over tasks, so every task weighs
    the same; rounded to 5 digits."""
    tasks_arr = np.array(tasks)
    out: dict[str, float] = {}
    for name, values in errors.items():
        per_task = {}
        for task in sorted(set(tasks)):
            v = values[tasks_arr == task]
            if np.isfinite(v).any():
                per_task[task] = float(np.nanmean(v))
                out[f"{name}.{task}"] = round(per_task[task], 5)
        if per_task:
            out[f"{name}.mean"] = round(float(np.mean(list(per_task.values()))), 5)
    return out
