"""The Shapes world (eve_fdd.world): scenes, motion, rendering, captions and the seven edits.

Pixel checks use flat-style, normal-lighting scenes (so a pixel is the plain blend of the
background and the shapes drawn over it) and `shape_coverage` to say where each shape is.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace

import numpy as np
import pytest

from eve_fdd.world import (
    RESERVED_STYLES,
    SUBJECTS,
    TASKS,
    EditSpec,
    Scene,
    SceneError,
    Shape,
    applicable,
    apply_edit,
    caption,
    instruction,
    make_edit,
    random_scene,
    render_frame,
    render_video,
    sample_edit,
    shape_coverage,
    valid_edits,
)
from eve_fdd.world.grammar import parse_instruction
from eve_fdd.world import vocab
from eve_fdd.world.edits import MAX_SHAPES
from eve_fdd.world.render import RIM_SCALE

FRAMES, SIZE = 8, 32
LIGHTING_FN = {  # what each lighting does to a normal-lighting pixel value
    "dusk": lambda v: v * 0.5 + np.array([0.0, 0.0, 12.0]),
    "bright": lambda v: v * 0.6 + 100.0,
    "warm": lambda v: v * np.array([1.0, 0.82, 0.6]),
    "cool": lambda v: v * np.array([0.6, 0.82, 1.0]),
}


# ----------------------------------------------------------------------------- helpers


def rgb(name: str) -> np.ndarray:
    table = vocab.COLORS if name in vocab.COLORS else vocab.BACKGROUNDS
    return np.array(table[name], dtype=np.uint8)


def dark(name: str) -> np.ndarray:
    """The darker second tone of a textured shape of colour `name`."""
    return np.rint(np.array(vocab.COLORS[name], dtype=np.float64) * 0.45).astype(np.uint8)


def flat(scene: Scene) -> Scene:
    return replace(scene, style="flat", lighting="normal")


def video(scene: Scene, size: int = SIZE, frames: int = FRAMES) -> np.ndarray:
    return render_video(scene, frames=frames, size=size)


def cov(scene: Scene, size: int = SIZE, frames: int = FRAMES) -> np.ndarray:
    return shape_coverage(scene, frames=frames, size=size)


def changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(frames, H, W) bool: where any channel differs."""
    return np.any(a != b, axis=-1)


def is_color(v: np.ndarray, color: np.ndarray) -> np.ndarray:
    """(frames, H, W) bool: where the pixel is exactly `color`."""
    return np.all(v == color, axis=-1)


def flat_scenes(n: int = 60, start: int = 0) -> list[Scene]:
    return [flat(random_scene(s)) for s in range(start, start + n)]


def spec_for(scene: Scene, task: str, seed: int, **kw) -> EditSpec:
    return sample_edit(scene, task, np.random.default_rng(seed), **kw)


def hand_scene(**kw) -> Scene:
    """Three shapes whose coverages never overlap during FRAMES frames (checked below);
    the blue square bounces off the bottom edge."""
    shapes = (
        Shape("circle", "red", "medium", "solid", 0.27, 0.27, 0.02, 0.01),
        Shape("square", "blue", "large", "solid", 0.72, 0.72, -0.01, 0.015),
        Shape("triangle", "green", "small", "solid", 0.2, 0.8, 0.0, 0.0),
    )
    return Scene(kw.pop("background", "gray"), kw.pop("shapes", shapes), **kw)


def motion(shape: Shape, frames: int = 40) -> tuple[np.ndarray, np.ndarray]:
    return shape.position(np.arange(frames))


def coverage_at_centre_phase(shape: Shape, frame: int, size: int, ss: int) -> float:
    """Coverage sum of the same shape, static, moved by a whole number of supersamples so
    that it sits near the image centre: the same rasterisation, but nowhere near an edge."""
    n = size * ss
    px, py = (float(p) for p in shape.position(frame))
    x = px + round((0.5 - px) * n) / n
    y = py + round((0.5 - py) * n) / n
    ref = Scene("black", (replace(shape, x=x, y=y, vx=0.0, vy=0.0),))
    return float(shape_coverage(ref, frames=1, size=size, supersample=ss).sum())


def words(text: str, word: str) -> int:
    return len(re.findall(rf"\b{re.escape(word)}\b", text))


def test_hand_scene_shapes_do_not_overlap():
    c = cov(hand_scene())
    for i in range(3):
        for j in range(i + 1, 3):
            assert not np.any((c[i] > 0) & (c[j] > 0))
    ys = hand_scene().shapes[1].position(np.arange(FRAMES))[1]
    assert np.any(np.diff(ys) < 0) and np.any(np.diff(ys) > 0)  # it does bounce


# ----------------------------------------------------------------------------- 1. determinism


def test_random_scene_is_deterministic_per_seed():
    for seed in range(50):
        a, b = random_scene(seed), random_scene(seed)
        assert a == b and a.to_json() == b.to_json()
    distinct = {random_scene(seed).to_json() for seed in range(200)}
    assert len(distinct) >= 195  # different seeds give (almost always) different scenes


def test_render_video_is_byte_identical_across_calls():
    for seed in range(5):
        scene = random_scene(seed)
        a, b = video(scene), video(scene)
        assert a.tobytes() == b.tobytes()
        assert np.array_equal(shape_coverage(scene), shape_coverage(scene))


