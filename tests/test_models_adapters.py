"""models/adapters.py: edit adapter (ControlNet + task label), video adapter (motion modules),
LoRA, and their composition; which parameters get gradients."""

from __future__ import annotations

import pytest
import torch

from eve_fdd.config import TinyBackboneConfig
from eve_fdd.models.adapters import (
    TASK_LABELS,
    ConceptTokens,
    EditVideoModel,
    add_lora,
    edit_adapter,
    load_token_embeddings,
    motion_parameters,
    task_ids,
    video_adapter,
)
from eve_fdd.models.backbone import tiny_backbone

SMALL = TinyBackboneConfig(block_out_channels=(16, 32), norm_num_groups=8, text_hidden_size=32, text_layers=1, max_text_tokens=48)
G = torch.Generator().manual_seed(0)


@pytest.fixture(scope="module")
def backbone():
    bb = tiny_backbone(SMALL, sample_size=16, seed=0).freeze()
    with torch.no_grad():
        cap = bb.encode_text(["a small red circle on a navy background"] * 2)
        ins = bb.encode_text(["make the red circle blue"] * 2)
    return bb, cap, ins


def _perturb(module: torch.nn.Module, names: tuple[str, ...]) -> None:
    with torch.no_grad():
        for n, p in module.named_parameters():
            if any(k in n for k in names):
                p.add_(0.1 * torch.randn(p.shape, generator=G))


def test_edit_adapter_copies_the_backbone_and_starts_as_a_no_op(backbone):
    bb, cap, ins = backbone
    cn = edit_adapter(bb.unet)
    assert cn.class_embedding.num_embeddings == len(TASK_LABELS) == 8
    assert torch.equal(cn.down_blocks[1].attentions[0].proj_in.weight, bb.unet.down_blocks[1].attentions[0].proj_in.weight)
    x, src = torch.randn(2, 3, 16, 16, generator=G), torch.rand(2, 3, 16, 16, generator=G)
    t, tasks = torch.tensor([100, 800]), task_ids(["local", "remove"])
    with torch.no_grad():
        plain = EditVideoModel(bb.unet)(x, t, cap)
        edit = EditVideoModel(bb.unet, cn)
        assert torch.allclose(edit(x, t, cap, ins, src, tasks), plain, atol=1e-6)  # zero convs
        _perturb(cn, ("controlnet_down_blocks", "controlnet_mid_block"))
        a = edit(x, t, cap, ins, src, tasks)
        b = edit(x, t, cap, ins, src, task_ids(["style", "global"]))
        assert not torch.allclose(a, plain, atol=1e-4)
        assert not torch.allclose(a, b, atol=1e-4)  # the task label is read
    with pytest.raises(ValueError, match="unknown task"):
        task_ids(["paint"])
    with pytest.raises(ValueError, match="needs instruction_emb"):
        edit(x, t, cap)


def test_video_adapter_starts_as_the_image_model_on_every_frame(backbone):
    bb, cap, _ = backbone
    video = video_adapter(bb.unet, heads=2, max_frames=16)
    clip = torch.randn(2, 3, 4, 16, 16, generator=G)
    t = torch.tensor([50, 600])
    with torch.no_grad():
        per_frame = EditVideoModel(bb.unet)(clip, t, cap)
        together = EditVideoModel(video)(clip, t, cap)
        assert together.shape == clip.shape
        assert torch.allclose(together, per_frame, atol=1e-5)  # temporal layers start at zero
        _perturb(video, ("motion_modules",))
        moved = EditVideoModel(video)(clip, t, cap)
        assert not torch.allclose(moved, per_frame, atol=1e-4)
        # now frames talk to each other: changing frame 3 changes frame 0's output
        other = clip.clone()
        other[:, :, 3] += 1.0
        assert not torch.allclose(EditVideoModel(video)(other, t, cap)[:, :, 0], moved[:, :, 0], atol=1e-5)
    with pytest.raises(ValueError, match="takes clips"):
        EditVideoModel(video)(clip[:, :, 0], t, cap)


