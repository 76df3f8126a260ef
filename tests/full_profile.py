"""Tiny stand-ins for the full profile's pretrained models, for tests.

The full profile loads Stable Diffusion 1.5, AnimateDiff's motion modules, a ControlNet,
DINOv2 and the metric models (CLIP, PickScore, X-CLIP) from the hub. Nothing can be
downloaded here, so `build_tiny_full` writes randomly initialised models of the same classes,
in the hub's directory layouts, plus a folder of real mp4 clips with a captions CSV, so tests
can run the full profile's code path (its loaders included) on CPU in seconds.
"""

from __future__ import annotations

import csv
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

MAX_TOKENS = 77  # SD 1.5's / CLIP's text length
HIDDEN = 32  # width of every tiny transformer here (the UNet's cross-attention dim too)
VAE_CHANNELS = (16, 32)
VAE_SCALE = 2 ** (len(VAE_CHANNELS) - 1)
MERGES = ("t h", "h e", "th e</w>", "i n", "n g</w>", "e r", "a n", "r e", "o n", "a t", "e n", "o r", "e d</w>",
          "o u", "q u", "r i", "g h", "c k", "in g</w>", "o n</w>", "a r", "u e</w>", "n d</w>")
CLIPS = (  # (file, rectangle colour, background colour, direction (dy, dx), caption)
    ("red_right.mp4", (220, 30, 30), (20, 40, 200), (0, 2), "a red square moving right on a blue background"),
    ("green_down.mp4", (30, 200, 60), (240, 240, 240), (2, 0), "a green square moving down on a white background"),
    ("yellow_left.mp4", (230, 220, 40), (30, 30, 30), (0, -2), "a yellow rectangle moving left on a black background"),
    ("blue_up.mp4", (40, 80, 230), (120, 120, 120), (-2, 0), "a blue square moving up on a gray background"),
)
BROKEN = ("broken.mp4", "a broken video of a purple square")


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's (and CLIP's) reversible byte -> printable unicode character map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def tiny_clip_tokenizer():
    """A real `CLIPTokenizer` over a byte-level BPE vocab (every byte, plain and word-final,
    a few merges), written to vocab.json/merges.txt and loaded from them as the hub's is.
    Ids are ordered as CLIP's: bytes, merges, then <|startoftext|> and <|endoftext|> last."""
    from transformers import CLIPTokenizer

    chars = list(bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars] + ["".join(m.split()) for m in MERGES]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}), encoding="utf-8")
        (Path(tmp) / "merges.txt").write_text("\n".join(["#version: 0.2", *MERGES]) + "\n", encoding="utf-8")
        return CLIPTokenizer.from_pretrained(tmp, model_max_length=MAX_TOKENS)


def _text_config(tokenizer) -> dict:
    return dict(vocab_size=len(tokenizer), hidden_size=HIDDEN, intermediate_size=2 * HIDDEN, num_hidden_layers=2,
                num_attention_heads=2, max_position_embeddings=MAX_TOKENS, projection_dim=HIDDEN,
                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)


def _vision_config(frame_size: int) -> dict:
    return dict(hidden_size=HIDDEN, intermediate_size=2 * HIDDEN, num_hidden_layers=2, num_attention_heads=2,
                image_size=frame_size, patch_size=8)


def _backbone(root: Path, tokenizer, frame_size: int, seed: int):
    """SD 1.5's pipeline layout (a StableDiffusionPipeline saved whole); returns the UNet."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=frame_size // VAE_SCALE, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        attention_head_dim=2, norm_num_groups=8, cross_attention_dim=HIDDEN,
    )
    torch.manual_seed(seed)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, block_out_channels=VAE_CHANNELS, down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, layers_per_block=1, latent_channels=4, norm_num_groups=8,
        sample_size=frame_size, scaling_factor=0.18215,
    )
    torch.manual_seed(seed)
    text = CLIPTextModel(CLIPTextConfig(**_text_config(tokenizer)))
    scheduler = DDIMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              prediction_type="epsilon", steps_offset=1, set_alpha_to_one=False, clip_sample=False)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(root)
    return unet


def _dinov2(root: Path, frame_size: int, seed: int) -> None:
    """A `Dinov2Model` and DINOv2's image processor (ImageNet mean/std) in one directory."""
    from transformers import BitImageProcessorPil, Dinov2Config, Dinov2Model

    torch.manual_seed(seed)
    Dinov2Model(Dinov2Config(hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=2, intermediate_size=2 * HIDDEN,
                             patch_size=4, image_size=frame_size)).save_pretrained(root)
    processor = BitImageProcessorPil(size={"shortest_edge": frame_size}, crop_size={"height": frame_size, "width": frame_size},
                                     do_center_crop=True, image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])
    processor.save_pretrained(root)
    _rename_processor_type(root, "BitImageProcessor")


