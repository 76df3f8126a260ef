"""flows/ablation.py without services: what an ablation asks DVC for, and finding its result."""

from __future__ import annotations

import pytest

from flows import ablation

from conftest import ROOT, sh


@pytest.fixture(autouse=True)
def in_project(monkeypatch):
    monkeypatch.chdir(ROOT)


def test_an_ablation_runs_one_variant_at_its_seed_and_nothing_else():
    o = ablation.overrides_for("no_sds", 2, {"fdd.iterations": 10})
    assert o == {"fdd.variants": ["no_sds"], "fdd.seed": 2, "fdd_personal.concepts": [], "evaluate.baselines": [], "fdd.iterations": 10}
    assert ablation._set_args({"fdd.variants": ["no_sds"], "fdd.seed": 2}) == ["-S", 'fdd.variants=["no_sds"]', "-S", "fdd.seed=2"]


def test_bad_variants_and_params_fail_before_dvc_starts():
    with pytest.raises(ValueError, match="unknown variant 'no_lora'"):
        ablation.overrides_for("no_lora", 0, None)
    with pytest.raises(Exception, match="fdd.iterations"):
        ablation.overrides_for("full", 0, {"fdd.iterations": -1})
    with pytest.raises(Exception, match="unknown key 'fdd.iteration'"):
        ablation.overrides_for("full", 0, {"fdd.iteration": 5})


def test_an_experiment_is_found_by_name_in_dvc_exp_show():
    shown = [{"rev": "workspace", "name": None, "data": {"metrics": {}}},
             {"rev": "abc", "name": "main", "data": {"metrics": {}},
              "experiments": [{"name": "full-seed1-12345678", "revs": [{"rev": "def", "name": "full-seed1-12345678",
                                                                         "data": {"metrics": {"m.json": {"data": {"x": 1}}}}}]}]}]
    assert ablation.find_experiment(shown, "full-seed1-12345678") == {"metrics": {"m.json": {"data": {"x": 1}}}}
    assert ablation.find_experiment(shown, "other") is None


def test_a_failing_command_raises_with_the_lines_that_say_why(tmp_path):
    script = tmp_path / "fail.py"
    script.write_text("import sys\nprint('step 1')\nprint('ValueError: baseline x: SDEdit is named sdedit_<NN>')\n"
                      "print(\"ERROR: failed to reproduce 'baselines@x'\")\nsys.exit(3)\n")
    import os
    import sys

    with pytest.raises(ablation.ExperimentFailed, match=r"exit 3\): ValueError: baseline x: SDEdit is named sdedit_<NN> \| ERROR"):
        ablation._run([sys.executable, str(script)], dict(os.environ), "demo")


STAGES = """\
stages:
  z:
    cmd: python z.py
    deps: [z.py]
    outs: [z.txt]
  a:
    cmd: python -c "import pathlib, yaml; pathlib.Path('a').mkdir(exist_ok=True); pathlib.Path('a/x.txt').write_text(pathlib.Path('z.txt').read_text() + str(yaml.safe_load(open('params.yaml'))['p']))"
    deps: [z.txt]
    params: [p]
    outs: [a]
  b:
    cmd: python -c "import pathlib, yaml; pathlib.Path('b.txt').write_text(pathlib.Path('a/x.txt').read_text() + str(yaml.safe_load(open('params.yaml'))['q']))"
    deps: [a/x.txt]
    params: [q]
    outs: [b.txt]
  c:
    cmd: python -c "import pathlib, yaml; pathlib.Path('c.txt').write_text(pathlib.Path('b.txt').read_text() + str(yaml.safe_load(open('params.yaml'))['r']))"
    deps: [b.txt]
    params: [r]
    outs: [c.txt]
  d:
    cmd: python -c "import pathlib; pathlib.Path('d').mkdir(exist_ok=True); pathlib.Path('d/r.md').write_text(pathlib.Path('c.txt').read_text())"
    deps: [c.txt]
    outs:
      - d:
          cache: false
"""