@pytest.mark.parametrize("task", TASKS)
def test_make_edit_is_deterministic_per_rng_seed(task):
    outcomes = set()
    for seed in range(20):
        scene = random_scene(seed)
        a = make_edit(scene, task, np.random.default_rng(seed + 1000))
        b = make_edit(scene, task, np.random.default_rng(seed + 1000))
        assert a == b
        assert a.scene.to_json() == b.scene.to_json()
        outcomes.add(a.spec.to_json())
    assert len(outcomes) > 1
    # the rng, not only the scene, picks the edit
    scene = random_scene(7)
    specs = {make_edit(scene, task, np.random.default_rng(s)).spec for s in range(30)}
    assert len(specs) > 1


# ----------------------------------------------------------------------------- 2. invariants, JSON


def test_random_scene_invariants_over_many_seeds():
    counts, styles, lightings, textures, kinds = set(), set(), set(), set(), set()
    for seed in range(300):
        s = random_scene(seed)
        assert 2 <= len(s.shapes) <= 4
        counts.add(len(s.shapes))
        names = [sh.name for sh in s.shapes]
        assert len(set(names)) == len(names)
        assert s.background in vocab.BACKGROUNDS
        assert s.style in vocab.STYLES and s.style not in RESERVED_STYLES
        assert s.lighting in vocab.LIGHTINGS
        styles.add(s.style)
        lightings.add(s.lighting)
        for sh in s.shapes:
            assert sh.kind in vocab.KINDS and sh.kind not in SUBJECTS
            assert sh.color in vocab.COLORS and sh.size in vocab.SIZES and sh.texture in vocab.TEXTURES
            r = sh.radius
            assert r <= sh.x <= 1 - r and r <= sh.y <= 1 - r
            assert 0.02 - 1e-12 <= np.hypot(sh.vx, sh.vy) <= 0.06 + 1e-12
            textures.add(sh.texture)
            kinds.add(sh.kind)
        s.validate()  # strict validation (no reserved) passes
    assert counts == {2, 3, 4}
    assert styles == set(vocab.STYLES) and lightings == set(vocab.LIGHTINGS)
    assert textures == set(vocab.TEXTURES) and kinds == set(vocab.KINDS)


@pytest.mark.parametrize("lo,hi", [(1, 1), (5, 5), (1, 3), (3, 5)])
def test_random_scene_respects_shape_count_args(lo, hi):
    counts = {len(random_scene(seed, min_shapes=lo, max_shapes=hi).shapes) for seed in range(80)}
    assert counts == set(range(lo, hi + 1))


def test_sample_edit_never_reserved_unless_allowed():
    add_kinds, styles = set(), set()
    for seed in range(300):
        scene = random_scene(seed)
        add = spec_for(scene, "add", seed)
        style = spec_for(scene, "style", seed)
        assert add.kind in vocab.KINDS
        assert style.style in vocab.STYLES
        add_kinds.add(add.kind)
        styles.add(style.style)
        for task in TASKS:  # nothing reserved ever reaches an edited scene
            edited = make_edit(scene, task, np.random.default_rng(seed)).scene
            assert edited.style not in RESERVED_STYLES
            assert all(sh.kind not in SUBJECTS for sh in edited.shapes)
    assert add_kinds == set(vocab.KINDS) and styles == set(vocab.STYLES)


def test_sample_edit_can_produce_reserved_when_allowed():
    add_kinds, styles = set(), set()
    for seed in range(300):
        scene = random_scene(seed)
        add = make_edit(scene, "add", np.random.default_rng(seed), allow_reserved=True)
        style = make_edit(scene, "style", np.random.default_rng(seed), allow_reserved=True)
        add_kinds.add(add.spec.kind)
        styles.add(style.spec.style)
        assert add.scene.shapes[-1].kind == add.spec.kind
        assert style.scene.style == style.spec.style
    assert set(SUBJECTS) <= add_kinds and set(RESERVED_STYLES) <= styles
    # a reserved edit is refused without allow_reserved
    scene = random_scene(0)
    with pytest.raises(SceneError, match="kind"):
        apply_edit(scene, EditSpec("add", kind="star", color="red", size="small", region="center", vx=0.0, vy=0.0))
    with pytest.raises(SceneError, match="style"):
        apply_edit(replace(scene, style="flat"), EditSpec("style", style="sketch"))


TWO = Scene("navy", (Shape("circle", "red", "small", x=0.3, y=0.3), Shape("square", "blue", "large", "striped", 0.7, 0.7)))


def test_valid_edits_are_every_edit_the_scene_allows_each_read_back_by_the_parser():
    count = {t: len(valid_edits(TWO, t)) for t in TASKS}
    # remove: either shape; background: the other four; texture: 3 new textures each; style: 2; lighting: 4;
    # local: 7 colours each (no clash here) + 2 sizes each; add: 3 sizes x 4 textures x 5 regions x the 30 free (colour, kind)
    assert count == dict(remove=2, background=4, texture=6, style=2, **{"global": 4}, local=18, add=3 * 4 * 5 * 30)
    clash = Scene("navy", (Shape("circle", "red", "small", x=0.3, y=0.3), Shape("circle", "blue", "large", x=0.7, y=0.7)))
    assert "turn the red circle blue" not in {e.instruction for e in valid_edits(clash, "local")}  # two blue circles
    assert valid_edits(Scene("navy", (Shape("circle", "red", "small", x=0.3, y=0.3),)), "remove") == []
    for scene in (TWO, random_scene(3), random_scene(4)):
        for task in TASKS:
            for e in valid_edits(scene, task):
                spec, edited = parse_instruction(e.instruction, task, scene)
                assert spec == e.spec and caption(edited) == e.output_caption
    # concept requests: only the concept, which is otherwise never offered
    assert {e.spec.kind for e in valid_edits(TWO, "replace", allow_reserved=True, concept="star")} == {"star"}
    assert {e.spec.style for e in valid_edits(TWO, "style", allow_reserved=True, concept="sketch")} == {"sketch"}
    assert not {e.spec.kind for e in valid_edits(TWO, "add")} & set(SUBJECTS)


