import os
import subprocess
from pathlib import Path

import pytest

from eve_fdd.config import load_config

ROOT = Path(__file__).resolve().parent.parent


def sh(cmd: list[str], cwd, env: dict | None = None, *, timeout: float = 1200, check: bool = True) -> subprocess.CompletedProcess:
    """Run a command; with `check`, a failure shows the command and the end of its output."""
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check:
        assert proc.returncode == 0, f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def pytest_configure(config):
    """Under pytest-xdist (`make test` runs `-n auto`) each worker, and every stage it starts,
    computes on its share of the cores: two workers with torch's default (every core each) put
    four busy threads on two cores."""
    import torch

    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers:
        os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // int(workers))))
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


# Test files that share a session fixture (the smoke project's `dvc repro`, the full profile's)
# run on one pytest-xdist worker each, or every worker would build it again. By file, in the
# scheduler: xdist's own `xdist_group` marks do nothing with pytest 9.2 (they rename
# `item._nodeid`, which pytest no longer reads).
SHARED_WORKER = {"tests/test_pipeline.py": "smoke", "tests/test_services.py": "smoke", "tests/test_pipeline_full.py": "full"}


def pytest_xdist_make_scheduler(config, log):
    """`-n N` (dist mode `load`): every test its own work unit, except SHARED_WORKER's groups,
    which go first (xdist orders units by their number of tests) and each to one worker."""
    if config.getvalue("dist") != "load":
        return None  # another mode asked for: xdist's own
    from xdist.scheduler import LoadScopeScheduling

    class SharedFixtures(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return SHARED_WORKER.get(nodeid.split("::", 1)[0], nodeid)

    return SharedFixtures(config, log)


@pytest.fixture
def root() -> Path:
    return ROOT


@pytest.fixture
def small_cfg():
    """The project's own params.yaml, shrunk to a few videos."""
    return load_config(ROOT / "params.yaml", overrides={"videos.count": 12, "videos.shard_size": 5, "videos.samples": 2})


# A backbone small enough for tests of the model stages (their code paths, not their quality)
TINY_BACKBONE = {"block_out_channels": [8, 16], "norm_num_groups": 4, "attention_heads": 2,
                 "text_hidden_size": 16, "text_layers": 1, "text_heads": 2}


@pytest.fixture(scope="session")
def tiny_backbone_dir(tmp_path_factory) -> Path:
    """A `backbone` stage output (model.json + diffusers layout) holding an untrained tiny backbone."""
    import json

    from eve_fdd.config import TinyBackboneConfig
    from eve_fdd.models.backbone import tiny_backbone

    root = tmp_path_factory.mktemp("backbone-stage")
    tiny_backbone(TinyBackboneConfig(**TINY_BACKBONE), 32, 0).save(root / "model")
    (root / "model.json").write_text(json.dumps({"path": str(root / "model"), "trained": True}))
    return root


class Killed(Exception):
    """A training stage stopped mid-run (as by `kill -9` between two checkpoints)."""


# what may differ between an uninterrupted run and a resumed one: where it started, its timing and
# how many texts this run encoded (FDD's cache of encoded captions)
RUN_ONLY = {"resumed_from", "train_seconds", "samples_per_second", "text.encoded"}


def assert_a_killed_run_resumes_exactly(build, root: Path, kill_at: int, checkpoint: int):
    """`build(root, on_log)` runs a training stage with its outputs and checkpoints under `root`.
    One run goes through; another is killed at step `kill_at` (after its `checkpoint`) and run
    again, as `dvc repro` would: it must resume from that checkpoint and end with the same
    weights, checkpoints and metrics, bit for bit (float32). Returns both runs' outputs."""
    import torch
    from safetensors.torch import load_file

    whole = build(root / "whole", None)

    def kill(row):
        if row["step"] == kill_at:
            raise Killed(kill_at)

    with pytest.raises(Killed):
        build(root / "killed", kill)
    resumed = build(root / "killed", None)
    assert resumed.metrics["resumed_from"] == checkpoint and whole.metrics["resumed_from"] == 0
    files = sorted(p.relative_to(root / "whole") for p in (root / "whole").rglob("*.safetensors"))
    assert files and files == sorted(p.relative_to(root / "killed") for p in (root / "killed").rglob("*.safetensors"))
    for rel in files:
        a, b = load_file(root / "whole" / rel), load_file(root / "killed" / rel)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), f"{rel} differs after the resume"
    same = lambda a, b: a == b or (isinstance(a, float) and isinstance(b, float) and a != a and b != b)  # noqa: E731 (nan == nan)
    differ = {k for k in whole.metrics if k not in RUN_ONLY and not same(whole.metrics[k], resumed.metrics.get(k))}
    assert not differ, {k: (whole.metrics[k], resumed.metrics.get(k)) for k in sorted(differ)}
    return whole, resumed


