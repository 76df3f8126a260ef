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


def _added(scene, vx, vy, color="yellow", kind="square"):
    from eve_fdd.world import EditSpec, apply_edit

    spec = EditSpec("add", kind=kind, color=color, size="medium", texture="solid", region="top left", vx=vx, vy=vy)
    return apply_edit(scene, spec), spec


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_an_added_shapes_motion_is_fitted_from_the_clip(seed):
    from eve_fdd.world import render_video
    from eve_fdd.world.detect import fit_added_motion

    scene = next(s for s in map(random_scene, range(seed * 50, seed * 50 + 50)) if len(s.shapes) <= 3 and s.style == "flat"
                 and all(sh.color != "yellow" for sh in s.shapes))
    source = render_video(scene)
    # a motion on the fit's grid (speed 0.04 of 0.02..0.06, direction 45 degrees): recovered exactly, so that clip is its own truth
    v = 0.04 / np.sqrt(2)
    edited, _ = _added(scene, v, v)
    clip = render_video(edited)
    fit = fit_added_motion(edited, clip, (0.02, 0.06), source=source)
    assert fit == pytest.approx((v, v), abs=1e-9)
    np.testing.assert_array_equal(render_video(_added(scene, *fit)[0]), clip)
    # off the grid: close to it
    edited, _ = _added(scene, 0.031, -0.022)
    fit = fit_added_motion(edited, render_video(edited), (0.02, 0.06), source=source)
    assert abs(fit[0] - 0.031) < 0.006 and abs(fit[1] + 0.022) < 0.006
    # the input itself (no new shape anywhere) has no motion to fit
    assert fit_added_motion(edited, source, (0.02, 0.06), source=source) is None


def test_the_fit_ignores_a_shape_of_the_same_colour_the_input_has():
    from eve_fdd.world import Scene, Shape, render_video
    from eve_fdd.world.detect import fit_added_motion

    scene = Scene("navy", (Shape("circle", "yellow", "medium", x=0.7, y=0.7, vx=-0.03, vy=0.01),))
    v = 0.04 / np.sqrt(2)
    edited, _ = _added(scene, v, -v)  # a yellow square beside a yellow circle
    fit = fit_added_motion(edited, render_video(edited), (0.02, 0.06), source=render_video(scene))
    assert fit == pytest.approx((v, -v), abs=1e-9)


def test_an_add_is_scored_against_the_motion_its_edit_gave_the_new_shape():
    """The instruction fixes where the new shape starts, not how it moves: a clip that draws it
    with another world motion is its own ground truth; the input (no new shape) is scored
    against the motion the spec drew; every other task ignores the clip."""
    from eve_fdd.distill.data import FddItems, ground_truth
    from eve_fdd.world import render_video

    scene = next(s for s in map(random_scene, range(50)) if len(s.shapes) <= 3 and all(sh.color != "yellow" for sh in s.shapes))
    source = render_video(scene)
    edited, spec = _added(scene, 0.03, 0.02)
    items = FddItems(["v/add"], ["v"], ["add"], ["add a medium yellow square in the top left"], ["c"], ["c2"], [spec.to_json()],
                     [scene.to_json()], source[None])
    v = 0.04 / np.sqrt(2)
    other = render_video(_added(scene, -v, v)[0])  # the same square, moving another way a world shape can
    truth = ground_truth(items, 0, 8, 32, 2, edited=other)
    np.testing.assert_array_equal(truth, other)
    drawn = ground_truth(items, 0, 8, 32, 2)
    assert not np.array_equal(drawn, other)
    np.testing.assert_array_equal(ground_truth(items, 0, 8, 32, 2, edited=source), drawn)