def test_sample_edit_draws_from_the_valid_edits():
    for seed in range(20):
        scene = random_scene(seed)
        for task in TASKS:
            if not applicable(scene, task):
                continue
            valid = {(e.instruction, e.output_caption) for e in valid_edits(scene, task)}
            for draw in range(3):
                edit = make_edit(scene, task, np.random.default_rng([seed, draw]))
                assert (edit.instruction, edit.output_caption) in valid


def test_scene_json_round_trip():
    for seed in range(100):
        s = random_scene(seed)
        back = Scene.from_json(s.to_json())
        assert back == s and isinstance(back.shapes, tuple)
        assert back.to_json() == s.to_json()
        assert np.array_equal(video(back, frames=2), video(s, frames=2))
    reserved = Scene("teal", (Shape("star", "red"), Shape("cross", "blue", "large", "dotted")), "sketch", "warm")
    assert Scene.from_json(reserved.to_json()) == reserved
    with pytest.raises(SceneError):
        Scene.from_json(reserved.to_json(), allow_reserved=False)
    assert "meta" not in json.loads(replace(random_scene(0), meta={"k": 1}).to_json())


def test_edit_spec_json_round_trip():
    n = 0
    for seed in range(40):
        scene = random_scene(seed)
        for task in TASKS:
            spec = spec_for(scene, task, seed, allow_reserved=seed % 2 == 0)
            back = EditSpec.from_json(spec.to_json())
            assert back == spec
            assert apply_edit(scene, back, allow_reserved=True) == apply_edit(scene, spec, allow_reserved=True)
            assert "null" not in spec.to_json()  # unset fields are left out
            n += 1
    assert n == 280


def _scene_dict() -> dict:
    return json.loads(hand_scene().to_json())


@pytest.mark.parametrize(
    "mutate,key",
    [
        (lambda d: d["shapes"][1].__setitem__("color", "magenta"), "shapes[1].color"),
        (lambda d: d["shapes"][0].__setitem__("kind", "hexagon"), "shapes[0].kind"),
        (lambda d: d["shapes"][2].__setitem__("size", "huge"), "shapes[2].size"),
        (lambda d: d["shapes"][0].__setitem__("texture", "plaid"), "shapes[0].texture"),
        (lambda d: d.__setitem__("background", "magenta"), "background"),
        (lambda d: d.__setitem__("style", "cubist"), "style"),
        (lambda d: d.__setitem__("lighting", "neon"), "lighting"),
    ],
)
def test_scene_json_unknown_value_names_the_key(mutate, key):
    d = _scene_dict()
    mutate(d)
    with pytest.raises(SceneError) as exc:
        Scene.from_json(json.dumps(d))
    assert key in str(exc.value)


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "{",
        "[]",
        "null",
        "42",
        "{}",
        '{"background": "gray"}',
        '{"background": "gray", "shapes": []}',
        '{"background": "gray", "shapes": null}',
        '{"background": "gray", "shapes": [{"kind": "circle"}]}',
        '{"background": "gray", "shapes": [{"kind": "circle", "color": "red", "wobble": 1}]}',
        '{"background": "gray", "shapes": [{"kind": "circle", "color": "red"}], "extra": 1}',
        '{"background": "gray", "shapes": [{"kind": "circle", "color": "red"}, {"kind": "circle", "color": "red"}]}',
    ],
)
def test_scene_from_bad_json_raises_scene_error(text):
    with pytest.raises(SceneError):
        Scene.from_json(text)


@pytest.mark.parametrize("field,value", [("x", "a"), ("vy", None)])
def test_scene_json_non_numeric_motion_raises_scene_error(field, value):
    d = _scene_dict()
    d["shapes"][0][field] = value
    with pytest.raises(SceneError, match=field):
        Scene.from_json(json.dumps(d))


@pytest.mark.parametrize("text", ["", "{", "[1]", '"add"', '{"task": "add", "wobble": 1}', '{"target": "red circle"}'])
def test_edit_spec_from_bad_json_raises_scene_error(text):
    with pytest.raises(SceneError):
        EditSpec.from_json(text)


# ----------------------------------------------------------------------------- 3. motion


def test_positions_stay_within_radius_bounds_and_start_at_start():
    for seed in range(100):
        for sh in random_scene(seed, speed=(0.05, 0.2)).shapes:
            x, y = motion(sh, 200)
            r = sh.radius
            for p in (x, y):
                assert p.min() >= r - 1e-12 and p.max() <= 1 - r + 1e-12
            assert x[0] == pytest.approx(sh.x, abs=1e-12) and y[0] == pytest.approx(sh.y, abs=1e-12)
            # between bounces a shape moves by exactly its velocity
            steps = np.abs(np.diff(x))
            assert np.mean(np.isclose(steps, abs(sh.vx))) > 0.5


