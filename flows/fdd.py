"""Flow for DVC stage `fdd@<variant>`: `python -m flows.fdd VARIANT [--params params.yaml]`
(writes metrics/fdd/VARIANT.json and plots/fdd/VARIANT_loss.json)."""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from eve_fdd.stages import fdd

from .cli import item_main
from .training import run_training_stage

DATA = Path("data")


def build(cfg, on_log, variant):
    return fdd.build(cfg, variant, DATA / "instructions" / "instructions.parquet", DATA / "videos" / "videos.parquet",
                     DATA / "backbone", DATA / "edit_adapter", DATA / "video_adapter", DATA / "fdd" / variant, on_log=on_log,
                     features_dir=DATA / "features")


@flow(name="fdd", log_prints=True)
def fdd_flow(variant: str, params: str = "params.yaml") -> dict[str, float]:
    return run_training_stage(fdd, build, params, item=variant)


def main() -> None:
    item_main(fdd_flow, __doc__, "variant", "an ablation variant in fdd.variants (full, no_align, no_sds, no_disc, uniform_k, random_init)")


if __name__ == "__main__":
    main()
