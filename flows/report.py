"""Flow for DVC stage `report`: `python -m flows.report [--params params.yaml]` (writes report/
and metrics/report.json from metrics/evaluate/ and data/evaluate/)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from eve_fdd import tracking
from eve_fdd.config import load_config
from eve_fdd.stages import report

from .evaluate import DATA, DIRS


@flow(name="report", log_prints=True)
def report_flow(params: str = "params.yaml") -> dict[str, float]:
    cfg = load_config(params)
    with tracking.stage_run(cfg, report.STAGE, report.PARAMS, env=os.environ) as run:
        metrics, artifacts = task(report.build, name="report", cache_policy=NO_CACHE)(
            cfg, DIRS, Path("metrics") / "evaluate", DATA / "evaluate", Path("report"))
        tracking.write_metrics(metrics, Path("metrics") / "report.json")
        run.log_metrics(metrics)
        run.log_artifacts([a for a in artifacts if a.parent.name != "grids"])
        run.log_artifacts([a for a in artifacts if a.parent.name == "grids"], "grids")
        print(artifacts[0].read_text())
        return metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    report_flow(parser.parse_args().params)


if __name__ == "__main__":
    main()