def test_velocity_reverses_at_a_wall():
    sh = Shape("circle", "red", "small", x=0.5, y=0.5, vx=0.05, vy=-0.03)  # r = 0.11
    x, y = motion(sh, 40)
    dx, dy = np.diff(x), np.diff(y)
    # right wall at 1 - r = 0.89 reached at t = 7.8: moving right before, left after
    assert np.allclose(dx[:7], 0.05) and np.allclose(dx[8:15], -0.05)
    assert x.max() <= 0.89 + 1e-12 and x[8] == pytest.approx(0.88)
    # top wall at r = 0.11 reached at t = 13: moving up before, down after
    assert np.allclose(dy[:13], -0.03) and np.allclose(dy[13:25], 0.03)
    assert y[13] == pytest.approx(0.11) and y.min() >= 0.11 - 1e-12
    # a negative velocity bounces off the left wall just the same
    x2, _ = motion(Shape("circle", "red", "small", x=0.5, vx=-0.05), 40)
    assert np.allclose(x2, 1 - x)
    # and the same positions come out frame by frame and vectorised
    assert all(float(sh.position(f)[0]) == pytest.approx(x[f]) for f in range(40))


def test_shapes_never_clipped_by_the_frame_random_scenes():
    """A shape's coverage in each frame equals that of the same rasterisation at the centre
    (whole-supersample shift), so no part of it is ever cut off by an edge."""
    size, ss, frames = 32, 4, 16
    checked = 0
    for seed in range(30):
        scene = random_scene(seed, speed=(0.04, 0.1))
        c = shape_coverage(scene, frames=frames, size=size, supersample=ss)
        for i, sh in enumerate(scene.shapes):
            sums = c[i].sum(axis=(1, 2))
            assert np.ptp(sums) < 0.35 * sums.mean()  # coarse: roughly constant area
            for f in range(frames):
                ref = coverage_at_centre_phase(sh, f, size, ss)
                assert abs(sums[f] - ref) <= 2 / ss**2 + 1e-9, (seed, sh, f)
                checked += 1
    assert checked > 500


WALL_KINDS = list(vocab.KINDS + SUBJECTS)


@pytest.mark.parametrize("kind", WALL_KINDS)
def test_shape_touching_a_wall_is_not_clipped(kind):
    size, ss = 64, 4
    ex, ey = 3.1e-6, 1.7e-6  # unequal offsets keep straight and 45-degree edges off the
    #                          supersample lattice, so no sample sits exactly on an edge
    for sz, d in vocab.SIZES.items():
        r = d / 2
        xs, ys = (r + ex, 0.5 + ex, 1 - r - ex), (r + ey, 0.5 + ey, 1 - r - ey)
        for x, y in [(xs[0], ys[1]), (xs[2], ys[1]), (xs[1], ys[0]), (xs[1], ys[2]), (xs[0], ys[0]), (xs[2], ys[2])]:
            sh = Shape(kind, "red", sz, x=x, y=y)
            got = float(shape_coverage(Scene("black", (sh,)), 1, size, ss).sum())
            ref = coverage_at_centre_phase(sh, 0, size, ss)
            assert abs(got - ref) <= 2 / ss**2 + 1e-9, (sz, x, y, got, ref)


# ----------------------------------------------------------------------------- rendering basics


@pytest.mark.parametrize("size", [16, 32, 64])
@pytest.mark.parametrize("frames", [1, 5])
def test_render_dtype_and_shape(size, frames):
    scene = random_scene(3)
    v = render_video(scene, frames=frames, size=size)
    assert v.dtype == np.uint8 and v.shape == (frames, size, size, 3)
    assert np.array_equal(v[-1], render_frame(scene, frames - 1, size=size))
    c = shape_coverage(scene, frames=frames, size=size)
    assert c.shape == (len(scene.shapes), frames, size, size)
    assert c.min() >= 0 and c.max() <= 1 and np.all(c.max(axis=(2, 3)) == 1)


@pytest.mark.parametrize("size", [16, 31, 32])
def test_centred_shapes_render_symmetric(size):
    """Pixel centres are where they should be: a shape centred in the image is mirrored
    left-right (and, when the kind is symmetric that way, top-bottom and diagonally)."""
    for kind in vocab.KINDS + SUBJECTS:
        c = cov(Scene("black", (Shape(kind, "red", "large"),)), size, 1)[0, 0]
        assert c.sum() > 0 and np.allclose(c, c[:, ::-1])
        if kind not in ("triangle", "star"):
            assert np.allclose(c, c[::-1]) and np.allclose(c, c.T)


def test_render_is_coverage_blend_of_shape_over_background():
    for seed in range(20):
        sh = replace(random_scene(seed).shapes[0], texture="solid")
        scene = Scene(list(vocab.BACKGROUNDS)[seed % 5], (sh,))
        v = video(scene).astype(np.float64)
        c = cov(scene)[0][..., None]
        expect = rgb(scene.background) * (1 - c) + rgb(sh.color) * c
        assert np.abs(v - expect).max() <= 1.0


