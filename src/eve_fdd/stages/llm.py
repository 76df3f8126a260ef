"""Stage `llm`: the instruction writer's weights.

Shapes: train the small Llama on the world's own (caption, task) -> (instruction, output
caption) conversations and write it as GGUF. Full: check that the Llama-2 chat GGUF at
`llm.model_path` loads and record its hash. Either way `data/llm/model.json` says which
file the instruction stages load.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..config import Config
from ..llm import prompts
from ..llm.tiny import load_llama, sha256_file, train_tiny_llama

STAGE = "llm"
PARAMS = ("profile", "seed", "llm")
SHAPES_MODEL = "shapes-llama.gguf"


def build(cfg: Config, out_dir: Path, progress: bool = True) -> dict[str, Any]:
    """Write `out_dir/model.json` (and, for Shapes, the GGUF); returns metrics."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if cfg.profile == "shapes":
        pairs = prompts.training_pairs(cfg.llm.train_conversations, cfg.seed, cfg.world.speed)
        path = out_dir / SHAPES_MODEL
        report = train_tiny_llama(pairs, cfg.llm.tiny, path, progress=progress)
        info = {"path": str(path), "sha256": report["sha256"], "trained": True}
        metrics = {k: v for k, v in report.items() if isinstance(v, (int, float))}
    else:
        path = Path(cfg.llm.model_path)
        load_llama(path, n_ctx=cfg.llm.n_ctx, vocab_only=True)  # a clear error now, not mid-generation
        info = {"path": str(path), "sha256": sha256_file(path), "trained": False}
        metrics = {"size_mb": round(path.stat().st_size / 2**20, 1)}
    info["prompt_version"] = prompts.PROMPT_VERSION
    (out_dir / "model.json").write_text(json.dumps(info, indent=2) + "\n")
    return metrics


def model_info(llm_dir: Path) -> dict[str, Any]:
    path = llm_dir / "model.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; run the `llm` stage first (dvc repro llm)")
    return json.loads(path.read_text())
