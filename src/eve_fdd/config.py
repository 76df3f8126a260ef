"""params.yaml -> typed, validated config, read once and passed down.

Every section is a pydantic model that forbids unknown keys, so a typo in params.yaml
stops the run with the key path named instead of being silently ignored.
"""

from __future__ import annotations

import ast
import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from .llm.tiny import TinyLlamaConfig


def _precision(value: Any) -> Any:
    """YAML 1.1 reads an unquoted `no` as false (and DVC's `-S key=no` writes it unquoted)."""
    return "no" if value is False else value


# accelerate's mixed_precision values, plus auto (bf16 where the device computes it natively)
Precision = Annotated[Literal["no", "bf16", "auto"], BeforeValidator(_precision)]


class ConfigError(ValueError):
    """params.yaml (or an override) does not describe a valid configuration."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def __hash__(self) -> int:
        # by value, also for dict fields (e.g. loras.pretrained), which pydantic's frozen
        # hash cannot take; Prefect hashes task inputs, the config among them
        return hash((type(self).__name__, self.model_dump_json()))


class WorldConfig(Section):
    """The Shapes world (METHOD.md section 10)."""

    size: int = Field(32, ge=8, le=512, description="frame height and width in pixels")
    frames: int = Field(8, ge=1, le=256, description="frames per video")
    min_shapes: int = Field(2, ge=1)
    max_shapes: int = Field(4, ge=1)
    supersample: int = Field(2, ge=1, le=8, description="anti-aliasing: render at size*supersample, box-downsample")
    speed: tuple[float, float] = Field((0.02, 0.06), description="shape speed range, image widths per frame")

    @model_validator(mode="after")
    def _shape_range(self) -> "WorldConfig":
        if self.min_shapes > self.max_shapes:
            raise ValueError(f"min_shapes ({self.min_shapes}) must be <= max_shapes ({self.max_shapes})")
        if not 0 < self.speed[0] <= self.speed[1]:
            raise ValueError(f"speed must be (low, high) with 0 < low <= high, got {self.speed}")
        return self


class IngestConfig(Section):
    """The full profile's `videos` stage: a folder of real clips plus a captions CSV."""

    source_dir: str = Field("raw/clips", description="folder of .mp4/.webm/.gif clips (a DVC dependency)")
    captions_csv: str = Field("captions.csv", description="CSV inside source_dir with columns file,caption")
    size: int = Field(512, ge=8, description="output frames are resized and centre-cropped to size x size")
    frames: int = Field(8, ge=1, description="frames sampled per clip")
    stride: int = Field(4, ge=1, description="take every stride-th decoded frame")
    extensions: tuple[str, ...] = (".mp4", ".webm", ".gif", ".mov", ".mkv")


class VideosConfig(Section):
    count: int = Field(256, ge=1, description="Shapes videos to render")
    fps: float = Field(8.0, gt=0)
    test_fraction: float = Field(0.125, ge=0, lt=1, description="share of videos held out for evaluation (by a hash of the id)")
    samples: int = Field(8, ge=0, description="sample GIFs logged to MLflow (and shown on the contact sheet)")
    shard_size: int = Field(64, ge=1, description="videos per Prefect task")
    ingest: IngestConfig = IngestConfig()


class LlmConfig(Section):
    """The instruction writer. Shapes: the small Llama the `llm` stage trains (its own GGUF);
    full: a Llama-2 chat GGUF you downloaded, at `model_path`."""

    model_path: str = Field("models/llama-2-7b-chat.Q4_K_M.gguf", description="full profile: path to a Llama-2 chat GGUF")
    n_ctx: int = Field(2048, ge=128, description="context window (tokens)")
    n_threads: int = Field(2, ge=1)
    n_gpu_layers: int = Field(0, ge=-1, description="layers offloaded to a GPU (-1 = all)")
    temperature: float = Field(0.3, ge=0, description="sampling temperature; 0.3 for the small Shapes model, 0.7 suits Llama-2 (full)")
    top_p: float = Field(0.95, gt=0, le=1)
    repeat_penalty: float = Field(1.0, gt=0, description="1.0 = off; llama-cpp-python's default 1.1 punishes copying the caption")
    max_tokens: int = Field(192, ge=8, description="longest answer, tokens")
    train_conversations: int = Field(12000, ge=1, description="Shapes: conversations the small model is trained on")
    tiny: TinyLlamaConfig = TinyLlamaConfig()