def test_only_the_motion_modules_train_in_the_video_adapter(backbone):
    bb, cap, _ = backbone
    video = video_adapter(bb.unet, heads=2)
    video.requires_grad_(False)
    for p in motion_parameters(video):
        p.requires_grad_(True)
    _perturb(video, ("motion_modules",))
    out = EditVideoModel(video)(torch.randn(1, 3, 4, 16, 16, generator=G), torch.tensor([300]), cap[:1])
    out.square().mean().backward()
    grads = {n: p.grad for n, p in video.named_parameters()}
    assert all(g is None for n, g in grads.items() if "motion_modules" not in n)
    assert sum(float(g.abs().sum()) for n, g in grads.items() if "motion_modules" in n and g is not None) > 0


def test_lora_on_the_full_student_trains_only_lora_and_skips_motion_modules(backbone):
    bb, cap, ins = backbone
    cn = edit_adapter(bb.unet).requires_grad_(False)
    video = video_adapter(bb.unet, heads=2).requires_grad_(False)
    _perturb(video, ("motion_modules",))
    _perturb(cn, ("controlnet_down_blocks", "controlnet_mid_block"))
    student = EditVideoModel(video, cn)
    clip, src = torch.randn(1, 3, 4, 16, 16, generator=G), torch.rand(1, 3, 4, 16, 16, generator=G)
    t, tasks = torch.tensor([400]), task_ids(["texture"])
    with torch.no_grad():
        before = student(clip, t, cap[:1], ins[:1], src, tasks)
    add_lora(video, "fdd", rank=2)
    lora = {n for n, p in video.named_parameters() if "lora_" in n}
    assert lora and not any("motion_modules" in n for n in lora)
    assert {n for n, p in video.named_parameters() if p.requires_grad} == lora
    out = student(clip, t, cap[:1], ins[:1], src, tasks)
    assert torch.allclose(out.detach(), before, atol=1e-5)  # LoRA B starts at zero
    out.square().mean().backward()
    assert all(p.grad is None for n, p in video.named_parameters() if n not in lora)
    assert all(p.grad is None for p in cn.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in video.named_parameters() if n in lora)


def test_training_only_the_temporal_layers_does_not_crash_group_norm():
    """torch 2.13's CPU GroupNorm backward segfaults on a channels-last input that needs no
    grad; the temporal layers' norms see such inputs when the clip and the spatial weights
    are frozen. `contiguous_norm_inputs` (applied by video_adapter) avoids it."""
    unet = video_adapter(tiny_backbone(SMALL, 16, 0).unet, heads=2)
    unet.requires_grad_(False)
    for p in motion_parameters(unet):
        p.requires_grad_(True)
    x = torch.randn(1, 3, 4, 16, 16)  # no grad
    emb = torch.randn(4, 48, unet.config.cross_attention_dim)
    unet(x, torch.tensor([500]), encoder_hidden_states=emb).sample.square().mean().backward()
    assert any(p.grad is not None for p in motion_parameters(unet))


def test_lora_targets_choose_the_adapted_layers_and_survive_save_and_load(tmp_path):
    from eve_fdd.models.adapters import load_lora

    bb = tiny_backbone(SMALL, sample_size=16, seed=0).freeze()
    add_lora(bb.unet, "style", rank=2, targets=("to_q", "to_k", "to_v", "to_out.0", "conv1", "conv2"))
    lora = {n for n, p in bb.unet.named_parameters() if "lora_" in n}
    assert any(".conv1.lora_A" in n for n in lora) and any(".conv2.lora_B" in n for n in lora)
    assert any(".to_k.lora_A" in n for n in lora)
    assert {n for n, p in bb.unet.named_parameters() if p.requires_grad} == lora
    with torch.no_grad():
        for n, p in bb.unet.named_parameters():
            if "lora_B" in n:
                p.normal_()
    bb.unet.save_lora_adapter(str(tmp_path), adapter_name="style")
    again = tiny_backbone(SMALL, sample_size=16, seed=0).freeze()
    load_lora(again.unet, tmp_path, "style")
    x, t = torch.randn(1, 3, 16, 16, generator=G), torch.tensor([500])
    ehs = bb.encode_text(["a red circle"])
    with torch.no_grad():
        assert torch.allclose(again.unet(x, t, encoder_hidden_states=ehs).sample, bb.unet(x, t, encoder_hidden_states=ehs).sample, atol=1e-5)
    attention_only = tiny_backbone(SMALL, sample_size=16, seed=0).freeze()
    add_lora(attention_only.unet, "subject", rank=2)
    assert not any("conv" in n and "lora_" in n for n, _ in attention_only.unet.named_parameters())


