"""Cost of one FDD iteration at the default Shapes sizes (params.yaml `fdd`), split by part,
the speed-up of the teacher-sample pool, and peak memory with and without gradient
checkpointing.

    python benchmarks/fdd_iteration.py [--iterations 6] [--variant full] [--profile full]

`--profile full` runs the full profile's code path (latent space through an SD-layout VAE,
a ControlNet reading pixels, DINOv2 discriminators on decoded frames) on tiny random models of
the same classes, 8 frames of 64x64 pixels (`--size`), so it runs on a CPU; the true-size
figures belong to a GPU machine (benchmarks/full_scale.py, the multi-GPU issue).

Parts of an iteration (seconds, mean over the timed iterations after one warm-up):
  pool          refreshing the teacher-sample pool (`fdd.pool_refresh` of it)
  generation    the student's k steps, forward (with the graph kept)
  sds           both teachers' predictions and the SDS losses
  decode        the VAE decoder on the student's clip, with gradients (full profile; 0 for Shapes)
  adversarial   the discriminators on the student's (decoded) clips (generator terms)
  backward      backward through all of the above + the student's optimiser step
  discriminator the discriminator step (real and fake, backward, optimiser)
"No pool" samples the teachers for every batch (a pool of one batch, refreshed entirely);
speed-up = its iteration time / the pool's. Peak memory is the child process's maximum
resident set (CPU) or torch.cuda.max_memory_allocated (GPU), one child per setting.
Weights do not change speed, so the adapters sit on a freshly initialised backbone of the
configured size; data are rendered from the world. Run it alone: 2 cores are easily shared away.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np
import torch

from eve_fdd.config import load_config
from eve_fdd.diffusion import NoiseSchedule, inference_timesteps, make_scheduler, student_timesteps
from eve_fdd.distill import variants
from eve_fdd.distill.data import clip_batch
from eve_fdd.distill.discriminators import IMAGENET_MEAN, IMAGENET_STD, tiny_dino
from eve_fdd.distill.fdd import FDD, _frozen
from eve_fdd.distill.losses import hinge_generator, sds_loss, sds_timesteps, sds_weight
from eve_fdd.distill.pool import TeacherPool
from eve_fdd.distill.run import discriminators
from eve_fdd.distill.student import Student
from eve_fdd.distill.teachers import EditTeacher, VideoTeacher
from eve_fdd.models.adapters import edit_adapter, task_ids, video_adapter
from eve_fdd.models.backbone import tiny_backbone
from eve_fdd.stages.videos import render_shapes
from eve_fdd.world import Scene, applicable, make_edit, vocab


def tiny_full_backbone(size: int, seed: int = 0):
    """SD 1.5's classes at toy width (the VAE with SD's four levels, so latents are size/8),
    the Shapes text encoder standing in for CLIP's (its cost is outside the FDD iteration)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from eve_fdd.models.backbone import Backbone
    from eve_fdd.models.text import shapes_tokenizer, tiny_clip_text_encoder

    tok = shapes_tokenizer(max_length=32)
    torch.manual_seed(seed)
    text = tiny_clip_text_encoder(len(tok), 64, 2, 4, 32, seed)
    unet = UNet2DConditionModel(sample_size=size // 8, in_channels=4, out_channels=4, block_out_channels=(32, 64, 64),
                                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"), layers_per_block=1,
                                attention_head_dim=2, norm_num_groups=8, cross_attention_dim=64)
    vae = AutoencoderKL(block_out_channels=(32, 64, 64, 64), down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=1, latent_channels=4, norm_num_groups=8,
                        sample_size=size, scaling_factor=0.18215)
    return Backbone(unet, text, tok, vae, truncate=True)