class InstructionsConfig(Section):
    """Stages `instructions` and `subject_style_instructions`."""

    max_attempts: int = Field(8, ge=1, description="tries per (caption, task), each with a new seed")
    grammar: Literal["scene", "instruction", "json"] = Field(
        "scene", description="decoding grammar of requests with a scene (Shapes): scene = only the scene's valid instructions, "
        "each with the output caption it makes; instruction = the instruction bound, the caption free; json = the JSON schema "
        "only. Requests without a scene (full profile) always use the JSON schema")
    shard_size: int = Field(32, ge=1, description="captions per Prefect task")
    max_instruction_chars: int = Field(160, ge=8)
    max_caption_chars: int = Field(400, ge=8)
    cache_dir: str = Field(".cache/llm", description="generation cache (sqlite); reruns reuse it instead of calling the model")
    examples: int = Field(25, ge=0, description="rows shown in the MLflow examples table")
    subjects: tuple[str, ...] = Field(("star", "cross"), description="subject set: subjects to add or swap in")
    styles: tuple[str, ...] = Field(("scanlines", "sketch"), description="style set: styles to render in")
    subject_style_count: int = Field(64, ge=1, description="input captions per subject and per style (paper: 1,000)")


class EditIngestConfig(Section):
    """The full profile's `edit_pairs` stage: an image-edit dataset in InstructPix2Pix's layout
    (data/edit_ingest.py): Hugging Face parquet files, or a folder of images + pairs.jsonl/csv."""

    source: str = Field("raw/edit_pairs", description="a .parquet file or a folder (a DVC dependency); a folder with nothing "
                        "but README/dotfiles in it means no dataset: the edit adapter stays the pretrained one")
    layout: Literal["auto", "parquet", "folder"] = Field(
        "auto", description="parquet: instructpix2pix-clip-filtered's columns; folder: images + an index file; "
        "auto: parquet when source is a .parquet file or a folder holding *.parquet, else folder")
    index: str = Field("", description="folder layout: the index file in source (pairs.jsonl or pairs.csv); '' = whichever exists")
    size: int = Field(512, ge=8, description="images are resized and centre-cropped to size x size")
    limit: int = Field(0, ge=0, description="read at most this many source rows (0 = all); every pair is held in memory")


class EditPairsConfig(Section):
    """Stage `edit_pairs`: supervised image-edit pairs for the edit adapter. Shapes: the
    stand-in for Emu Edit's data, rendered; full: an image-edit dataset ingested (`ingest`).
    Single images only: never edited videos."""

    count: int = Field(2800, ge=1, description="Shapes: pairs, spread evenly over the seven tasks")
    test_fraction: float = Field(0.1, ge=0, lt=1, description="share of pairs held out (by a hash of the pair id)")
    shard_size: int = Field(700, ge=1, description="Shapes: pairs per Prefect task")
    samples: int = Field(14, ge=0, description="pairs on the contact sheet logged to MLflow")
    ingest: EditIngestConfig = EditIngestConfig()


class DiffusionConfig(Section):
    """The noise schedule and sampler every model uses (METHOD.md sections 4 and 6)."""

    train_timesteps: int = Field(1000, ge=2)
    beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2"] = "scaled_linear"
    beta_start: float = Field(0.00085, gt=0)
    beta_end: float = Field(0.012, gt=0)
    prediction_type: Literal["epsilon", "v_prediction", "sample"] = Field(
        "v_prediction", description="what the backbone predicts; SD 1.5 (full) is 'epsilon'"
    )
    zero_terminal_snr: bool = Field(
        True, description="rescaled betas, a_T = 0 (needs v_prediction); false for SD 1.5, a documented deviation"
    )
    inference_steps: int = Field(24, ge=1, description="DDIM steps at inference (T); K-bin splits them into k bins")
    window: int = Field(8, ge=1, description="frames the video model sees at once; longer clips use sliding windows")
    window_stride: int = Field(4, ge=1, description="frames between sliding windows")

    @model_validator(mode="after")
    def _snr_needs_v(self) -> "DiffusionConfig":
        if self.zero_terminal_snr and self.prediction_type == "epsilon":
            raise ValueError("zero_terminal_snr needs prediction_type v_prediction (or sample); an epsilon model cannot start from pure noise")
        if self.window_stride > self.window:
            raise ValueError(f"window_stride ({self.window_stride}) must not exceed window ({self.window})")
        return self


class TinyBackboneConfig(Section):
    """Shapes: the pixel-space UNet and text encoder the `backbone` stage trains."""

    block_out_channels: tuple[int, ...] = Field((32, 64, 64), min_length=2, description="UNet widths; attention below full resolution only")
    layers_per_block: int = Field(1, ge=1)
    attention_heads: int = Field(2, ge=1, description="heads per attention layer (diffusers' `attention_head_dim` of UNet2DConditionModel, which counts heads)")
    norm_num_groups: int = Field(8, ge=1)
    text_hidden_size: int = Field(64, ge=8)
    text_layers: int = Field(2, ge=1)
    text_heads: int = Field(4, ge=1)
    max_text_tokens: int = Field(64, ge=8, description="longest caption or instruction, in tokens")


