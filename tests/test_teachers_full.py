"""The teacher stages at full scale (library part), trained instead of resolved: SD 1.5's
classes in latent space (tiny and random, tests/full_profile.py) on a tiny image-edit dataset
ingested from local files, the user's clips, and a folder of the user's images of a concept."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from eve_fdd.config import Config
from eve_fdd.data import tables
from eve_fdd.models.adapters import TASK_LABELS
from eve_fdd.models.registry import build_backbone, load_edit_adapter, trained_path
from eve_fdd.stages import edit_adapter, edit_pairs, lora, video_adapter

from conftest import assert_a_killed_run_resumes_exactly
from full_profile import build_tiny_full, edit_pair_folder, full_stage_inputs, lora_image_folder

FRAME = 32


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return build_tiny_full(tmp_path_factory.mktemp("full-teachers"), frame_size=FRAME)


def full_cfg(models, pairs_root, **edit) -> Config:
    e = {"conditioning_channels": [16, 32], "batch_size": 2, "eval_pairs": 3, "eval_steps": 2, "samples": 2,
         "train": {"steps": 3, "checkpoint_every": 2, "log_every": 1, "mixed_precision": "no"}} | edit
    return Config(profile="full", models={"backbone": {"pretrained": str(models["backbone"])}},
                  diffusion={"prediction_type": "epsilon", "zero_terminal_snr": False, "inference_steps": 4},
                  edit_pairs={"test_fraction": 0.4, "samples": 2, "ingest": {"source": str(pairs_root), "size": FRAME}},
                  edit_adapter=e)


@pytest.fixture(scope="module")
def pairs(models, tmp_path_factory):
    """The tiny dataset through stage edit_pairs at full scale, and a backbone stage output."""
    root = tmp_path_factory.mktemp("edit-data")
    out = edit_pairs.run(full_cfg(models, edit_pair_folder(root / "raw")), root / "edit_pairs")
    backbone_dir = root / "backbone"
    backbone_dir.mkdir()
    (backbone_dir / "model.json").write_text(json.dumps({"path": str(models["backbone"]), "trained": False}))
    return out, backbone_dir


def test_ingested_pairs_have_a_task_each_and_both_splits(models, pairs):
    out, _ = pairs
    m = out.metrics
    assert m["pairs"] == 8 and m["rejected"] == 0 and m["pretrained_edit_adapter"] == 0
    assert (m["task_from_data"], m["task_from_rule"]) == (4, 4)
    assert m["task.background"] == 3 and m["task.remove"] == 3 and m["train"] and m["test"]


def test_the_edit_adapter_trains_in_latent_space_and_resumes_exactly(models, pairs, tmp_path):
    from diffusers import ControlNetModel

    out, backbone_dir = pairs
    cfg = full_cfg(models, "unused")
    whole, _ = assert_a_killed_run_resumes_exactly(
        lambda run, on_log: edit_adapter.build(cfg, out.pairs, backbone_dir, run / "out", run / "ckpt", progress=False, on_log=on_log),
        tmp_path, 2, 2)
    m = whole.metrics
    assert m["steps"] == 3 and m["train_pairs"] + m["test_pairs"] <= 8
    assert np.isfinite(m["check.adapter.all.mean"]) and m["check.identity.all.mean"] > 0
    assert not any(k.startswith("check.adapter.present") for k in m)  # no scenes at full scale: no detector
    info = json.loads((tmp_path / "whole/out/model.json").read_text())
    assert info["trained"] is True
    trained = ControlNetModel.from_pretrained(info["path"])
    assert trained.config.num_class_embeds == len(TASK_LABELS)
    assert tuple(trained.config.conditioning_embedding_out_channels) == (16, 32)
    # FDD's teacher loads it against the latent backbone (its condition encoder matches the VAE's x2)
    backbone = build_backbone(cfg, trained_path(backbone_dir))
    assert load_edit_adapter(tmp_path / "whole/out", backbone).config.num_class_embeds == len(TASK_LABELS)
    assert (tmp_path / "whole/out/samples.png").stat().st_size > 0


def test_training_can_start_from_a_given_controlnet(models, pairs, tmp_path):
    from diffusers import ControlNetModel

    out, backbone_dir = pairs
    given = ControlNetModel.from_pretrained(models["controlnet"])
    with torch.no_grad():  # not a copy of the backbone any more: a ControlNet trained elsewhere
        for p in given.parameters():
            p.add_(0.25)
    given.save_pretrained(tmp_path / "given")
    cfg = full_cfg(models, "unused", init=str(tmp_path / "given"), conditioning_channels=[16],  # the given encoder wins
                   train={"steps": 1, "log_every": 1, "mixed_precision": "no", "lr": 1e-9})
    m = edit_adapter.build(cfg, out.pairs, backbone_dir, tmp_path / "out", tmp_path / "ckpt", progress=False).metrics
    assert m["steps"] == 1
    trained = ControlNetModel.from_pretrained(json.loads((tmp_path / "out/model.json").read_text())["path"]).state_dict()
    start = given.state_dict()
    assert set(trained) == set(start)
    far = [k for k, v in trained.items() if not k.startswith("class_embedding.") and not torch.allclose(v, start[k], atol=1e-6)]
    assert not far  # one step at lr 1e-9 from the given weights; only the task embedding is new


def test_bad_setups_are_named(models, pairs, tmp_path):
    out, backbone_dir = pairs
    with pytest.raises(ValueError, match=r"edit_adapter.conditioning_channels.*expected 2 entries"):
        edit_adapter.build(full_cfg(models, "unused", conditioning_channels=[16]), out.pairs, backbone_dir, tmp_path / "a",
                           tmp_path / "ca", progress=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "README.md").write_text("no dataset here\n")
    none = edit_pairs.run(full_cfg(models, empty), tmp_path / "none")
    assert none.metrics["pairs"] == 0 and none.metrics["pretrained_edit_adapter"] == 1
    with pytest.raises(ValueError, match=r"no edit pairs.*edit_adapter.pretrained"):
        edit_adapter.build(full_cfg(models, empty), none.pairs, backbone_dir, tmp_path / "b", tmp_path / "cb", progress=False)
    with pytest.raises(FileNotFoundError, match="edit_adapter.pretrained"):
        edit_adapter.build(full_cfg(models, empty, pretrained=str(tmp_path / "nowhere")), none.pairs, backbone_dir, tmp_path / "c",
                           progress=False)


def video_cfg(models, **over) -> Config:
    v = {"pretrained": "", "heads": 2, "batch_size": 2, "eval_clips": 1, "eval_steps": 2, "samples": 1,
         "train": {"steps": 3, "checkpoint_every": 2, "log_every": 1, "mixed_precision": "no"}} | over
    return Config(profile="full", models={"backbone": {"pretrained": str(models["backbone"])}},
                  diffusion={"prediction_type": "epsilon", "zero_terminal_snr": False, "inference_steps": 4},
                  videos={"fps": 4, "ingest": {"frames": 4, "stride": 2, "size": FRAME}}, video_adapter=v)


@pytest.fixture(scope="module")
def clips(models, tmp_path_factory):
    """The user's clips as stage videos ingests them (the last one held out) and a backbone stage output."""
    return full_stage_inputs(models, tmp_path_factory.mktemp("video-data"), video_cfg(models).videos.ingest)


