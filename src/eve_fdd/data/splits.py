"""Held-out splits and work shards shared by the stages that make data."""

from __future__ import annotations

import hashlib


def split_of(item_id: str, test_fraction: float) -> str:
    """Held-out membership from a hash of the id: stable when the set grows or is reordered."""
    h = int.from_bytes(hashlib.sha256(item_id.encode()).digest()[:8], "big") / 2**64
    return "test" if h < test_fraction else "train"


def shards(count: int, size: int) -> list[range]:
    """[0, count) in consecutive ranges of `size` (the last one shorter)."""
    return [range(s, min(s + size, count)) for s in range(0, count, size)]