class BackboneConfig(Section):
    pretrained: str = Field(
        "stable-diffusion-v1-5/stable-diffusion-v1-5",
        description="full: SD 1.5 as a hub id or a local directory in diffusers' pipeline layout",
    )
    tiny: TinyBackboneConfig = TinyBackboneConfig()


class ModelsConfig(Section):
    """The models every stage builds through `models.registry` (METHOD.md sections 2, 9)."""

    backbone: BackboneConfig = BackboneConfig()


class TrainConfig(Section):
    """One training run (each adapter stage has its own section of these)."""

    steps: int = Field(1000, ge=0)
    lr: float = Field(1e-4, gt=0)
    warmup_steps: int = Field(0, ge=0)
    lr_schedule: Literal["constant", "cosine"] = Field(
        "constant", description="after the linear warm-up: constant, or a cosine decay to lr/10 at the last step")
    weight_decay: float = Field(0.0, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    checkpoint_every: int = Field(200, ge=1, description="steps between checkpoints (one is always written at the end)")
    keep_checkpoints: int = Field(2, ge=1)
    ema_decay: float = Field(0.0, ge=0, lt=1, description="EMA of the trained weights (diffusers EMAModel); 0 = off")
    gradient_checkpointing: bool = False
    mixed_precision: Precision = Field(
        "no", description="bf16: each step's forward and loss under bfloat16 autocast (accelerate's mixed_precision values; "
        "weights, gradients, optimiser and EMA stay float32); auto: bf16 where the hardware computes it natively (a "
        "CUDA GPU with bf16, a CPU with AVX512-BF16 or AMX), else no")
    log_every: int = Field(10, ge=1)
    seed: int = 0
    micro_batches: int = Field(1, ge=1, description="micro-batches per step, each with its own random streams; spread over the "
                               "processes of train.launcher (a multiple of their count), the rest accumulated. What a step "
                               "computes depends on this, not on the process count (train/parallel.py)")


class LaunchConfig(Section):
    """How the training stages (the adapters, metric models, fdd, fdd_personal) are started:
    in their flow's own process, or under `accelerate launch` with several processes."""

    launcher: str = Field("", description="'' = one process; else an accelerate launch command, e.g. 'accelerate launch "
                          "--multi_gpu --num_processes 8' (checked with accelerate's own parser; the stage's module is added)")

    @model_validator(mode="after")
    def _accelerate_accepts(self) -> "LaunchConfig":
        from .train.parallel import launcher_command

        launcher_command(self.launcher, "train.launcher")
        return self


class BackboneStageConfig(Section):
    """Stage `backbone`. Shapes: train the tiny text-to-image model, then check its samples
    with the world's detector; full: record the pretrained SD 1.5 it resolves to."""

    train: TrainConfig = TrainConfig(steps=2000, lr=1e-3, warmup_steps=100, checkpoint_every=500, log_every=25, ema_decay=0.998, mixed_precision="auto")
    batch_size: int = Field(32, ge=1)
    eval_samples: int = Field(64, ge=1, description="held-out captions sampled and scored by the detector")
    eval_steps: int = Field(24, ge=1, description="DDIM steps for the check's samples")
    caption_dropout: float = Field(0.1, ge=0, lt=1, description="share of training captions replaced by the empty one (enables classifier-free guidance)")
    guidance_scale: float = Field(3.0, ge=1, description="classifier-free guidance of the check's samples; 1 = off")
    min_snr_gamma: float | None = Field(5.0, gt=0, description="Min-SNR-gamma loss weighting (Hang et al. 2023); null = every timestep weighted alike")


class EditAdapterStageConfig(Section):
    """Stage `edit_adapter`: train the ControlNet on `edit_pairs` over the frozen backbone and
    check it per task against the held-out pairs (or resolve given weights: `pretrained`)."""

    pretrained: str = Field("", description="full profile: hub id or local directory of a ControlNetModel to use as it is "
                            "instead of training one (e.g. an instruct-pix2pix ControlNet); '' = train on edit_pairs (Shapes always does)")
    init: str = Field("", description="hub id or local directory of a ControlNetModel to start training from (its "
                      "condition encoder and blocks; the task embedding is new); '' = copy the backbone's down/mid blocks")
    train: TrainConfig = TrainConfig(steps=1000, lr=5e-4, warmup_steps=50, checkpoint_every=500, log_every=25, ema_decay=0.998, mixed_precision="auto")
    batch_size: int = Field(32, ge=1)
    conditioning_channels: tuple[int, ...] = Field((16,), min_length=1, description="ControlNet condition encoder widths; each entry "
                                                   "after the first halves the condition image: one per halving the VAE does, plus one "
                                                   "(pixel space: [16]; SD 1.5's x8 latents: [16, 32, 96, 256])")
    text_dropout: float = Field(0.1, ge=0, lt=1, description="share of pairs trained with both texts empty (enables classifier-free guidance)")
    guidance_scale: float = Field(1.0, ge=1, description="classifier-free guidance on the texts in the check's samples; 1 = off")
    eval_pairs: int = Field(280, ge=1, description="held-out pairs sampled in the check (at most the test split)")
    eval_steps: int = Field(24, ge=1, description="DDIM steps of the check's samples")
    samples: int = Field(14, ge=0, description="input | edited | ground truth rows on the contact sheet")


class VideoAdapterStageConfig(Section):
    """Stage `video_adapter`: train the temporal layers over the frozen backbone on clips,
    conditioned on the first frame, and check temporal consistency (or, at full scale,
    resolve given weights: `pretrained`)."""

    pretrained: str = Field("guoyww/animatediff-motion-adapter-v1-5-2", description="full profile: a MotionAdapter (hub id or "
                            "local directory) to use as it is; '' = train one on your clips (Shapes always trains)")
    init: str = Field("", description="a MotionAdapter to start training from (at full scale e.g. AnimateDiff's); "
                      "'' = new temporal layers, output projections at zero")
    train: TrainConfig = TrainConfig(steps=500, lr=1e-3, warmup_steps=50, checkpoint_every=250, log_every=20, ema_decay=0.99, mixed_precision="auto")
    batch_size: int = Field(4, ge=1, description="clips per step")
    heads: int = Field(2, ge=1, description="attention heads of each temporal layer")
    eval_clips: int = Field(32, ge=1, description="held-out clips sampled by the check")
    eval_steps: int = Field(24, ge=1, description="DDIM steps of the check's samples")
    samples: int = Field(8, ge=0, description="generated clips on the contact sheet and as GIFs")


class LorasStageConfig(Section):
    """Stage `loras` (DVC foreach over `concepts`): one LoRA per subject or style on the
    frozen backbone. Shapes: trained on renders, checked with a concept classifier. Full:
    `pretrained[concept]` resolved when given, else trained on the user's images of the concept
    (`images_dir/<concept>/`), prior preservation from the backbone's own samples."""

    concepts: tuple[str, ...] = Field(("star", "cross", "scanlines", "sketch"), description="Shapes: reserved subjects and styles, one LoRA each")
    pretrained: dict[str, str] = Field(default_factory=dict, description="full profile: concept -> LoRA directory (diffusers/peft "
                                       "layout) used as it is; a concept without one is trained from images_dir")
    images_dir: str = Field("raw/loras", description="full profile: a concept's images are <images_dir>/<concept>/ with captions.csv "
                            "(file,caption; raw/loras/README.md)")
    prior_images: int = Field(0, ge=0, description="full profile: prior-preservation images the frozen backbone samples from the "
                              "captions without the concept's words; 0 = as many as the concept's images")
    size: int = Field(512, ge=8, description="full profile: training image size (resized, centre-cropped; the samples' size too)")
    rank: int = Field(8, ge=1)
    target_modules: tuple[str, ...] = Field(
        ("to_q", "to_k", "to_v", "to_out.0"),
        description="UNet layers (name suffixes, peft's target_modules) the LoRA adapts: attention projections; a "
        "style that changes every pixel also needs the resnets' convolutions (conv1, conv2)")
    token_embeddings: bool = Field(
        True, description="the concept's own words' token embeddings learn with the LoRA (textual inversion + LoRA, "
        "'pivotal tuning'), so the words switch the concept on; saved beside the LoRA. Only for concepts with Shapes words "
        "(world.vocab.CONCEPT_WORDS): off at full scale for any other concept (metrics: params_token_embeddings 0)")
    train: TrainConfig = TrainConfig(steps=400, lr=2e-3, warmup_steps=20, checkpoint_every=200, log_every=20, mixed_precision="auto")
    batch_size: int = Field(16, ge=2, description="half with the concept, half base-world scenes or (full) the backbone's own "
                            "samples (prior preservation)")
    caption_dropout: float = Field(0.1, ge=0, lt=1, description="as the backbone's, so classifier-free guidance keeps working")
    eval_samples: int = Field(64, ge=1, description="samples per condition in the check (full: the first captions of the "
                              "concept's and as many prior captions, LoRA on and off)")
    eval_steps: int = Field(24, ge=1)
    guidance_scale: float = Field(3.0, ge=1)
    detector_steps: int = Field(1000, ge=1, description="training steps of the concept classifier used by the check")
    detector_renders: int = Field(2048, ge=1, description="renders with and (as many) without the concept the classifier learns from")
    samples: int = Field(16, ge=0, description="prompted samples on the contact sheet")


FDD_VARIANTS = ("full", "no_align", "no_sds", "no_disc", "uniform_k", "random_init")
PACKAGE_DIR = Path(__file__).resolve().parent


def source_digest(root: Path | None = None, module: str | None = None) -> str:
    """A hash of the package's Python source (`root`, default this package): what a run's
    code is. DVC reruns a training stage when its code changed; the run must then start over,
    not resume a finished checkpoint of the old code (a world change once resumed LoRAs
    trained on the old renders). `module` (dotted, e.g. "eve_fdd.stages.fdd"): only the files
    it can run, `module_sources(module)`, so a change elsewhere (the report, another stage)
    leaves the hash of its runs as it was."""
    root = Path(root or PACKAGE_DIR)
    h = hashlib.sha256()
    for path in module_sources(module, root) if module else sorted(root.rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def module_sources(module: str, root: Path | None = None) -> list[Path]:
    """The package's files that importing `module` (dotted, under the package `root` is) runs:
    the module, every module of the package it imports, directly or through others (absolute
    or relative imports, `from pkg import submodule` included, read from the source, wherever
    in a file they stand), and the `__init__.py` of each one's packages. The same list whoever
    imports the module (a stage's flow or a benchmark), sorted."""
    root = Path(root or PACKAGE_DIR)
    package = root.name

    def path_of(name: str) -> Path | None:
        base = root.joinpath(*name.split(".")[1:])
        return next((p for p in (base / "__init__.py", base.with_suffix(".py")) if p.is_file()), None)

    def with_parents(name: str) -> set[str]:
        parts = name.split(".")
        return {".".join(parts[:i]) for i in range(1, len(parts) + 1)}

    def imports(name: str, path: Path) -> set[str]:
        here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = ".".join(here[: len(here) - node.level + 1] + [node.module or ""]).rstrip(".") if node.level else node.module or ""
                found.add(base)
                found.update(f"{base}.{a.name}" for a in node.names)  # a submodule, or just a name (no file: dropped)
        return {m for f in found if f.split(".")[0] == package for m in with_parents(f)}

    if path_of(module) is None:
        raise ValueError(f"module_sources: no module {module!r} under {root}")
    seen: dict[str, Path] = {}
    todo = sorted(with_parents(module))
    while todo:
        name = todo.pop()
        path = path_of(name)
        if name in seen or path is None:
            continue
        seen[name] = path
        todo.extend(imports(name, path) - seen.keys())
    return sorted(seen.values())


class DiscriminatorConfig(Section):
    """The frozen feature network and the trainable heads (METHOD.md section 5)."""

    pretrained: str = Field("facebook/dinov2-base", description="full profile: a Dinov2Model hub id or local directory")
    image_size: int = Field(224, ge=14, description="full profile: frames are resized to this for DINOv2")
    hidden_size: int = Field(64, ge=8, description="Shapes: width of the small seeded Dinov2Model")
    layers: int = Field(4, ge=1, description="Shapes: its depth")
    heads: int = Field(4, ge=1)
    patch_size: int = Field(4, ge=1)
    feature_layers: tuple[int, ...] = Field((2, 4), min_length=1, description="layers whose features get a head (1-based)")
    head_width: int = Field(64, ge=8)
    head_heads: int = Field(4, ge=1, description="attention heads of each head's attention layer")
    lr: float = Field(1e-4, gt=0, description="constant, no warm-up")
    warmup: int = Field(0, ge=0, description="iterations before the adversarial phase in which the discriminators already "
                        "train on the student's clips, their loss not yet the student's (ours; 0: they start with it)")


class FeaturesConfig(Section):
    """Stage `features`: the discriminators' frozen feature network (full: fdd.discriminator.pretrained,
    DINOv2; Shapes: distill/shapes_features.py), its size in fdd.discriminator."""

    network: Literal["trained", "random"] = Field(
        "trained", description="Shapes: trained on world renders to name what covers each patch (ours), or random = "
        "the small Dinov2Model seeded by fdd.seed and never trained (before 2026-12-03)")
    train: TrainConfig = TrainConfig(steps=600, lr=1e-3, warmup_steps=0, checkpoint_every=300, log_every=25)
    batch_size: int = Field(64, ge=1, description="frames (of fresh random scenes) per step")
    eval_frames: int = Field(256, ge=1, description="held-out frames of the check")


class FddConfig(Section):
    """Factorized Diffusion Distillation (METHOD.md sections 4-8); paper values in comments of params.yaml."""

    variants: tuple[str, ...] = Field(FDD_VARIANTS, description="ablation variants `dvc repro` runs (stage fdd, foreach; [] runs none)")
    seed: int = Field(0, description="FDD's own seed (LoRA init, noise, pool order, evaluation noise); the teachers keep the top-level seed")
    iterations: int = Field(150, ge=0, description="paper: 1,500")
    batch_size: int = Field(2, ge=1, description="clips per iteration (paper: 64)")
    micro_batches: int = Field(1, ge=1, description="micro-batches per iteration (fdd and fdd_personal), spread over the processes "
                               "of train.launcher, the rest accumulated (TrainConfig.micro_batches)")
    lr: float = Field(1e-4, gt=0, description="the student's LoRA; constant, no warm-up (paper: 1e-5)")
    k: int = Field(3, ge=1, description="student steps, backpropagated through (paper: 3)")
    kbin_first: Literal["last", "drawn"] = Field(
        "last", description="K-bin's first step: at the last timestep, where pure noise belongs (ours, METHOD.md 4.2), or drawn from bin 0 (the paper's literal reading)")
    sds_only_fraction: float = Field(0.6667, ge=0, le=1, description="share of the iterations with SDS only (paper: 1,000 of 1,500)")
    alpha: float = Field(0.5, ge=0, description="weight of the edit teacher's terms")
    beta: float = Field(0.5, ge=0, description="weight of the video teacher's terms")
    lam: float = Field(2.5, ge=0, description="lambda: SDS against the adversarial term")
    sds_weighting: Literal["uniform", "alpha"] = "uniform"
    sds_t_range: tuple[float, float] = (0.02, 0.98)
    sds_t_range_second: tuple[float, float] | None = Field(
        None, description="the second teacher's (video or concept) own SDS t range, drawn apart from the edit teacher's; "
        "null: the same t as the edit teacher (sds_t_range)")
    lora_rank: int = Field(8, ge=1)
    lora_targets: tuple[str, ...] = Field(
        ("to_q", "to_k", "to_v", "to_out.0"), min_length=1,
        description="the backbone layers (name suffixes, peft's target_modules) the student's LoRA adapts, never the motion "
        "modules: attention projections; conv1, conv2 add the resnets' convolutions, ff.net.0.proj, ff.net.2 the feed-forwards")
    grad_clip: float = Field(1.0, gt=0)
    gradient_checkpointing: bool = False
    mixed_precision: Precision = Field(
        "no", description="the student, teachers and discriminators of stages fdd, fdd_personal, evaluate, baselines and "
        "eve-fdd edit: bf16 = bfloat16 autocast, trained weights float32, frozen weights stored in bf16 on CUDA; auto = bf16 "
        "where the device computes it natively; no = float32 (Shapes' results were measured so)")
    pool_size: int = Field(32, ge=1, description="data points held with their teacher samples")
    pool_refresh: float = Field(0.01, ge=0, le=1, description="share of the pool replaced per iteration, on average")
    teacher_steps: int = Field(12, ge=1, description="DDIM steps of the teachers' samples in the pool")
    # classifier-free guidance (ours: the paper gives none; SD 1.5 needs it for usable samples, e.g. 7.5; 1 = off)
    teacher_guidance: float = Field(1.0, ge=1, description="the teachers' samples: the pool's (the discriminators' real samples, "
                                    "the edited first frames) and the edited first frame at inference and in edit_frames")
    sds_guidance: float = Field(1.0, ge=1, description="the teachers' predictions SDS distils (its targets)")
    inference_guidance: float = Field(1.0, ge=1, description="the student at inference (evaluation, eve-fdd edit): its "
                                      "prediction against its prediction with empty texts; training never guides the student")
    discriminator: DiscriminatorConfig = DiscriminatorConfig()
    checkpoint_every: int = Field(50, ge=1)
    log_every: int = Field(5, ge=1)
    sample_every: int = Field(50, ge=0, description="student vs teachers GIF every this many iterations and at the last (0: none)")
    eval_items: int = Field(56, ge=1, description="held-out data points edited and scored, spread evenly over the tasks")
    samples: int = Field(7, ge=0, description="input | edited | ground truth rows on the contact sheet and GIFs")

    @model_validator(mode="after")
    def _known_variants(self) -> "FddConfig":
        unknown = [v for v in self.variants if v not in FDD_VARIANTS]
        if unknown:
            raise ValueError(f"unknown FDD variant(s) {unknown}; expected some of {list(FDD_VARIANTS)}")
        for name in ("sds_t_range", "sds_t_range_second"):
            t_range = getattr(self, name)
            if t_range is not None and not 0 <= t_range[0] < t_range[1] <= 1:
                raise ValueError(f"{name} must satisfy 0 <= lo < hi <= 1, got {t_range}")
        return self


class FddPersonalConfig(Section):
    """Stage `fdd_personal` (METHOD.md section 8, other adapters): FDD aligning the edit adapter
    with each LoRA of `loras.concepts`, on single images. The losses, the schedule, k, the
    discriminators, the LoRA rank and the seed are `fdd`'s; these are its own."""

    concepts: tuple[str, ...] = Field(("star", "cross", "scanlines", "sketch"), description="LoRAs of loras.concepts `dvc repro` aligns (foreach; [] runs none)")
    iterations: int = Field(150, ge=0)
    batch_size: int = Field(4, ge=1, description="images per iteration")
    lr: float = Field(1e-4, gt=0, description="the student's LoRA; constant, no warm-up")
    pool_size: int = Field(32, ge=1)
    pool_refresh: float = Field(0.02, ge=0, le=1)
    guidance_scale: float = Field(3.0, ge=1, description="the concept teacher's classifier-free guidance (its samples, SDS and the drawn inputs)")
    held_out: float = Field(0.25, gt=0, lt=1, description="share of a concept's instructions kept for the evaluation (the set has no held-out videos)")
    eval_repeats: int = Field(4, ge=1, description="noise draws per held-out instruction")
    samples: int = Field(8, ge=0, description="rows on the contact sheet")


class MetricModelsConfig(Section):
    """Stage `metric_models` (foreach clip, xclip): the models of the paper's automatic metrics
    (METHOD.md section 7). Full: hub ids or local directories; Shapes: small models of the same
    classes trained on the world's scenes and captions (evaluate/metric_models.py)."""

    clip: str = Field("openai/clip-vit-large-patch14", description="full: CLIPModel for CLIPFrame")
    pick: str = Field("yuvalkirstain/PickScore_v1", description="full: CLIPModel for PickScore")
    pick_processor: str = Field("laion/CLIP-ViT-H-14-laion2B-s32B-b79K", description="full: tokenizer and image processor of PickScore_v1")
    xclip: str = Field("microsoft/xclip-base-patch32", description="full: XCLIPModel for ViCLIP_out / ViCLIP_dir (ours: ViCLIP is not a transformers class)")
    hidden_size: int = Field(64, ge=8, description="Shapes: width of both small models")
    layers: int = Field(3, ge=1)
    heads: int = Field(4, ge=1)
    patch_size: int = Field(8, ge=1)
    clip_train: TrainConfig = TrainConfig(steps=2400, lr=1e-3, warmup_steps=50, checkpoint_every=600, log_every=25)
    xclip_train: TrainConfig = TrainConfig(steps=1200, lr=1e-3, warmup_steps=50, checkpoint_every=400, log_every=25)
    clip_batch_size: int = Field(32, ge=2, description="scenes per step (each with its edit: twice as many pairs)")
    xclip_batch_size: int = Field(16, ge=2)
    eval_scenes: int = Field(280, ge=1, description="held-out scenes (with one edit each) of the check")


class BenchmarkConfig(Section):
    """A benchmark in TGVE's layout (data/benchmark.py) scored instead of the video set's held-out clips."""

    dir: str = Field("raw/benchmark", description="folder of the benchmark (a DVC dependency of the evaluation)")
    csv: str = Field("", description="its CSV inside `dir`, in TGVE / TGVE+ layout; empty: score the video set's held-out clips")
    videos: str = Field(".", description="the clips' folder inside `dir`")


class EvaluateConfig(Section):
    """Stages `evaluate` (foreach FDD variant) and `baselines`: held-out edits scored by the
    Shapes ground truth and the paper's automatic metrics (METHOD.md section 7)."""

    baselines: tuple[str, ...] = Field(("input", "edit_frames", "sdedit_50", "sdedit_60", "sdedit_75", "sdedit_90"),
                                       description="input (unchanged), edit_frames (edit adapter per frame), sdedit_<NN> (SDEdit at level NN/100)")
    items: int = Field(56, ge=1, description="held-out data points, spread evenly over the tasks (at most the test split's)")
    seed: int = Field(0, description="noise of the edits (stage fdd's own evaluation uses fdd.seed the same way)")
    batch_size: int = Field(8, ge=1, description="clips edited at once")
    metric_batch_size: int = Field(16, ge=1, description="clips scored at once by the paper's metrics")
    samples: int = Field(8, ge=0, description="input | edited rows on each method's contact sheet")
    benchmark: BenchmarkConfig = BenchmarkConfig()


class TrackingConfig(Section):
    uri: str = Field("sqlite:///mlflow.db", description="MLflow tracking URI; relative sqlite paths are taken from the project root")
    experiment_prefix: str = "eve-fdd"


class Config(Section):
    profile: Literal["shapes", "full"] = "shapes"
    seed: int = 0
    world: WorldConfig = WorldConfig()
    videos: VideosConfig = VideosConfig()
    llm: LlmConfig = LlmConfig()
    instructions: InstructionsConfig = InstructionsConfig()
    edit_pairs: EditPairsConfig = EditPairsConfig()
    diffusion: DiffusionConfig = DiffusionConfig()
    models: ModelsConfig = ModelsConfig()
    backbone: BackboneStageConfig = BackboneStageConfig()
    edit_adapter: EditAdapterStageConfig = EditAdapterStageConfig()
    video_adapter: VideoAdapterStageConfig = VideoAdapterStageConfig()
    loras: LorasStageConfig = LorasStageConfig()
    features: FeaturesConfig = FeaturesConfig()
    fdd: FddConfig = FddConfig()
    fdd_personal: FddPersonalConfig = FddPersonalConfig()
    metric_models: MetricModelsConfig = MetricModelsConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    tracking: TrackingConfig = TrackingConfig()
    train: LaunchConfig = LaunchConfig()

    @model_validator(mode="after")
    def _personal_concepts_have_loras(self) -> "Config":
        missing = [c for c in self.fdd_personal.concepts if c not in self.loras.concepts]
        if missing:
            raise ValueError(f"fdd_personal.concepts {missing}: not in loras.concepts {list(self.loras.concepts)} (each needs its LoRA)")
        return self

    @property
    def clip_frames(self) -> int:
        """Frames of one clip of the video set, the length the video model is trained and run at:
        the world's (Shapes) or the ingested clips' (full)."""
        return self.videos.ingest.frames if self.profile == "full" else self.world.frames

    @property
    def frame_size_key(self) -> str:
        """The params key of the video set's frame side: the world's (Shapes) or the ingest's (full)."""
        return "videos.ingest.size" if self.profile == "full" else "world.size"

    @property
    def frame_size(self) -> int:
        """The side of the video set's frames in pixels (`frame_size_key`)."""
        return self.section(self.frame_size_key)

    def section(self, dotted: str) -> Any:
        node: Any = self
        for part in dotted.split("."):
            node = getattr(node, part)
        return node

    def fingerprint(self, keys: tuple[str, ...], files: tuple[Path, ...] = (), code: str | None = None) -> str:
        """A short hash of the sections `keys`, the bytes of `files` (a directory: every file
        under it, with its relative name) and the package's source (`code`: only the files
        that module runs, `module_sources`): what a training run depends on, so its
        checkpoints are resumed only by the same run."""
        h = hashlib.sha256(source_digest(module=code).encode())
        for k in keys:
            node = self.section(k)
            h.update(json.dumps({k: node.model_dump() if hasattr(node, "model_dump") else node}, sort_keys=True, default=str).encode())
        for f in map(Path, files):
            if f.is_dir():
                for path in sorted(p for p in f.rglob("*") if p.is_file()):
                    h.update(path.relative_to(f).as_posix().encode() + b"\0" + path.read_bytes())
            else:
                h.update(f.read_bytes())
        return h.hexdigest()[:16]


def _describe(err: dict[str, Any], source: str) -> str:
    path = ".".join(str(p) for p in err["loc"]) or "<top level>"
    kind = err["type"]
    if kind == "extra_forbidden":
        return f"{source}: unknown key '{path}' (check the spelling; see params.yaml for the valid keys)"
    if kind == "missing":
        return f"{source}: missing key '{path}'"
    got = err.get("input")
    return f"{source}: key '{path}': {err['msg']} (got {got!r})"


def parse_config(data: dict[str, Any] | None, source: str = "params.yaml") -> Config:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of sections at the top level, got {type(data).__name__}")
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        lines = [_describe(e, source) for e in exc.errors()]
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from None


def load_config(path: str | Path = "params.yaml", overrides: dict[str, Any] | None = None) -> Config:
    """Read params.yaml once; `overrides` maps dotted keys to values (as `dvc exp run -S`)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: file not found (run from the project root or pass --params)")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return parse_config(data, source=str(path))
