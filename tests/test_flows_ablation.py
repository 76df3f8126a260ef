"""flows/ablation.py without services: what an ablation asks DVC for, and finding its result."""

from __future__ import annotations

import pytest

from flows import ablation

from conftest import ROOT


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