def _pipeline(src):
    """A committed git + DVC project with STAGES, reproduced once."""
    src.mkdir()
    (src / "params.yaml").write_text("p: 1\nq: 1\nr: 1\n")
    (src / "dvc.yaml").write_text(STAGES)
    (src / "z.py").write_text("open('z.txt', 'w').write('z')\n")
    for cmd in (["git", "init", "-q"], ["git", "config", "user.email", "t@example.com"], ["git", "config", "user.name", "t"],
                ["dvc", "init", "-q"], ["dvc", "config", "core.analytics", "false"], ["dvc", "repro", "-q"],
                ["git", "add", "-A"], ["git", "commit", "-qm", "pipeline"]):
        sh(cmd, src)
    return src


def test_an_ablation_waits_while_another_dvc_process_holds_the_repository_lock(tmp_path, monkeypatch):
    """Two ablations started together both take DVC's repository lock while `dvc exp run --temp`
    makes its copy; DVC gives up after 3 s by default ("Unable to acquire lock"), so a loaded
    machine failed one of them. The lock is held here for 6 s: the ablation waits, then runs."""
    import os
    import subprocess
    import sys

    src = _pipeline(tmp_path / "src")
    monkeypatch.chdir(src)
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time, zc.lockfile\n"
                               "lock = zc.lockfile.LockFile('.dvc/tmp/lock'); print('held', flush=True); time.sleep(6)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        ablation._run(ablation.exp_run_command("while-locked", {"r": 5}, []), dict(os.environ), "while-locked")
    finally:
        holder.wait(timeout=30)
    assert (src / ".dvc/tmp/lock").exists() and ablation.missing_results() == []