def test_the_video_adapter_trains_on_the_users_clips_in_latent_space_and_resumes_exactly(models, clips, tmp_path):
    from diffusers import MotionAdapter

    cfg = video_cfg(models)
    whole, _ = assert_a_killed_run_resumes_exactly(
        lambda run, on_log: video_adapter.build(cfg, clips["backbone_dir"], run / "out", run / "ckpt", progress=False, on_log=on_log,
                                                videos=clips["videos"]), tmp_path, 2, 2)
    m = whole.metrics
    assert m["steps"] == 3 and m["params_motion"] > 0
    assert np.isfinite(m["check.frame_change"]) and m["check.frame_change_ground_truth"] > 0
    assert "check.shape_recall" not in m and "check.independent.frame_change" in m  # real clips: no detector
    info = json.loads((tmp_path / "whole/out/model.json").read_text())
    assert info["trained"] is True and MotionAdapter.from_pretrained(info["path"]) is not None
    # FDD's video teacher loads it over the latent backbone
    from eve_fdd.models.adapters import load_video_adapter

    backbone = build_backbone(cfg, trained_path(clips["backbone_dir"]))
    assert type(load_video_adapter(backbone.unet, info["path"])).__name__ == "UNetMotionModel"


def test_the_video_adapter_can_start_from_a_given_motion_adapter_or_be_resolved(models, clips, tmp_path):
    cfg = video_cfg(models, init=str(models["motion"]), train={"steps": 1, "log_every": 1, "mixed_precision": "no"})
    m = video_adapter.build(cfg, clips["backbone_dir"], tmp_path / "out", tmp_path / "ckpt", progress=False, videos=clips["videos"]).metrics
    assert m["steps"] == 1 and "check.init.frame_change" in m  # before training: the given adapter
    resolved = video_adapter.build(video_cfg(models, pretrained=str(models["motion"])), clips["backbone_dir"], tmp_path / "r",
                                   progress=False, videos=clips["videos"])
    assert resolved.metrics == {"trained": 0}
    assert json.loads((tmp_path / "r/model.json").read_text())["path"] == str(models["motion"])
    with pytest.raises(FileNotFoundError, match="video_adapter.init"):
        video_adapter.build(video_cfg(models, init=str(tmp_path / "nowhere")), clips["backbone_dir"], tmp_path / "x",
                            progress=False, videos=clips["videos"])


