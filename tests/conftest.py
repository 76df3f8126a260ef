from pathlib import Path

import pytest

from eve_fdd.config import load_config

ROOT = Path(__file__).resolve().parent.parent


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


def run_flow(project: Path, module: str, item: str, params: dict, inputs: dict[str, Path]):
    """`python -m flows.<module> ITEM` as DVC runs it, in `project` holding `inputs` (path under
    the project -> file or folder to copy) and `params`; returns the stage's MLflow run and client."""
    import os
    import shutil
    import subprocess
    import sys

    import yaml
    from mlflow.tracking import MlflowClient

    for rel, src in inputs.items():
        dest = project / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if Path(src).is_dir() else shutil.copy)(src, dest)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "src")]), PREFECT_HOME=str(project / ".prefect"))
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.run([sys.executable, "-m", f"flows.{module}", item], cwd=project, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    client = MlflowClient(f"sqlite:///{project}/mlflow.db")
    stage = f"{module}@{item}"
    (run,) = client.search_runs([client.get_experiment_by_name("eve-fdd-shapes").experiment_id], f"tags.`dvc.stage` = '{stage}'")
    return run, client
