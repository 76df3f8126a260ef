"""distill/: SDS against the analytic direction, hinge losses, which parameters the student
trains, gradients through the k student steps, and teachers that stay frozen and LoRA-free."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from eve_fdd.config import TinyBackboneConfig, load_config
from eve_fdd.diffusion import NoiseSchedule, kbin_timesteps, inference_timesteps, make_scheduler
from eve_fdd.distill.batch import EditBatch
from eve_fdd.distill.losses import hinge_discriminator, hinge_generator, sds_loss, sds_timesteps, sds_weight
from eve_fdd.distill.student import Student
from eve_fdd.distill.teachers import EditTeacher, VideoTeacher, lora_off
from eve_fdd.models.adapters import edit_adapter, task_ids, video_adapter
from eve_fdd.models.backbone import tiny_backbone

from conftest import ROOT

SMALL = TinyBackboneConfig(block_out_channels=(8, 16), norm_num_groups=4, attention_heads=2, text_hidden_size=16,
                           text_layers=1, text_heads=2, max_text_tokens=48)


@pytest.fixture(scope="module")
def scheduler():
    return make_scheduler(load_config(ROOT / "params.yaml").diffusion)


@pytest.fixture(scope="module")
def schedule(scheduler):
    return NoiseSchedule.from_scheduler(scheduler)


def _parts(seed: int = 0):
    """A tiny backbone, its ControlNet and a motion UNet, with the adapters' zero-initialised
    output layers nudged so that every part changes the prediction."""
    bb = tiny_backbone(SMALL, sample_size=16, seed=seed).freeze()
    cn = edit_adapter(bb.unet)
    motion = video_adapter(bb.unet, heads=2, norm_groups=4)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in (cn, motion):
            for n, p in module.named_parameters():
                if "controlnet_down_blocks" in n or "controlnet_mid_block" in n or ("motion_modules" in n and "proj_out" in n):
                    p.add_(0.05 * torch.randn(p.shape, generator=g))
    cn.requires_grad_(False)
    motion.requires_grad_(False)
    with torch.no_grad():
        batch = EditBatch(source=torch.rand(2, 3, 4, 16, 16, generator=g) * 2 - 1,
                          caption_emb=bb.encode_text(["a red circle on a navy background", "a blue square on a white background"]),
                          instruction_emb=bb.encode_text(["make the circle red", "remove the triangle"]),
                          tasks=task_ids(["local", "remove"]))
    return bb, cn, motion, batch.with_first(torch.rand(2, 3, 16, 16, generator=g) * 2 - 1)


def test_sds_gradient_is_the_weighted_teacher_minus_noise_direction(schedule):
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(3, 3, 4, 8, 8, generator=g, requires_grad=True)
    noise = torch.randn(x0.shape, generator=g)
    t = torch.tensor([100, 500, 900])
    weight = sds_weight(schedule, t, "alpha")

    def toy_teacher(x_t, tt):  # any function of (x_t, t) stands in for a teacher's x̂0
        return 0.5 * x_t + 0.1 * torch.tanh(x_t)

    loss, logs = sds_loss(x0, toy_teacher, schedule, t, noise, weight)
    loss.backward()
    alpha, sigma = schedule.coefficients(t, x0)
    x_t = alpha * x0.detach() + sigma * noise
    eps_hat = (x_t - alpha * toy_teacher(x_t, t)) / sigma  # the teacher's implied noise
    n = x0[0].numel()
    expected = 2 * weight.reshape(-1, 1, 1, 1, 1) / (n * x0.shape[0]) * (sigma / alpha) * (eps_hat - noise)
    assert torch.allclose(x0.grad, expected, rtol=1e-4, atol=1e-7)
    assert logs["sds"] == pytest.approx(float(loss.detach()))


def test_sds_scores_only_the_chosen_frames_and_weightings(schedule):
    x0 = torch.randn(2, 3, 4, 8, 8, requires_grad=True)
    t = torch.tensor([300, 600])
    loss, _ = sds_loss(x0, lambda x_t, tt: torch.zeros_like(x_t), schedule, t, torch.randn(x0.shape), torch.ones(2), frames=slice(1, None))
    loss.backward()
    assert torch.all(x0.grad[:, :, 0] == 0) and torch.all(x0.grad[:, :, 1:] != 0)
    assert torch.equal(sds_weight(schedule, t, "uniform"), torch.ones(2))
    a = sds_weight(schedule, t, "alpha")
    assert 0 < a[1] < a[0] < 1  # more noise, less weight
    with pytest.raises(ValueError, match="unknown SDS weighting"):
        sds_weight(schedule, t, "snr")
    ts = sds_timesteps(schedule, 1000, (0.02, 0.98), torch.Generator().manual_seed(0))
    assert ts.min() >= 19 and ts.max() <= 979
    with pytest.raises(ValueError, match="lo < hi"):
        sds_timesteps(schedule, 4, (0.9, 0.1), torch.Generator())


def test_hinge_losses():
    real, fake = torch.tensor([2.0, 0.5, -1.0]), torch.tensor([-2.0, 0.0, 1.0])
    d, logs = hinge_discriminator(real, fake)
    assert float(d) == pytest.approx((0 + 0.5 + 2) / 3 + (0 + 1 + 2) / 3)
    assert logs["d_real_acc"] == pytest.approx(2 / 3) and logs["d_fake_acc"] == pytest.approx(1 / 3)
    assert float(hinge_generator(fake)[0]) == pytest.approx(1 / 3)


@pytest.mark.parametrize("trainable", ["lora", "all"])
def test_only_the_student_trains_and_gradients_pass_through_all_k_steps(schedule, scheduler, trainable):
    bb, cn, motion, batch = _parts()
    student = Student(motion, cn, schedule, lora_rank=2, trainable=trainable)
    edit_teacher = EditTeacher(bb.unet, cn, schedule)
    video_teacher = VideoTeacher(motion, schedule)
    g = torch.Generator().manual_seed(0)
    ts = kbin_timesteps(inference_timesteps(scheduler, 6), 3, g)
    x0 = student.generate(torch.randn(batch.source.shape, generator=g), batch, ts)
    assert torch.equal(x0[:, :, 0], batch.first)
    t = torch.tensor([400, 700])
    frames = slice(1, None)
    le, _ = sds_loss(x0, lambda x, tt: edit_teacher.x0(x, tt, batch), schedule, t, torch.randn(x0.shape, generator=g), torch.ones(2), frames)
    lv, _ = sds_loss(x0, lambda x, tt: video_teacher.x0(x, tt, batch), schedule, t, torch.randn(x0.shape, generator=g), torch.ones(2), frames)
    (le + lv).backward()

    got = {f"{m}.{n}" for m, module in student.modules().items() for n, p in module.named_parameters() if p.grad is not None}
    lora = {n for n in got if "lora_" in n}
    assert lora and all(".motion_modules." not in n for n in lora)  # LoRA on the spatial layers only
    if trainable == "lora":
        assert got == lora
    else:
        assert any("motion_modules" in n for n in got) and any(n.startswith("controlnet.") for n in got)
        assert not any(n.startswith("unet.") and "lora_" not in n and "motion_modules" not in n for n in got)
    assert all(p.grad is None for p in bb.unet.parameters())  # the edit teacher's backbone
    # LoRA B starts at zero, so its gradient is what flows back through the k steps
    assert any(float(p.grad.abs().sum()) > 0 for n, p in motion.named_parameters() if "lora_B" in n)


def test_the_students_lora_goes_where_lora_targets_says_never_on_the_motion_modules(schedule):
    _, cn, motion, _ = _parts()
    Student(motion, cn, schedule, lora_rank=2, lora_targets=("to_q", "conv1"))
    adapted = {n.rsplit(".lora_", 1)[0] for n, _ in motion.named_parameters() if ".lora_A." in n}
    assert adapted and {n.rsplit(".", 1)[-1] for n in adapted} == {"to_q", "conv1"}
    assert not any(".motion_modules." in n for n in adapted)
    assert {n for n, p in motion.named_parameters() if p.requires_grad} == {n for n, _ in motion.named_parameters() if "lora_" in n}


def test_gradients_reach_the_first_of_the_k_steps(schedule):
    bb, cn, motion, batch = _parts()
    student = Student(motion, cn, schedule, lora_rank=2)
    seen = []

    def spy(x, t):  # record x at each step, keep its gradient
        x.retain_grad()
        seen.append(x)
        return student.output(x, t, batch)

    from eve_fdd.diffusion import ddim_sample

    noise = torch.randn(batch.source.shape, requires_grad=True)
    ddim_sample(spy, noise, schedule, [900, 500, 100]).pow(2).mean().backward()
    assert len(seen) == 3 and all(x.grad is not None and float(x.grad[:, :, 1:].abs().sum()) > 0 for x in seen)


def test_video_teacher_runs_without_the_students_lora(schedule):
    bb, cn, motion, batch = _parts()
    x = torch.randn(batch.source.shape)
    t = torch.tensor([300, 600])
    before = VideoTeacher(motion, schedule).x0(x, t, batch)
    student = Student(motion, cn, schedule, lora_rank=2)
    with torch.no_grad():  # a trained LoRA: B no longer zero
        for n, p in motion.named_parameters():
            if "lora_B" in n:
                p.add_(0.5)
    teacher = VideoTeacher(motion, schedule)
    assert torch.allclose(teacher.x0(x, t, batch), before, atol=1e-6)
    with torch.no_grad():
        assert not torch.allclose(student.output(x, t, batch), motion(x, t, encoder_hidden_states=batch.caption_emb.repeat_interleave(4, 0)).sample, atol=1e-4)
    with lora_off(motion):
        pass
    assert all(p.requires_grad for n, p in motion.named_parameters() if "lora_" in n)  # switched back on


def test_teachers_sample_and_edit_the_first_frame(schedule):
    bb, cn, motion, batch = _parts()
    g = torch.Generator().manual_seed(3)
    edit = EditTeacher(bb.unet, cn, schedule)
    first = edit.edit_first_frame(torch.randn(batch.first.shape, generator=g), batch, [900, 400])
    assert first.shape == batch.first.shape and torch.isfinite(first).all()
    frames = edit.sample(torch.randn(batch.source.shape, generator=g), batch, [900, 400])
    clips = VideoTeacher(motion, schedule).sample(torch.randn(batch.source.shape, generator=g), batch.with_first(first), [900, 400])
    assert frames.shape == clips.shape == batch.source.shape
    assert torch.equal(clips[:, :, 0], first)
    guided = EditTeacher(bb.unet, cn, schedule, guidance_scale=2.0, empty_emb=bb.encode_text([""]))
    assert not torch.allclose(guided.x0(frames, torch.tensor([500, 500]), batch), edit.x0(frames, torch.tensor([500, 500]), batch))


def test_clear_errors(schedule):
    bb, cn, motion, batch = _parts()
    with pytest.raises(ValueError, match="UNetMotionModel"):
        Student(bb.unet, cn, schedule)
    with pytest.raises(ValueError, match="trainable"):
        Student(motion, cn, schedule, trainable="everything")
    with pytest.raises(ValueError, match="image backbone"):
        EditTeacher(motion, cn, schedule)
    with pytest.raises(ValueError, match="empty_emb"):
        EditTeacher(bb.unet, cn, schedule, guidance_scale=3.0)
    with pytest.raises(ValueError, match="no edited first frame"):
        VideoTeacher(motion, schedule).x0(batch.source, torch.tensor([1, 2]), EditBatch(batch.source, batch.caption_emb, batch.instruction_emb, batch.tasks))
    with pytest.raises(ValueError, match="caption_emb: batch size 1"):
        EditBatch(batch.source, batch.caption_emb[:1], batch.instruction_emb, batch.tasks)


def test_discriminators_train_their_heads_only_and_pass_gradients_to_the_samples():
    from eve_fdd.distill.discriminators import EditDiscriminator, FrozenFeatures, VideoDiscriminator, tiny_dino

    torch.manual_seed(0)
    feats = FrozenFeatures(tiny_dino(hidden_size=32, layers=3, heads=2, image_size=16, patch_size=4, seed=0), layers=(1, 3))
    d_e, d_v = EditDiscriminator(feats, text_dim=16, width=16, heads=2), VideoDiscriminator(feats, text_dim=16, width=16, heads=2, max_frames=8)
    clips = (torch.rand(2, 3, 4, 16, 16) * 2 - 1).requires_grad_(True)
    source = torch.rand(8, 3, 16, 16) * 2 - 1
    text = torch.randn(2, 5, 16)
    frames = clips.transpose(1, 2).reshape(8, 3, 16, 16)
    le, lv = d_e(source, text.repeat_interleave(4, 0), frames), d_v(clips, text)
    assert le.shape == (8,) and lv.shape == (2,)
    (le.sum() + lv.sum()).backward()
    assert clips.grad is not None and float(clips.grad.abs().sum()) > 0
    assert all(p.grad is None for p in feats.parameters())
    assert all(p.grad is not None for p in list(d_e.heads.parameters()) + list(d_v.heads.parameters()))
    with torch.no_grad():  # each condition is read
        assert not torch.allclose(d_e(source.flip(0), text.repeat_interleave(4, 0), frames), le)
        assert not torch.allclose(d_e(source, torch.randn(8, 5, 16), frames), le)
        assert not torch.allclose(d_v(clips, torch.randn(2, 5, 16)), lv)
        for head in d_v.heads:
            head.frame_pos.normal_()
        assert not torch.allclose(d_v(clips, text), d_v(clips.flip(2), text))  # frame order, once positions are learned
    feats.train()
    assert not feats.model.training
    with pytest.raises(ValueError, match="feature layers"):
        FrozenFeatures(feats.model, layers=(0, 4))


def _fdd(settings, schedule, scheduler, pool_size=3, refresh=0.34):
    from eve_fdd.distill.discriminators import EditDiscriminator, FrozenFeatures, VideoDiscriminator, tiny_dino
    from eve_fdd.distill.fdd import FDD
    from eve_fdd.distill.pool import TeacherPool

    bb, cn, motion, batch = _parts()
    data = torch.rand(5, 3, 4, 16, 16, generator=torch.Generator().manual_seed(5)) * 2 - 1
    with torch.no_grad():
        caps = bb.encode_text([f"a red circle and {n} blue squares" for n in range(5)])
        inss = bb.encode_text([f"remove square {n}" for n in range(5)])
    calls = []

    def load(idx):
        calls.append(list(idx))
        idx = list(idx)
        return EditBatch(data[idx], caps[idx], inss[idx], task_ids(["remove"] * len(idx)))

    edit_t, video_t = EditTeacher(bb.unet, cn, schedule), VideoTeacher(motion, schedule)
    pool = TeacherPool(load, 5, edit_t, video_t, [900, 500, 100], size=pool_size, refresh=refresh, seed=0, chunk=2)
    student = Student(motion, cn, schedule, lora_rank=2)
    feats = FrozenFeatures(tiny_dino(hidden_size=32, layers=2, heads=2, image_size=16, patch_size=4), layers=(1, 2))
    fdd = FDD(student, edit_t, video_t, EditDiscriminator(feats, 16, 16, 2), VideoDiscriminator(feats, 16, 16, 2, 8),
              scheduler, schedule, settings)
    return fdd, pool, calls, bb


def test_teacher_pool_fills_once_and_refreshes_a_fraction(schedule, scheduler):
    from eve_fdd.distill.fdd import Settings

    fdd, pool, calls, _ = _fdd(Settings(k=2, inference_steps=4), schedule, scheduler, pool_size=3, refresh=0.34)
    pool.fill()
    assert pool.generated == 3 and sorted(sum(calls, [])) == sorted(pool.items) and len(set(pool.items)) == 3
    before = pool.edit_real.clone()
    assert pool.refresh(step=1) == 1 and pool.generated == 4
    changed = [i for i in range(3) if not torch.equal(before[i], pool.edit_real[i])]
    assert len(changed) == 1
    batch, edit_real, video_real = pool.draw(2, torch.Generator().manual_seed(0))
    assert edit_real.shape == video_real.shape == batch.source.shape == (2, 3, 4, 16, 16)
    assert torch.equal(video_real[:, :, 0], batch.first)  # the video teacher starts at the edited first frame
    pool.refresh_rate = 1 / 12  # a quarter of an entry per iteration: one every 4 iterations
    assert [pool.due(s) for s in range(8)] == [0, 0, 0, 1, 0, 0, 0, 1]
    with pytest.raises(ValueError, match="refresh"):
        type(pool)(pool.data, 5, pool.edit_teacher, pool.video_teacher, [900], size=2, refresh=1.5, seed=0)


def test_fdd_iteration_trains_the_lora_and_the_heads_and_nothing_else(schedule, scheduler):
    from eve_fdd.distill.fdd import Settings

    fdd, pool, _, bb = _fdd(Settings(k=2, inference_steps=4, adversarial_start=1), schedule, scheduler)
    pool.fill()
    frozen = {n: p.clone() for n, p in fdd.student.unet.named_parameters() if "lora_" not in n}
    frozen_cn = [p.clone() for p in fdd.student.controlnet.parameters()]
    opt_g = torch.optim.Adam(fdd.student.parameters(), lr=1e-2)
    opt_d = torch.optim.Adam(fdd.discriminator_parameters(), lr=1e-2)
    heads = [p.clone() for p in fdd.discriminator_parameters()]
    g = torch.Generator().manual_seed(0)
    for it in range(2):
        batch, edit_real, video_real = pool.draw(2, g)
        loss, logs, fake, pixels = fdd.student_step(batch, it, g)
        assert ("adv_edit" in logs) == (it >= 1) and "sds_edit" in logs and torch.isfinite(loss)
        assert (pixels is None) == (it == 0)  # decoded only for the adversarial terms
        opt_g.zero_grad()
        loss.backward()
        assert all(p.grad is None for p in fdd.discriminator_parameters())  # the student's step leaves D alone
        opt_g.step()
        d_loss, d_logs = fdd.discriminator_step(batch, fake, edit_real, video_real, pixels)
        if pixels is not None:  # the student's decoded pixels stand for decoding its clip again
            assert torch.equal(d_loss, fdd.discriminator_step(batch, fake, edit_real, video_real)[0])
        opt_d.zero_grad()
        d_loss.backward()
        opt_d.step()
        opt_d.zero_grad()  # cleared: the next student step must not put any there
        assert 0 <= d_logs["edit.d_real_acc"] <= 1
    assert any(float(p.detach().abs().sum()) > 0 for n, p in fdd.student.unet.named_parameters() if "lora_B" in n)
    assert all(torch.equal(p, frozen[n]) for n, p in fdd.student.unet.named_parameters() if "lora_" not in n)
    assert all(torch.equal(a, b) for a, b in zip(fdd.student.controlnet.parameters(), frozen_cn))
    assert any(not torch.equal(a, b) for a, b in zip(fdd.discriminator_parameters(), heads))
    assert all(p.grad is None for p in fdd.d_edit.features.parameters())


def test_fdd_settings():
    from eve_fdd.distill.fdd import Settings

    assert not Settings(adversarial_start=10).adversarial_on(9) and Settings(adversarial_start=10).adversarial_on(10)
    assert Settings(sds=False, adversarial_start=10).adversarial_on(0)  # adversarial only: from the start
    assert not Settings(adversarial=False).adversarial_on(100)
    with pytest.raises(ValueError, match="nothing is trained"):
        Settings(sds=False, adversarial=False)
    warm = Settings(adversarial_start=10, discriminator_warmup=3)
    assert [warm.discriminators_train(i) for i in (6, 7, 9, 10)] == [False, True, True, True]
    assert [warm.adversarial_on(i) for i in (7, 9, 10)] == [False, False, True]  # the student's loss is as before
    assert not Settings(adversarial=False, discriminator_warmup=3).discriminators_train(100)


def test_the_second_teachers_sds_draws_its_own_timesteps_only_when_given_a_range(schedule, scheduler, monkeypatch):
    from eve_fdd.distill.fdd import Settings

    fdd, pool, _, _ = _fdd(Settings(k=2, inference_steps=4, adversarial=False), schedule, scheduler)
    pool.fill()
    seen = {"edit": [], "video": []}
    for role, teacher in (("edit", fdd.edit_teacher), ("video", fdd.video_teacher)):
        monkeypatch.setattr(teacher, "x0", lambda x, t, b, _f=teacher.x0, _r=role: seen[_r].append(t.clone()) or _f(x, t, b))
    n = schedule.train_timesteps
    for second, expect_same in ((None, True), ((0.02, 0.2), False)):
        fdd.settings = Settings(k=2, inference_steps=4, adversarial=False, sds_t_range=(0.7, 0.98), sds_t_range_second=second)
        for it in range(2):
            fdd.student_step(pool.draw(2, torch.Generator().manual_seed(it))[0], it, torch.Generator().manual_seed(it))
        edit_t, video_t = torch.cat(seen["edit"]), torch.cat(seen["video"])
        assert edit_t.min() >= int(0.7 * (n - 1))
        if expect_same:  # null: the video teacher scores at the edit teacher's t
            assert torch.equal(edit_t, video_t)
        else:
            assert video_t.max() <= int(0.2 * (n - 1)) + 1 and video_t.min() >= int(0.02 * (n - 1))
        for calls in seen.values():
            calls.clear()
    with pytest.raises(ValueError, match="sds_t_range_second"):
        load_config(ROOT / "params.yaml", {"fdd.sds_t_range_second": [0.5, 0.2]})


@pytest.mark.parametrize("warmup", [0, 2])
def test_discriminators_warm_up_in_the_sds_only_phase_without_reaching_the_student(schedule, scheduler, tmp_path, warmup):
    from eve_fdd.distill.fdd import Settings
    from eve_fdd.distill.run import RunSettings, train_fdd

    fdd, pool, _, _ = _fdd(Settings(k=2, inference_steps=4, adversarial_start=2, discriminator_warmup=warmup), schedule, scheduler)
    heads = [p.clone() for p in fdd.discriminator_parameters()]
    result, _ = train_fdd(fdd, pool, RunSettings(2, 2, 1e-3, 1.0, 10, 1, False, 0, 1e-2), tmp_path, "fp", progress=False)
    assert len(result.curve) == 2 and all("sds_edit" in row and "adv_edit" not in row for row in result.curve)  # SDS only, both runs
    changed = any(not torch.equal(a, b) for a, b in zip(fdd.discriminator_parameters(), heads))
    assert changed == bool(warmup)


def test_video_errors_against_the_ground_truth():
    from eve_fdd.evaluate.video_edits import summarize, video_errors

    g = torch.Generator().manual_seed(0)
    truth = torch.rand(2, 3, 4, 8, 8, generator=g) * 2 - 1
    source = truth.clone()
    source[:, :, :, :4] = -1  # the edit changed the top half
    perfect = video_errors(truth, source, truth)
    assert all(np.allclose(perfect[k], 0) for k in ("fidelity.all", "fidelity.changed", "fidelity.kept", "temporal"))
    frozen = truth[:, :, :1].expand_as(truth).clone()  # right first frame, no motion
    e = video_errors(frozen, source, truth)
    assert np.all(e["frame_change"] == 0) and np.allclose(e["temporal"], perfect["frame_change_ground_truth"])
    unchanged = video_errors(source, source, truth)
    assert np.allclose(unchanged["fidelity.kept"], 0) and np.all(unchanged["fidelity.changed"] > 0)
    m = summarize(unchanged, ["local", "remove"])
    assert m["fidelity.changed.mean"] == pytest.approx((m["fidelity.changed.local"] + m["fidelity.changed.remove"]) / 2, abs=1e-5)
    with pytest.raises(ValueError, match="one shape"):
        video_errors(truth[:1], source, truth)


# --- other adapter pairs (stage fdd_personal): the concept teacher, single images ---

def _concept_parts(tmp_path, seed: int = 0):
    """A tiny backbone, its ControlNet, and a subject LoRA saved as stage `loras` saves it,
    with nonzero weights so it changes the prediction."""
    from eve_fdd.models.adapters import add_lora

    bb, cn, _, batch = _parts(seed)
    add_lora(bb.unet, "star", rank=2)
    with torch.no_grad():
        for n, p in bb.unet.named_parameters():
            if "lora_B" in n:
                p.add_(0.3)
    bb.unet.save_lora_adapter(str(tmp_path / "star"), adapter_name="star")
    bb.unet.delete_adapters(["star"])
    images = EditBatch(batch.source[:, :, :1], batch.caption_emb, batch.instruction_emb, batch.tasks)
    return bb, cn, images


def test_concept_teacher_is_the_backbone_with_the_lora_fused_and_ignores_the_students(schedule, tmp_path):
    from eve_fdd.distill.teachers import ConceptTeacher, with_lora_merged

    bb, cn, batch = _concept_parts(tmp_path)
    x, t = torch.randn(batch.source.shape), torch.tensor([300, 600])
    assert not getattr(bb.unet, "peft_config", None)
    with torch.no_grad():
        bare = bb.unet(x[:, :, 0], t, encoder_hidden_states=batch.caption_emb).sample
        bb.unet.load_lora_adapter(str(tmp_path / "star"), weight_name="pytorch_lora_weights.safetensors", prefix=None, adapter_name="star")
        with_adapter = bb.unet(x[:, :, 0], t, encoder_hidden_states=batch.caption_emb).sample
        bb.unet.delete_adapters(["star"])
    merged = with_lora_merged(bb.unet, tmp_path / "star", "star")
    assert not getattr(bb.unet, "peft_config", None) and not any(p.requires_grad for p in merged.parameters())
    teacher = ConceptTeacher(merged, schedule)
    out = teacher.output(x, t, batch)
    assert out.shape == x.shape and torch.allclose(out[:, :, 0], with_adapter, atol=1e-5)
    assert not torch.allclose(out[:, :, 0], bare, atol=1e-3)  # the LoRA is in, the bare backbone untouched
    student = Student(merged, cn, schedule, lora_rank=2, first_frame=False)
    with torch.no_grad():
        for n, p in merged.named_parameters():
            if "lora_B" in n:
                p.add_(0.5)
    assert torch.allclose(teacher.output(x, t, batch), out, atol=1e-6)  # the student's LoRA is off for the teacher
    empty = bb.encode_text([""])
    guided = ConceptTeacher(merged, schedule, guidance_scale=3.0, empty_emb=empty).output(x, t, batch)
    uncond = ConceptTeacher(merged, schedule).predict(x, t, empty.expand(2, -1, -1))
    assert torch.allclose(guided, uncond + 3.0 * (out - uncond), atol=1e-5)
    drawn = teacher.draw(torch.randn(2, 3, 16, 16), batch.caption_emb, [900, 400])
    assert drawn.shape == (2, 3, 16, 16) and torch.isfinite(drawn).all()
    gen = student.generate(torch.randn(batch.source.shape), batch, [900, 400])  # no first frame needed
    assert gen.shape == batch.source.shape and student.scored == slice(None)
    with pytest.raises(ValueError, match="guidance_scale != 1 needs empty_emb"):
        ConceptTeacher(merged, schedule, guidance_scale=2.0)


def test_fdd_aligns_a_concept_lora_on_images_with_its_own_discriminator(schedule, scheduler, tmp_path):
    from eve_fdd.distill.discriminators import EditDiscriminator, FrozenFeatures, VideoDiscriminator, tiny_dino
    from eve_fdd.distill.fdd import FDD, Settings
    from eve_fdd.distill.pool import TeacherPool
    from eve_fdd.distill.teachers import ConceptTeacher, with_lora_merged

    bb, cn, batch = _concept_parts(tmp_path)
    merged = with_lora_merged(bb.unet, tmp_path / "star", "star")
    edit_t, concept_t = EditTeacher(bb.unet, cn, schedule), ConceptTeacher(merged, schedule)

    def load(idx):
        idx = [i % 2 for i in idx]
        return EditBatch(batch.source[idx], batch.caption_emb[idx], batch.instruction_emb[idx], batch.tasks[idx])

    pool = TeacherPool(load, 4, edit_t, concept_t, [900, 500, 100], size=3, refresh=0.34, seed=0, chunk=2)
    pool.fill()
    assert pool.batch.first is None and pool.video_real.shape == (3, 3, 1, 16, 16)  # no first frame to make
    assert pool.refresh(step=1) == 1
    student = Student(merged, cn, schedule, lora_rank=2, first_frame=False)
    feats = FrozenFeatures(tiny_dino(hidden_size=32, layers=2, heads=2, image_size=16, patch_size=4), layers=(1, 2))
    fdd = FDD(student, edit_t, concept_t, EditDiscriminator(feats, 16, 16, 2), VideoDiscriminator(feats, 16, 16, 2, 8),
              scheduler, schedule, Settings(k=2, inference_steps=4, adversarial_start=0))
    g = torch.Generator().manual_seed(0)
    drawn, edit_real, concept_real = pool.draw(2, g)
    loss, logs, fake, pixels = fdd.student_step(drawn, 0, g)
    assert {"sds_edit", "sds_concept", "adv_edit", "adv_concept"} <= set(logs) and "sds_video" not in logs
    loss.backward()
    assert all((p.grad is not None) == ("lora_" in n) for n, p in merged.named_parameters() if p.requires_grad)
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for n, p in merged.named_parameters() if "lora_" in n)
    assert all(p.grad is None for p in cn.parameters()) and all(p.grad is None for p in bb.unet.parameters())
    d_loss, d_logs = fdd.discriminator_step(drawn, fake, edit_real, concept_real, pixels)
    assert torch.isfinite(d_loss) and "concept.d_real_acc" in d_logs and "edit.d_fake_acc" in d_logs


def test_guidance_is_uncond_plus_scale_times_the_difference_for_the_video_teacher_and_the_student(schedule):
    bb, cn, motion, batch = _parts()
    empty = bb.encode_text([""])
    x, t = torch.randn(batch.source.shape, generator=torch.Generator().manual_seed(4)), torch.tensor([500, 300])
    plain = VideoTeacher(motion, schedule)
    guided = plain.__class__(motion, schedule, 3.0, empty)
    cond = plain.output(x, t, batch)
    uncond = plain.output(x, t, EditBatch(batch.source, empty.expand(2, -1, -1), batch.instruction_emb, batch.tasks, batch.first))
    torch.testing.assert_close(guided.output(x, t, batch), uncond + 3.0 * (cond - uncond))
    unguided = guided.with_guidance(1.0)
    assert unguided.guidance_scale == 1.0 and guided.guidance_scale == 3.0 and unguided.model is guided.model  # same modules
    torch.testing.assert_close(unguided.output(x, t, batch), cond)
    with pytest.raises(ValueError, match="needs empty_emb"):
        plain.with_guidance(3.0)
    student = Student(motion, cn, schedule, lora_rank=2)
    with torch.no_grad():
        s_cond = student.output(x, t, batch)
        s_uncond = student.output(x, t, EditBatch(batch.source, empty.expand(2, -1, -1), empty.expand(2, -1, -1), batch.tasks, batch.first))
        s_guided = student.guide(2.0, empty).output(x, t, batch)
    torch.testing.assert_close(s_guided, s_uncond + 2.0 * (s_cond - s_uncond))
    with pytest.raises(ValueError, match="empty_emb"):
        student.guide(2.0, None)
