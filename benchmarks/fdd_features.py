"""FDD with its discriminators on a feature network trained on Shapes renders
(distill/shapes_features.py) instead of the seeded random one: issue 29's lever, measured
before it is wired into the pipeline. Pre-trains once (cached under --work), then runs
stage fdd's library with `feature_network` giving the trained network; results join
results/fdd_levers.json as lever `features_trained` (`--lever` to rename).

    python benchmarks/fdd_features.py --seeds 0 [--steps 600] [--variants full]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from fdd_seeds import KEYS, merge_lever, one  # noqa: E402


def network(params: str, steps: int, work: Path):
    from transformers import Dinov2Model

    from eve_fdd.config import load_config
    from eve_fdd.distill.shapes_features import FeatureTraining, pretrain

    cfg = load_config(params)
    d = cfg.fdd.discriminator
    folder = work / f"features-{steps}"
    if not (folder / "config.json").is_file():
        model, acc = pretrain(d.hidden_size, d.layers, d.heads, cfg.world.size, d.patch_size, cfg.world, FeatureTraining(steps=steps))
        model.save_pretrained(folder)
        (folder / "accuracy.json").write_text(json.dumps(acc, indent=1) + "\n")
    return Dinov2Model.from_pretrained(folder).requires_grad_(False).eval(), json.loads((folder / "accuracy.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--variants", nargs="+", default=["full"])
    parser.add_argument("--steps", type=int, default=600, help="pre-training steps of the feature network")
    parser.add_argument("--lever", default="features_trained")
    parser.add_argument("--work", type=Path, default=Path(".cache/fdd_features"))
    parser.add_argument("--lever-results", type=Path, default=Path("results/fdd_levers.json"))
    args = parser.parse_args()
    model, acc = network(args.params, args.steps, args.work)
    print("feature network held-out accuracy:", acc, flush=True)

    from eve_fdd.distill.discriminators import IMAGENET_MEAN, IMAGENET_STD
    from eve_fdd.models.registry import FeatureNetwork
    from eve_fdd.stages import fdd as stage

    def trained(cfg, placement=None):
        if placement is not None:
            placement.frozen(model)
        return FeatureNetwork(model, None, IMAGENET_MEAN, IMAGENET_STD)

    stage.feature_network = trained
    rows = []
    for v in args.variants:
        for s in args.seeds:
            row = one(args.params, v, s, args.work / "runs")
            print(f"{v} seed {s}: {row['seconds']} s, " + ", ".join(f"{k}={row.get(k)}" for k in KEYS), flush=True)
            rows.append(row)
    merge_lever(args.lever_results, args.lever, {"fdd.discriminator.features": "trained", "steps": args.steps}, rows, acc)


if __name__ == "__main__":
    torch.set_num_threads(max(1, torch.get_num_threads()))
    main()