def test_concept_tokens_change_only_the_concept_words_and_survive_save_and_load(tmp_path):
    bb = tiny_backbone(SMALL, sample_size=16, seed=0).freeze()
    with_word, without = ["a small red star on a navy background, with scanlines"], ["a small red circle on a navy background"]
    before = bb.encode_text(with_word + without)
    tokens = ConceptTokens(bb.text_encoder, bb.tokenizer, ["star", "scanlines"]).attach()
    # starts as the words' own rows: nothing changes until it learns
    torch.testing.assert_close(bb.encode_text(with_word + without), before)
    with torch.no_grad():
        tokens.rows.add_(torch.randn(tokens.rows.shape, generator=G))
    after = bb.encode_text(with_word + without)
    assert not torch.allclose(after[0], before[0])
    torch.testing.assert_close(after[1], before[1])  # a caption without the words is untouched
    # gradients reach the rows (the only parameters) and only the rows of words in the batch
    assert [n for n, _ in tokens.named_parameters()] == ["rows"]
    bb.encode_text(["a small red star on a navy background"]).square().sum().backward()
    assert tokens.rows.grad[0].abs().sum() > 0 and tokens.rows.grad[1].abs().sum() == 0
    assert all(p.grad is None for p in bb.text_encoder.parameters())
    tokens.detach()
    torch.testing.assert_close(bb.encode_text(with_word + without), before)
    # saved, then written into a fresh encoder: the words mean what was learned
    path = tokens.save(tmp_path)
    fresh = tiny_backbone(SMALL, sample_size=16, seed=0).freeze()
    assert sorted(load_token_embeddings(fresh.text_encoder, fresh.tokenizer, path)) == ["scanlines", "star"]
    torch.testing.assert_close(fresh.encode_text(with_word + without), after.detach())


def test_concept_tokens_bad_input_is_named(tmp_path):
    bb = tiny_backbone(SMALL, sample_size=16, seed=0).freeze()
    with pytest.raises(ValueError, match=r"\['moonbeam'\] are not single tokens"):
        ConceptTokens(bb.text_encoder, bb.tokenizer, ["star", "moonbeam"])
    with pytest.raises(FileNotFoundError, match="no learned token embeddings"):
        load_token_embeddings(bb.text_encoder, bb.tokenizer, tmp_path / "missing.safetensors")
    from safetensors.torch import save_file

    save_file({"star": torch.zeros(7)}, tmp_path / "wide.safetensors")
    with pytest.raises(ValueError, match=r"wide.safetensors: rows of shape \{'star': \(7,\)\}.*width 32"):
        load_token_embeddings(bb.text_encoder, bb.tokenizer, tmp_path / "wide.safetensors")


def test_only_diffusers_vacuous_float32_warning_is_dropped():
    """diffusers warns "... should be kept in float32: []" on every cast of a motion UNet (its
    `from_unet2d` casts too); a real list of modules still warns."""
    import logging

    from eve_fdd.models import adapters  # noqa: F401  (installs the filter)

    log = logging.getLogger("diffusers.models.modeling_utils")
    seen: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: seen.append(record.getMessage())
    log.addHandler(handler)
    try:
        for listed in ("[]", "['norm']"):
            log.warning(f"There are modules in UNetMotionModel that should be kept in float32: {listed}. Casting directly ...")
    finally:
        log.removeHandler(handler)
    assert len(seen) == 1 and "float32: ['norm']" in seen[0]
