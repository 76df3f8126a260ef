"""train/parallel.py and the launcher: 2 processes (gloo, this CPU) under `accelerate launch`
take the same steps as 1 process with the same micro-batches, resume from each other's
checkpoints, and a training stage runs under `train.launcher` through its flow; bad
launcher strings are refused naming the key."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from eve_fdd.config import Config, ConfigError, load_config
from eve_fdd.train.parallel import Shard, launcher_command, micro_seed, my_shards

from conftest import TINY_BACKBONE, free_port, sh

HERE = Path(__file__).parent
ROOT = HERE.parent
TOY = HERE / "parallel_toy.py"
# curves and weights of 2 processes vs 1: the same sums in another order (DDP's all-reduce)
TOLERANCE = 1e-5


def launcher(processes: int = 2) -> str:
    """2 processes on this machine (accelerate's multi-process launcher; gloo where there is no GPU)."""
    return (f"accelerate launch --multi_gpu --num_processes {processes} --num_machines 1 --mixed_precision no "
            f"--dynamo_backend no --main_process_port {free_port()}")


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
            "OMP_NUM_THREADS": "1"}


def _toy(out: Path, steps: int, micro: int, processes: int = 1) -> tuple[list[dict], dict[str, torch.Tensor]]:
    """The toy run in this process (1) or under `accelerate launch` (several)."""
    if processes == 1:
        from parallel_toy import run

        out.mkdir(parents=True, exist_ok=True)
        run(out, steps, micro)
    else:
        sh([sys.executable, "-m", "accelerate.commands.launch", *launcher(processes).split()[2:], str(TOY), str(out), str(steps),
            str(micro)], cwd=ROOT, env=_env(), timeout=300)
    return json.loads((out / "curve.json").read_text()), load_file(out / "weights.safetensors")


def _close(a: tuple, b: tuple) -> None:
    (curve_a, weights_a), (curve_b, weights_b) = a, b
    assert [r["step"] for r in curve_a] == [r["step"] for r in curve_b]
    for ra, rb in zip(curve_a, curve_b):
        for k in ("loss", "critic.loss", "x_mean", "grad_norm", "sds.edit", "adv.edit"):
            if k in ra:
                assert rb[k] == pytest.approx(ra[k], rel=TOLERANCE, abs=TOLERANCE), (ra["step"], k)
    assert weights_a.keys() == weights_b.keys()
    for k in weights_a:
        assert torch.allclose(weights_a[k], weights_b[k], atol=TOLERANCE), k


def test_shard_takes_its_rows_of_every_field():
    x, captions = torch.arange(8).reshape(4, 2), ["a", "b", "c", "d"]
    part = Shard(1, 2).take((x, captions, 7, {"m": np.arange(4)}))
    assert torch.equal(part[0], x[2:]) and part[1] == ["c", "d"] and part[2] == 7 and list(part[3]["m"]) == [2, 3]
    assert Shard().take(captions) is captions
    with pytest.raises(ValueError, match="3 items cannot be split into 2"):
        Shard(0, 2).take(["a", "b", "c"])
    assert micro_seed(5, 3, 0) == 5 * 1_000_003 + 3 and micro_seed(5, 3, 1) != micro_seed(5, 3, 2)
    assert my_shards(4, 2, 1) == [2, 3]
    with pytest.raises(ValueError, match="micro_batches=3 cannot be spread over 2 processes"):
        my_shards(3, 2, 0)


def test_bad_launchers_are_refused_naming_the_key(tmp_path):
    assert launcher_command("") == []
    assert launcher_command("accelerate launch --multi_gpu --num_processes 8")[:2] == ["accelerate", "launch"]
    for bad, why in [("torchrun --nproc_per_node 2", "not an accelerate launch command"),
                     ("accelerate launch --num_procs 2", "does not accept"),
                     ("accelerate launch --num_processes two", "does not accept"),
                     ("accelerate launch --num_processes 2 train.py", "names a script"),
                     ("accelerate launch -m flows.fdd", "names a script|--module")]:
        with pytest.raises(ValueError, match=why):
            launcher_command(bad)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"train": {"launcher": "accelerate launch --num_procs 2"}}))
    with pytest.raises(ConfigError, match="train.launcher"):
        load_config(params)