def test_a_subject_sits_on_a_disc_of_its_own_colour_and_a_base_kind_on_none():
    """The subject's body keeps the caption's colour; around it, out to RIM_SCALE of its
    radius, its own rim colour, which no base colour or background uses."""
    rims = {tuple(c) for c in vocab.SUBJECT_RIMS.values()}
    assert set(vocab.SUBJECT_RIMS) == set(SUBJECTS) and len(rims) == len(SUBJECTS)
    assert not rims & {tuple(c) for c in list(vocab.COLORS.values()) + list(vocab.BACKGROUNDS.values())}
    for subject in SUBJECTS:
        scene = Scene("black", (Shape(subject, "red", "large"),))
        frame = render_frame(scene, 0)
        assert is_color(frame[None], rgb("red"))[0].sum() > 10
        rim = is_color(frame[None], np.array(vocab.SUBJECT_RIMS[subject], np.uint8))[0]
        assert rim.sum() > 10 and cov(scene, frames=1)[0, 0][rim].max() == 0  # around the body, not on it
        ys, xs = np.nonzero(rim)
        cx, cy = scene.shapes[0].position(0)
        reach = np.hypot((xs + 0.5) / SIZE - cx, (ys + 0.5) / SIZE - cy).max()
        assert scene.shapes[0].radius < reach <= RIM_SCALE * scene.shapes[0].radius
    plain = render_video(Scene("black", (Shape("circle", "red", "large"),)), frames=1)
    assert not any(is_color(plain, np.array(c, np.uint8)).any() for c in rims)


# ----------------------------------------------------------------------------- 4. edits on pixels


def _check_remove(scene: Scene, spec: EditSpec) -> None:
    i = scene.find(spec.target)
    edited = apply_edit(scene, spec)
    v, e, c = video(scene), video(edited), cov(scene)
    diff = changed(v, e)
    assert diff.any()
    assert not np.any(diff & (c[i] == 0))
    others = np.delete(c, i, axis=0).sum(axis=0)
    alone = (c[i] > 0) & (others == 0)
    assert alone.any() and np.all(is_color(e, rgb(scene.background))[alone])


def test_remove_edit_pixels():
    scene = hand_scene()
    spec = EditSpec("remove", target="red circle")
    _check_remove(scene, spec)
    v, e = video(scene), video(apply_edit(scene, spec))
    assert is_color(v, rgb("red")).any() and not is_color(e, rgb("red")).any()
    for seed, s in enumerate(flat_scenes(40)):
        _check_remove(s, spec_for(s, "remove", seed))


def test_add_edit_pixels():
    for seed, scene in enumerate(flat_scenes(50)):
        spec = spec_for(scene, "add", seed)
        edited = apply_edit(scene, spec)
        new = edited.shapes[-1]
        assert edited.shapes[:-1] == scene.shapes
        assert (new.kind, new.color, new.size, new.texture) == (spec.kind, spec.color, spec.size, "solid")
        v, e, c = video(scene), video(edited), cov(edited)[-1]
        assert not np.any(changed(v, e) & (c == 0))
        assert (c == 1).any() and np.all(is_color(e, rgb(new.color))[c == 1])
        # it starts in the named region
        rx, ry = vocab.REGIONS[spec.region]
        assert tuple(map(float, new.position(0))) == pytest.approx((rx, ry))
        assert c[0, int(ry * SIZE), int(rx * SIZE)] == 1
        yy, xx = np.mgrid[0:SIZE, 0:SIZE]
        cx, cy = (c[0] * (xx + 0.5)).sum() / c[0].sum() / SIZE, (c[0] * (yy + 0.5)).sum() / c[0].sum() / SIZE
        assert abs(cx - rx) < 0.05 and abs(cy - ry) < 0.05


def test_background_edit_pixels():
    for seed, scene in enumerate([hand_scene()] + flat_scenes(40)):
        spec = spec_for(scene, "background", seed)
        edited = apply_edit(scene, spec)
        v, e, c = video(scene), video(edited), cov(scene)
        empty, full = c.sum(axis=0) == 0, c.max(axis=0) == 1
        assert empty.any() and full.any()
        assert np.all(is_color(v, rgb(scene.background))[empty])
        assert np.all(is_color(e, rgb(spec.background))[empty])
        assert np.array_equal(v[full], e[full])


def test_texture_edit_changes_only_the_target():
    for seed, scene in enumerate(flat_scenes(50)):
        spec = spec_for(scene, "texture", seed)
        i = scene.find(spec.target)
        diff = changed(video(scene), video(apply_edit(scene, spec)))
        assert diff.any() and not np.any(diff & (cov(scene)[i] == 0))


def test_texture_solid_to_striped_shows_the_darker_tone():
    scene = hand_scene()
    edited = apply_edit(scene, EditSpec("texture", target="blue square", texture="striped"))
    assert edited.shapes[1].texture == "striped"
    v, e, c = video(scene), video(edited), cov(scene)[1]
    assert not np.any(changed(v, e) & (c == 0))
    inside = c == 1
    tone_dark, tone_light = is_color(e, dark("blue")), is_color(e, rgb("blue"))
    assert not is_color(v, dark("blue")).any()
    assert tone_dark[inside].mean() > 0.2 and tone_light[inside].mean() > 0.2
    assert not np.any((tone_dark | tone_light) & (c == 0))


