"""One FDD iteration at the paper's size on the real architectures with random weights:
seconds per part, peak memory with and without gradient checkpointing, FLOPs and MFU.

The models are built from their published configs, written below (SD 1.5's UNet, VAE and
CLIP ViT-L/14 text encoder; AnimateDiff v1-5-2's MotionAdapter; the edit adapter, a
ControlNet copied from that UNet; DINOv2-base), with random weights, no download: weights do
not change memory, time or FLOPs. They are saved in the hub's layouts (float32 safetensors,
~8 GB at true size) to a temporary directory (or `--models DIR`, kept and reused) and loaded by the project's own loaders
(`models.registry`, `models.adapters.load_video_adapter`), then run by the project's FDD
(`eve_fdd.distill`) as stage `fdd` places it (models/placement.py: bf16 autocast, frozen
weights stored in bf16 on CUDA, the LoRA and the discriminator heads float32).

    # GPU, the true size: 8 frames at 512x512, k = 3, batch 1 per device, bf16
    PYTHONPATH=src:tests python benchmarks/full_scale.py --out $OUT/full_scale.json
    # this CPU: the true-size models at a reduced resolution (their float32 weights are ~12 GB of RAM)
    PYTHONPATH=src:tests python benchmarks/full_scale.py --size 128 --iterations 1
    # smoke: tiny models of the same classes (tests/full_profile.py sizes) at 32 px, seconds
    PYTHONPATH=src:tests python benchmarks/full_scale.py --smoke --out /tmp/full_scale_smoke.json

(tests/ gives the small CLIP tokenizer, `full_profile.tiny_clip_tokenizer`: texts are short,
so its byte-level vocabulary stands in for CLIP's 49,408 tokens; the text encoder keeps SD's
embedding size. On the device machine carry diffusers and pydantic as benchmarks/device_check.py says.)

An iteration is one of the adversarial phase (SDS-only iterations skip decode, adversarial and
discriminator), on a batch drawn from a teacher-sample pool filled beforehand. Its parts (seconds, mean over `--iterations` after one warm-up; on CUDA
synchronised at every boundary):
  generation     the student's k steps (motion UNet + ControlNet + LoRA), forward, graph kept
  sds            both teachers' x0 predictions and the SDS losses
  decode         the VAE decoder on the student's clip, with gradients
  adversarial    both discriminators on the decoded clip (the student's adversarial terms)
  backward       backward of the student's loss through all of the above
  step           gradient clipping and the student's optimiser step
  discriminator  the discriminator step: real and fake forwards, backward, clipping, step
(the discriminators' whole cost is adversarial + discriminator + their share of backward.)
The pool's own cost is given apart (`pool_entry_seconds`: the teachers' samples for one data
point; amortised at params.yaml's `fdd.pool_size` and `fdd.pool_refresh`).

Memory: torch.cuda.max_memory_allocated (and _reserved) on CUDA, the child's maximum resident
set on the CPU, one child process per checkpointing setting. FLOPs: one iteration as the
library runs it (`FDD.student_step` and its backward, `FDD.discriminator_step` and its
backward) under torch.utils.flop_counter.FlopCounterMode; with checkpointing that count
includes the recomputed forwards, so MFU uses the count without it (model FLOPs) where that
child ran. On the CPU the attention kernels are not counted (no FLOP formula for them) and MFU
is null. MFU = model FLOPs / iteration seconds / the GPU's dense bf16 peak (`PEAK_BF16`, or
`--peak-tflops`).
"""

from __future__ import annotations

import argparse
import datetime
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL, DDIMScheduler, MotionAdapter, StableDiffusionPipeline, UNet2DConditionModel
from full_profile import tiny_clip_tokenizer
from torch.utils.flop_counter import FlopCounterMode
from transformers import CLIPTextConfig, CLIPTextModel, Dinov2Config, Dinov2Model

from eve_fdd.config import load_config
from eve_fdd.diffusion import NoiseSchedule, inference_timesteps, make_scheduler, student_timesteps
from eve_fdd.distill import variants
from eve_fdd.distill.data import clip_batch, edit_labels
from eve_fdd.distill.fdd import FDD, _frozen
from eve_fdd.distill.losses import hinge_generator, sds_loss, sds_timesteps, sds_weight
from eve_fdd.distill.pool import TeacherPool
from eve_fdd.distill.run import discriminators
from eve_fdd.distill.student import Student
from eve_fdd.distill.teachers import EditTeacher, VideoTeacher
from eve_fdd.models.adapters import edit_adapter, load_video_adapter
from eve_fdd.models.placement import Placement, randn
from eve_fdd.models.registry import build_backbone, feature_network, load_edit_adapter
from eve_fdd.world import vocab