def test_two_processes_take_the_steps_one_process_takes(tmp_path):
    """The same global batch in 2 micro-batches: computed by 1 process (accumulated) or by 2
    (one each, DDP over gloo), main role and critic; then resumed across process counts."""
    one = _toy(tmp_path / "one", 12, 2)
    two = _toy(tmp_path / "two", 12, 2, processes=2)
    _close(one, two)
    assert one[0][-1]["loss"] < one[0][0]["loss"]  # it learns
    other = _toy(tmp_path / "micro1", 12, 1)  # another split is another computation (what the comparison could miss)
    assert not torch.allclose(other[1]["head.0.weight"], one[1]["head.0.weight"], atol=1e-4)

    _toy(tmp_path / "a", 6, 2)  # checkpoint at step 4 by 1 process (and the final one at 6) ...
    _close(one, _toy(tmp_path / "a", 12, 2, processes=2))  # ... resumed by 2
    _toy(tmp_path / "b", 6, 2, processes=2)  # written by 2, resumed by 1
    _close(one, _toy(tmp_path / "b", 12, 2))


def test_fdd_with_its_critic_and_pool_takes_the_same_steps_on_two_processes(tmp_path, tiny_backbone_dir):
    """Stage fdd (SDS, then the discriminators from iteration 3; the teacher pool filled by
    every process): 2 micro-batches of one clip, by 1 process or by 2."""
    from parallel_toy import fdd_run
    from test_stage_fdd import CFG, TASKS

    from conftest import fdd_inputs

    (tmp_path / "inputs").mkdir()
    paths = fdd_inputs(CFG, TASKS, tiny_backbone_dir, tmp_path / "inputs")
    (tmp_path / "inputs" / "paths.json").write_text(json.dumps({k: str(v) for k, v in paths.items()}))
    fdd_run(tmp_path / "inputs", tmp_path / "one")
    sh([sys.executable, "-m", "accelerate.commands.launch", *launcher(2).split()[2:], str(TOY), "fdd", str(tmp_path / "inputs"),
        str(tmp_path / "two")], cwd=ROOT, env=_env(), timeout=600)
    runs = [(json.loads((tmp_path / n / "curve.json").read_text()), load_file(tmp_path / n / "weights.safetensors")) for n in ("one", "two")]
    assert any("critic.loss" in r for r in runs[0][0])  # the adversarial phase ran
    _close(*runs)


def _edit_project(root: Path, tiny_backbone_dir: Path, launch: str) -> Path:
    from eve_fdd.stages import edit_pairs

    cfg = Config(models={"backbone": {"tiny": TINY_BACKBONE}},
                 edit_pairs={"count": 24, "test_fraction": 0.34, "shard_size": 24, "samples": 0},
                 edit_adapter={"train": {"steps": 4, "checkpoint_every": 2, "log_every": 1, "micro_batches": 2, "gradient_checkpointing": True},
                               "batch_size": 4, "eval_pairs": 4, "eval_steps": 2, "samples": 1},
                 train={"launcher": launch})
    root.mkdir(parents=True)
    (root / "params.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    (root / "data").mkdir()
    os.symlink(tiny_backbone_dir, root / "data" / "backbone")
    edit_pairs.run(cfg, root / "data" / "edit_pairs")
    return root


def test_a_stage_trains_under_the_launcher_as_in_one_process(tmp_path, tiny_backbone_dir, prefect_api):
    """`python -m flows.edit_adapter` with `train.launcher` set (and gradient checkpointing): 2 processes, their loss logged
    live by rank 0 into the flow's MLflow run; the same curve and adapter as 1 process."""
    import mlflow

    runs = {}
    for name, launch in (("one", ""), ("two", launcher(2))):
        project = _edit_project(tmp_path / name, tiny_backbone_dir, launch)
        sh([sys.executable, "-m", "flows.edit_adapter", "--params", "params.yaml"], cwd=project, env={**_env(), **prefect_api},
           timeout=600)
        runs[name] = project
    curves = {n: json.loads((p / "plots" / "edit_adapter_loss.json").read_text()) for n, p in runs.items()}
    weights = {n: load_file(next((p / "data" / "edit_adapter").rglob("diffusion_pytorch_model.safetensors"))) for n, p in runs.items()}
    _close((curves["one"], weights["one"]), (curves["two"], weights["two"]))
    metrics = {n: json.loads((p / "metrics" / "edit_adapter.json").read_text()) for n, p in runs.items()}
    assert metrics["two"]["steps"] == 4 and metrics["two"]["final_loss"] == pytest.approx(metrics["one"]["final_loss"], rel=TOLERANCE)

    mlflow.set_tracking_uri(f"sqlite:///{runs['two'] / 'mlflow.db'}")
    (run,) = mlflow.search_runs(search_all_experiments=True, output_format="list")
    history = mlflow.MlflowClient().get_metric_history(run.info.run_id, "train.loss")
    assert sorted(m.step for m in history) == [0, 1, 2, 3]  # rank 0 alone logged the live loss, once per step
    assert run.info.status == "FINISHED" and run.data.metrics["steps"] == 4
    assert run.data.tags["train.launcher"].startswith("accelerate launch --multi_gpu --num_processes 2")
