"""Held-out splits, work shards and seed streams shared by the stages that make data."""

from __future__ import annotations

import hashlib

import numpy as np

# SeedSequence spawn keys, one per stream of scenes, so no two streams share a seed. Not a
# third entropy word: SeedSequence drops trailing zero words, so [s, 1, 0] == [s, 1], the
# video set's seed for index 1. The video set uses no spawn key.
EDIT_PAIRS_STREAM = 1
BACKBONE_TRAIN_STREAM = 2
BACKBONE_EVAL_STREAM = 3
VIDEO_ADAPTER_TRAIN_STREAM = 4
VIDEO_ADAPTER_EVAL_STREAM = 5
LORA_TRAIN_STREAM = 6
LORA_EVAL_STREAM = 7
CONCEPT_DETECTOR_TRAIN_STREAM = 8
CONCEPT_DETECTOR_EVAL_STREAM = 9
METRIC_MODELS_TRAIN_STREAM = 10
METRIC_MODELS_EVAL_STREAM = 11
FEATURES_TRAIN_STREAM = 12
FEATURES_EVAL_STREAM = 13


def stream_seed(seed: int, index: int, stream: int | None = None) -> int:
    """Independent, reproducible 63-bit seed for item `index` of `stream` in a run seeded with `seed`."""
    spawn_key = () if stream is None else (stream,)
    return int(np.random.SeedSequence([seed, index], spawn_key=spawn_key).generate_state(1, dtype=np.uint64)[0] >> 1)


def split_of(item_id: str, test_fraction: float) -> str:
    """Held-out membership from a hash of the id: stable when the set grows or is reordered."""
    h = int.from_bytes(hashlib.sha256(item_id.encode()).digest()[:8], "big") / 2**64
    return "test" if h < test_fraction else "train"


def shards(count: int, size: int) -> list[range]:
    """[0, count) in consecutive ranges of `size` (the last one shorter)."""
    return [range(s, min(s + size, count)) for s in range(0, count, size)]