def lora_cfg(models, images_dir, **over) -> Config:
    lo = {"concepts": ["watercolour"], "pretrained": {}, "images_dir": str(images_dir), "prior_images": 2, "size": FRAME,
          "batch_size": 2, "eval_samples": 1, "eval_steps": 2, "samples": 2,
          "train": {"steps": 3, "checkpoint_every": 2, "log_every": 1, "mixed_precision": "no"}} | over
    return Config(profile="full", models={"backbone": {"pretrained": str(models["backbone"])}},
                  diffusion={"prediction_type": "epsilon", "zero_terminal_snr": False, "inference_steps": 4},
                  loras=lo, fdd_personal={"concepts": ["watercolour"]})


@pytest.fixture(scope="module")
def concept_images(models, tmp_path_factory):
    """raw/loras/watercolour as the user gives it (one RGBA image among the PNGs: a reject), and a backbone stage output."""
    from PIL import Image

    root = tmp_path_factory.mktemp("lora-data")
    folder = lora_image_folder(root / "raw" / "loras" / "watercolour")
    Image.new("RGBA", (FRAME, FRAME), (200, 30, 30, 128)).save(folder / "rgba.png")
    with (folder / "captions.csv").open("a") as handle:
        handle.write("rgba.png,a red square with alpha watercolour painting\n")
    backbone_dir = root / "backbone"
    backbone_dir.mkdir()
    (backbone_dir / "model.json").write_text(json.dumps({"path": str(models["backbone"]), "trained": False}))
    return root / "raw" / "loras", backbone_dir


def test_prior_captions_drop_the_concepts_words():
    from eve_fdd.train.lora import concept_words, prior_caption

    assert concept_words("my_dog") == ("my", "dog") and concept_words("oil-paint") == ("oil", "paint")
    assert prior_caption("a red square on a blue background, watercolour painting", "watercolour") == \
        "a red square on a blue background, painting"
    assert prior_caption("Watercolour , a cat ,, in the watercolours", "watercolour") == "a cat, in the watercolours"  # whole words
    assert prior_caption("my_dog on grass, my dog asleep", "my_dog") == "on grass, asleep"
    assert prior_caption("watercolour", "watercolour") == ""  # nothing but the concept: the unconditional prior