# --- The published configs (true size) ----------------------------------------------------
# runwayml/stable-diffusion-v1-5 unet/config.json: UNet2DConditionModel's defaults are SD 1.x's
# layout (blocks 320/640/1280/1280, 2 layers per block, 8 heads) but for these two
SD15_UNET = dict(cross_attention_dim=768, sample_size=64)
# stable-diffusion-v1-5 vae/config.json (AutoencoderKL's defaults are a one-level toy)
SD15_VAE = dict(in_channels=3, out_channels=3, block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, latent_channels=4, norm_num_groups=32,
                sample_size=512, scaling_factor=0.18215)
# openai/clip-vit-large-patch14's text model, SD 1.5's text_encoder/config.json
CLIP_L14_TEXT = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                     max_position_embeddings=77, projection_dim=768, hidden_act="quick_gelu")
# guoyww/animatediff-motion-adapter-v1-5-2: MotionAdapter()'s defaults (320/640/1280/1280, 2 motion
# layers per block, 8 heads, a motion mid block, 32 frames at most)
ANIMATEDIFF_V152: dict = {}
# the edit adapter's condition encoder: four levels, reading the input frame in pixels (8x the latents)
CONTROLNET_CHANNELS = (16, 32, 96, 256)
# facebook/dinov2-base config.json: Dinov2Config()'s defaults (hidden 768, 12 layers, 12 heads, patch 14)
# but position embeddings for 518 px (interpolated to the 224 px the discriminators read)
DINOV2_BASE = dict(image_size=518)
TRUE_SIZE = dict(unet=SD15_UNET, vae=SD15_VAE, text=CLIP_L14_TEXT, motion=ANIMATEDIFF_V152, controlnet_channels=CONTROLNET_CHANNELS,
                 dinov2=DINOV2_BASE)

# --- Smoke: the same classes at tests/full_profile.py's sizes (a 2-level VAE: latents at size/2)
SMOKE = dict(
    unet=dict(sample_size=16, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
              down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
              attention_head_dim=2, norm_num_groups=8, cross_attention_dim=32),
    vae=dict(in_channels=3, out_channels=3, block_out_channels=(16, 32), down_block_types=("DownEncoderBlock2D",) * 2,
             up_block_types=("UpDecoderBlock2D",) * 2, layers_per_block=1, latent_channels=4, norm_num_groups=8, sample_size=32,
             scaling_factor=0.18215),
    text=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=77,
              projection_dim=32),
    motion=dict(block_out_channels=(32, 64), motion_layers_per_block=1, motion_num_attention_heads=2, motion_norm_num_groups=8),
    controlnet_channels=(16, 32),
    dinov2=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, patch_size=4, image_size=32),
)
SMOKE_DISCRIMINATOR = dict(image_size=24, feature_layers=[1, 2], head_width=16, head_heads=2)  # as tests/test_stage_fdd_full.py

# SD 1.5's scheduler (the pipeline layout needs one; the project builds its own from params `diffusion`)
SD15_SCHEDULER = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                      prediction_type="epsilon", steps_offset=1, set_alpha_to_one=False, clip_sample=False)
# dense bf16 peak FLOP/s from NVIDIA's datasheets (SXM unless named), matched in order against the device name
PEAK_BF16 = (("H100 PCIe", 756e12), ("H100", 989e12), ("H200", 989e12), ("A100", 312e12))
PARTS = ("generation", "sds", "decode", "adversarial", "backward", "step", "discriminator")
CAPTION, INSTRUCTION = "a red square moving right on a blue background", "make the background orange"
GB80_MIB = 80e9 / 2**20  # the target: an 80 GB GPU


