"""Evaluation (issue 6): PSNR/SSIM against the ground truth, the baselines' edits, and stages
`evaluate` / `baselines` on tiny models end to end (the flow included)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from eve_fdd.config import Config
from eve_fdd.diffusion import NoiseSchedule, inference_timesteps, make_scheduler
from eve_fdd.distill.batch import EditBatch
from eve_fdd.distill.data import edit_labels
from eve_fdd.distill.teachers import ConceptTeacher, EditTeacher
from eve_fdd.evaluate.baselines import edit_frames, sdedit, sdedit_start
from eve_fdd.evaluate.fidelity import MAX_PSNR, psnr_ssim
from eve_fdd.models.adapters import edit_adapter
from eve_fdd.models.backbone import load_backbone
from eve_fdd.models.registry import trained_path
from eve_fdd.models.space import pixels_from_uint8
from eve_fdd.stages import evaluate, fdd, metric_models
from eve_fdd.world import random_scene, render_video

from conftest import TINY_BACKBONE, fdd_inputs

TRAIN = {"steps": 2, "checkpoint_every": 2, "log_every": 1}
CFG = Config(
    models={"backbone": {"tiny": TINY_BACKBONE}},
    diffusion={"inference_steps": 4},
    videos={"count": 24, "shard_size": 24, "samples": 0, "test_fraction": 0.25},
    video_adapter={"heads": 2},
    fdd={"iterations": 2, "batch_size": 2, "k": 2, "pool_size": 2, "teacher_steps": 2, "checkpoint_every": 2, "log_every": 1,
         "sample_every": 2, "eval_items": 2, "samples": 0, "lora_rank": 2,
         "discriminator": {"hidden_size": 16, "layers": 2, "heads": 2, "patch_size": 8, "feature_layers": [1, 2], "head_width": 16, "head_heads": 2}},
    metric_models={"hidden_size": 16, "layers": 1, "heads": 2, "clip_train": TRAIN, "xclip_train": TRAIN, "clip_batch_size": 2,
                   "xclip_batch_size": 2, "eval_scenes": 2},
    evaluate={"items": 6, "batch_size": 4, "samples": 2, "baselines": ["input", "edit_frames", "sdedit_75"]},
)
TASKS = ("remove", "local", "background")


def _clips(n: int, frames: int = 3) -> np.ndarray:
    return np.stack([render_video(random_scene(s), frames, 32) for s in range(n)])


def test_psnr_ssim_of_the_truth_itself_and_of_a_worse_edit():
    truth = _clips(2)
    same = psnr_ssim(truth, truth)
    assert (same["psnr"] == MAX_PSNR).all() and np.allclose(same["ssim"], 1.0)
    noisy = np.clip(truth.astype(int) + np.random.default_rng(0).integers(-40, 41, truth.shape), 0, 255).astype(np.uint8)
    worse = psnr_ssim(noisy, truth)
    assert (worse["psnr"] < 30).all() and (worse["ssim"] < 0.95).all()
    noisy[:, 0] = truth[:, 0]  # frame 0 is not scored
    np.testing.assert_allclose(psnr_ssim(noisy, truth)["psnr"], worse["psnr"])
    with pytest.raises(ValueError, match="two uint8 clip batches"):
        psnr_ssim(truth, truth[:, :2])


def test_sdedit_levels_run_the_right_steps():
    ts = torch.tensor([750, 500, 250, 0])
    assert sdedit_start(ts, 1.0) == 0 and sdedit_start(ts, 0.75) == 1 and sdedit_start(ts, 0.0) == 4
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        sdedit_start(ts, 1.5)
    assert evaluate.sdedit_level("sdedit_75") == 0.75
    with pytest.raises(ValueError, match="sdedit_<NN>"):
        evaluate.sdedit_level("sdedit_high")


@pytest.fixture(scope="module")
def models(tiny_backbone_dir):
    bb = load_backbone(trained_path(tiny_backbone_dir)).freeze()
    scheduler = make_scheduler(CFG.diffusion)
    schedule = NoiseSchedule.from_scheduler(scheduler)
    torch.manual_seed(0)
    cn = edit_adapter(bb.unet)
    with torch.no_grad():
        for p in cn.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return bb, schedule, inference_timesteps(scheduler, 4), EditTeacher(bb.unet, cn.eval(), schedule)


def _batch(bb, clips: np.ndarray) -> EditBatch:
    n = len(clips)
    return EditBatch(pixels_from_uint8(clips), bb.encode_text(["a small red circle on a white background"] * n),
                     bb.encode_text(["make the background black"] * n), edit_labels(["background"] * n))


def test_sdedit_keeps_the_input_at_level_zero_and_forgets_it_at_level_one(models):
    bb, schedule, ts, _ = models
    denoiser = ConceptTeacher(bb.unet, schedule)
    a, b = _batch(bb, _clips(2)), _batch(bb, _clips(2)[::-1].copy())
    torch.testing.assert_close(sdedit(denoiser, schedule, a, ts, 0.0, torch.Generator().manual_seed(1)), a.source)
    # zero terminal SNR: at level 1 the start is pure noise, so the input does not matter
    out_a = sdedit(denoiser, schedule, a, ts, 1.0, torch.Generator().manual_seed(1))
    torch.testing.assert_close(out_a, sdedit(denoiser, schedule, b, ts, 1.0, torch.Generator().manual_seed(1)))
    half = sdedit(denoiser, schedule, a, ts, 0.5, torch.Generator().manual_seed(1))
    assert half.shape == a.source.shape and not torch.allclose(half, out_a)


def test_edit_frames_edits_each_frame_on_its_own(models):
    bb, _, ts, teacher = models
    clips = _clips(1)
    changed = clips.copy()
    changed[0, 2] = 255 - changed[0, 2]
    a = edit_frames(teacher, _batch(bb, clips), ts, torch.Generator().manual_seed(2))
    b = edit_frames(teacher, _batch(bb, changed), ts, torch.Generator().manual_seed(2))
    assert a.shape == (1, 3, 3, 32, 32)
    torch.testing.assert_close(a[:, :, :2], b[:, :, :2])  # frames 0, 1 do not see frame 2
    assert not torch.allclose(a[:, :, 2], b[:, :, 2])


@pytest.fixture(scope="module")
def project(tiny_backbone_dir, tmp_path_factory):
    """Every input of stages evaluate and baselines under data/, as DVC leaves them."""
    root = tmp_path_factory.mktemp("evaluate-project")
    data = root / "data"
    data.mkdir()
    found = fdd_inputs(CFG, TASKS, tiny_backbone_dir, data)
    found["fdd_metrics"] = fdd.build(CFG, "no_align", found["instructions"], found["videos"], tiny_backbone_dir, found["edit_dir"],
                                     found["video_dir"], data / "fdd" / "no_align", root / "ckpt", progress=False).metrics
    for kind in ("clip", "xclip"):
        metric_models.build(CFG, kind, data / "metric_models" / kind, root / f"ckpt-{kind}", progress=False)
    dirs = evaluate.Dirs(found["instructions"], found["videos"], tiny_backbone_dir, found["edit_dir"], found["video_dir"],
                         data / "fdd", data / "metric_models")
    return root, dirs, found


@pytest.mark.parametrize("method", ["no_align", "input", "edit_frames", "sdedit_75"])
def test_every_method_is_edited_and_scored_by_the_same_code(project, tmp_path, method):
    _, dirs, _ = project
    metrics, artifacts = evaluate.build(CFG, method, dirs, tmp_path / method, progress=False)
    edits = np.load(tmp_path / method / "edits.npy")
    assert metrics["items"] == 6 and edits.shape == (6, 8, 32, 32, 3) and edits.dtype == np.uint8
    assert metrics["edits.reused"] == 0.0  # stage fdd edited 2 data points, not these 6: made here
    for key in ("gt.fidelity.changed", "gt.fidelity.kept", "gt.temporal", "gt.psnr", "gt.ssim", "paper.clip_frame",
                "paper.pick_score", "paper.viclip_out", "paper.viclip_dir"):
        assert np.isfinite(metrics[f"{key}.mean"]), key
        assert any(f"{key}.{t}" in metrics for t in TASKS)
    items = json.loads((tmp_path / method / "items.json").read_text())
    assert items["method"] == method and len(items["row_ids"]) == 6 and set(items["tasks"]) == set(TASKS)
    assert (tmp_path / method / "samples.png") in artifacts
    if method == "input":  # the input itself: no change between edit and input, fidelity = "return the input"
        assert metrics["gt.fidelity.changed.mean"] > metrics["gt.fidelity.kept.mean"]


def test_no_align_reuses_stage_fdds_edits_which_are_its_own(project, tmp_path, monkeypatch):
    """Same data points, same noise: the evaluation scores the edits stage fdd made instead of
    making them again; they are bit for bit the edits it would make, and score as stage fdd
    measured them up to the rounding to uint8 video (which stage fdd scores before rounding)."""
    _, dirs, found = project
    cfg = CFG.model_copy(update={"evaluate": CFG.evaluate.model_copy(update={"items": 2, "batch_size": 8})})
    metrics, _ = evaluate.build(cfg, "no_align", dirs, tmp_path / "e", progress=False)
    assert metrics["edits.reused"] == 1.0
    monkeypatch.setattr(evaluate, "fdd_edits", lambda *args: None)
    made, _ = evaluate.build(cfg, "no_align", dirs, tmp_path / "made", progress=False)
    assert made["edits.reused"] == 0.0 and made["text.encoded"] > 0
    np.testing.assert_array_equal(np.load(tmp_path / "e" / "edits.npy"), np.load(tmp_path / "made" / "edits.npy"))
    own = found["fdd_metrics"]
    for key in ("fidelity.changed.mean", "fidelity.kept.mean", "temporal.mean"):
        assert metrics[f"gt.{key}"] == pytest.approx(own[f"eval.{key}"], abs=2e-3), key


def test_bad_method_and_missing_inputs_are_named(project, tmp_path):
    _, dirs, _ = project
    with pytest.raises(ValueError, match="unknown method 'sharpen'"):
        evaluate.build(CFG, "sharpen", dirs, tmp_path, progress=False)
    with pytest.raises(FileNotFoundError, match="fdd/full/model.json"):
        evaluate.build(CFG, "full", dirs, tmp_path, progress=False)
    missing = evaluate.Dirs(**{**dirs.__dict__, "metric_models": tmp_path / "nowhere"})
    with pytest.raises(FileNotFoundError, match="run `dvc repro metric_models`"):
        evaluate.build(CFG, "input", missing, tmp_path, progress=False)


def test_report_tables_figure_and_grids(project, tmp_path):
    from eve_fdd import tracking
    from eve_fdd.stages import report

    _, dirs, _ = project
    cfg = CFG.model_copy(update={"fdd": CFG.fdd.model_copy(update={"variants": ("no_align",)})})
    for method in ("no_align", "input", "edit_frames", "sdedit_75"):
        metrics, _ = evaluate.build(cfg, method, dirs, tmp_path / "data" / method, progress=False)
        tracking.write_metrics(metrics, tmp_path / "metrics" / f"{method}.json")
    seeds = tmp_path / "seeds.json"
    seeds.write_text(json.dumps({"no_align": {
        "0": {"setup": "now", "eval.fidelity.changed.mean": 0.8, "eval.fidelity.kept.mean": 0.8, "eval.temporal.mean": 0.8},
        "1": {"setup": "now", "eval.fidelity.changed.mean": 0.4, "eval.fidelity.kept.mean": 0.1, "eval.temporal.mean": 0.07},
        "2": {"setup": "old teachers", "eval.fidelity.changed.mean": 0.9, "eval.fidelity.kept.mean": 0.9, "eval.temporal.mean": 0.9}}}))
    # the pipeline's own run (fdd.seed 0) is seed 0, not the file's row for it
    tracking.write_metrics({"setup": "now", "train_seconds": 1.0, "eval.fidelity.changed.mean": 0.2, "eval.fidelity.kept.mean": 0.1,
                            "eval.temporal.mean": 0.05}, tmp_path / "fdd" / "no_align.json")
    summary, artifacts = report.build(cfg, dirs, tmp_path / "metrics", tmp_path / "data", tmp_path / "report", seeds, tmp_path / "plots",
                                      tmp_path / "fdd")
    rows = json.loads((tmp_path / "plots" / "methods.json").read_text())
    assert [r["method"] for r in rows] == ["plug-and-play (no_align)", "input unchanged", "edit adapter per frame", "SDEdit 0.75"]
    assert rows[0]["changed_error"] == summary["no_align.gt.fidelity.changed.mean"] and "viclip_dir" in rows[0]
    text = (tmp_path / "report" / "tables.md").read_text()
    assert "## Ablations" in text and "## Baselines" in text
    assert "| plug-and-play (no_align) | 2 | 0.3000 ± 0.1414 |" in text  # mean ± sd over the two seeds of this setup
    assert "1 runs in" in text and "plug-and-play (no_align) 1." in text  # the other teachers' seed: said, not averaged
    for name in ("input unchanged", "edit adapter per frame", "SDEdit 0.75"):
        assert f"| {name} |" in text
    best = min(("no_align", "input", "edit_frames", "sdedit_75"), key=lambda m: summary[f"{m}.gt.fidelity.changed.mean"])
    row = next(line for line in text.splitlines()[text.splitlines().index("## Baselines (paper Table 1 analogue)"):] if line.startswith(f"| {report.report.label(best)} |"))
    assert f"**{summary[f'{best}.gt.fidelity.changed.mean']:.4f}**" in row
    # paired by data point: no_align (the only variant, so the reference) - each baseline, from their scores.json
    assert "## Paired differences: plug-and-play (no_align) − each method" in text
    for m in ("input", "edit_frames", "sdedit_75"):
        key = "gt.fidelity.changed"
        diff = summary[f"no_align.{key}.mean"] - summary[f"{m}.{key}.mean"]
        assert summary[f"paired.{m}.{key}.diff"] == pytest.approx(diff, abs=2e-4) and summary[f"paired.{m}.{key}.ci95"] > 0
        assert f"| {report.report.label(m)} | 6 |" in text
    assert (tmp_path / "report" / "metrics.png").stat().st_size > 0
    grids = sorted((tmp_path / "report" / "grids").glob("item-*.gif"))
    assert len(grids) == 2 and (tmp_path / "report" / "grid.png") in artifacts
    from eve_fdd.data.video import read_video

    frames, _ = read_video(grids[0])
    assert frames.shape[2] == 6 * 32 * 3  # input | ground truth | four methods, at scale 3
    # an evaluation of other data points is refused, not mixed in
    stale = CFG.model_copy(update={"fdd": cfg.fdd, "evaluate": CFG.evaluate.model_copy(update={"items": 3})})
    with pytest.raises(ValueError, match="other data points"):
        report.build(stale, dirs, tmp_path / "metrics", tmp_path / "data", tmp_path / "report2", seeds, tmp_path / "plots2")
    with pytest.raises(FileNotFoundError, match="sdedit_90.json"):
        report.build(CFG.model_copy(update={"fdd": cfg.fdd, "evaluate": CFG.evaluate.model_copy(update={"baselines": ("sdedit_90",)})}),
                     dirs, tmp_path / "metrics", tmp_path / "data", tmp_path / "report3", seeds, tmp_path / "plots3")


def test_paired_differences_are_task_balanced_with_stratified_intervals():
    from eve_fdd.evaluate import report as r

    tasks = ["add"] * 4 + ["local"] * 2
    a = {"row_ids": list("abcdef"), "tasks": tasks, "scores": {"gt.fidelity.changed": [0.1, 0.2, 0.3, 0.4, 0.5, None]}}
    b = {"row_ids": list("abcdef"), "tasks": tasks, "scores": {"gt.fidelity.changed": [0.2, 0.2, 0.4, 0.6, 0.7, 0.1]}}
    mean, se, n = r.paired_differences({"x": a, "y": b}, "x", "gt.fidelity.changed", "y")
    # add: d = -.1, 0, -.1, -.2 (mean -.1); local: d = -.2 (one finite pair, so its variance is unknown)
    assert n == 5 and mean == pytest.approx(-0.15) and np.isnan(se)
    b["scores"]["gt.fidelity.changed"][5], a["scores"]["gt.fidelity.changed"][5] = 0.9, 0.6  # local: d = -.2, -.3
    mean, se, n = r.paired_differences({"x": a, "y": b}, "x", "gt.fidelity.changed", "y")
    add_var, local_var = np.var([-0.1, 0, -0.1, -0.2], ddof=1) / 4, np.var([-0.2, -0.3], ddof=1) / 2
    assert mean == pytest.approx((-0.1 - 0.25) / 2) and se == pytest.approx(np.sqrt(add_var + local_var) / 2)
    assert "**-0.1750 [" in r.paired_table({"x": a, "y": b}, "x", ["y"])  # the interval excludes zero: bold
    with pytest.raises(ValueError, match="different data points"):
        r.paired_differences({"x": a, "y": {**b, "row_ids": list("abcdeg")}}, "x", "gt.fidelity.changed", "y")
    seeds = {"full": {s: {"eval.fidelity.changed.mean": 0.1 + 0.01 * i, "eval.fidelity.kept.mean": 0.05, "eval.temporal.mean": 0.04}
                      for i, s in enumerate("012")},
             "no_align": {s: {"eval.fidelity.changed.mean": 0.13 + 0.012 * i, "eval.fidelity.kept.mean": 0.04, "eval.temporal.mean": 0.04}
                          for i, s in enumerate("0123")}}
    text = r.seed_paired_table(seeds, "full", ["full", "no_align"])
    d = np.array([-0.03, -0.032, -0.034])
    half = 4.303 * d.std(ddof=1) / np.sqrt(3)
    assert f"| plug-and-play (no_align) | 3 | **{d.mean():+.4f} [{d.mean() - half:+.4f}, {d.mean() + half:+.4f}]** (3/3 better) |" in text
    assert "(0/3 better)" in text  # kept error: full is worse at every seed


def test_the_goal_is_met_only_where_the_paired_interval_and_every_seed_say_so():
    from eve_fdd.evaluate import report as r

    tasks = ["add", "add", "local", "local"]

    def method(changed, kept, temporal):
        return {"row_ids": list("abcd"), "tasks": tasks,
                "scores": {"gt.fidelity.changed": changed, "gt.fidelity.kept": kept, "gt.temporal": temporal}}

    scores = {"full": method([0.10, 0.12, 0.20, 0.21], [0.05, 0.06, 0.04, 0.05], [0.040, 0.041, 0.050, 0.052]),
              "no_align": method([0.13, 0.16, 0.24, 0.26], [0.04, 0.05, 0.03, 0.04], [0.050, 0.052, 0.061, 0.062]),
              "edit_frames": method([0.10, 0.13, 0.20, 0.22], [0.05, 0.06, 0.04, 0.05], [0.030, 0.031, 0.040, 0.041])}
    lines, met = r.goal_check(scores, {}, "full")
    assert met == {"goal.no_align.gt.fidelity.changed.met": 1.0, "goal.no_align.gt.fidelity.kept.met": 0.0,
                   "goal.no_align.gt.temporal.met": 1.0, "goal.edit_frames.gt.temporal.met": 0.0,
                   "goal.edit_frames.gt.fidelity.changed.met": 1.0}
    assert lines[1].startswith("- EVE (FDD, full) beats plug-and-play (no_align) on kept err: **not met** (+0.0100 [")
    assert "is no worse than edit adapter per frame on changed err: **met**" in lines[4]
    # over seeds: one seed where full is not lower on changed pixels fails the claim the data points alone meet
    seeds = {"full": {s: {"eval.fidelity.changed.mean": v} for s, v in zip("012", (0.10, 0.11, 0.15))},
             "no_align": {s: {"eval.fidelity.changed.mean": v} for s, v in zip("012", (0.12, 0.13, 0.14))}}
    lines, met = r.goal_check(scores, seeds, "full")
    assert met["goal.no_align.gt.fidelity.changed.met"] == 0.0 and "lower at 2/3 seeds" in lines[0]
    assert met["goal.no_align.gt.temporal.met"] == 1.0  # no seed runs of temporal error: the data points decide
    assert r.goal_check({"full": scores["full"]}, {}, "full") == ([], {})  # nothing to compare with


def test_seed_runs_of_another_setup_are_left_out_and_counted():
    from eve_fdd.evaluate.report import current_setup

    seeds = {"full": {"0": {"setup": "a", "x": 1.0}, "1": {"setup": "a", "x": 2.0}, "2": {"setup": "b", "x": 9.0}, "3": {"x": 9.0}},
             "no_align": {"0": {"setup": "c", "x": 1.0}}, "no_sds": {"0": {"setup": "d", "x": 1.0}}}
    kept, left = current_setup(seeds, {"full": "a", "no_align": None})  # no_align: no setup recorded; no_sds: no metrics
    assert kept == {"full": {"0": {"setup": "a", "x": 1.0}, "1": {"setup": "a", "x": 2.0}}}
    assert left == {"full": 2, "no_align": 1, "no_sds": 1}


def test_the_pipelines_own_fdd_run_is_its_seed_in_the_over_seeds_table(tmp_path):
    """A fresh `dvc repro` counts its own run (metrics/fdd, at fdd.seed) beside the seeds file's
    other seeds, replacing the file's row for that seed; its identity reference is not a seed run."""
    from eve_fdd.evaluate.report import current_setup, load_stage_runs, with_stage_runs

    x = "eval.fidelity.changed.mean"
    (tmp_path / "full.json").write_text(json.dumps({"setup": "a", x: 0.5, "eval.identity.fidelity.changed.mean": 0.9, "train_seconds": 3.0}))
    (tmp_path / "no_sds.json").write_text(json.dumps({"setup": "b", "eval.ground_truth": 0.0}))  # own clips: no errors to average
    runs = load_stage_runs(tmp_path, ["full", "no_align", "no_sds"])  # no_align: no metrics yet
    assert list(runs) == ["full", "no_sds"]
    seeds = {"full": {"0": {"setup": "old", x: 0.7}, "1": {"setup": "a", x: 0.6}}}
    merged = with_stage_runs(seeds, runs, 0)
    assert merged == {"full": {"0": {"setup": "a", x: 0.5}, "1": {"setup": "a", x: 0.6}}}
    assert seeds["full"]["0"]["setup"] == "old"  # the file's rows are not changed in place
    kept, left = current_setup(merged, {"full": "a"})
    assert kept == {"full": merged["full"]} and left == {}
    assert with_stage_runs({}, runs, 2) == {"full": {"2": {"setup": "a", x: 0.5}}}


def test_human_eval_export_reads_the_evaluations(project, tmp_path, capsys):
    import shutil

    import yaml

    from eve_fdd.cli import main

    _, dirs, _ = project
    data = tmp_path / "data"
    for method in ("no_align", "sdedit_75"):
        evaluate.build(CFG, method, dirs, data / "evaluate" / method, progress=False)
    (data / "instructions").mkdir()
    (data / "videos").mkdir()
    shutil.copy(dirs.instructions, data / "instructions" / "instructions.parquet")
    shutil.copy(dirs.videos, data / "videos" / "videos.parquet")
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(CFG.model_dump(mode="json")))
    out = tmp_path / "he"
    assert main(["human-eval", "export", "--against", "no_align", "--methods", "sdedit_75", "--data", str(data), "--params", str(params),
                 "-o", str(out), "--scale", "1"]) == 0
    assert "6 pairs" in capsys.readouterr().out
    assert len((out / "key.csv").read_text().splitlines()) == 7 and (out / "index.html").is_file()
    assert main(["human-eval", "export", "--methods", "edit_frames", "--against", "no_align", "--data", str(data), "--params", str(params),
                 "-o", str(out)]) == 2
    assert "evaluate/edit_frames/edits.npy: not found" in capsys.readouterr().err
