"""world/detect.py: on renders of the captioned scene everything is found; on renders of
other scenes, much less."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from eve_fdd.world import random_scene, render_frame
from eve_fdd.world.detect import detect


def test_renders_of_the_scene_pass_and_other_scenes_fail():
    own, other = [], []
    for seed in range(120):
        scene = random_scene(seed)
        if scene.style == "sketch":
            continue
        for frame in (0, 5):
            own.append(detect(render_frame(scene, frame), scene))
        other.append(detect(render_frame(random_scene(seed + 10_000), 3), scene))
    # shapes drawn later can hide most of an earlier one, so not quite all of them
    assert np.mean([d.all_present for d in own]) >= 0.9 and np.mean([d.shape_recall for d in own]) >= 0.97
    assert np.mean([d.all_present for d in other]) <= 0.05 and np.mean([d.shape_recall for d in other]) <= 0.3


def test_a_missing_shape_or_wrong_background_is_reported():
    scene = next(s for s in map(random_scene, range(100)) if len(s.shapes) >= 3 and s.style == "flat" and s.lighting == "normal")
    fewer = replace(scene, shapes=scene.shapes[1:])
    d = detect(render_frame(fewer, 0), scene)
    assert d.shapes[1:] == (True,) * (len(scene.shapes) - 1)
    other_bg = next(b for b in ("black", "white", "navy", "beige") if b != scene.background)
    assert not detect(render_frame(replace(scene, background=other_bg), 0), scene).background
    blank = np.full((32, 32, 3), 128, dtype=np.uint8)
    assert detect(blank, scene).shape_recall < 0.5
    with pytest.raises(ValueError, match="uint8"):
        detect(blank.astype(np.float32), scene)