def test_local_recolour_changes_only_the_target_to_the_new_colour():
    scene = hand_scene()
    spec = EditSpec("local", target="red circle", color="yellow")
    edited = apply_edit(scene, spec)
    assert edited.shapes[0].name == "yellow circle"
    v, e, c = video(scene), video(edited), cov(scene)[0]
    assert not np.any(changed(v, e) & (c == 0))
    assert np.all(is_color(e, rgb("yellow"))[c == 1])
    assert not is_color(e, rgb("red")).any()
    n_colour = 0
    for seed, s in enumerate(flat_scenes(80)):
        spec = spec_for(s, "local", seed)
        if spec.color is None:
            continue
        n_colour += 1
        i = s.find(spec.target)
        v, e, c = video(s), video(apply_edit(s, spec)), cov(s)
        assert not np.any(changed(v, e) & (c[i] == 0))
        if s.shapes[i].texture == "solid":
            visible = (c[i] == 1) & (c[i + 1 :].sum(axis=0) == 0)  # not under a later shape
            assert np.all(is_color(e, rgb(spec.color))[visible])
    assert n_colour > 20


def test_local_resize_changes_area_in_the_right_direction():
    order = list(vocab.SIZES)
    n_size = 0
    for seed, s in enumerate([hand_scene()] + flat_scenes(80)):
        spec = spec_for(s, "local", seed)
        if spec.size is None:
            continue
        n_size += 1
        i = s.find(spec.target)
        edited = apply_edit(s, spec)
        assert edited.shapes[i].size == spec.size
        old, new = cov(s)[i], cov(edited)[i]
        grow = order.index(spec.size) > order.index(s.shapes[i].size)
        a_old, a_new = old.sum(axis=(1, 2)), new.sum(axis=(1, 2))
        assert np.all(a_new > a_old) if grow else np.all(a_new < a_old)
        diff = changed(video(s), video(edited))
        assert diff.any() and not np.any(diff & (old == 0) & (new == 0))
        x, y = motion(edited.shapes[i])
        r = edited.shapes[i].radius
        assert min(x.min(), y.min()) >= r - 1e-12 and max(x.max(), y.max()) <= 1 - r + 1e-12
    assert n_size > 20


def test_resize_moves_the_target_no_more_than_needed_to_fit():
    for seed in range(300):
        s = random_scene(seed)
        spec = spec_for(s, "local", seed)
        if spec.size is None:
            continue
        i = s.find(spec.target)
        new = apply_edit(s, spec).shapes[i]
        r = new.radius
        old0 = np.array([float(p) for p in s.shapes[i].position(0)])
        new0 = np.array([float(p) for p in new.position(0)])
        assert np.abs(new0 - old0).max() <= np.abs(np.clip(old0, r, 1 - r) - old0).max() + 1e-9, (seed, spec)


@pytest.mark.parametrize("kind", ["circle", "square"])
def test_style_outline_hollows_a_large_shape(kind):
    size = 64
    sh = Shape(kind, "orange", "large", x=0.5, y=0.5)
    scene = Scene("navy", (sh,))
    edited = apply_edit(scene, EditSpec("style", style="outline"))
    assert "drawn as outlines" in caption(edited) and "outline" not in caption(scene)
    v, e = video(scene, size, 2), video(edited, size, 2)
    c = (np.arange(size) + 0.5) / size - 0.5
    X, Y = np.meshgrid(c, c)
    r, w, half = sh.radius, 0.06, 0.5 / size
    if kind == "circle":
        d, scale, pix = np.hypot(X, Y), 1.0, half * np.sqrt(2)
    else:
        d, scale, pix = np.maximum(np.abs(X), np.abs(Y)), 0.86, half
    interior = d + pix < scale * (r - w)
    ring = (d - pix > scale * (r - w)) & (d + pix < scale * r)
    outside = d - pix > scale * r
    assert interior.sum() > 50 and ring.sum() > 50
    assert np.all(is_color(v, rgb("orange"))[:, interior])
    assert np.all(is_color(e, rgb("navy"))[:, interior])
    assert np.all(is_color(e, rgb("orange"))[:, ring])
    assert np.array_equal(v[:, outside], e[:, outside])


def test_style_outline_only_touches_shape_pixels():
    for seed, s in enumerate(flat_scenes(30)):
        e = video(apply_edit(s, EditSpec("style", style="outline")))
        diff = changed(video(s), e)
        assert diff.any() and not np.any(diff & (cov(s).sum(axis=0) == 0))


def test_style_blocky_gives_2x2_blocks():
    non_blocky = 0
    for seed, s in enumerate(flat_scenes(30)):
        edited = apply_edit(s, EditSpec("style", style="blocky"))
        assert "blocky" in caption(edited) and "blocky" not in caption(s)
        v, e = video(s).astype(np.int64), video(edited).astype(np.int64)
        corners = [e[:, dy::2, dx::2] for dy in (0, 1) for dx in (0, 1)]
        assert all(np.array_equal(corners[0], k) for k in corners[1:])
        block_mean = sum(v[:, dy::2, dx::2] for dy in (0, 1) for dx in (0, 1)) / 4
        assert np.abs(corners[0] - block_mean).max() <= 1
        vc = [v[:, dy::2, dx::2] for dy in (0, 1) for dx in (0, 1)]
        non_blocky += not all(np.array_equal(vc[0], k) for k in vc[1:])
    assert non_blocky == 30


