"""Stage `fdd_personal` (library part) on tiny models: a concept's instructions are split and
their training inputs drawn by the LoRA, the student (a new LoRA beside the fused concept
LoRA) trains, the three settings are scored against the ground truth, bad inputs are named."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from eve_fdd.config import Config
from eve_fdd.data import tables
from eve_fdd.distill.data import edit_labels, ground_truth, load_concept_items, split_items
from eve_fdd.models.adapters import ConceptTokens, add_lora, edit_adapter
from eve_fdd.models.backbone import load_backbone
from eve_fdd.models.registry import trained_path
from eve_fdd.stages import fdd_personal, videos
from eve_fdd.world import EditSpec, Scene, apply_edit, caption, instruction

from conftest import TINY_BACKBONE, assert_a_killed_run_resumes_exactly

CFG = Config(
    models={"backbone": {"tiny": TINY_BACKBONE}},
    diffusion={"inference_steps": 4},
    videos={"count": 12, "shard_size": 12, "samples": 0},
    loras={"concepts": ["star", "sketch"], "detector_steps": 5, "detector_renders": 16},
    fdd={"k": 2, "teacher_steps": 2, "checkpoint_every": 2, "log_every": 1, "sample_every": 2, "lora_rank": 2,
         "discriminator": {"hidden_size": 16, "layers": 2, "heads": 2, "patch_size": 8, "feature_layers": [1, 2], "head_width": 16, "head_heads": 2}},
    fdd_personal={"concepts": ["star"], "iterations": 3, "batch_size": 2, "pool_size": 3, "pool_refresh": 0.34, "held_out": 0.25, "eval_repeats": 2, "samples": 2},
)


def _row(video: dict, spec: EditSpec | None, concept: str, set_: str) -> dict:
    scene = Scene.from_json(video["scene"])
    ok = spec is not None
    return dict(row_id=f"{video['video_id']}/{spec.task if ok else 'add'}/{concept}", set=set_, video_id=video["video_id"],
                task=spec.task if ok else "add", concept=concept, input_caption=video["caption"],
                instruction=instruction(spec) if ok else "", output_caption=caption(apply_edit(scene, spec, True)) if ok else "",
                edit_spec=spec.to_json() if ok else None, model="test.gguf", model_sha256="0" * 64, prompt_version="t", seed=0,
                attempts=1, raw_output="", status="accepted" if ok else "rejected", reason=None if ok else "test", completion_tokens=0)


@pytest.fixture(scope="module")
def inputs(tiny_backbone_dir, tmp_path_factory):
    """Videos, a subject/style instruction table (star: adds and one replace, one rejected row;
    sketch: style edits), a tiny edit adapter and a star LoRA as stage `loras` writes it."""
    root = tmp_path_factory.mktemp("fdd-personal-inputs")
    rows = videos.render_shapes(CFG, range(CFG.videos.count))
    tables.write_table(tables.VIDEOS, rows, root / "videos.parquet")
    instructions = []
    for i, v in enumerate(rows):
        scene = Scene.from_json(v["scene"])
        if i == 0:
            spec = None
        elif i == 1:
            spec = EditSpec(task="replace", target=scene.shapes[0].name, kind="star")
        else:
            spec = EditSpec(task="add", kind="star", color="white", size="large", region="top left", vx=0.0, vy=0.0)
        instructions.append(_row(v, spec, "star", "subject"))
        if scene.style != "sketch":
            instructions.append(_row(v, EditSpec(task="style", style="sketch"), "sketch", "style"))
    tables.write_table(tables.INSTRUCTIONS, instructions, root / "subject_style.parquet")
    bb = load_backbone(trained_path(tiny_backbone_dir))
    edit_adapter(bb.unet).save_pretrained(root / "edit_adapter" / "model")
    (root / "edit_adapter" / "model.json").write_text(json.dumps({"path": str(root / "edit_adapter" / "model")}))
    add_lora(bb.unet, "star", rank=2)
    bb.unet.save_lora_adapter(str(root / "loras" / "star" / "model"), adapter_name="star")
    tokens = ConceptTokens(bb.text_encoder, bb.tokenizer, ["star"])
    with torch.no_grad():
        tokens.rows.add_(1.0)  # as if learned with the LoRA
    (root / "loras" / "star" / "model.json").write_text(json.dumps({"path": str(root / "loras" / "star" / "model"), "concept": "star",
                                                                   "token_embeddings": str(tokens.save(root / "loras" / "star" / "model"))}))
    return dict(instructions=root / "subject_style.parquet", videos=root / "videos.parquet", backbone_dir=tiny_backbone_dir,
                edit_dir=root / "edit_adapter", lora_dir=root / "loras" / "star")


def _build(inputs, tmp_path, concept="star", cfg=CFG, lora_dir=None):
    return fdd_personal.build(cfg, concept, inputs["instructions"], inputs["videos"], inputs["backbone_dir"], inputs["edit_dir"],
                              lora_dir or inputs["lora_dir"], tmp_path / concept, tmp_path / "ckpt" / concept, progress=False)


def test_concept_items_split_and_ground_truth(inputs):
    items = load_concept_items(inputs["instructions"], inputs["videos"], "star", 32, 2)
    assert len(items) == 11 and items.skipped == {"instruction_rejected": 1} and items.frames.shape[1:] == (1, 32, 32, 3)
    train, held = split_items(items, 0.25, seed=0)
    assert (len(train), len(held)) == (8, 3) and not set(train.row_ids) & set(held.row_ids)
    assert split_items(items, 0.25, seed=0)[1].row_ids == held.row_ids  # seeded
    i = items.tasks.index("replace")
    truth = ground_truth(items, i, 1, 32, 2, allow_reserved=True)
    assert truth.shape == items.frames[i].shape and not np.array_equal(truth, items.frames[i])
    assert edit_labels(["replace", "add"]).tolist() == edit_labels(["local", "add"]).tolist()
    with pytest.raises(ValueError, match="no accepted instructions for concept 'cross'"):
        load_concept_items(inputs["instructions"], inputs["videos"], "cross", 32, 2)


def test_the_stage_trains_the_new_lora_only_and_scores_three_settings(inputs, tmp_path):
    out = _build(inputs, tmp_path)
    m = out.metrics
    assert m["steps"] == 3 and (m["train_items"], m["eval_items"]) == (8, 3) and m["skipped.instruction_rejected"] == 1
    for setting in ("edit_only", "plug_and_play", "aligned", "identity"):
        for metric in ("all", "changed", "kept", "present"):
            assert np.isfinite(m[f"eval.{setting}.{metric}.mean"]), (setting, metric)
    assert m["eval.identity.kept.mean"] == 0.0 and 0 <= m["eval.ground_truth.present.mean"] <= 1
    assert {"sds_concept", "sds_edit"} <= set(out.curve[0]) and any("adv_concept" in r for r in out.curve)
    from safetensors.torch import load_file

    saved = load_file(tmp_path / "ckpt" / "star" / "checkpoints" / "step-000003" / "weights.safetensors")
    student = [k for k in saved if k.startswith(("unet.", "controlnet."))]
    assert student and all("lora_" in k for k in student)  # the fused concept LoRA and the ControlNet stay frozen
    assert (tmp_path / "star" / "model" / "lora" / "pytorch_lora_weights.safetensors").is_file()
    assert (tmp_path / "star" / "samples.png").is_file() and (tmp_path / "star" / "drawn_inputs.png").is_file()
    assert sorted(p.name for p in (tmp_path / "star" / "progress").iterdir()) == ["step-000000.gif", "step-000002.gif"]
    assert (tmp_path / "star" / "timesteps.png") in out.artifacts
    assert _build(inputs, tmp_path).metrics["resumed_from"] == 3  # rerun resumes, trains nothing
    # killed after its step-2 checkpoint: the pool and every weight as the uninterrupted run's, bit for bit
    assert_a_killed_run_resumes_exactly(
        lambda run, on_log: fdd_personal.build(CFG, "star", inputs["instructions"], inputs["videos"], inputs["backbone_dir"], inputs["edit_dir"],
                                               inputs["lora_dir"], run / "star", run / "ckpt", progress=False, on_log=on_log), tmp_path / "resume", 2, 2)


def test_the_teachers_read_the_concept_word_as_stage_loras_learned_it(inputs):
    backbone, lora_path = fdd_personal.concept_backbone(CFG, "star", inputs["backbone_dir"], inputs["lora_dir"])
    assert lora_path == str(inputs["lora_dir"] / "model")
    plain = load_backbone(trained_path(inputs["backbone_dir"]))
    star = plain.tokenizer.convert_tokens_to_ids("star")
    learned = load_file(inputs["lora_dir"] / "model" / "learned_embeds.safetensors")["star"]
    torch.testing.assert_close(backbone.text_encoder.get_input_embeddings().weight[star], learned)
    torch.testing.assert_close(plain.text_encoder.get_input_embeddings().weight[star] + 1.0, learned)
    circle = ["a small red circle on a navy background"]
    torch.testing.assert_close(backbone.encode_text(circle), plain.encode_text(circle))  # other words untouched


def test_bad_inputs_are_named(inputs, tmp_path):
    from eve_fdd.config import ConfigError, load_config

    from conftest import ROOT

    with pytest.raises(ConfigError, match=r"fdd_personal.concepts \['dog'\]: not in loras.concepts"):
        load_config(ROOT / "params.yaml", {"fdd_personal.concepts": ["star", "dog"]})
    with pytest.raises(ValueError, match="'cross' is not in loras.concepts"):
        _build(inputs, tmp_path, "cross")
    with pytest.raises(FileNotFoundError, match="run stage loras@sketch first"):
        _build(inputs, tmp_path, "sketch", lora_dir=tmp_path / "no-lora")
    video_set = tmp_path / "videos_set.parquet"
    rows = tables.read_table(tables.INSTRUCTIONS, inputs["instructions"])
    tables.write_table(tables.INSTRUCTIONS, [dict(r, set="videos") for r in rows], video_set)
    with pytest.raises(ValueError, match="belongs to the 'videos' set"):
        load_concept_items(video_set, inputs["videos"], "star", 32, 2)