def test_the_baseline_is_read_under_the_lock_not_from_another_ablations_detached_head(tmp_path, monkeypatch):
    """While one ablation's `dvc exp run --temp` stashes its params it holds DVC's lock with HEAD
    detached onto a temporary commit; the other ablation read HEAD then and failed in CI
    ("'./dvc.yaml' validation failed in revision ..."). Here a process holds the lock with HEAD
    on such a commit (a dvc.yaml DVC rejects) for 4 s: the baseline read waits and is the branch's."""
    import subprocess
    import sys

    src = _pipeline(tmp_path / "src")
    monkeypatch.chdir(src)
    head = sh(["git", "rev-parse", "HEAD"], src).stdout.strip()
    branch = sh(["git", "symbolic-ref", "--short", "HEAD"], src).stdout.strip()
    holder = subprocess.Popen([sys.executable, "-c", "import subprocess, time, zc.lockfile\n"
                               "lock = zc.lockfile.LockFile('.dvc/tmp/lock')\n"
                               "git = lambda *a: subprocess.run(['git', *a], check=True, capture_output=True)\n"
                               "git('checkout', '-q', '--detach'); open('dvc.yaml', 'w').write('stages: [1]\\n')\n"
                               "git('commit', '-qam', 'stash'); print('held', flush=True); time.sleep(4)\n"
                               f"git('checkout', '-qf', {branch!r}); lock.close()"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert sh(["git", "rev-parse", "HEAD"], src).stdout.strip() != head  # what a read without the lock saw
        assert ablation.baseline() == (head, [])
    finally:
        assert holder.wait(timeout=30) == 0


def test_ablations_on_a_fresh_clone_run_every_stage_and_reuse_after_a_repro(tmp_path, monkeypatch):
    """A fresh clone's dvc.lock names directories its DVC cache lacks (`a/`); in DVC 3.67 an
    experiment that restores from the run cache the stage making such a directory with other
    params than the lock's (`p`) and then the stage reading it (`b`) fails ("failed to load
    directory ('a',)": `z` made the experiment load its index before `a` was restored). The
    ablation's command runs every stage then, so both experiments finish (without `-f` the
    second fails); once `dvc repro` has made the lock's results, it reuses again."""
    import json
    import os

    src = _pipeline(tmp_path / "src")
    clone = tmp_path / "clone"
    sh(["git", "clone", "-q", str(src), str(clone)], tmp_path)
    for cmd in (["git", "config", "user.email", "t@example.com"], ["git", "config", "user.name", "t"]):
        sh(cmd, clone)
    monkeypatch.chdir(clone)
    assert ablation.missing_results() == ["a/"]  # not d/: git keeps it (cache: false, as the report's), the cache never does
    for name, overrides in (("first", {"p": 2}), ("second", {"p": 2, "r": 3})):
        cmd = ablation.exp_run_command(name, overrides, ablation.missing_results())
        assert "-f" in cmd
        ablation._run(cmd, dict(os.environ), name)
    shown = json.loads(sh(["dvc", "exp", "show", "--json"], clone).stdout)
    assert ablation.find_experiment(shown, "first") is not None and ablation.find_experiment(shown, "second") is not None
    assert sh(["git", "status", "--porcelain"], clone).stdout == ""  # the workspace untouched

    sh(["dvc", "repro", "-q"], clone)
    assert ablation.missing_results() == []
    # what another ablation's `dvc exp run --temp` leaves in the workspace for a moment (its -S values)
    # is not the baseline: the committed lock and the cache are, so the answer stays the same
    import yaml

    lock = yaml.safe_load((clone / "dvc.lock").read_text())
    lock["stages"]["a"]["outs"][0]["md5"] = "0123456789abcdef0123456789abcdef.dir"  # a listing the cache lacks
    (clone / "dvc.lock").write_text(yaml.safe_dump(lock))
    (clone / "params.yaml").write_text("p: 7\nq: 1\nr: 1\n")
    assert ablation.missing_results() == []
    sh(["git", "checkout", "--", "dvc.lock", "params.yaml"], clone)
    cmd = ablation.exp_run_command("third", {"p": 2, "r": 4}, ablation.missing_results())
    assert "-f" not in cmd
    ablation._run(cmd, dict(os.environ), "third")


def test_a_sweep_runs_at_most_limit_ablations_at_once_and_names_every_failure(monkeypatch, prefect_api):
    """The sweep's scheduling, with a stand-in for the DVC experiment (the real one runs in
    tests/test_services.py): `limit` ablations at a time, the others go on when one fails."""
    import threading
    import time

    from prefect import task
    from prefect.cache_policies import NO_CACHE
    from prefect.settings import PREFECT_API_URL, PREFECT_LOGGING_TO_API_ENABLED, temporary_settings

    lock, running, peak = threading.Lock(), [0], []

    @task(cache_policy=NO_CACHE)
    def fake(name, variant, overrides):
        with lock:
            running[0] += 1
            peak.append(running[0])
        time.sleep(0.3)
        with lock:
            running[0] -= 1
        if overrides["fdd.seed"] == 1 and variant == "no_sds":
            raise RuntimeError("stage fdd@no_sds failed")
        return {"seed": overrides["fdd.seed"]}

    monkeypatch.setattr(ablation, "run_experiment", fake)
    # the session's server, not a temporary one; no logs sent to it (they were after it stopped)
    with temporary_settings({PREFECT_API_URL: prefect_api["PREFECT_API_URL"], PREFECT_LOGGING_TO_API_ENABLED: False}):
        for limit in (1, 2):
            peak.clear()
            with pytest.raises(ablation.ExperimentFailed, match=r"1 of 4 ablations failed: no-sds-seed1-\w+: stage fdd@no_sds failed$"):
                ablation.sweep(variants=["full", "no_sds"], seeds=[0, 1], limit=limit)
            assert max(peak) == limit and len(peak) == 4
        assert sorted(ablation.sweep(variants=["full"], seeds=[0, 1], limit=2).values(), key=lambda m: m["seed"]) == [{"seed": 0}, {"seed": 1}]