def _rename_processor_type(root: Path, name: str) -> None:
    """Record the processor class the hub's config names (the PIL backend saves its own name)."""
    path = root / "preprocessor_config.json"
    config = json.loads(path.read_text())
    config["image_processor_type"] = name
    path.write_text(json.dumps(config, indent=2))


def _metric_models(root: Path, tokenizer, frame_size: int, seed: int) -> dict[str, Path]:
    """CLIP (CLIPFrame), PickScore (another CLIPModel) and X-CLIP, each with the tokenizer and
    CLIP's frame processor, as `load_image_text` / `load_video_text` read them."""
    from transformers import CLIPConfig, CLIPModel, XCLIPConfig, XCLIPModel

    from eve_fdd.evaluate.paper_metrics import frame_processor

    paths = {}
    for offset, name in enumerate(("clip", "pick")):
        torch.manual_seed(seed + offset)  # PickScore is not CLIP: a different draw
        model = CLIPModel(CLIPConfig(text_config=_text_config(tokenizer), vision_config=_vision_config(frame_size),
                                     projection_dim=HIDDEN))
        paths[name] = _save_with(model, root / name, tokenizer, frame_processor(frame_size))
    vision = _vision_config(frame_size) | dict(num_frames=4, mit_hidden_size=HIDDEN, mit_intermediate_size=2 * HIDDEN,
                                               mit_num_hidden_layers=1, mit_num_attention_heads=2)
    torch.manual_seed(seed)
    xclip = XCLIPModel(XCLIPConfig(text_config=_text_config(tokenizer), vision_config=vision, projection_dim=HIDDEN,
                                   prompt_layers=1, prompt_attention_heads=2))
    paths["xclip"] = _save_with(xclip, root / "xclip", tokenizer, frame_processor(frame_size))
    return paths


def _save_with(model, path: Path, tokenizer, processor) -> Path:
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def _clip_frames(colour, background, step, frames: int = 12, height: int = 40, width: int = 48) -> np.ndarray:
    """(frames, height, width, 3) uint8: a 12x12 rectangle crossing a plain background."""
    out = np.empty((frames, height, width, 3), np.uint8)
    out[:] = background
    y0, x0 = height // 2 - 6 - step[0] * frames // 2, width // 2 - 6 - step[1] * frames // 2
    for f in range(frames):
        y, x = y0 + step[0] * f, x0 + step[1] * f
        out[f, max(y, 0):y + 12, max(x, 0):x + 12] = colour
    return out


