"""distill/editor.py and `eve-fdd edit`: a trained student (tiny, saved as stage fdd saves it)
edits videos of any length window by window; bad inputs are named."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from eve_fdd.cli import main
from eve_fdd.config import Config
from eve_fdd.data.video import read_video, write_gif, write_mp4
from eve_fdd.distill.batch import EditBatch
from eve_fdd.distill.data import edit_labels
from eve_fdd.distill.editor import LORA, chained_windows, load_editor
from eve_fdd.distill.student import Student
from eve_fdd.diffusion import NoiseSchedule, make_scheduler
from eve_fdd.models.adapters import LORA_WEIGHTS, edit_adapter, load_video_adapter, video_adapter
from eve_fdd.models.backbone import load_backbone
from eve_fdd.models.registry import trained_path
from eve_fdd.models.space import pixels_from_uint8
from eve_fdd.world import make_edit, random_scene, render_video
from eve_fdd.world.grammar import task_of
from eve_fdd.world.vocab import TASKS

from conftest import TINY_BACKBONE

CFG = Config(models={"backbone": {"tiny": TINY_BACKBONE}}, diffusion={"inference_steps": 4}, video_adapter={"heads": 2})
CAPTION = "a small red circle on a white background"


@pytest.fixture(scope="module")
def trained(tiny_backbone_dir, tmp_path_factory):
    """Stage outputs as `eve-fdd edit` reads them: backbone, edit and video adapters, and an
    fdd directory whose LoRA is not the zero-effect initial one."""
    root = tmp_path_factory.mktemp("editor")
    bb = load_backbone(trained_path(tiny_backbone_dir))
    torch.manual_seed(0)
    cn = edit_adapter(bb.unet)
    with torch.no_grad():
        for p in cn.parameters():
            p.add_(0.05 * torch.randn_like(p))  # zero convs made non-zero: the edit adapter acts
    cn.save_pretrained(root / "edit_adapter" / "model")
    video_adapter(bb.unet, heads=2, max_frames=32).save_motion_modules(str(root / "video_adapter" / "model"))
    for stage in ("edit_adapter", "video_adapter"):
        (root / stage / "model.json").write_text(json.dumps({"path": str(root / stage / "model")}))
    schedule = NoiseSchedule.from_scheduler(make_scheduler(CFG.diffusion))
    student = Student(load_video_adapter(bb.unet, str(root / "video_adapter" / "model")), cn, schedule, lora_name=LORA, lora_rank=2)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(0.1 * torch.randn_like(p))
    lora = root / "fdd" / "model" / "lora"
    student.unet.save_lora_adapter(str(lora), adapter_name=LORA)
    (root / "fdd" / "model.json").write_text(json.dumps({"variant": "full", "lora": str(lora), "trainable": "lora"}))
    (root / "params.yaml").write_text(yaml.safe_dump(CFG.model_dump(mode="json")))
    return dict(root=root, backbone=tiny_backbone_dir, edit=root / "edit_adapter", video=root / "video_adapter", model=root / "fdd",
                params=root / "params.yaml")


def _editor(trained):
    return load_editor(CFG, trained["model"], trained["backbone"], trained["edit"], trained["video"])


def _video(frames: int, seed: int = 1) -> np.ndarray:
    return render_video(random_scene(seed), frames, 32)


def test_windows_chain_on_their_last_frame():
    assert chained_windows(8, 8) == [slice(0, 8)]
    assert chained_windows(16, 8) == [slice(0, 8), slice(7, 15), slice(14, 16)]
    assert chained_windows(15, 8) == [slice(0, 8), slice(7, 15)]
    assert chained_windows(3, 8) == [slice(0, 3)]
    assert chained_windows(1, 8) == []
    with pytest.raises(ValueError, match="at least 2"):
        chained_windows(8, 1)


def test_task_is_read_from_every_kind_of_world_instruction():
    rng = np.random.default_rng(0)
    seen = set()
    for seed in range(40):
        scene = random_scene(seed)
        for task in TASKS:
            try:
                edit = make_edit(scene, task, rng)
            except Exception:  # not applicable to this scene
                continue
            assert task_of(edit.instruction) == task, edit.instruction
            seen.add(task)
    assert seen == set(TASKS)
    assert task_of("Replace the red circle with a star.") == "local"  # the label the edit adapter knows "replace" by
    assert task_of("sing a song about circles") is None


def test_the_saved_lora_is_what_the_editor_runs(trained):
    editor = _editor(trained)
    saved = load_file(trained["model"] / "model" / "lora" / LORA_WEIGHTS)
    params = dict(editor.student.unet.named_parameters())
    for key, value in saved.items():
        name = key.replace(".lora_A.weight", f".lora_A.{LORA}.weight").replace(".lora_B.weight", f".lora_B.{LORA}.weight")
        assert torch.equal(params[name], value), key
    assert not any(p.requires_grad for p in editor.student.unet.parameters())


def test_a_long_video_is_edited_window_after_window(trained):
    editor = _editor(trained)
    long = editor.edit(_video(13), "make the background black", CAPTION, "background", seed=3, progress=False)
    short = editor.edit(_video(13)[:8], "make the background black", CAPTION, "background", seed=3, progress=False)
    assert long.shape == (13, 32, 32, 3) and long.dtype == np.uint8
    np.testing.assert_array_equal(long[:8], short)  # the first window does not see what follows
    again = editor.edit(_video(13), "make the background black", CAPTION, "background", seed=3, progress=False)
    np.testing.assert_array_equal(long, again)
    other = editor.edit(_video(13), "make the background black", CAPTION, "background", seed=4, progress=False)
    assert not np.array_equal(long[8:], other[8:])


def test_the_second_window_is_conditioned_on_the_first_windows_last_frame(trained, monkeypatch):
    editor = _editor(trained)
    firsts = []
    generate = editor.student.generate

    def spy(noise, batch, timesteps):
        firsts.append(batch.first.clone())
        return generate(noise, batch, timesteps)

    monkeypatch.setattr(editor.student, "generate", spy)
    batch = EditBatch(pixels_from_uint8(_video(12)[None]), *(editor.backbone.encode_text([t]) for t in (CAPTION, "make the background black")),
                      edit_labels(["background"]))
    out = editor.edit_batch(batch, torch.Generator().manual_seed(0))
    assert len(firsts) == 2
    torch.testing.assert_close(firsts[0], out[:, :, 0])
    torch.testing.assert_close(firsts[1], out[:, :, 7])


def test_cli_edits_a_video_file(trained, tmp_path):
    src = tmp_path / "in.mp4"
    write_mp4(render_video(random_scene(2), 10, 64), src, fps=8)
    out = tmp_path / "out" / "edited.gif"
    rc = main(["edit", str(src), "--instruction", "make the background black", "--caption", CAPTION, "-o", str(out),
               "--model", str(trained["model"]), "--backbone", str(trained["backbone"]), "--edit-adapter", str(trained["edit"]),
               "--video-adapter", str(trained["video"]), "--params", str(trained["params"]), "--quiet", "--scale", "2"])
    assert rc == 0
    frames, fps = read_video(out)
    assert frames.shape == (10, 64, 64, 3) and fps == pytest.approx(8, rel=0.05)  # GIF delays are in 1/100 s


@pytest.mark.parametrize("case, message", [
    ("unreadable", "not a readable video"),
    ("missing_file", "no such file"),
    ("no_model", "model.json: not found"),
    ("unknown_word", "does not know ['zebra']"),
    ("no_task", "cannot tell the task"),
    ("bad_suffix", "must end in .mp4 or .gif"),
    ("too_small", "need at least 16 pixels"),
])
def test_cli_names_what_is_wrong(trained, tmp_path, capsys, case, message):
    src = tmp_path / "in.gif"
    write_gif(render_video(random_scene(2), 4, 32), src, fps=8)
    args = dict(input=str(src), instruction="make the background black", caption=CAPTION, model=str(trained["model"]), out=str(tmp_path / "o.gif"))
    if case == "unreadable":
        src = tmp_path / "broken.mp4"
        src.write_bytes(b"not a video at all")
        args["input"] = str(src)
    elif case == "missing_file":
        args["input"] = str(tmp_path / "absent.mp4")
    elif case == "no_model":
        args["model"] = str(tmp_path / "nowhere")
    elif case == "unknown_word":
        args["caption"] = "a zebra on a white background"
    elif case == "no_task":
        args["instruction"] = "sing a song"
    elif case == "bad_suffix":
        args["out"] = str(tmp_path / "o.avi")
    elif case == "too_small":
        write_gif(render_video(random_scene(2), 4, 8), src, fps=8)
    rc = main(["edit", args["input"], "--instruction", args["instruction"], "--caption", args["caption"], "-o", args["out"],
               "--model", args["model"], "--backbone", str(trained["backbone"]), "--edit-adapter", str(trained["edit"]),
               "--video-adapter", str(trained["video"]), "--params", str(trained["params"]), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and message in err, err
    assert not (tmp_path / "o.gif").exists()


def test_every_command_says_what_it_does_with_an_example(capsys):
    """`eve-fdd SUB --help`: a one-line description and an `eve-fdd SUB ...` example (issue 30)."""
    for words in (["params"], ["inspect"], ["render"], ["edit"], ["human-eval"], ["human-eval", "export"], ["human-eval", "score"]):
        with pytest.raises(SystemExit) as done:
            main([*words, "--help"])
        out = capsys.readouterr().out
        assert done.value.code == 0 and f"example:\n  eve-fdd {' '.join(words)} " in out, out
