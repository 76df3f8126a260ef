"""The command line of the DVC foreach stages' flows: `python -m flows.<name> ITEM [--params params.yaml]`."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def item_main(flow: Callable[[str, str], object], doc: str | None, item: str, item_help: str) -> None:
    parser = argparse.ArgumentParser(description=doc)
    parser.add_argument(item, help=item_help)
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    flow(getattr(args, item), args.params)
