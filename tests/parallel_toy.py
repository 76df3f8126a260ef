"""Run by tests/test_parallel.py, in one process or under `accelerate launch`: the toy model and
critic of tests/test_train_loop.py trained by the loop. `python parallel_toy.py OUT STEPS
MICRO_BATCHES` writes OUT/curve.json and OUT/weights.safetensors (rank 0); `python
parallel_toy.py fdd INPUTS OUT` does so for stage fdd's build."""

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




def fdd_run(inputs: Path, out: Path) -> None:
    """Stage fdd's build (tests/test_stage_fdd.py's config, 2 micro-batches of 1 clip) on the
    inputs `fdd_inputs` wrote to `inputs` (paths in inputs/paths.json)."""
    from test_stage_fdd import CFG

    from eve_fdd.stages import fdd

    cfg = CFG.model_copy(update={"fdd": CFG.fdd.model_copy(update={"micro_batches": 2, "eval_items": 1, "samples": 0, "sample_every": 0})})
    p = {k: Path(v) for k, v in json.loads((inputs / "paths.json").read_text()).items()}
    try:
        res = fdd.build(cfg, "full", p["instructions"], p["videos"], p["backbone_dir"], p["edit_dir"], p["video_dir"], out / "fdd",
                        out / "ckpt", progress=False)
    except RankDone:
        return
    (out / "curve.json").write_text(json.dumps(res.curve))
    from safetensors.torch import load_file

    save_file(load_file(next((out / "fdd").rglob("pytorch_lora_weights.safetensors"))), out / "weights.safetensors")


if __name__ == "__main__":
    if sys.argv[1] == "fdd":
        fdd_run(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        run(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
