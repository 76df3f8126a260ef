"""The Shapes stand-in for DINOv2 (distill/shapes_features.py): its dense labels say what
covers each patch, and its pre-training gives a frozen Dinov2Model."""

import numpy as np
import pytest

from eve_fdd.config import WorldConfig
from eve_fdd.distill.shapes_features import N_OBJECT, FeatureTraining, labels, pretrain
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


def test_pretraining_returns_a_frozen_network_and_its_held_out_accuracy():
    model, acc = pretrain(16, 2, 2, 16, 4, WorldConfig(size=16), FeatureTraining(steps=3, batch_size=4), progress=False)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert type(model).__name__ == "Dinov2Model" and model.config.image_size == 16
    assert {"features.acc.object", "features.acc.texture", "features.acc.background", "features.acc.style"} <= set(acc)
    assert all(0.0 <= v <= 1.0 for k, v in acc.items() if k.startswith("features.acc."))


def test_a_frame_size_that_is_not_a_multiple_of_the_patch_is_refused():
    with pytest.raises(ValueError, match="multiple of patch_size"):
        pretrain(16, 1, 2, 18, 4, WorldConfig(size=18), FeatureTraining(steps=1), progress=False)
