"""Generation throughput: the project's path vs llama-cpp-python called directly.

Same model, same prompts (system + few-shot + question), same JSON grammar, same seeds and
sampling. "direct" times `Llama.create_chat_completion` alone; "project" times
`eve_fdd.llm.generate.generate` (prompt building, the call, validation against the scene,
row building) with the cache off, so every request reaches the model. Both rates are
completion tokens per wall-clock second over the whole batch.

    python benchmarks/llm_throughput.py [--requests 140] [--params params.yaml]

Needs `dvc repro videos llm` first (the videos table and the model).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from eve_fdd.config import load_config
from eve_fdd.data import tables
from eve_fdd.llm import generate as gen
from eve_fdd.llm import prompts
from eve_fdd.llm.tiny import load_llama
from eve_fdd.stages.instructions import video_requests
from eve_fdd.stages.llm import model_info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--requests", type=int, default=140)
    parser.add_argument("--repeats", type=int, default=2, help="alternate direct/project this many times; best of each")
    args = parser.parse_args()

    cfg = load_config(args.params)
    info = model_info(Path("data/llm"))
    videos = tables.read_table(tables.VIDEOS, Path("data/videos/videos.parquet"))
    requests, _ = video_requests(cfg, videos)
    requests = sorted(requests[: args.requests], key=lambda r: (r.task, r.concept or ""))  # the order generate() uses
    llm = load_llama(info["path"], n_ctx=cfg.llm.n_ctx, n_threads=cfg.llm.n_threads, n_gpu_layers=cfg.llm.n_gpu_layers, seed=cfg.seed)
    grammar = gen.json_grammar()
    s = cfg.llm

    def direct() -> tuple[int, float]:
        tokens, t0 = 0, time.perf_counter()
        for r in requests:
            out = llm.create_chat_completion(
                messages=prompts.messages(cfg.profile, r.caption, r.task, r.concept), grammar=grammar,
                temperature=s.temperature, top_p=s.top_p, max_tokens=s.max_tokens, seed=gen.derive_seed(r.seed, 0),
                repeat_penalty=s.repeat_penalty,
            )
            tokens += out["usage"]["completion_tokens"]
        return tokens, time.perf_counter() - t0

    def project() -> tuple[int, float]:
        limits = cfg.instructions.model_copy(update={"max_attempts": 1})  # one call per request, as direct
        writer = gen.Writer(llm, Path(info["path"]).name, info["sha256"], cfg.profile, s, grammar=grammar, cache=None)
        t0 = time.perf_counter()
        gen.generate(writer, requests, limits, cfg.world.speed, "benchmark", progress=False)
        return writer.stats.completion_tokens, time.perf_counter() - t0

    results: dict[str, list[float]] = {"direct": [], "project": []}
    tokens = {}
    for _ in range(args.repeats):
        for name, fn in (("direct", direct), ("project", project)):
            n, seconds = fn()
            tokens[name] = n
            results[name].append(n / seconds)
    best = {k: max(v) for k, v in results.items()}
    report = {
        "model": info["path"],
        "requests": len(requests),
        "completion_tokens": tokens,
        "tokens_per_second": {k: round(v, 1) for k, v in best.items()},
        "all_runs_tokens_per_second": {k: [round(x, 1) for x in v] for k, v in results.items()},
        "ratio_project_over_direct": round(best["project"] / best["direct"], 3),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
