"""Evaluation throughput (videos/s per metric) and the overhead of `eve-fdd edit` over the
student's own sampling loop (frames/s), at default Shapes sizes, on what `dvc repro` wrote
(data/metric_models, data/fdd/<variant>, data/evaluate/<variant>).

    python benchmarks/evaluate_throughput.py [--variant full] [--videos 56] [--repeats 3] [--clip-frames 32] [--out evaluate_throughput.json]

Each timing is the best of `--repeats` runs (torch threads as the machine gives them). The
edit is timed three ways on one clip: `eve-fdd edit` itself (`cli.main`: reading the mp4,
loading the models, editing, writing the mp4), the library call it makes (`VideoEditor.edit`),
and the student's own loop written out here (edit teacher on frame 0, `Student.generate` per
chained window); the overheads are against the last.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from eve_fdd import cli
from eve_fdd.config import load_config
from eve_fdd.data.video import write_mp4
from eve_fdd.distill.editor import load_editor
from eve_fdd.evaluate import paper_metrics as pm
from eve_fdd.evaluate.fidelity import psnr_ssim
from eve_fdd.evaluate.video_edits import video_errors
from eve_fdd.distill.data import ground_truth
from eve_fdd.models.space import pixels_from_uint8
from eve_fdd.stages.evaluate import Dirs, held_out, load_metric_models

DATA = Path("data")


def best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--videos", type=int, default=56)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variant", default="full", help="the FDD variant whose student and edits are read")
    parser.add_argument("--clip-frames", type=int, default=32, help="frames of the clip `eve-fdd edit` is timed on")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    cfg = load_config(args.params)
    dirs = Dirs(DATA / "instructions" / "instructions.parquet", DATA / "videos" / "videos.parquet", DATA / "backbone",
                DATA / "edit_adapter", DATA / "video_adapter", DATA / "fdd", DATA / "metric_models")
    items = held_out(cfg, dirs)
    n = min(args.videos, len(items))
    edited = np.load(DATA / "evaluate" / args.variant / "edits.npy")[:n]
    inputs, cin, cout = items.frames[:n], items.input_captions[:n], items.output_captions[:n]
    w = cfg.world
    truth = np.stack([ground_truth(items, i, w.frames, w.size, w.supersample) for i in range(n)])
    models = load_metric_models(dirs.metric_models)
    b = cfg.evaluate.metric_batch_size

    def batched(fn):
        return lambda: [fn(slice(i, i + b)) for i in range(0, n, b)]

    timings = {
        "gt.errors": lambda: video_errors(pixels_from_uint8(edited)(inputs)(truth)),
        "gt.psnr_ssim": lambda: psnr_ssim(edited, truth),
        "paper.clip_frame": batched(lambda s: pm.clip_frame(models.image_text, edited[s])),
        "paper.pick_score": batched(lambda s: pm.pick_score(models.pick, edited[s], cout[s])),
        "paper.viclip_out": batched(lambda s: pm.viclip_out(models.video_text, edited[s], cout[s])),
        "paper.viclip_dir": batched(lambda s: pm.viclip_dir(models.video_text, edited[s], inputs[s], cin[s], cout[s])),
    }
    result: dict[str, float] = {"videos": n, "torch_threads": torch.get_num_threads()}
    for name, fn in timings.items():
        seconds = best(fn, args.repeats)
        result[f"videos_per_second.{name}"] = round(n / seconds, 2)
        print(f"{name}: {n / seconds:.1f} videos/s", flush=True)

    editor = load_editor(cfg, DATA / "fdd" / args.variant, dirs.backbone, dirs.edit_adapter, dirs.video_adapter)
    clip = np.concatenate([items.frames[0]] * -(-args.clip_frames // w.frames))[: args.clip_frames]
    caption, instruction, task = items.output_captions[0], items.instructions[0], items.tasks[0]

    def library():
        editor.edit(clip, instruction, caption, task, seed=0, progress=True)

    scratch = tempfile.TemporaryDirectory(prefix="eve-fdd-bench-")  # the command's mp4s, removed at the end
    tmp = Path(scratch.name)
    write_mp4(clip, tmp / "in.mp4", fps=cfg.videos.fps)

    def command():
        rc = cli.main(["edit", str(tmp / "in.mp4"), "--instruction", instruction, "--caption", caption, "--task", task,
                       "-o", str(tmp / "out.mp4"), "--model", str(DATA / "fdd" / args.variant), "--params", args.params])
        assert rc == 0, f"eve-fdd edit exited {rc}"

    def direct():  # the student's own loop: first frame by the edit teacher, then Student.generate per window
        from eve_fdd.distill.batch import EditBatch
        from eve_fdd.distill.data import edit_labels
        from eve_fdd.distill.editor import chained_windows

        with torch.no_grad():
            batch = EditBatch(pixels_from_uint8(clip[None]), editor.backbone.encode_text([caption]), editor.backbone.encode_text([instruction]),
                              edit_labels([task]))
            g = torch.Generator().manual_seed(0)
            out = batch.source.clone()
            out[:, :, 0] = editor.edit_teacher.edit_first_frame(torch.randn(batch.source[:, :, 0].shape, generator=g), batch, editor.timesteps)
            for win in chained_windows(len(clip), editor.window):
                part = EditBatch(batch.source[:, :, win], batch.caption_emb, batch.instruction_emb, batch.tasks, out[:, :, win.start])
                out[:, :, win] = editor.student.generate(torch.randn(part.source.shape, generator=g), part, editor.timesteps)

    with scratch:
        t_cli, t_lib, t_direct = best(command, args.repeats), best(library, args.repeats), best(direct, args.repeats)
    result |= {"edit.variant": args.variant, "edit.frames": len(clip), "edit.command_frames_per_second": round(len(clip) / t_cli, 2),
               "edit.library_frames_per_second": round(len(clip) / t_lib, 2),
               "edit.direct_frames_per_second": round(len(clip) / t_direct, 2),
               "edit.command_overhead": round(t_cli / t_direct - 1, 4), "edit.library_overhead": round(t_lib / t_direct - 1, 4)}
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