def setup(cfg, variant: str, pool_size: int, refresh: float, checkpointing: bool, profile: str = "shapes", size: int = 64):
    from eve_fdd.models.registry import FeatureNetwork
    from eve_fdd.models.space import check_compatible

    f, w = cfg.fdd, cfg.world
    full = profile == "full"
    if full:
        bb = tiny_full_backbone(size, cfg.seed).freeze()
        cn = edit_adapter(bb.unet, (16, 32, 96, 128)).requires_grad_(False)  # reads pixels at 8x the latent size
        check_compatible(bb.space, bb.unet, cn)
        w = w.model_copy(update={"size": size})
    else:
        bb = tiny_backbone(cfg.models.backbone.tiny, w.size, cfg.seed).freeze()
        cn = edit_adapter(bb.unet, cfg.edit_adapter.conditioning_channels).requires_grad_(False)
    motion = video_adapter(bb.unet, heads=cfg.video_adapter.heads, max_frames=max(32, w.frames)).requires_grad_(False)
    scheduler = make_scheduler(cfg.diffusion)
    schedule = NoiseSchedule.from_scheduler(scheduler)
    rows = render_shapes(cfg.model_copy(update={"world": w}), range(64))
    rng = np.random.default_rng(0)
    frames, caps, inss, tasks = [], [], [], []
    for i, r in enumerate(rows):
        scene, task = Scene.from_json(r["scene"]), vocab.TASKS[i % len(vocab.TASKS)]
        if not applicable(scene, task):
            continue
        edit = make_edit(scene, task, rng, tuple(w.speed))
        frames.append(np.frombuffer(r["frames"], np.uint8).reshape(w.frames, w.size, w.size, 3))
        caps.append(edit.output_caption), inss.append(edit.instruction), tasks.append(task)
    frames = np.stack(frames)

    def data(index):
        index = list(index)
        with torch.no_grad():
            return clip_batch(frames[index], bb.encode_text([caps[i] for i in index]), bb.encode_text([inss[i] for i in index]),
                              task_ids([tasks[i] for i in index]), bb.space)

    edit_t, video_t = EditTeacher(bb.unet, cn, schedule), VideoTeacher(motion, schedule)
    student = Student(motion, cn, schedule, lora_rank=f.lora_rank, trainable=variants.student_trainable(variant),
                      gradient_checkpointing=checkpointing)
    d = f.discriminator
    if full:  # DINOv2's class at toy width, reading decoded frames resized as the full profile's does
        from transformers import Dinov2Config, Dinov2Model

        torch.manual_seed(cfg.seed)
        dino = Dinov2Model(Dinov2Config(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, intermediate_size=128,
                                        image_size=56, patch_size=8)).requires_grad_(False).eval()
        network = FeatureNetwork(dino, 56, IMAGENET_MEAN, IMAGENET_STD)
    else:
        network = FeatureNetwork(tiny_dino(d.hidden_size, d.layers, d.heads, w.size, d.patch_size, cfg.seed), None, IMAGENET_MEAN, IMAGENET_STD)
    dim = bb.text_encoder.config.hidden_size
    d_edit, d_video = discriminators(d, dim, w.frames, network)
    fdd = FDD(student, edit_t, video_t, d_edit, d_video, scheduler, schedule, variants.settings(f, variant, cfg.diffusion.inference_steps),
              bb.space)
    pool = TeacherPool(data, len(caps), edit_t, video_t, inference_timesteps(scheduler, f.teacher_steps), pool_size, refresh, cfg.seed)
    return fdd, pool


