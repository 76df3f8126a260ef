"""Instruction acceptance under each decoding grammar, and with smaller Shapes Llamas.

The same requests as the stages ask (every video's applicable tasks, then the subject and
style sets), the same seeds, sampling and validation (`max_attempts` retries), the cache
off so every attempt reaches the model:
- the trained model of `data/llm` under each grammar of `--modes` (json = the JSON schema
  only, instruction = the instruction bound to the scene, scene = instruction and caption);
- for each `--train` setting, a small Llama trained here on the llm stage's conversations
  with those `llm.tiny` overrides (plus `conversations=N`), under the scene grammar.
Per run and task: acceptance, first-try rate, the share of distinct accepted instructions;
model seconds and tokens per second; training seconds for the models trained here.

    python benchmarks/instruction_grammars.py --out results/instruction_grammars.json \
        [--modes json instruction scene] [--train steps=1200 --train steps=600,hidden_size=64] [--requests N]

Needs `dvc repro videos llm` first (the videos table and the default model).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from eve_fdd.config import load_config
from eve_fdd.data import tables
from eve_fdd.llm import generate as gen
from eve_fdd.llm import prompts
from eve_fdd.llm.tiny import load_llama, train_tiny_llama
from eve_fdd.stages.instructions import subject_style_requests, summarize, video_requests
from eve_fdd.stages.llm import model_info


def _setting(text: str) -> dict[str, Any]:
    out = {}
    for part in text.split(","):
        key, _, value = part.partition("=")
        out[key.strip()] = json.loads(value) if value.strip()[:1].isdigit() or value.strip() in ("true", "false") else value.strip()
    return out


def run(cfg, path: Path, sha: str, mode: str, requests: list[gen.Request]) -> dict[str, Any]:
    llm = load_llama(path, n_ctx=cfg.llm.n_ctx, n_threads=cfg.llm.n_threads, n_gpu_layers=cfg.llm.n_gpu_layers, seed=cfg.seed)
    writer = gen.Writer(llm, path.name, sha, cfg.profile, cfg.llm, grammar=gen.json_grammar(), cache=None, scene_grammar=mode)
    t0 = time.perf_counter()
    rows, rejects = gen.generate(writer, requests, cfg.instructions, cfg.world.speed, "benchmark", progress=True)
    wall = time.perf_counter() - t0
    llm.close()
    m = summarize(rows, rejects, writer.stats)
    m["wall_seconds"] = round(wall, 1)
    return m


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--modes", nargs="*", default=["json", "instruction", "scene"])
    parser.add_argument("--train", action="append", default=[], help="llm.tiny overrides for a smaller model, e.g. steps=1200,hidden_size=64")
    parser.add_argument("--requests", type=int, default=0, help="only the first N requests (0 = all)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    cfg = load_config(args.params)
    videos = tables.read_table(tables.VIDEOS, Path("data/videos/videos.parquet"))
    requests, _ = video_requests(cfg, videos)
    requests += subject_style_requests(cfg, videos)
    if args.requests:
        requests = requests[: args.requests]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    report: dict[str, Any] = {"commit": commit, "requests": len(requests), "max_attempts": cfg.instructions.max_attempts,
                              "sampling": cfg.llm.model_dump(exclude={"tiny", "model_path"}), "runs": []}
    info = model_info(Path("data/llm"))
    for mode in args.modes:
        print(f"data/llm model, grammar {mode}", flush=True)
        m = run(cfg, Path(info["path"]), info["sha256"], mode, requests)
        report["runs"].append({"model": "data/llm", "tiny": cfg.llm.tiny.model_dump(), "grammar": mode, **m})
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    for text in args.train:
        setting = _setting(text)
        conversations = int(setting.pop("conversations", cfg.llm.train_conversations))
        tiny = cfg.llm.tiny.model_copy(update=setting)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "small.gguf"
            t0 = time.perf_counter()
            trained = train_tiny_llama(prompts.training_pairs(conversations, cfg.seed, cfg.world.speed), tiny, path, progress=True)
            train_seconds = time.perf_counter() - t0
            print(f"trained {text} in {train_seconds:.0f} s, grammar scene", flush=True)
            m = run(cfg, path, trained["sha256"], "scene", requests)
        report["runs"].append({"model": f"trained here: {text}", "conversations": conversations, "tiny": tiny.model_dump(),
                               "train_seconds": round(train_seconds, 1), "final_loss": trained.get("final_loss"), "grammar": "scene", **m})
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps([{k: r[k] for k in ("model", "grammar", "acceptance", "first_try_acceptance", "wall_seconds")} for r in report["runs"]], indent=2))


if __name__ == "__main__":
    main()