def _clips(root: Path) -> Path:
    """4 real mp4 clips (12 frames, 40x48), one broken file, captions.csv (file,caption)."""
    from eve_fdd.data.video import write_mp4

    root.mkdir(parents=True, exist_ok=True)
    for file, colour, background, step, _ in CLIPS:
        write_mp4(_clip_frames(colour, background, step), root / file, fps=12)
    (root / BROKEN[0]).write_bytes(b"\x00\x01not an mp4\xff")
    with (root / "captions.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "caption"])
        writer.writerows([(c[0], c[-1]) for c in CLIPS] + [BROKEN])
    return root


EDIT_PAIRS = (  # (input clip, frame, instruction, output caption, task or "" for the rule)
    ("red_right.mp4", 0, "make the background orange", "a red square on an orange background", "background"),
    ("green_down.mp4", 3, "remove the square", "an empty white background", ""),
    ("yellow_left.mp4", 5, "make the background orange", "a yellow rectangle on an orange background", ""),
    ("blue_up.mp4", 2, "turn the square red", "a red square on a gray background", "local"),
    ("red_right.mp4", 7, "remove the square", "an empty blue background", "remove"),
    ("green_down.mp4", 9, "turn the square red", "a red square on a white background", ""),
    ("yellow_left.mp4", 1, "remove the rectangle", "an empty black background", ""),
    ("blue_up.mp4", 6, "make the background orange", "a blue square on an orange background", "background"),
)


def _edited(clip: tuple, frame: np.ndarray, instruction: str) -> np.ndarray:
    """The frame as the instruction leaves it: every background pixel orange, the square red,
    or the square gone (its pixels the background's colour)."""
    _, colour, background, _, _ = clip
    square = np.all(frame == colour, axis=-1)
    out = frame.copy()
    if "background" in instruction:
        out[~square] = (240, 140, 30)
    elif "red" in instruction:
        out[square] = (220, 30, 30)
    else:
        out[square] = background
    return out


def edit_pair_folder(root: Path, size: int = 32) -> Path:
    """An image-edit dataset in the folder layout stage `edit_pairs` ingests at full scale
    (raw/edit_pairs/README.md): frames of the tiny clips and their edits as PNGs, pairs.jsonl
    with input/output captions, the task given on some rows and left to the rule on others."""
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    clips = {c[0]: c for c in CLIPS}
    with (root / "pairs.jsonl").open("w") as index:
        for i, (file, f, instruction, output, task) in enumerate(EDIT_PAIRS):
            clip = clips[file]
            frame = _clip_frames(clip[1], clip[2], clip[3], height=size, width=size)[f]
            Image.fromarray(frame).save(root / f"in-{i}.png")
            Image.fromarray(_edited(clip, frame, instruction)).save(root / f"out-{i}.png")
            row = dict(input_image=f"in-{i}.png", edited_image=f"out-{i}.png", instruction=instruction,
                       input_caption=clip[-1], output_caption=output, task=task)
            index.write(json.dumps(row) + "\n")
    return root


def lora_image_folder(root: Path, concept: str = "watercolour", size: int = 32) -> Path:
    """A concept's image folder as stage `loras` trains from at full scale (raw/loras/README.md):
    6 PNGs, frames of the tiny clips, and captions.csv whose captions name the concept
    ("a red square on a blue background, watercolour painting")."""
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    with (root / "captions.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "caption"])
        for i, (file, colour, background, step, text) in enumerate(CLIPS + CLIPS[:2]):
            frame = _clip_frames(colour, background, step, height=size, width=size)[(3 * i) % 12]
            Image.fromarray(frame).save(root / f"{i:02d}.png")
            still = text.split(" moving ")[0] + " on " + text.split(" on ", 1)[1]  # "a red square on a blue background"
            writer.writerow([f"{i:02d}.png", f"{still}, {concept} painting"])
    return root


def build_tiny_full(root: Path, frame_size: int = 32, seed: int = 0) -> dict[str, Path]:
    """Write the full profile's models (tiny, random, of the real classes) and a clip folder
    under `root`; returns their paths: backbone (SD 1.5 pipeline layout), controlnet, motion,
    dinov2, clip, pick, xclip, clips. `frame_size` is the pixel size of the frames the models
    read (latents are frame_size // 2)."""
    from eve_fdd.models.adapters import edit_adapter, video_adapter

    root = Path(root)
    tokenizer = tiny_clip_tokenizer()
    paths = {"backbone": root / "sd", "controlnet": root / "controlnet", "motion": root / "motion", "dinov2": root / "dinov2"}
    unet = _backbone(paths["backbone"], tokenizer, frame_size, seed)
    torch.manual_seed(seed)
    edit_adapter(unet, conditioning_channels=(16, 32)).save_pretrained(paths["controlnet"])
    torch.manual_seed(seed)
    video_adapter(unet, heads=2).save_motion_modules(str(paths["motion"]))
    _dinov2(paths["dinov2"], frame_size, seed)
    paths |= _metric_models(root, tokenizer, frame_size, seed)
    paths["clips"] = _clips(root / "clips")
    return paths


FULL_TASKS = ("background", "style", "remove")
INSTRUCTIONS = {  # task -> (instruction, how the output caption changes the input's)
    "background": ("make the background orange", lambda c: c.rsplit(" on ", 1)[0] + " on an orange background"),
    "style": ("make it look like a watercolour painting", lambda c: c + ", watercolour painting"),
    "remove": ("remove the square", lambda c: "an empty" + c.rsplit(" on a", 1)[-1].removeprefix("n")),
}


def full_stage_inputs(models: dict[str, Path], root: Path, ingest, tasks=FULL_TASKS) -> dict[str, Path]:
    """Stage outputs on disk as the full profile's FDD and evaluation read them: the videos
    table ingested from `models["clips"]` with `ingest` (the last clip held out), an
    instruction table (a few tasks per clip, no scene or edit spec: real clips have no ground
    truth; one rejected row), and the backbone / edit adapter / video adapter stage dirs
    (model.json naming the tiny pretrained models, as the full profile's teacher stages write)."""
    from eve_fdd.data import tables
    from eve_fdd.stages.videos import ingest_clips

    root = Path(root)
    rows, _ = ingest_clips(ingest.model_copy(update={"source_dir": str(models["clips"])}), 0.0)
    rows.sort(key=lambda r: r["video_id"])
    for i, r in enumerate(rows):
        r["split"] = "test" if i == len(rows) - 1 else "train"
    tables.write_table(tables.VIDEOS, rows, root / "videos.parquet")
    instructions = []
    for r in rows:
        for task in tasks:
            text, out = INSTRUCTIONS[task]
            ok = not (r is rows[0] and task == tasks[-1])
            instructions.append(dict(
                row_id=f"{r['video_id']}/{task}", set="videos", video_id=r["video_id"], task=task, concept=None,
                input_caption=r["caption"], instruction=text if ok else "", output_caption=out(r["caption"]) if ok else "",
                edit_spec=None, model="llama-2-7b-chat.Q4_K_M.gguf", model_sha256="0" * 64, prompt_version="t", seed=0,
                attempts=1, raw_output="", status="accepted" if ok else "rejected", reason=None if ok else "test",
                completion_tokens=0))
    tables.write_table(tables.INSTRUCTIONS, instructions, root / "instructions.parquet")
    dirs = {}
    for name, key in (("backbone_dir", "backbone"), ("edit_dir", "controlnet"), ("video_dir", "motion")):
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        (d / "model.json").write_text(json.dumps({"path": str(models[key]), "trained": False}))
        dirs[name] = d
    return dict(instructions=root / "instructions.parquet", videos=root / "videos.parquet", **dirs)


def metric_models_dir(models: dict[str, Path], root: Path) -> Path:
    """A `metric_models` stage output naming the tiny CLIP (PickScore too) and X-CLIP, as the full
    profile's stage writes it."""
    root = Path(root)
    for kind, info in (("clip", {"path": str(models["clip"]), "pick": str(models["pick"]), "pick_processor": None}),
                       ("xclip", {"path": str(models["xclip"])})):
        (root / kind).mkdir(parents=True)
        (root / kind / "model.json").write_text(json.dumps(info))
    return root


def tiny_full_gguf(path: Path, captions=None) -> Path:
    """A tiny Llama GGUF that answers the full profile's instruction requests in valid JSON
    (measured: 20 of 20 requests and 12 of 12 subject/style requests accepted at the first try):
    400 steps on the full profile's own prompts for the clip captions, each answered with its
    task's first few-shot answer. It writes nonsense that passes the text-only checks; a random
    GGUF never closes its JSON (llama.cpp's JSON grammar lets control characters through)."""
    from eve_fdd.config import Config
    from eve_fdd.llm import prompts
    from eve_fdd.llm.tiny import TinyLlamaConfig, train_tiny_llama
    from eve_fdd.world import vocab

    captions = [c[-1] for c in CLIPS] if captions is None else captions
    ic = Config(profile="full").instructions
    requests = [(t, None) for t in vocab.TASKS] + [(t, s) for s in ic.subjects for t in ("add", "replace")]
    requests += [("style", s) for s in ic.styles]
    pairs = [(prompts.messages("full", c, t, k), prompts.answer(t, *prompts.examples("full", t, k)[0][1:]))
             for t, k in requests for c in captions]
    tiny = TinyLlamaConfig(hidden_size=64, layers=2, heads=4, intermediate_size=160, max_positions=512, steps=400, batch_size=8,
                           seed=3, lr=5e-3, warmup_steps=20, bf16=False, threads=1)
    train_tiny_llama(pairs, tiny, path, progress=False)
    return path


def full_smoke_params(params: dict, models: dict[str, Path], gguf: Path, concept: str = "watercolour") -> dict:
    """The project's params.yaml (`params`, parsed) turned into a tiny full-profile run: every
    pretrained path pointing at the tiny models, SD 1.5's schedule, toy sizes; stage outputs
    as small as the stages allow."""
    p = params
    p["profile"] = "full"
    p["videos"].update(samples=1, test_fraction=0.5)
    p["videos"]["ingest"].update(source_dir="raw/clips", frames=4, stride=2, size=32)
    p["llm"].update(model_path=str(gguf), n_ctx=512, n_threads=1)
    p["instructions"].update(max_attempts=2, shard_size=40, subjects=[], styles=[concept], subject_style_count=3)
    p["diffusion"].update(prediction_type="epsilon", zero_terminal_snr=False, inference_steps=4)
    p["models"]["backbone"]["pretrained"] = str(models["backbone"])
    # the edit adapter trains on a tiny image-edit dataset in raw/edit_pairs (edit_pair_folder), in latent space
    p["edit_pairs"].update(test_fraction=0.4, samples=2)
    p["edit_pairs"]["ingest"].update(source="raw/edit_pairs", size=32)
    p["edit_adapter"].update(pretrained="", conditioning_channels=[16, 32], batch_size=2, eval_pairs=3, eval_steps=2, samples=2)
    p["edit_adapter"]["train"].update(steps=3, checkpoint_every=2, log_every=1, warmup_steps=0)
    # the video adapter trains on the ingested clips' train split, starting from the tiny MotionAdapter (as from AnimateDiff's)
    p["video_adapter"].update(pretrained="", init=str(models["motion"]), heads=2, batch_size=2, eval_clips=1, eval_steps=2, samples=1)
    p["video_adapter"]["train"].update(steps=3, checkpoint_every=2, log_every=1, warmup_steps=0)
    # the LoRA trains on a tiny folder of the concept's images in raw/loras/<concept> (lora_image_folder), in latent space
    p["loras"].update(concepts=[concept], pretrained={}, images_dir="raw/loras", prior_images=2, size=32, batch_size=2,
                      eval_samples=1, eval_steps=2, samples=2)
    p["loras"]["train"].update(steps=3, checkpoint_every=2, log_every=1, warmup_steps=0)
    p["metric_models"].update(clip=str(models["clip"]), pick=str(models["pick"]), pick_processor=str(models["pick"]),
                              xclip=str(models["xclip"]))
    p["fdd"].update(variants=["full"], iterations=3, batch_size=2, k=2, pool_size=2, teacher_steps=2, checkpoint_every=2,
                    log_every=1, sample_every=2, eval_items=2, samples=1, lora_rank=2, sds_only_fraction=0.6667)
    p["fdd"]["discriminator"].update(pretrained=str(models["dinov2"]), image_size=24, feature_layers=[1, 2], head_width=16, head_heads=2)
    p["fdd_personal"].update(concepts=[concept], iterations=3, batch_size=2, pool_size=2, eval_repeats=1, samples=1)
    p["evaluate"].update(baselines=["input", "sdedit_75"], items=2, samples=1, batch_size=2, metric_batch_size=4)
    return p
