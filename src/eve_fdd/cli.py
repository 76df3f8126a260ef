"""`eve-fdd`: check params, inspect a dataset, render the Shapes world.

    eve-fdd params [--params params.yaml]          validate params.yaml, print the resolved config
    eve-fdd inspect data/videos/videos.parquet     schema, counts, first rows, rejects by reason
    eve-fdd render --seed 3 [--task local] -o x.gif  one Shapes video (and its ground-truth edit)
    eve-fdd edit IN.mp4 --instruction "remove the red circle" --caption "..." [--task remove] -o OUT.mp4
                                                   edit a video of any length with a trained student
    eve-fdd human-eval export [--against full] [--methods no_align sdedit_75] -o human_eval/
                                                   pairwise comparison sets for raters (TGVE style)
    eve-fdd human-eval score human_eval/ answers.csv [...]   preference rates with 95% intervals
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

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
    for spec in (tables.VIDEOS, tables.INSTRUCTIONS, tables.EDIT_PAIRS, tables.REJECTS):
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
    for key in ("split", "set", "task", "status"):  # what each table has of these
        if rows and key in rows[0]:
            print(f"{key}:", dict(Counter(r[key] for r in rows)))
    for row in rows[: args.rows]:
        shown = {k: (f"<{len(v)} bytes>" if isinstance(v, bytes) else v if not isinstance(v, str) or len(v) <= 120 else v[:117] + "...")
                 for k, v in row.items() if k != "scene"}
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


class UsageError(Exception):
    """A bad argument or input file, reported as `error: ...` with exit status 2."""


def cmd_edit(args: argparse.Namespace) -> int:
    from .data.video import ClipError, read_video, resize_center_crop, write_gif, write_mp4
    from .distill.editor import load_editor
    from .world.grammar import task_of

    source, out = Path(args.input), Path(args.output)
    if out.suffix not in (".mp4", ".gif"):
        raise UsageError(f"{out}: the output must end in .mp4 or .gif")
    task = args.task or task_of(args.instruction)
    if task is None:
        raise UsageError(f"cannot tell the task of {args.instruction!r}; pass --task (one of {', '.join(TASKS)})")
    if not source.is_file():
        raise UsageError(f"{source}: no such file")
    try:
        frames, fps = read_video(source)
    except ClipError as exc:
        raise UsageError(str(exc)) from None
    cfg = load_config(args.params)
    try:
        editor = load_editor(cfg, args.model, args.backbone, args.edit_adapter, args.video_adapter)
    except (FileNotFoundError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    h, w = frames.shape[1:3]
    if min(h, w) < args.min_side:
        raise UsageError(f"{source}: frames are {w}x{h}; need at least {args.min_side} pixels on the short side "
                         f"(the model edits {editor.size}x{editor.size} centre crops; --min-side to change)")
    frames = np.stack([resize_center_crop(f, editor.size) for f in frames])
    print(f"{source}: {len(frames)} frames at {fps:g} fps, {w}x{h} -> {editor.size}x{editor.size}; task {task}, "
          f"model {args.model}", file=sys.stderr)
    try:
        edited = editor.edit(frames, args.instruction, args.caption, task, seed=args.seed, progress=not args.quiet)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    out.parent.mkdir(parents=True, exist_ok=True)
    (write_gif if out.suffix == ".gif" else write_mp4)(edited, out, fps=fps, scale=args.scale)
    print(f"wrote {out} ({len(edited)} frames)")
    return 0


def cmd_human_export(args: argparse.Namespace) -> int:
    from .evaluate import human
    from .stages.evaluate import Dirs, held_out

    cfg = load_config(args.params)
    data = Path(args.data)
    dirs = Dirs(data / "instructions" / "instructions.parquet", data / "videos" / "videos.parquet", data / "backbone",
                data / "edit_adapter", data / "video_adapter", data / "fdd", data / "metric_models")
    items = held_out(cfg, dirs)
    edits = {}
    for m in [args.against, *args.methods]:
        found = data / "evaluate" / m
        if not (found / "edits.npy").is_file():
            raise UsageError(f"{found / 'edits.npy'}: not found; run `dvc repro evaluate baselines` (method {m!r})")
        if json.loads((found / "items.json").read_text())["row_ids"] != items.row_ids:
            raise UsageError(f"{found / 'items.json'}: evaluated on other data points than params.yaml's evaluate.items selects")
        edits[m] = np.load(found / "edits.npy", allow_pickle=False)
    out = Path(args.output)
    pairs = human.export(out, items.row_ids, items.frames, items.output_captions, edits, [(args.against, m) for m in args.methods],
                         args.seed, cfg.videos.fps, args.scale)
    print(f"{out}: {len(pairs)} pairs ({len(args.methods)} comparisons x {len(items)} data points); "
          f"raters open {out / 'index.html'}; score with `eve-fdd human-eval score {out} answers.csv`")
    return 0


def cmd_human_score(args: argparse.Namespace) -> int:
    from .evaluate import human

    folder = Path(args.folder)
    key = folder / "key.csv"
    for path in (key, *map(Path, args.answers)):
        if not path.is_file():
            raise UsageError(f"{path}: no such file")
    try:
        result = human.score(key, [Path(a) for a in args.answers])
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    (folder / "preferences.json").write_text(json.dumps(result, indent=2) + "\n")
    print(human.markdown(result))
    print(f"(the first method of each comparison preferred; wrote {folder / 'preferences.json'})")
    return 0


def _command(sub: Any, name: str, what: str, example: str) -> argparse.ArgumentParser:
    """A subcommand whose help says what it does in one line, with an example."""
    return sub.add_parser(name, help=what, description=(what[0].upper() + what[1:]).replace("%%", "%") + ".", epilog=f"example:\n  {example}",
                          formatter_class=argparse.RawDescriptionHelpFormatter)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="eve-fdd", description="EVE / Factorized Diffusion Distillation, reproduced: edit a video, check "
                                     "params and tables, render Shapes, run a human evaluation.",
                                     epilog="example:\n  eve-fdd edit clip.mp4 --instruction 'make the background black' "
                                            "--caption 'a red circle on a black background' -o edited.mp4",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = _command(sub, "params", "validate params.yaml and print the resolved config", "eve-fdd params --params params.yaml")
    p.add_argument("--params", default="params.yaml", help="the params file (default: params.yaml)")
    p.set_defaults(func=cmd_params)
    p = _command(sub, "inspect", "check a videos, instructions, edit-pairs or rejects parquet table against its schema and summarise it",
                 "eve-fdd inspect data/videos/videos.parquet --rows 5")
    p.add_argument("table", help="data/videos/videos.parquet, data/instructions/instructions.parquet, data/edit_pairs/pairs.parquet or data/*/rejects.parquet")
    p.add_argument("--rows", type=int, default=3, help="first rows to print (default: 3)")
    p.set_defaults(func=cmd_inspect)
    p = _command(sub, "render", "render a Shapes video (and optionally its ground-truth edit)",
                 "eve-fdd render --seed 3 --task remove -o shapes.gif")
    p.add_argument("--seed", type=int, default=0, help="the scene's seed (and the edit's)")
    p.add_argument("--task", choices=TASKS, help="also render the ground-truth edit of this task, beside the input")
    p.add_argument("--frames", type=int, default=8, help="frames of the video (default: 8)")
    p.add_argument("--size", type=int, default=32, help="frame side in pixels (default: 32)")
    p.add_argument("-o", "--output", default="shapes.gif", help=".gif (side by side) or .png (contact sheet)")
    p.set_defaults(func=cmd_render)
    p = _command(sub, "edit", "edit a video (mp4 or gif, any length) with a trained FDD student",
                 "eve-fdd edit clip.mp4 --instruction 'remove the red circle' --caption 'a blue square on a grey background' "
                 "-o edited.mp4 --model data/fdd/full")
    p.add_argument("input", help="the video to edit (anything PyAV reads: mp4, gif, ...)")
    p.add_argument("--instruction", required=True, help='the edit, e.g. "remove the red circle"')
    p.add_argument("--caption", required=True, help="the output caption: the edited video described")
    p.add_argument("--task", choices=TASKS, help="the edit adapter's task label (default: read from the instruction)")
    p.add_argument("-o", "--output", required=True, help="the edited video, .mp4 or .gif")
    p.add_argument("--model", default="data/fdd/full", help="a stage fdd output directory (default: data/fdd/full)")
    p.add_argument("--backbone", default="data/backbone", help="stage backbone's output directory (default: data/backbone)")
    p.add_argument("--edit-adapter", default="data/edit_adapter", help="stage edit_adapter's output directory (default: data/edit_adapter)")
    p.add_argument("--video-adapter", default="data/video_adapter", help="stage video_adapter's output directory (default: data/video_adapter)")
    p.add_argument("--params", default="params.yaml", help="the params the model was trained with")
    p.add_argument("--seed", type=int, default=0, help="the noise of the edit (default: 0)")
    p.add_argument("--scale", type=int, default=1, help="upscale the output by this integer factor (nearest neighbour)")
    p.add_argument("--min-side", type=int, default=16, help="refuse videos whose short side is smaller than this")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_edit)
    p = _command(sub, "human-eval", "pairwise human evaluation: export comparison sets, score the answers",
                 "eve-fdd human-eval export --against full --methods no_align sdedit_75 -o human_eval")
    hsub = p.add_subparsers(dest="human_command", required=True)
    h = _command(hsub, "export", "comparison sets of evaluated methods (stage evaluate / baselines outputs)",
                 "eve-fdd human-eval export --against full --methods no_align edit_frames -o human_eval")
    h.add_argument("--against", default="full", help="the method every other is compared with (default: full)")
    h.add_argument("--methods", nargs="+", default=["no_align", "edit_frames", "sdedit_75"],
                   help="the methods compared with it (default: no_align edit_frames sdedit_75)")
    h.add_argument("-o", "--output", default="human_eval", help="the folder to write (pairs, key.csv, index.html)")
    h.add_argument("--data", default="data", help="the project's data directory (default: data)")
    h.add_argument("--params", default="params.yaml", help="the params the methods were evaluated with")
    h.add_argument("--seed", type=int, default=0, help="draws the sides and the order")
    h.add_argument("--scale", type=int, default=4, help="upscale the videos by this integer factor")
    h.set_defaults(func=cmd_human_export)
    h = _command(hsub, "score", "preference rates with 95%% intervals from raters' answers",
                 "eve-fdd human-eval score human_eval answers-rater1.csv answers-rater2.csv")
    h.add_argument("folder", help="the exported folder (its key.csv says which method is on which side)")
    h.add_argument("answers", nargs="+", help="answer CSVs (pair_id, rater, text_alignment, structure, quality)")
    h.set_defaults(func=cmd_human_score)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, tables.SchemaError, UsageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
