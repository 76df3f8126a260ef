"""Ablations through the real services (issue 7): a Prefect server on a free loopback port, the
project's deployments served by `python -m flows.serve`, deployment runs started with the
`prefect` CLI as a user would, DVC experiments and MLflow runs checked; the MLflow UI loaded in
headless Chromium. Every process started here is stopped here.

The project is the smoke-size copy after its `dvc repro` (tests/conftest.smoke_repro): every table and
model in it is what the stages made (its 10-step Llama writes valid instructions under the scene grammar).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest
from mlflow.tracking import MlflowClient

from conftest import ROOT, free_port, sh

pytestmark = pytest.mark.services
SCREENSHOT = ROOT / ".cache" / "screenshots" / "mlflow-ui.png"


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module")
def project(smoke_repro):
    _, env, _, dest = smoke_repro  # after `dvc repro`: FDD `full`; the ablations here train and evaluate `no_align`
    for cmd in (["git", "config", "user.email", "test@example.com"], ["git", "config", "user.name", "test"],
                ["git", "add", "-A"], ["git", "commit", "-qm", "baseline"]):
        sh(cmd, dest, env)
    return dest, env


@pytest.fixture(scope="module")
def served(project, tmp_path_factory):
    """A Prefect server and `python -m flows.serve` (the deployments), both on loopback."""
    from flows.serve import start_server, stop

    dest, env = project
    port = free_port()
    home = tmp_path_factory.mktemp("prefect-home")
    env = dict(env, PREFECT_HOME=str(home), PREFECT_API_URL=f"http://127.0.0.1:{port}/api", PREFECT_SERVER_UI_ENABLED="false",
               PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1", PREFECT_RUNNER_POLL_FREQUENCY="1")
    server = start_server("127.0.0.1", port, home)
    log = open(home / "serve.log", "w")
    serving = subprocess.Popen([sys.executable, "-m", "flows.serve"], cwd=dest, env=env, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            listed = sh(["prefect", "deployment", "ls"], dest, env, check=False).stdout
            if all(d in listed for d in ("ablation/ablation", "sweep/sweep", "reproduce/reproduce")):
                break
            assert serving.poll() is None, (home / "serve.log").read_text()[-3000:]
            time.sleep(1)
        else:
            pytest.fail("deployments not served after 120 s:\n" + (home / "serve.log").read_text()[-3000:])
        yield dest, env, home
    finally:
        _stop(serving)
        stop(server)


def _experiments(dest, env) -> dict[str, dict]:
    from flows.ablation import find_experiment

    shown = json.loads(sh(["dvc", "exp", "show", "--json"], dest, env).stdout)
    names = set()

    def walk(node):
        if isinstance(node, dict):
            if node.get("name") and isinstance(node.get("data"), dict):
                names.add(node["name"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(shown)
    return {n: find_experiment(shown, n) for n in names if n.startswith("no-align")}


def _failure_messages(env) -> list[str]:
    """The state messages of the server's failed flow runs (they end with the failing command's output)."""
    request = urllib.request.Request(f"{env['PREFECT_API_URL']}/flow_runs/filter", method="POST", headers={"Content-Type": "application/json"},
                                     data=json.dumps({"flow_runs": {"state": {"type": {"any_": ["FAILED"]}}}}).encode())
    with urllib.request.urlopen(request, timeout=30) as r:
        return [(run.get("state") or {}).get("message") or "" for run in json.loads(r.read())]


def test_an_ablation_and_a_sweep_at_once_finish_with_their_own_results(served):
    """Two deployment runs at once, one of each flow: `ablation` (seed 0) and `sweep` (seed 1,
    `limit` 1), so two `dvc exp run --temp` overlap as when two people start ablations."""
    dest, env, _ = served
    starts = (["ablation/ablation", "--param", "variant=no_align", "--param", "seed=0"],
              ["sweep/sweep", "--param", 'variants=["no_align"]', "--param", "seeds=[1]", "--param", "limit=1"])
    runs = [subprocess.Popen(["prefect", "deployment", "run", *start, "--watch"], cwd=dest, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True) for start in starts]
    outs = [r.communicate(timeout=1500)[0] for r in runs]
    if any(r.returncode for r in runs):  # `--watch` exits 0 only when the flow run is COMPLETED; its output does not say why not
        pytest.fail("\n".join(out[-2000:] for out in outs) + "\nfailed flow runs:\n" + "\n".join(m[-3000:] for m in _failure_messages(env)))
    exps = _experiments(dest, env)
    by_seed = {}
    for name, data in exps.items():
        seed = data["params"]["params.yaml"]["data"]["fdd"]["seed"]
        assert name.startswith(f"no-align-seed{seed}-")
        assert "metrics/evaluate/no_align.json" in data["metrics"] and "metrics/fdd/no_align.json" in data["metrics"]
        by_seed[seed] = data["metrics"]["metrics/fdd/no_align.json"]["data"]
    assert sorted(by_seed) == [0, 1]
    assert by_seed[0]["eval.fidelity.all.mean"] != by_seed[1]["eval.fidelity.all.mean"]  # each its own noise, not a copy
    assert sh(["git", "status", "--porcelain"], dest, env).stdout.strip() == ""  # the workspace untouched

    client = MlflowClient(f"sqlite:///{dest}/mlflow.db")
    exp = client.get_experiment_by_name("eve-fdd-shapes")
    for name in exps:
        (parent,) = client.search_runs([exp.experiment_id], f"tags.kind = 'ablation' and tags.`dvc.experiment` = '{name}'")
        assert parent.info.status == "FINISHED" and parent.data.tags["prefect.flow_run_id"]
        children = client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
        stages = {c.data.tags["dvc.stage"] for c in children}
        assert {"fdd@no_align", "evaluate@no_align"} <= stages, stages
        assert all(c.data.tags["dvc.experiment"] == name for c in children)
        assert "evaluate.gt.fidelity.changed.mean" in parent.data.metrics


def test_a_failing_stage_fails_the_run_with_its_message_and_leaves_the_workspace_clean(served):
    dest, env, _ = served
    before = set(_experiments(dest, env))
    bad = sh(["prefect", "deployment", "run", "ablation/ablation", "--param", "variant=no_align", "--param",
              'params={"evaluate.baselines": ["sdedit_high"]}', "--watch"], dest, env, check=False, timeout=1500)
    assert bad.returncode != 0
    messages = _failure_messages(env)
    assert any("sdedit_<NN>" in m for m in messages), messages
    assert sh(["git", "status", "--porcelain"], dest, env).stdout.strip() == ""
    assert set(_experiments(dest, env)) == before  # nothing half-saved


def test_mlflow_ui_shows_the_ablation_runs_in_a_browser(served, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    dest, env, _ = served
    client = MlflowClient(f"sqlite:///{dest}/mlflow.db")
    exp = client.get_experiment_by_name("eve-fdd-shapes")
    (parent, *_) = client.search_runs([exp.experiment_id], "tags.kind = 'ablation' and attributes.status = 'FINISHED'")
    port = free_port()
    ui = subprocess.Popen(["mlflow", "ui", "--host", "127.0.0.1", "--port", str(port), "--backend-store-uri", f"sqlite:///{dest}/mlflow.db",
                           "--workers", "1"], cwd=dest, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1600,1000"):
        options.add_argument(arg)
    driver = None
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                assert time.monotonic() < deadline and ui.poll() is None, "MLflow UI did not start"
                time.sleep(0.5)
        driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
        # the link `make ui` prints: the model-training views, the experiment opening on its runs (not GenAI traces)
        driver.get(f"http://127.0.0.1:{port}/#/experiments/{exp.experiment_id}?workflowType=machine_learning")
        WebDriverWait(driver, 60).until(lambda d: "/runs" in d.current_url and parent.info.run_name in d.page_source)
        driver.get(f"http://127.0.0.1:{port}/#/experiments/{exp.experiment_id}/runs/{parent.info.run_id}")
        metric = "evaluate.gt.fidelity.changed.mean"
        WebDriverWait(driver, 60).until(lambda d: parent.info.run_name in d.page_source and metric in d.page_source)
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        assert driver.save_screenshot(str(SCREENSHOT)) and SCREENSHOT.stat().st_size > 10_000
        value = f"{parent.data.metrics[metric]:.4g}"[:5]
        assert value in driver.page_source
    finally:
        if driver is not None:
            driver.quit()
        _stop(ui)