@pytest.mark.parametrize("lighting", list(LIGHTING_FN))
def test_global_lighting_transforms_every_pixel(lighting):
    for s in [hand_scene()] + flat_scenes(15):
        edited = apply_edit(s, EditSpec("global", lighting=lighting))
        assert edited.shapes == s.shapes and edited.background == s.background
        v, e = video(s).astype(np.float64), video(edited).astype(np.float64)
        assert np.abs(e - LIGHTING_FN[lighting](v)).max() <= 1.0
        assert np.array_equal(cov(edited), cov(s))
        assert changed(v, e).mean() > 0.5


@pytest.mark.parametrize("task", TASKS)
def test_every_edit_keeps_the_motion(task):
    for seed in range(60):
        scene = random_scene(seed)
        if not applicable(scene, task):
            continue
        edit = make_edit(scene, task, np.random.default_rng(seed))
        edited = edit.scene
        target = edit.spec.target
        kept = [sh for sh in scene.shapes if sh.name != target]
        names = {sh.name: sh for sh in edited.shapes}
        for sh in kept:
            assert sh.name in names, (task, sh.name)
            assert names[sh.name] == sh
            for a, b in zip(motion(sh, 30), motion(names[sh.name], 30)):
                assert np.array_equal(a, b)
        if task in ("texture", "local"):  # the target keeps its velocity, and its motion
            i = scene.find(target)  # too unless resized (a bigger shape may need to move to fit)
            a, b = scene.shapes[i], edited.shapes[i]
            assert (a.vx, a.vy) == (b.vx, b.vy)
            if a.size == b.size:
                assert (a.x, a.y) == (b.x, b.y)
                assert np.array_equal(np.array(motion(a)), np.array(motion(b)))
        assert len(edited.shapes) == len(scene.shapes) + {"add": 1, "remove": -1}.get(task, 0)


def test_every_edit_changes_the_video():
    for seed in range(40):
        scene = random_scene(seed)
        v = video(scene, frames=4)
        for task in TASKS:
            if applicable(scene, task):
                e = video(make_edit(scene, task, np.random.default_rng(seed)).scene, frames=4)
                assert changed(v, e).any(), (seed, task)


FIVE = Scene("gray", tuple(Shape("circle", c) for c in list(vocab.COLORS)[:MAX_SHAPES]))  # a full scene
ONE = Scene("gray", (Shape("circle", "red"),))
ADD = dict(kind="square", color="red", size="small", region="center", vx=0.01, vy=0.0)


@pytest.mark.parametrize(
    "scene,spec,match",
    [
        (hand_scene(), EditSpec("remove", target="pink diamond"), "pink diamond"),
        (ONE, EditSpec("remove", target="red circle"), "only shape"),
        (FIVE, EditSpec("add", **ADD), f"{MAX_SHAPES} shapes"),
        (hand_scene(), EditSpec("add", **{**ADD, "kind": "circle"}), "unique"),
        (hand_scene(), EditSpec("add", **{**ADD, "region": None}), "region"),
        (hand_scene(), EditSpec("background", background="gray"), "already"),
        (hand_scene(), EditSpec("background", background="magenta"), "background"),
        (hand_scene(), EditSpec("texture", target="red circle", texture="solid"), "already"),
        (hand_scene(), EditSpec("texture", target="red circle", texture="plaid"), "texture"),
        (hand_scene(), EditSpec("local", target="red circle", color="yellow", size="large"), "exactly one"),
        (hand_scene(), EditSpec("local", target="red circle"), "exactly one"),
        (hand_scene(), EditSpec("local", target="red circle", color="red"), "already"),
        (hand_scene(), EditSpec("local", target="red circle", size="medium"), "already"),
        (hand_scene(shapes=(Shape("circle", "red"), Shape("circle", "blue"))),
         EditSpec("local", target="red circle", color="blue"), "unique"),
        (hand_scene(), EditSpec("style", style="flat"), "already"),
        (hand_scene(), EditSpec("global", lighting="normal"), "already"),
        (hand_scene(), EditSpec("recolour"), "unknown task"),
    ],
)
def test_apply_edit_rejects_inapplicable_edits(scene, spec, match):
    with pytest.raises(SceneError, match=match):
        apply_edit(scene, spec)


def test_applicable_matches_apply_edit():
    assert not applicable(FIVE, "add") and applicable(FIVE, "remove")
    assert applicable(ONE, "add") and not applicable(ONE, "remove")
    assert not applicable(ONE, "paint")
    for seed in range(30):
        scene = random_scene(seed, min_shapes=1, max_shapes=5)
        for task in TASKS:
            if applicable(scene, task):
                make_edit(scene, task, np.random.default_rng(seed))
            else:
                with pytest.raises(SceneError):
                    make_edit(scene, task, np.random.default_rng(seed))


# ----------------------------------------------------------------------------- 5. captions


STYLE_WORDS = {"outline": "outlines", "blocky": "blocky", "scanlines": "scanlines", "sketch": "sketch"}


def _check_caption(scene: Scene) -> None:
    cap = caption(scene)
    for attr, vocabulary in [("color", vocab.COLORS), ("kind", vocab.KINDS + SUBJECTS), ("size", vocab.SIZES)]:
        for word in vocabulary:
            assert words(cap, word) == sum(getattr(sh, attr) == word for sh in scene.shapes), (word, cap)
    for tex in vocab.TEXTURES[1:]:
        assert words(cap, tex) == sum(sh.texture == tex for sh in scene.shapes), (tex, cap)
    for sh in scene.shapes:
        assert sh.color in cap and sh.kind in cap
    assert words(cap, scene.background) == 1
    for style, word in STYLE_WORDS.items():
        assert (word in cap) == (scene.style == style), cap
    for lighting in LIGHTING_FN:
        assert words(cap, lighting) == (scene.lighting == lighting), cap


