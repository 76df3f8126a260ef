"""FDD variants over several seeds, straight through the stage library (no DVC, Prefect or
MLflow), for a quick multi-seed table on a machine with more cores; the tracked way is
`dvc exp run -S fdd.seed=N` per seed. Reads the teachers and data that `dvc repro` wrote.

    python benchmarks/fdd_seeds.py --seeds 0 1 2 --variants full no_align [--jobs 3] [--out fdd_seeds.json]
    python benchmarks/fdd_seeds.py --import-exps    # seeds run as `dvc exp run -S fdd.seed=N` experiments
    python benchmarks/fdd_seeds.py --lever warmup50 --set fdd.discriminator.warmup=50 --seeds 0 1 2 --variants full
    python benchmarks/fdd_seeds.py --lever edit1500 --edit-adapter .cache/teachers/edit_adapter-1500 --variants full no_align

Every (variant, seed) measured is merged into results/fdd_seeds.json (`--results`), the file
stage `report` reads for its over-seeds table: {variant: {seed: held-out metrics}}. It holds
the runs this script made, nothing else: stage report itself counts the pipeline's own run
(metrics/fdd/<variant>.json) as its fdd.seed, so a fresh clone's `dvc repro` needs only the
other seeds from this file.
A lever (`--lever NAME` with its `--set KEY=VALUE` params, as `dvc exp run -S`) goes to
results/fdd_levers.json instead (`--lever-results`): {NAME: {"set": ..., "commit": ...,
"runs": {variant: {seed: metrics}}}}, never into the report's seeds. `--edit-adapter` / `--video-adapter`
put other teachers under FDD (a lever too; its "about" names them).

Each (variant, seed) runs in its own process (torch threads = cores / jobs), with its own
checkpoint and output folders under `--work`; prints mean ± std over seeds of the held-out
metrics (lower is better: errors against the Shapes ground truth).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np

KEYS = ("eval.fidelity.all.mean", "eval.fidelity.changed.mean", "eval.fidelity.kept.mean", "eval.temporal.mean", "eval.frame_change.mean")
DATA = Path("data")
TEACHERS = ("edit_adapter", "video_adapter")  # stages whose folder a lever may replace (--edit-adapter, --video-adapter)


def one(params: str, variant: str, seed: int, work: Path, overrides: dict | None = None,
        teachers: dict[str, Path] | None = None) -> dict:
    from eve_fdd.config import load_config
    from eve_fdd.stages import fdd

    cfg = load_config(params, {**(overrides or {}), "fdd.seed": seed})  # the teachers stay those `dvc repro` trained
    teachers = {**{t: DATA / t for t in TEACHERS}, **(teachers or {})}
    start = time.perf_counter()
    out = fdd.build(cfg, variant, DATA / "instructions" / "instructions.parquet", DATA / "videos" / "videos.parquet", DATA / "backbone",
                    teachers["edit_adapter"], teachers["video_adapter"], work / f"{variant}-{seed}", work / "ckpt" / f"{variant}-{seed}", progress=False,
                    features_dir=DATA / "features")
    return {"variant": variant, "seed": seed, "seconds": round(time.perf_counter() - start, 1), **out.metrics}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=["full", "no_align"])
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--work", type=Path, default=Path(".cache/fdd_seeds"))
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--results", type=Path, default=Path("results/fdd_seeds.json"))
    parser.add_argument("--import-exps", action="store_true", help="merge the fdd metrics of this project's DVC experiments")
    parser.add_argument("--lever", default=None, help="name of the params change measured (results go to --lever-results)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="a params.yaml value for these runs, as dvc exp run -S (value read as YAML); repeatable")
    parser.add_argument("--lever-results", type=Path, default=Path("results/fdd_levers.json"))
    for stage in TEACHERS:
        parser.add_argument(f"--{stage.replace('_', '-')}", type=Path, default=None, metavar="DIR",
                            help=f"another {stage} teacher's folder (as data/{stage}, e.g. by benchmarks/longer_teacher.py); needs --lever")
    parser.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    overrides = parse_overrides(args.overrides)
    teachers = {t: getattr(args, t) for t in TEACHERS if getattr(args, t) is not None}
    if (overrides or teachers) and not args.lever:
        parser.error("--set and other teachers need --lever NAME: results of changed params never go into the report's seeds")
    if args.one:
        print(json.dumps(one(args.params, args.one[0], int(args.one[1]), args.work, overrides, teachers)))
        return
    if args.import_exps:
        merge(args.results, exp_rows())
        return
    threads = max(1, (os.cpu_count() or 2) // args.jobs)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))

    def run(job):
        variant, seed = job
        cmd = [sys.executable, __file__, "--params", args.params, "--work", str(args.work / (args.lever or "default")),
               *(["--lever", args.lever] if args.lever else []), *(f"--set={o}" for o in args.overrides),
               *(f"--{k.replace('_', '-')}={v}" for k, v in teachers.items()), "--one", variant, str(seed)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode:
            raise RuntimeError(f"{variant} seed {seed} failed:\n{proc.stderr[-3000:]}")
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"{variant} seed {seed}: {row['seconds']} s, " + ", ".join(f"{k}={row.get(k)}" for k in KEYS), flush=True)
        return row

    jobs = [(v, s) for v in args.variants for s in args.seeds]
    with ThreadPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(run, jobs))
    table = {}
    for v in args.variants:
        mine = [r for r in rows if r["variant"] == v]
        table[v] = {k: (round(float(np.mean([r[k] for r in mine])), 5), round(float(np.std([r[k] for r in mine])), 5)) for k in KEYS}
        table[v]["identity"] = {k: mine[0].get(k.replace("eval.", "eval.identity.")) for k in KEYS}
    print(json.dumps(table, indent=2))
    if args.out:
        args.out.write_text(json.dumps({"rows": rows, "table": table}, indent=2))
    if args.lever:
        merge_lever(args.lever_results, args.lever, overrides, rows, {"teachers": {k: str(v) for k, v in teachers.items()}} if teachers else None)
    else:
        merge(args.results, rows)


def parse_overrides(items: list[str]) -> dict:
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set {item!r}: expected KEY=VALUE, e.g. fdd.discriminator.warmup=50")
        out[key] = yaml.safe_load(value)
    return out


def merge_lever(path: Path, lever: str, overrides: dict, rows: list[dict], about: dict | None = None) -> None:
    """Add a lever's rows to `path` under its name, with its params, the commit measured and
    what else the lever measured (`about`)."""
    with _locked(path):
        _merge_lever(path, lever, overrides, rows, about)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """`path` to be read and rewritten by this process alone: several runs of this script end at once."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _merge_lever(path: Path, lever: str, overrides: dict, rows: list[dict], about: dict | None) -> None:
    data = json.loads(path.read_text()) if path.is_file() else {}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    entry = data.setdefault(lever, {"set": overrides, "runs": {}})
    if entry["set"] != overrides:
        raise SystemExit(f"{path}: lever {lever!r} was measured with {entry['set']}, not {overrides}: give it another name")
    entry["commit"] = commit
    if about:
        entry["about"] = about
    for r in rows:
        entry["runs"].setdefault(r["variant"], {})[str(r["seed"])] = {
            k: r[k] for k in sorted(r) if k in ("setup", "seconds", "train_seconds") or k.startswith("eval.") and "identity" not in k}
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    print(f"{path}: {lever}: " + ", ".join(f"{v} seeds {sorted(d, key=int)}" for v, d in sorted(entry["runs"].items())))