def timed_iterations(cfg, fdd: FDD, pool: TeacherPool, iterations: int) -> dict[str, float]:
    """Each part of `student_step` / `discriminator_step`, run in the same order, timed apart."""
    f, s = cfg.fdd, fdd.settings
    opt_g = torch.optim.AdamW(fdd.student.parameters(), lr=f.lr)
    opt_d = torch.optim.AdamW(fdd.discriminator_parameters(), lr=f.discriminator.lr)
    pool.fill()
    parts: dict[str, list[float]] = {k: [] for k in ("pool", "generation", "sds", "decode", "adversarial", "backward", "discriminator", "total")}
    for it in range(iterations + 1):
        g = torch.Generator().manual_seed(it)
        t = [time.perf_counter()]
        pool.refresh(it + 1)
        batch, edit_real, video_real = pool.draw(f.batch_size, g)
        t.append(time.perf_counter())
        ts = student_timesteps(fdd.scheduler, s.inference_steps, s.k, s.timesteps, g, s.kbin_first)
        fake = fdd.student.generate(torch.randn(batch.source.shape, generator=g), batch, ts)
        t.append(time.perf_counter())
        tt = sds_timesteps(fdd.schedule, fake.shape[0], s.sds_t_range, g)
        wgt = sds_weight(fdd.schedule, tt, s.sds_weighting)
        le, _ = sds_loss(fake, lambda x, q: fdd.edit_teacher.x0(x, q, batch), fdd.schedule, tt, torch.randn(fake.shape, generator=g), wgt, fdd.student.scored)
        lv, _ = sds_loss(fake, lambda x, q: fdd.video_teacher.x0(x, q, batch), fdd.schedule, tt, torch.randn(fake.shape, generator=g), wgt, fdd.student.scored)
        t.append(time.perf_counter())
        pixels = fdd.space.decode(fake)
        t.append(time.perf_counter())
        with _frozen(fdd.d_edit, fdd.d_video):
            ge, _ = hinge_generator(fdd._d_edit(batch, pixels[:, :, fdd.student.scored]))
            gv, _ = hinge_generator(fdd.d_video(pixels, batch.caption_emb))
        t.append(time.perf_counter())
        loss = s.alpha * (ge + s.lam * le) + s.beta * (gv + s.lam * lv)
        opt_g.zero_grad()
        loss.backward()
        opt_g.step()
        t.append(time.perf_counter())
        d_loss, _ = fdd.discriminator_step(batch, fake.detach(), edit_real, video_real, pixels.detach())
        opt_d.zero_grad()
        d_loss.backward()
        opt_d.step()
        t.append(time.perf_counter())
        if it == 0:
            continue  # warm-up
        for name, a, b in zip(list(parts)[:-1], t, t[1:]):
            parts[name].append(b - a)
        parts["total"].append(t[-1] - t[0])
    return {k: round(float(np.mean(v)), 4) for k, v in parts.items()}


def child(args) -> None:
    """One setting in this process; prints its timings and peak memory as JSON."""
    cfg = load_config(args.params)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    pool_size, refresh = (cfg.fdd.batch_size, 1.0) if args.no_pool else (cfg.fdd.pool_size, cfg.fdd.pool_refresh)
    fdd, pool = setup(cfg, args.variant, pool_size, refresh, args.checkpointing, args.profile, args.size)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    before = _peak_mib()  # models, data and the filled pool's inputs
    parts = timed_iterations(cfg, fdd, pool, args.iterations)
    print(json.dumps({"parts": parts, "peak_mib": round(_peak_mib(), 1), "peak_mib_before_iterations": round(before, 1)}))


def _peak_mib() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--variant", default="full")
    parser.add_argument("--iterations", type=int, default=6)
    parser.add_argument("--profile", choices=("shapes", "full"), default="shapes", help="full: latent space, tiny SD-class models")
    parser.add_argument("--size", type=int, default=64, help="--profile full: frame side in pixels (latents are size/8)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-pool", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--checkpointing", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    results = {}
    for name, extra in (("pool", []), ("no_pool", ["--no-pool"]), ("pool+checkpointing", ["--checkpointing"])):
        cmd = [sys.executable, __file__, "--child", "--params", args.params, "--variant", args.variant, "--iterations", str(args.iterations),
               "--profile", args.profile, "--size", str(args.size), *extra]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        results[name] = json.loads(out)
        print(f"{name:20s} {json.dumps(results[name])}", flush=True)
    cfg = load_config(args.params)
    summary = {
        "device": "cuda" if torch.cuda.is_available() else f"cpu x{torch.get_num_threads()}",
        "profile": args.profile, "batch_size": cfg.fdd.batch_size, "k": cfg.fdd.k, "frames": cfg.world.frames,
        "size": args.size if args.profile == "full" else cfg.world.size,
        "iteration_seconds": results["pool"]["parts"]["total"],
        "pool_speedup": round(results["no_pool"]["parts"]["total"] / results["pool"]["parts"]["total"], 2),
        "peak_mib": results["pool"]["peak_mib"], "peak_mib_checkpointing": results["pool+checkpointing"]["peak_mib"],
        "peak_mib_before_iterations": results["pool"]["peak_mib_before_iterations"],
        "iteration_seconds_checkpointing": results["pool+checkpointing"]["parts"]["total"],
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