def test_the_lora_trains_on_the_users_images_in_latent_space_and_resumes_exactly(models, concept_images, tmp_path):
    from eve_fdd.models.adapters import LORA_WEIGHTS
    from eve_fdd.stages.fdd_personal import concept_backbone

    images_dir, backbone_dir = concept_images
    cfg = lora_cfg(models, images_dir)
    whole, _ = assert_a_killed_run_resumes_exactly(
        lambda run, on_log: lora.build(cfg, "watercolour", backbone_dir, run / "out", run / "ckpt", progress=False, on_log=on_log),
        tmp_path, 2, 2)
    m = whole.metrics
    assert m["steps"] == 3 and m["params_lora"] > 0 and m["params_token_embeddings"] == 0  # no Shapes words: no embeddings
    assert (m["train_images"], m["prior_images"], m["rejected"]) == (6, 2, 1)
    assert np.isfinite(m["final_loss"]) and m["check.lora_change"] >= 0 and m["check.prior_change"] >= 0
    assert np.isfinite(m["check.lora_change"]) and np.isfinite(m["check.prior_change"])
    assert not any(k.startswith("check.present") for k in m)  # no detector at full scale
    out = tmp_path / "whole/out"
    (reject,) = tables.read_table(tables.REJECTS, out / "rejects.parquet")
    assert reject["reason"] == "not_rgb" and reject["item"].endswith("rgba.png") and "line 8" in reject["detail"]
    info = json.loads((out / "model.json").read_text())
    assert info["trained"] is True and info["token_embeddings"] is None and info["concept"] == "watercolour"
    backbone = build_backbone(cfg, trained_path(backbone_dir))
    assert type(backbone.space).__name__ == "LatentSpace"
    backbone.unet.load_lora_adapter(info["path"], weight_name=LORA_WEIGHTS, prefix=None, adapter_name="watercolour")
    assert sum(p.numel() for n, p in backbone.unet.named_parameters() if "lora_" in n) == m["params_lora"]
    assert (out / "samples.png").stat().st_size > 0
    # stage fdd_personal reads it as it is written
    _, path = concept_backbone(cfg, "watercolour", backbone_dir, out)
    assert path == info["path"]


def test_bad_image_folders_are_named(tmp_path):
    from PIL import Image

    from eve_fdd.data.image_folder import read_image_folder
    from eve_fdd.data.ingest import IngestError

    with pytest.raises(ValueError, match=r"loras[/\\]watercolour: not found.*loras.pretrained.watercolour"):
        lora.build(lora_cfg({"backbone": "unused"}, tmp_path / "loras"), "watercolour", tmp_path / "bb", tmp_path / "out", progress=False)
    folder = tmp_path / "loras" / "ink"
    folder.mkdir(parents=True)
    Image.new("RGB", (40, 24), (10, 20, 30)).save(folder / "a.png")
    with pytest.raises(IngestError, match=r"ink[/\\]captions.csv: captions file not found"):
        read_image_folder(folder, 16, "loras@ink")
    (folder / "captions.csv").write_text("file,text\na.png,ink\n")
    with pytest.raises(IngestError, match=r"missing columns \['caption'\]"):
        read_image_folder(folder, 16, "loras@ink")
    Image.new("RGBA", (16, 16)).save(folder / "b.png")
    Image.new("RGB", (16, 16)).save(folder / "c.png")
    (folder / "d.png").write_bytes(b"not a png")
    (folder / "captions.csv").write_text("file,caption\na.png,an ink drawing\nb.png,rgba ink\na.png,again\nd.png,broken\n"
                                         "e.png,gone\n,no file\nc.png,\n")
    images, captions, rejects = read_image_folder(folder, 16, "loras@ink")
    assert images.shape == (1, 16, 16, 3) and captions == ["an ink drawing"]  # 40x24 resized and centre-cropped
    reasons = {(r["item"].rsplit("/", 1)[-1], r["reason"]) for r in rejects}
    assert reasons == {("b.png", "not_rgb"), ("a.png", "duplicate_caption"), ("d.png", "undecodable"), ("e.png", "missing_file"),
                       ("captions.csv:7", "missing_file"), ("c.png", "empty_caption")}
    assert all(r["stage"] == "loras@ink" for r in rejects) and len(rejects) == 6
    (folder / "captions.csv").write_text("file,caption\nb.png,rgba ink\n")  # a, c and d have no row now
    with pytest.raises(IngestError, match=r"ink: no usable image \(4 rejected: missing_caption, not_rgb"):
        read_image_folder(folder, 16, "loras@ink")