def merge(path: Path, rows: list[dict]) -> None:
    """Add rows (variant, seed, metrics) to `path` (a row of the same variant and seed is replaced)."""
    with _locked(path):
        _merge(path, rows)


def _merge(path: Path, rows: list[dict]) -> None:
    from eve_fdd.evaluate.report import seed_row

    data = json.loads(path.read_text()) if path.is_file() else {}
    for r in rows:
        # with the run's setup (params, code, data, teachers but the seed): report averages one setup's seeds only
        data.setdefault(r["variant"], {})[str(r["seed"])] = seed_row(r)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    print(f"{path}: " + ", ".join(f"{v} seeds {sorted(d, key=int)}" for v, d in sorted(data.items())))


def exp_rows() -> list[dict]:
    """fdd metrics of every DVC experiment of this project (on any commit), with its fdd.seed."""
    out = subprocess.run(["dvc", "exp", "show", "--all-commits", "--json"], capture_output=True, text=True, check=True).stdout
    rows = []

    def walk(node):
        if isinstance(node, dict):
            data = node.get("data")
            if isinstance(data, dict) and "metrics" in data and "params" in data:
                fdd = data["params"].get("params.yaml", {}).get("data", {}).get("fdd", {})
                seed, ran = fdd.get("seed"), set(fdd.get("variants", ()))  # other variants' files are the baseline's
                for name, m in data["metrics"].items():
                    # a failed experiment has no metrics file (an error entry instead): left out
                    if name.startswith("metrics/fdd/") and Path(name).stem in ran and seed is not None and m.get("data"):
                        rows.append({"variant": Path(name).stem, "seed": seed, **m["data"]})
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(json.loads(out))
    return rows


if __name__ == "__main__":
    main()