def test_caption_mentions_every_part_of_the_scene():
    for seed in range(200):
        _check_caption(random_scene(seed))
    _check_caption(Scene("teal", (Shape("star", "red", "large", "dotted"), Shape("cross", "white")), "sketch", "cool"))
    _check_caption(Scene("beige", (Shape("circle", "pink"),), "scanlines", "bright"))


@pytest.mark.parametrize("task", TASKS)
def test_edit_caption_and_instruction_match_the_edited_scene(task):
    n = 0
    for seed in range(100):
        scene = random_scene(seed)
        if not applicable(scene, task):
            continue
        n += 1
        edit = make_edit(scene, task, np.random.default_rng(seed))
        spec, ins = edit.spec, edit.instruction
        assert edit.output_caption == caption(edit.scene)
        assert edit.output_caption != caption(scene)
        assert ins == instruction(spec) and spec.task == task
        if spec.target is not None:
            assert spec.target in ins and spec.target in {sh.name for sh in scene.shapes}
        if task == "add":
            assert all(words(ins, w) for w in (spec.kind, spec.color, spec.size)) and spec.region in ins
        elif task == "remove":
            assert spec.target not in {sh.name for sh in edit.scene.shapes}
        elif task == "background":
            assert words(ins, spec.background) and edit.scene.background == spec.background
        elif task == "texture":
            assert words(ins, "plain" if spec.texture == "solid" else spec.texture)
        elif task == "local":
            assert words(ins, spec.color or spec.size)
        elif task == "style":
            assert spec.style in ins and edit.scene.style == spec.style
        elif task == "global":
            assert words(ins, spec.lighting) and edit.scene.lighting == spec.lighting
    assert n >= 90


def _appearance(scene: Scene) -> tuple:
    return (scene.background, scene.style, scene.lighting,
            tuple((sh.kind, sh.color, sh.size, sh.texture) for sh in scene.shapes))


def test_captions_tell_scenes_apart_but_ignore_motion():
    by_caption: dict[str, tuple] = {}
    scenes = [random_scene(seed, min_shapes=1, max_shapes=3) for seed in range(1500)]
    for s in scenes:
        by_caption.setdefault(caption(s), _appearance(s))
        assert by_caption[caption(s)] == _appearance(s)
    assert len(by_caption) > 1000
    # every single-attribute change gives a new caption
    base = Scene("gray", (Shape("circle", "red"), Shape("square", "blue", "small", "striped")))
    variants = [base, replace(base, shapes=base.shapes[::-1])]
    variants += [replace(base, background=b) for b in vocab.BACKGROUNDS if b != base.background]
    variants += [replace(base, style=s) for s in vocab.STYLES + RESERVED_STYLES if s != base.style]
    variants += [replace(base, lighting=g) for g in vocab.LIGHTINGS if g != base.lighting]
    for field, values in [("kind", vocab.KINDS + SUBJECTS), ("color", vocab.COLORS),
                          ("size", vocab.SIZES), ("texture", vocab.TEXTURES)]:
        variants += [base.with_shape(0, **{field: v}) for v in values if v != getattr(base.shapes[0], field)]
    caps = [caption(v) for v in variants]
    assert len(set(caps)) == len(caps)
    moved = base.with_shape(0, x=0.3, y=0.7, vx=0.05, vy=-0.02)
    assert caption(moved) == caption(base)


# ----------------------------------------------------------------------------- 6. reserved renders


def test_reserved_subjects_look_unlike_every_base_kind():
    size = 64
    for subject in SUBJECTS:
        for sz in vocab.SIZES:
            mask = cov(Scene("black", (Shape(subject, "red", sz),)), size, 1)[0, 0]
            assert mask.sum() > 0
            for kind in vocab.KINDS:
                other = cov(Scene("black", (Shape(kind, "red", sz),)), size, 1)[0, 0]
                assert np.abs(mask - other).sum() > 0.15 * mask.sum(), (subject, kind, sz)
        v = video(Scene("navy", (Shape(subject, "yellow", "large", "checkered", 0.4, 0.6, 0.03, -0.02),)), size, 3)
        assert v.dtype == np.uint8 and v.shape == (3, size, size, 3)
        assert is_color(v, rgb("yellow")).any() and is_color(v, dark("yellow")).any()


@pytest.mark.parametrize("style", RESERVED_STYLES)
def test_reserved_styles_look_unlike_every_base_style(style):
    for seed in range(5):
        s = flat(random_scene(seed))
        v = video(replace(s, style=style)).astype(np.float64)
        assert v.shape == (FRAMES, SIZE, SIZE, 3)
        for base in vocab.STYLES:
            b = video(replace(s, style=base)).astype(np.float64)
            assert np.abs(v - b).mean() > 5, (style, base)
        f = video(s).astype(np.float64)
        if style == "scanlines":
            assert np.array_equal(v[:, 0::2], f[:, 0::2])
            assert np.abs(v[:, 1::2] - 0.45 * f[:, 1::2]).max() <= 1
        else:  # a sepia-tinted grey: R >= G >= B everywhere
            assert np.all(v[..., 0] >= v[..., 1]) and np.all(v[..., 1] >= v[..., 2])
