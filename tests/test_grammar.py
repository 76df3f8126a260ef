"""The instruction grammar: text + scene -> edit, with the reason when it cannot be."""

import numpy as np
import pytest

from eve_fdd.world import (
    SUBJECT_TASKS, TASKS, InstructionError, Scene, Shape, applicable, caption, make_edit, parse_instruction, random_scene,
)


def test_every_canonical_instruction_parses_back_to_its_edit():
    n = 0
    for seed in range(300):
        scene = random_scene(seed)
        rng = np.random.default_rng(seed)
        for task in TASKS + SUBJECT_TASKS:
            if not applicable(scene, task):
                continue
            reserved = task in SUBJECT_TASKS or seed % 2 == 0
            edit = make_edit(scene, task, rng, allow_reserved=reserved)
            velocity = (edit.spec.vx or 0.0, edit.spec.vy or 0.0)
            spec, edited = parse_instruction(edit.instruction, task, scene, velocity, allow_reserved=True)
            assert spec == edit.spec, (task, edit.instruction)
            assert caption(edited) == edit.output_caption
            n += 1
    assert n > 2000


SCENE = Scene("navy", (Shape("circle", "red", "small", x=0.3, y=0.3), Shape("square", "blue", "large", "striped", 0.7, 0.7)))


@pytest.mark.parametrize(
    "task,text,expected",
    [
        ("remove", "Delete the red circle.", dict(target="red circle")),
        ("remove", "take out the blue square", dict(target="blue square")),
        ("add", "put a small green triangle at the center", dict(kind="triangle", color="green", size="small", region="center", texture="solid")),
        ("add", "Add a large pink dotted diamond in the bottom right", dict(kind="diamond", color="pink", texture="dotted", region="bottom right")),
        ("background", "set the background colour to beige", dict(background="beige")),
        ("texture", "make the blue square plain", dict(target="blue square", texture="solid")),
        ("local", "paint the red circle yellow", dict(target="red circle", color="yellow")),
        ("local", "make the red circle large", dict(target="red circle", size="large")),
        ("replace", "turn the red circle into a star", dict(target="red circle", kind="star")),
        ("style", "draw the shapes as outlines", dict(style="outline")),
        ("global", "make it dusk", dict(lighting="dusk")),
    ],
)
def test_variants_parse(task, text, expected):
    spec, _ = parse_instruction(text, task, SCENE, (0.01, 0.02), allow_reserved=True)
    assert spec.task == task
    for k, v in expected.items():
        assert getattr(spec, k) == v
    if task == "add":
        assert (spec.vx, spec.vy) == (0.01, 0.02)  # the caller decides how an added shape moves


@pytest.mark.parametrize(
    "task,text,reason,words",
    [
        ("remove", "remove the green circle", "unknown_object", ["green circle", "red circle, blue square"]),
        ("remove", "remove the magenta circle", "unknown_word", ["magenta", "colour"]),
        ("local", "make the red circle huge", "unknown_word", ["huge"]),
        ("remove", "make the red circle blue", "unparseable", ["remove"]),
        ("style", "make it pretty", "unparseable", ["style"]),
        ("background", "change the background to navy", "invalid_edit", ["already"]),
        ("add", "add a small red circle in the top left", "invalid_edit", ["unique"]),
        ("replace", "replace the red circle with a star", "unknown_word", ["star"]),  # subjects need allow_reserved
    ],
)
def test_failures_say_why(task, text, reason, words):
    with pytest.raises(InstructionError) as err:
        parse_instruction(text, task, SCENE)
    assert err.value.reason == reason
    for w in words:
        assert w in str(err.value)
