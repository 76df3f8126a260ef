"""Run by tests/test_parallel.py, in one process or under `accelerate launch`: the toy model and
critic of tests/test_train_loop.py trained by the loop. `python parallel_toy.py OUT STEPS
MICRO_BATCHES` writes OUT/curve.json and OUT/weights.safetensors (rank 0)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from safetensors.torch import save_file

from eve_fdd.train.loop import train
from eve_fdd.train.parallel import RankDone

sys.path.insert(0, str(Path(__file__).parent))
from test_train_loop import CFG, _state, _with_critic  # noqa: E402


def run(out: Path, steps: int, micro_batches: int) -> None:
    m, c, step, critic, _ = _with_critic()
    cfg = CFG.model_copy(update={"steps": steps, "micro_batches": micro_batches})
    try:
        res = train(m, step, cfg, out / "run", progress=False, critic=critic)
    except RankDone:
        return
    (out / "curve.json").write_text(json.dumps(res.curve))
    save_file(_state(m) | _state(c), out / "weights.safetensors")


if __name__ == "__main__":
    run(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