def world_instructions(video_rows: list[dict], tasks, speed) -> list[dict]:
    """Instruction-table rows written from the world's own edits of each video's scene (what
    a perfect instruction writer would give; one row rejected, as a real run has some)."""
    import numpy as np

    from eve_fdd.world import Scene, applicable, make_edit

    instructions = []
    rng = np.random.default_rng(0)
    for r in video_rows:
        scene = Scene.from_json(r["scene"])
        for task in tasks:
            edit = make_edit(scene, task, rng, tuple(speed)) if applicable(scene, task) else None
            ok = edit is not None and not (r["video_id"].endswith("01") and task == "local")
            instructions.append(dict(
                row_id=f"{r['video_id']}/{task}", set="videos", video_id=r["video_id"], task=task, concept=None,
                input_caption=r["caption"], instruction=edit.instruction if ok else "", output_caption=edit.output_caption if ok else "",
                edit_spec=edit.spec.to_json() if ok else None, model="test.gguf", model_sha256="0" * 64, prompt_version="t",
                seed=0, attempts=1, raw_output="", status="accepted" if ok else "rejected", reason=None if ok else "test",
                completion_tokens=0))
    return instructions


def fdd_inputs(cfg, tasks, backbone_dir: Path, root: Path) -> dict[str, Path]:
    """Stage outputs on disk as FDD and the evaluation read them: videos, an instruction table
    (written from the world's own edits, one rejected row), and tiny untrained edit and video
    adapters on the backbone in `backbone_dir`."""
    import json

    from eve_fdd.data import tables
    from eve_fdd.models.adapters import edit_adapter, video_adapter
    from eve_fdd.models.backbone import load_backbone
    from eve_fdd.models.registry import trained_path
    from eve_fdd.stages import videos

    rows = videos.render_shapes(cfg, range(cfg.videos.count))
    for r in rows:
        r["split"] = "test" if int(r["video_id"].split("-")[-1]) % 4 == 0 else "train"
    tables.write_table(tables.VIDEOS, rows, root / "videos.parquet")
    tables.write_table(tables.INSTRUCTIONS, world_instructions(rows, tasks, cfg.world.speed), root / "instructions.parquet")
    bb = load_backbone(trained_path(backbone_dir))
    cn = edit_adapter(bb.unet)
    cn.save_pretrained(root / "edit_adapter" / "model")
    (root / "edit_adapter" / "model.json").write_text(json.dumps({"path": str(root / "edit_adapter" / "model")}))
    video_adapter(bb.unet, heads=2, max_frames=32).save_motion_modules(str(root / "video_adapter" / "model"))
    (root / "video_adapter" / "model.json").write_text(json.dumps({"path": str(root / "video_adapter" / "model")}))
    return dict(instructions=root / "instructions.parquet", videos=root / "videos.parquet", backbone_dir=backbone_dir,
                edit_dir=root / "edit_adapter", video_dir=root / "video_adapter")


