"""The Shapes stand-in for DINOv2 (distill/shapes_features.py): its dense labels say what
covers each patch (stage features trains on them: tests/test_stage_features.py)."""

import torch

from eve_fdd.config import WorldConfig
from eve_fdd.distill.shapes_features import N_OBJECT, frames, labels
from eve_fdd.world import vocab
from eve_fdd.world.scene import Scene, Shape


def test_labels_name_the_topmost_shape_under_each_patch_centre():
    below = Shape("square", "red", "large", "solid", x=0.3, y=0.3)   # covers [0.11, 0.49] on both axes
    above = Shape("circle", "blue", "small", "striped", x=0.3, y=0.3)  # radius 0.11
    obj, tex = labels(Scene("black", (below, above)), 0, size=32, patch=4, supersample=2)
    assert obj.shape == tex.shape == (64,)
    grid, texgrid = obj.reshape(8, 8), tex.reshape(8, 8)
    kinds, colors = list(vocab.KINDS), list(vocab.COLORS)
    blue_circle = 1 + colors.index("blue") * len(kinds) + kinds.index("circle")
    red_square = 1 + colors.index("red") * len(kinds) + kinds.index("square")
    assert grid[2, 2] == blue_circle and texgrid[2, 2] == 1 + vocab.TEXTURES.index("striped")  # the later shape is on top
    assert grid[3, 3] == red_square and texgrid[3, 3] == 1 + vocab.TEXTURES.index("solid")      # only the square covers it
    assert grid[6, 6] == 0 and texgrid[6, 6] == 0                                            # background
    assert obj.max() < N_OBJECT


def test_frames_come_from_their_own_seed_stream_with_labels_that_match():
    world = WorldConfig(size=16)
    a, b = frames(world, 0, 12, range(0, 4), 4), frames(world, 0, 12, range(2, 6), 4)
    assert a.images.shape == (4, 3, 16, 16) and a.object.shape == a.texture.shape == (4, 16) and a.scene.shape == (4, 3)
    assert torch.equal(a.images[2:], b.images[:2]) and torch.equal(a.object[2:], b.object[:2])  # item i is item i
    assert not torch.equal(frames(world, 0, 13, range(0, 4), 4).images, a.images)                # another stream, other scenes
    half = a[1:3]
    assert len(half) == 2 and torch.equal(half.scene, a.scene[1:3])
    assert (a.object > 0).any() and (a.object == 0).any()
