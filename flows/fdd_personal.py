"""Flow for DVC stage `fdd_personal@<concept>`: `python -m flows.fdd_personal CONCEPT [--params params.yaml]`
(writes metrics/fdd_personal/CONCEPT.json and plots/fdd_personal/CONCEPT_loss.json)."""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from eve_fdd.stages import fdd_personal

from .cli import item_main
from .training import run_training_stage

DATA = Path("data")


def build(cfg, on_log, concept):
    return fdd_personal.build(cfg, concept, DATA / "instructions" / "subject_style_instructions.parquet",
                              DATA / "videos" / "videos.parquet", DATA / "backbone", DATA / "edit_adapter",
                              DATA / "loras" / concept, DATA / "fdd_personal" / concept, on_log=on_log,
                              features_dir=DATA / "features")


@flow(name="fdd_personal", log_prints=True)
def fdd_personal_flow(concept: str, params: str = "params.yaml") -> dict[str, float]:
    return run_training_stage(fdd_personal, build, params, item=concept)


def main() -> None:
    item_main(fdd_personal_flow, __doc__, "concept", "a subject or style LoRA in loras.concepts")


if __name__ == "__main__":
    main()