def smoke_project(root: Path, dest: Path, tweak=None):
    """A git checkout (in `dest`) of the project's tracked files at `root` with smoke-size
    params (`tweak(params)` may change them further); returns (dest, env) for running DVC."""
    import os
    import shutil
    import sys

    import yaml

    files = sh(["git", "ls-files", "--cached", "--others", "--exclude-standard"], root).stdout.split()
    for f in files:
        if (root / f).is_file() and not f.startswith(("data/", "metrics/")):
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / f, dest / f)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    params["videos"].update(count=24, samples=2, shard_size=10)
    # a small Llama trained for a few steps: the pipeline's path, not the quality (that is
    # measured by `dvc repro` on the default params and reported, not asserted in a test)
    # (the scene grammar keeps its answers valid; max_tokens leaves room for an untrained model's word pieces)
    params["llm"].update(train_conversations=40, max_tokens=160, n_ctx=512, n_threads=1)
    params["llm"]["tiny"].update(hidden_size=32, layers=1, heads=2, intermediate_size=64, steps=10, batch_size=4, warmup_steps=2)
    params["instructions"].update(max_attempts=2, shard_size=40, subject_style_count=2)
    params["edit_pairs"].update(count=21, shard_size=10, samples=7, test_fraction=0.3)
    # the model stages at toy size: their code path, resume and logging, not their quality
    params["models"]["backbone"]["tiny"].update(block_out_channels=[8, 16], norm_num_groups=4, attention_heads=2,
                                                text_hidden_size=16, text_layers=1, text_heads=2)
    for stage, extra in (("backbone", dict(batch_size=2, eval_samples=3, eval_steps=2)),
                         ("edit_adapter", dict(batch_size=4, eval_pairs=7, eval_steps=2, samples=3)),
                         ("video_adapter", dict(batch_size=2, eval_clips=2, eval_steps=2, samples=2)),
                         ("loras", dict(batch_size=2, eval_samples=2, eval_steps=2, detector_steps=2, detector_renders=8, samples=2))):
        params[stage]["train"].update(steps=3, checkpoint_every=2, log_every=1)
        params[stage].update(extra)
    params["loras"]["concepts"] = ["star", "sketch"]  # a subject and a style: the stage's path (tests/test_stage_lora.py has the rest)
    params["metric_models"].update(hidden_size=16, layers=1, heads=2, clip_batch_size=2, xclip_batch_size=2, eval_scenes=4)
    for k in ("clip_train", "xclip_train"):
        params["metric_models"][k].update(steps=3, checkpoint_every=2, log_every=1)
    # every stage once, at toy size: one FDD variant (the ablations of tests/test_services.py run others), one
    # concept aligned, the no-edit baseline and one SDEdit level, then the report
    params["fdd"]["variants"] = ["full"]
    params["fdd_personal"].update(concepts=["star"], iterations=2, batch_size=2, pool_size=2, eval_repeats=1, samples=1)
    params["evaluate"]["baselines"] = ["input", "sdedit_75"]
    params["diffusion"]["inference_steps"] = 4
    params["fdd"].update(iterations=2, batch_size=2, k=2, pool_size=2, teacher_steps=2, checkpoint_every=2, log_every=1, sample_every=2,
                         eval_items=3, samples=0, lora_rank=2)
    params["fdd"]["discriminator"].update(hidden_size=16, layers=2, heads=2, patch_size=8, feature_layers=[1, 2], head_width=16, head_heads=2)
    params["features"].update(batch_size=2, eval_frames=4)
    params["features"]["train"].update(steps=3, checkpoint_every=2, log_every=1)
    params["evaluate"].update(items=3, samples=1, batch_size=4)
    if tweak is not None:
        tweak(params)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    env.pop("MLFLOW_TRACKING_URI", None)
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"]):
        sh(cmd, dest, env)
    return dest, env


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory):
    """One Prefect server for the session's `dvc repro` runs: the environment that points their
    flows at it. Without it every stage's flow starts (and stops) a temporary server of its own,
    5-15 s each on this machine."""
    from flows.serve import start_server, stop

    port = free_port()
    home = tmp_path_factory.mktemp("prefect-session")
    server = start_server("127.0.0.1", port, home)
    try:
        yield {"PREFECT_API_URL": f"http://127.0.0.1:{port}/api", "PREFECT_HOME": str(home),
               "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}
    finally:
        stop(server)


@pytest.fixture(scope="session")
def smoke_repro(tmp_path_factory, prefect_api):
    """One real `dvc repro` of a smoke project, shared by the end-to-end and the services tests
    (it is the slowest step of `make test`). Returns (dest, env, output of the repro, pristine):
    `dest` is the project the end-to-end tests check and then change; `pristine` is a copy made
    right after the repro, before any test changed anything, without the MLflow store (whose
    experiments name absolute artifact paths under `dest`) or DVC's temporary state."""
    import shutil

    dest, env = smoke_project(ROOT, tmp_path_factory.mktemp("smoke") / "project")
    env = dict(env, **prefect_api)
    proc = sh(["dvc", "repro"], dest, env)
    pristine = tmp_path_factory.mktemp("smoke-pristine") / "project"
    top = {"mlflow.db", "mlruns"}
    shutil.copytree(dest, pristine, symlinks=True,
                    ignore=lambda d, names: [n for n in names if (Path(d) == dest and n in top) or (Path(d) == dest / ".dvc" and n == "tmp")])
    return dest, env, proc.stdout + proc.stderr, pristine
