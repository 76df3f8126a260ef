"""`eve-fdd`: check params, inspect a dataset, render the Shapes world.

    eve-fdd params [--params params.yaml]          validate params.yaml, print the resolved config
    eve-fdd inspect data/videos/videos.parquet     schema, counts, first rows, rejects by reason
    eve-fdd render --seed 3 [--task local] -o x.gif  one Shapes video (and its ground-truth edit)
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from .config import ConfigError, load_config
from .data import tables
from .world.vocab import TASKS


def cmd_params(args: argparse.Namespace) -> int:
    cfg = load_config(args.params)
    print(json.dumps(cfg.model_dump(mode="json"), indent=2))
    return 0


def _spec_for(path: Path) -> tables.TableSpec | None:
    names = set(pq.read_schema(path).names)
    for spec in (tables.VIDEOS, tables.REJECTS):
        if names == set(spec.schema.names):
            return spec
    return None


def cmd_inspect(args: argparse.Namespace) -> int:
    path = Path(args.table)
    if not path.is_file():
        print(f"error: {path}: no such file", file=sys.stderr)
        return 2
    spec = _spec_for(path)
    if spec is None:
        print(f"error: {path}: not a table of this project (columns {pq.read_schema(path).names})", file=sys.stderr)
        return 2
    rows = tables.read_table(spec, path)  # validates
    print(f"{path}: {spec.name} table, {len(rows)} rows, schema valid")
    print(pq.read_schema(path).to_string(show_schema_metadata=False))
    if spec is tables.REJECTS:
        for reason, n in Counter(r["reason"] for r in rows).most_common():
            print(f"  {reason}: {n}")
    else:
        print("splits:", dict(Counter(r["split"] for r in rows)))
    for row in rows[: args.rows]:
        shown = {k: (f"<{len(v)} bytes>" if isinstance(v, bytes) else v) for k, v in row.items() if k != "scene"}
        print(" ", shown)
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    from .data.video import contact_sheet, write_gif
    from .world import caption, make_edit, random_scene, render_video

    scene = random_scene(args.seed)
    video = render_video(scene, args.frames, args.size)
    out = Path(args.output)
    print(f"input:  {caption(scene)}")
    videos = [video]
    if args.task:
        edit = make_edit(scene, args.task, np.random.default_rng(args.seed))
        print(f"edit:   {edit.instruction}\noutput: {edit.output_caption}")
        videos.append(render_video(edit.scene, args.frames, args.size))
    scale = max(1, 128 // args.size)
    if out.suffix == ".png":
        contact_sheet(videos, out, scale=scale)
    else:
        write_gif(np.concatenate(videos, axis=2), out, fps=8.0, scale=scale)  # side by side
    print(f"wrote {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="eve-fdd", description="EVE / Factorized Diffusion Distillation, reproduced.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("params", help="validate params.yaml and print the resolved config")
    p.add_argument("--params", default="params.yaml")
    p.set_defaults(func=cmd_params)
    p = sub.add_parser("inspect", help="check a parquet table against its schema and summarise it")
    p.add_argument("table")
    p.add_argument("--rows", type=int, default=3)
    p.set_defaults(func=cmd_inspect)
    p = sub.add_parser("render", help="render a Shapes video (and optionally its ground-truth edit)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--task", choices=TASKS)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("-o", "--output", default="shapes.gif", help=".gif (side by side) or .png (contact sheet)")
    p.set_defaults(func=cmd_render)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, tables.SchemaError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