def write_models(root: Path, sizes: dict, seed: int = 0) -> None:
    """The full profile's pretrained models under `root`, random, in the hub's layouts: SD 1.5's
    pipeline (`sd/`), the edit adapter (`controlnet/`, named by `edit_adapter/model.json` as a
    stage writes it), the motion adapter (`motion/`), DINOv2 (`dinov2/`); `models.json` last."""
    tokenizer = tiny_clip_tokenizer()
    ids = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**sizes["unet"])
    text = CLIPTextModel(CLIPTextConfig(**({"vocab_size": len(tokenizer)} | sizes["text"] | ids)))
    pipe = StableDiffusionPipeline(vae=AutoencoderKL(**sizes["vae"]), text_encoder=text, tokenizer=tokenizer, unet=unet,
                                   scheduler=DDIMScheduler(**SD15_SCHEDULER), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(root / "sd")
    edit_adapter(unet, tuple(sizes["controlnet_channels"])).save_pretrained(root / "controlnet")
    (root / "edit_adapter").mkdir(parents=True, exist_ok=True)
    (root / "edit_adapter" / "model.json").write_text(json.dumps({"path": str(root / "controlnet"), "trained": False}))
    del pipe, unet, text
    MotionAdapter(**sizes["motion"]).save_pretrained(root / "motion")
    Dinov2Model(Dinov2Config(**sizes["dinov2"])).save_pretrained(root / "dinov2")
    (root / "models.json").write_text(json.dumps(sizes, indent=1))


def fdd_config(args):
    """params.yaml's `fdd` on the full profile (SD 1.5's epsilon schedule), with this run's k,
    batch, checkpointing and precision, DINOv2 from `--models`."""
    over = {"profile": "full", "diffusion.prediction_type": "epsilon", "diffusion.zero_terminal_snr": False, "fdd.k": args.k,
            "fdd.batch_size": args.batch, "fdd.gradient_checkpointing": args.checkpointing == "on",
            "fdd.mixed_precision": args.precision, "fdd.discriminator.pretrained": str(args.models / "dinov2")}
    if args.sds_guidance is not None:
        over["fdd.sds_guidance"] = args.sds_guidance
    if args.smoke:
        over |= {f"fdd.discriminator.{k}": v for k, v in SMOKE_DISCRIMINATOR.items()}
    return load_config(args.params, over)


def random_clips(backbone, n: int, frames: int, size: int, seed: int = 0):
    """The pool's data: `n` clips of random pixels (nothing here depends on their content) with
    a short caption and instruction each."""
    video = np.random.default_rng(seed).integers(0, 256, (n, frames, size, size, 3), dtype=np.uint8)
    tasks = [vocab.TASKS[i % len(vocab.TASKS)] for i in range(n)]

    def data(index):
        index = list(index)
        with torch.no_grad():
            return clip_batch(video[index], backbone.encode_text([CAPTION] * len(index)), backbone.encode_text([INSTRUCTION] * len(index)),
                              edit_labels([tasks[i] for i in index]), backbone.space)

    return data


def setup(cfg, args, placement):
    """FDD (variant `full`) and a teacher pool of `--pool-size` data points, built as stage `fdd`
    builds them, the trained parts placed as the training loop places them."""
    f = cfg.fdd
    backbone = build_backbone(cfg, args.models / "sd").freeze(placement)
    controlnet = load_edit_adapter(args.models / "edit_adapter", backbone)
    motion_unet = load_video_adapter(backbone.unet, str(args.models / "motion")).requires_grad_(False).eval()
    scheduler = make_scheduler(cfg.diffusion)
    schedule = NoiseSchedule.from_scheduler(scheduler)
    with torch.no_grad():
        empty = backbone.encode_text([""])
    edit_teacher = EditTeacher(backbone.unet, controlnet, schedule, f.sds_guidance, empty)
    video_teacher = VideoTeacher(motion_unet, schedule, f.sds_guidance, empty)
    student = Student(motion_unet, controlnet, schedule, lora_name="fdd", lora_rank=f.lora_rank,
                      gradient_checkpointing=f.gradient_checkpointing)
    d_edit, d_video = discriminators(f.discriminator, backbone.text_encoder.config.hidden_size, args.frames, feature_network(cfg, placement))
    fdd = FDD(student, edit_teacher, video_teacher, d_edit, d_video, scheduler, schedule,
              variants.settings(f, "full", cfg.diffusion.inference_steps), backbone.space)
    pool = TeacherPool(random_clips(backbone, args.pool_size, args.frames, args.size), args.pool_size,
                       edit_teacher.with_guidance(f.teacher_guidance), video_teacher.with_guidance(f.teacher_guidance),
                       inference_timesteps(scheduler, f.teacher_steps), args.pool_size, 0.0, f.seed)  # no refresh: its cost is timed apart
    trained = [*student.modules().values(), d_edit, d_video]
    placement.trained(trained)
    for module in trained:
        module.train()
    return fdd, pool


def clock() -> float:
    """time.perf_counter once the GPU's queued work is done."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter()


class Laps:
    """Seconds of the named parts of iterations (and on CUDA the memory allocated at each part's
    end: what the graph holds so far); the GPU is synchronised at every boundary."""

    def __init__(self):
        self.seconds: dict[str, list[float]] = {p: [] for p in PARTS}
        self.allocated_mib: dict[str, float] = {}

    def start(self) -> None:
        self.t = clock()

    def lap(self, part: str) -> None:
        now = clock()
        self.seconds[part].append(now - self.t)
        if torch.cuda.is_available():
            self.allocated_mib[part] = round(torch.cuda.memory_allocated() / 2**20, 1)
        self.t = now

    def means(self) -> dict[str, float]:
        return {p: round(float(np.mean(v)), 4) for p, v in self.seconds.items()}


def iteration(fdd, pool, opts, cfg, placement, step: int, laps: Laps) -> None:
    """`FDD.student_step` and `FDD.discriminator_step` of an adversarial-phase iteration, with
    the training loop's backward, clipping and steps, the student step's parts run in its order
    from the same library calls so each can be timed apart (as benchmarks/fdd_iteration.py does)."""
    s, opt_g, opt_d = fdd.settings, *opts
    g = torch.Generator().manual_seed(step)
    batch, edit_real, video_real = pool.draw(cfg.fdd.batch_size, g)
    laps.start()
    with placement.autocast():
        ts = student_timesteps(fdd.scheduler, s.inference_steps, s.k, s.timesteps, g, s.kbin_first)
        fake = fdd.student.generate(randn(batch.source.shape, g, like=batch.source), batch, ts)
        laps.lap("generation")
        t = sds_timesteps(fdd.schedule, fake.shape[0], s.sds_t_range, g)
        w = sds_weight(fdd.schedule, t, s.sds_weighting)
        le, _ = sds_loss(fake, lambda x, q: fdd.edit_teacher.x0(x, q, batch), fdd.schedule, t, randn(fake.shape, g, like=fake), w,
                         fdd.student.scored)
        lv, _ = sds_loss(fake, lambda x, q: fdd.video_teacher.x0(x, q, batch), fdd.schedule, t, randn(fake.shape, g, like=fake), w,
                         fdd.student.scored)
        laps.lap("sds")
        pixels = fdd.space.decode(fake)
        laps.lap("decode")
        with _frozen(fdd.d_edit, fdd.d_video):
            ge, _ = hinge_generator(fdd._d_edit(batch, pixels[:, :, fdd.student.scored]))
            gv, _ = hinge_generator(fdd.d_video(pixels, batch.caption_emb))
        loss = s.alpha * (ge + s.lam * le) + s.beta * (gv + s.lam * lv)
        laps.lap("adversarial")
    opt_g.zero_grad(set_to_none=True)
    loss.backward()
    laps.lap("backward")
    torch.nn.utils.clip_grad_norm_(fdd.student.parameters(), cfg.fdd.grad_clip)
    opt_g.step()
    laps.lap("step")
    with placement.autocast():
        d_loss, _ = fdd.discriminator_step(batch, fake.detach(), edit_real, video_real, pixels.detach())
    opt_d.zero_grad(set_to_none=True)
    d_loss.backward()
    torch.nn.utils.clip_grad_norm_(fdd.discriminator_parameters(), cfg.fdd.grad_clip)
    opt_d.step()
    laps.lap("discriminator")


def count_flops(fdd, pool, opts, cfg, placement) -> int:
    """FLOPs of one adversarial-phase iteration as the library runs it: `FDD.student_step` and
    its backward, `FDD.discriminator_step` and its backward (the optimiser steps, over the LoRA
    and the heads, are left out)."""
    g = torch.Generator().manual_seed(10_000)
    batch, edit_real, video_real = pool.draw(cfg.fdd.batch_size, g)
    with FlopCounterMode(display=False) as counter:
        with placement.autocast():
            loss, _, fake, pixels = fdd.student_step(batch, fdd.settings.adversarial_start, g)
        loss.backward()
        with placement.autocast():
            d_loss, _ = fdd.discriminator_step(batch, fake, edit_real, video_real, pixels)
        d_loss.backward()
    for opt in opts:
        opt.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


def child(args) -> None:
    """One checkpointing setting in this process; prints its figures as one JSON line."""
    cfg = fdd_config(args)
    placement = Placement.resolve(cfg.fdd.mixed_precision)
    cuda = placement.device.type == "cuda"
    out: dict = {"checkpointing": cfg.fdd.gradient_checkpointing, "device": torch.cuda.get_device_name() if cuda else "cpu",
                 "bf16": placement.bf16, "frozen_dtype": str(placement.frozen_dtype), "threads": torch.get_num_threads()}
    torch.manual_seed(cfg.fdd.seed)
    with placement.inference():  # as stage fdd: the training steps open their own autocast
        fdd, pool = setup(cfg, args, placement)
        start = clock()
        pool.fill()
        out["pool_entry_seconds"] = round((clock() - start) / pool.size, 3)
        opts = (torch.optim.AdamW(fdd.student.parameters(), lr=cfg.fdd.lr),
                torch.optim.AdamW(fdd.discriminator_parameters(), lr=cfg.fdd.discriminator.lr, weight_decay=0.0))
        out["models_mib"] = _memory_mib()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        try:
            iteration(fdd, pool, opts, cfg, placement, 0, Laps())  # warm-up
            laps = Laps()
            for step in range(1, args.iterations + 1):
                iteration(fdd, pool, opts, cfg, placement, step, laps)
            parts = laps.means()
            out |= {"parts": parts, "iteration_seconds": round(sum(parts.values()), 4), "allocated_mib_after": laps.allocated_mib}
            out |= _peaks(cuda)
            out["flops"] = count_flops(fdd, pool, opts, cfg, placement)
        except torch.OutOfMemoryError as exc:
            out |= {"oom": True, "error": str(exc).splitlines()[0], **_peaks(cuda)}
    print(json.dumps(out))


def _memory_mib() -> float:
    """Allocated now (CUDA) or the process's maximum resident set so far (CPU)."""
    if torch.cuda.is_available():
        return round(torch.cuda.memory_allocated() / 2**20, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _peaks(cuda: bool) -> dict[str, float]:
    if not cuda:
        return {"peak_mib": _memory_mib()}
    return {"peak_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1),
            "peak_reserved_mib": round(torch.cuda.max_memory_reserved() / 2**20, 1)}


def peak_flops(device: str, given_tflops: float | None) -> float | None:
    if given_tflops:
        return given_tflops * 1e12
    return next((peak for key, peak in PEAK_BF16 if key in device), None)


def summarise(settings: dict[str, dict], peak_tflops: float | None) -> dict:
    """Per setting: seconds, peak memory, TFLOP/s achieved and MFU from the model FLOPs (the count
    without checkpointing where that child ran: with it, the recomputed forwards are counted too)."""
    ran = {name: r for name, r in settings.items() if "parts" in r}
    if not ran:
        return {"error": "no setting ran"}
    model_flops = ran.get("off", next(iter(ran.values())))["flops"]
    device = next(iter(ran.values()))["device"]
    peak = peak_flops(device, peak_tflops)
    out: dict = {"device": device, "model_flops": model_flops, "model_flops_include_recompute": "off" not in ran,
                 "peak_tflops": None if peak is None else peak / 1e12}
    for name, r in settings.items():
        if "parts" not in r:
            out[f"checkpointing_{name}"] = {k: r.get(k) for k in ("oom", "error", "peak_mib", "peak_reserved_mib")}
            continue
        achieved = model_flops / r["iteration_seconds"]
        reserved = r.get("peak_reserved_mib")
        out[f"checkpointing_{name}"] = {
            "iteration_seconds": r["iteration_seconds"], "parts": r["parts"], "peak_mib": r["peak_mib"], "peak_reserved_mib": reserved,
            "fits_80gb": None if reserved is None else reserved <= GB80_MIB, "achieved_tflops": round(achieved / 1e12, 3),
            "mfu": None if peak is None else round(achieved / peak, 4), "flops_counted": r["flops"]}
    return out


def commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False).stdout.strip() or None
    except OSError:
        return None


def run_child(args, setting: str) -> dict:
    cmd = [sys.executable, __file__, "--child", "--models", str(args.models), "--checkpointing", setting, "--size", str(args.size),
           "--frames", str(args.frames), "--k", str(args.k), "--batch", str(args.batch), "--precision", args.precision,
           "--iterations", str(args.iterations), "--pool-size", str(args.pool_size), "--params", args.params]
    if args.smoke:
        cmd.append("--smoke")
    if args.sds_guidance is not None:
        cmd += ["--sds-guidance", str(args.sds_guidance)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        return {"error": f"exit {proc.returncode}", "stderr_tail": proc.stderr[-3000:]}
    return json.loads(lines[-1])


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=None, help="frame side in pixels (default 512; --smoke: 32)")
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--k", type=int, default=3, help="student steps, backpropagated through")
    ap.add_argument("--batch", type=int, default=1, help="clips per iteration (per device)")
    ap.add_argument("--precision", choices=("bf16", "no"), default=None, help="default bf16 on CUDA, no on the CPU")
    ap.add_argument("--checkpointing", choices=("both", "on", "off"), default="both", help="gradient checkpointing; one child each")
    ap.add_argument("--iterations", type=int, default=3, help="timed, after one warm-up")
    ap.add_argument("--pool-size", type=int, default=None, help="data points in the teacher pool (default --batch)")
    ap.add_argument("--sds-guidance", type=float, default=None, help="the teachers' CFG in SDS (default params fdd.sds_guidance); >1 doubles them")
    ap.add_argument("--peak-tflops", type=float, default=None, help="the device's dense peak, for MFU (default from PEAK_BF16)")
    ap.add_argument("--models", type=Path, default=None, help="write the models here and keep them (reused when complete)")
    ap.add_argument("--smoke", action="store_true", help="tiny models of the same classes at 32 px: checks the script end to end")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", type=Path, default=None, help="default results/full_scale_<device>_<date>.json")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--write", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.size = args.size or (32 if args.smoke else 512)
    args.precision = args.precision or ("bf16" if torch.cuda.is_available() else "no")
    args.pool_size = args.pool_size or args.batch
    return args


def main() -> None:
    args = parse_args()
    if args.child:
        child(args)
        return
    if args.write:
        write_models(args.models, SMOKE if args.smoke else TRUE_SIZE)
        return
    with tempfile.TemporaryDirectory() as tmp:
        if args.models is None:
            args.models = Path(tmp)
        if not (args.models / "models.json").is_file():  # in a process of its own: its memory is not the children's
            start = time.perf_counter()
            subprocess.run([sys.executable, __file__, "--write", "--models", str(args.models), *(["--smoke"] if args.smoke else [])], check=True)
            print(f"models written to {args.models} in {time.perf_counter() - start:.0f} s", flush=True)
        settings = {}
        for setting in ("on", "off") if args.checkpointing == "both" else (args.checkpointing,):
            settings[setting] = run_child(args, setting)
            print(f"checkpointing {setting}: {json.dumps(settings[setting])}", flush=True)
    f = load_config(args.params).fdd
    summary = summarise(settings, args.peak_tflops)
    entry = [r["pool_entry_seconds"] for r in settings.values() if "pool_entry_seconds" in r]
    if entry:
        summary["pool_seconds_per_iteration"] = round(entry[0] * f.pool_size * f.pool_refresh, 4)  # amortised, params' pool
    result = {"what": "one FDD iteration on the real architectures, random weights (benchmarks/full_scale.py)",
              "date": datetime.date.today().isoformat(), "commit": commit(), "torch": torch.__version__,
              "params": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k not in ("child", "write", "out")},
              "models": "smoke (tests/full_profile.py sizes)" if args.smoke else "true size (SD 1.5, AnimateDiff v1-5-2, DINOv2-base)",
              "settings": settings, "summary": summary}
    print(json.dumps(summary, indent=1))
    device = summary.get("device", "cpu").lower().replace("nvidia ", "").replace(" ", "-")
    out = args.out or Path("results") / f"full_scale_{device}{'_smoke' if args.smoke else ''}_{result['date']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
