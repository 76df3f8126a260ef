"""Flow for DVC stage `loras@<concept>`: `python -m flows.lora CONCEPT [--params params.yaml]`
(writes metrics/loras/CONCEPT.json and plots/loras/CONCEPT_loss.json)."""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from eve_fdd.stages import lora

from .cli import item_main
from .training import run_training_stage

BACKBONE = Path("data/backbone")
OUT_DIR = Path("data/loras")


def build(cfg, on_log, concept):
    return lora.build(cfg, concept, BACKBONE, OUT_DIR / concept, on_log=on_log)


@flow(name="loras", log_prints=True)
def lora_flow(concept: str, params: str = "params.yaml") -> dict[str, float]:
    return run_training_stage(lora, build, params, item=concept)


def main() -> None:
    item_main(lora_flow, __doc__, "concept", "a subject or style in loras.concepts")


if __name__ == "__main__":
    main()
