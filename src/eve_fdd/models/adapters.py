"""The two adapters on the frozen backbone, LoRA, and the model they make together.

- Edit adapter (METHOD.md section 2): a `ControlNetModel` initialised from the backbone's
  down and middle blocks; it reads the input image, the instruction (as its text) and the
  task label (as a class embedding), while the backbone reads the output caption.
- Video adapter: AnimateDiff-style temporal layers (`MotionAdapter`) in a `UNetMotionModel`
  around the frozen backbone's spatial weights.
- LoRA (peft) on the backbone's attention, never on the motion modules.
- Concept tokens: trainable token embeddings for a subject's or style's own words, learned
  with its LoRA (textual inversion + LoRA, "pivotal tuning"), so the words switch it on.
`EditVideoModel` runs any combination: backbone alone, + edit adapter, + video adapter, + LoRA.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..world import vocab
from .placement import move

TASK_LABELS = vocab.ALL_TASKS  # class index = position here
LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
LORA_WEIGHTS = "pytorch_lora_weights.safetensors"  # the file diffusers' save_lora_adapter writes
TOKEN_EMBEDDINGS = "learned_embeds.safetensors"  # {word: embedding row}, as textual-inversion files


class _NoEmptyFloat32Warning(logging.Filter):
    """diffusers 0.42 warns on every `.to(dtype)` of a model class that lists modules to keep in
    float32, even when the list is empty ("... should be kept in float32: []"): UNetMotionModel's,
    which `from_unet2d` casts to the UNet's dtype itself, so every motion UNet built printed it.
    An empty list keeps nothing in float32: only that vacuous warning is dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "should be kept in float32: []." not in record.getMessage()


logging.getLogger("diffusers.models.modeling_utils").addFilter(_NoEmptyFloat32Warning())


def task_ids(tasks: list[str]) -> torch.Tensor:
    unknown = [t for t in tasks if t not in TASK_LABELS]
    if unknown:
        raise ValueError(f"unknown task label(s) {unknown}; expected one of {list(TASK_LABELS)}")
    return torch.tensor([TASK_LABELS.index(t) for t in tasks], dtype=torch.long)


def edit_adapter(unet: Any, conditioning_channels: tuple[int, ...] = (16,), base: Any = None) -> Any:
    """A ControlNet copied from the backbone's down/mid blocks (or from `base`, a given
    ControlNet, whose condition encoder then decides `conditioning_channels`), with a
    task-label embedding.

    `from_unet` keeps the UNet's `num_class_embeds` (None), so the ControlNet is rebuilt from
    its config with one class per task and the copied weights loaded back; only the class
    embedding is new. Copied from the UNet, its zero convolutions start at 0: before training
    it changes nothing. For a pixel-space backbone `conditioning_channels=(16,)` keeps the
    condition image at the sample's size (each extra entry halves it)."""
    from diffusers import ControlNetModel

    if base is None:
        base = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=tuple(conditioning_channels))
    config = {k: v for k, v in dict(base.config).items() if not k.startswith("_")}
    config["num_class_embeds"] = len(TASK_LABELS)
    net = ControlNetModel.from_config(config)
    state = {k: v for k, v in base.state_dict().items() if not k.startswith("class_embedding.")}  # a base's own classes are not ours
    missing, unexpected = net.load_state_dict(state, strict=False)
    if unexpected or set(missing) != {"class_embedding.weight"}:
        raise RuntimeError(f"edit adapter: unexpected state dict mismatch (missing {missing}, unexpected {unexpected})")
    return net


def video_adapter(unet: Any, heads: int = 4, max_frames: int = 32, norm_groups: int | None = None, base: Any = None) -> Any:
    """A `UNetMotionModel`: the backbone's spatial weights (copied) + new temporal layers, or
    the temporal layers of `base` (a given `MotionAdapter`, e.g. AnimateDiff's). New ones start
    with their output projections at zero (as in AnimateDiff), so before training the clip
    model is the image model applied to each frame."""
    from diffusers import MotionAdapter, UNetMotionModel

    if base is not None:
        return contiguous_norm_inputs(UNetMotionModel.from_unet2d(unet, base))
    cfg = unet.config
    adapter = MotionAdapter(
        block_out_channels=tuple(cfg.block_out_channels), motion_layers_per_block=cfg.layers_per_block,
        motion_num_attention_heads=heads, motion_norm_num_groups=norm_groups or cfg.norm_num_groups,
        motion_max_seq_length=max_frames, use_motion_mid_block=True,
    )
    return zero_temporal_outputs(contiguous_norm_inputs(UNetMotionModel.from_unet2d(unet, adapter)))


def zero_temporal_outputs(model: Any) -> Any:
    """AnimateDiff's own code zero-initialises each temporal transformer's output projection;
    diffusers' MotionAdapter does not (checked with diffusers 0.42), so do it here."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "motion_modules" in name and ".proj_out." in name:
                p.zero_()
    return model


def untrained_video_adapter(unet: Any, like: str | Path) -> Any:
    """A `UNetMotionModel` with fresh temporal layers of the architecture of the `MotionAdapter`
    saved at `like` (a directory or hub id), initialised as `video_adapter` does: output
    projections zero, so the clip model starts as the image model on each frame (the "Random
    Init" ablation's temporal layers, METHOD.md section 8)."""
    from diffusers import MotionAdapter, UNetMotionModel

    adapter = MotionAdapter.from_config(MotionAdapter.load_config(str(like)))
    return move(zero_temporal_outputs(contiguous_norm_inputs(UNetMotionModel.from_unet2d(unet, adapter))), unet.device, unet.dtype)


def load_video_adapter(unet: Any, source: str) -> Any:
    """A `UNetMotionModel` from the backbone's UNet and saved temporal layers (a `MotionAdapter`
    directory or hub id: the Shapes stage's output, or AnimateDiff's for the full profile)."""
    from diffusers import MotionAdapter, UNetMotionModel

    motion = UNetMotionModel.from_unet2d(unet, MotionAdapter.from_pretrained(source))
    return move(contiguous_norm_inputs(motion), unet.device, unet.dtype)  # where the backbone is, in its dtype


def contiguous_norm_inputs(model: Any) -> Any:
    """Make the temporal layers' GroupNorm inputs contiguous. Their input is a permuted
    (channels-last) view, and torch 2.13's CPU GroupNorm backward crashes (segfault) on a
    channels-last input that does not itself require grad, which is exactly the case when
    only the temporal layers, or only a LoRA, are trained. A forward pre-hook, not a patch."""
    for name, module in model.named_modules():
        if "motion_modules" in name and isinstance(module, torch.nn.GroupNorm):
            module.register_forward_pre_hook(lambda _m, args: (args[0].contiguous(), *args[1:]))
    return model


def with_first_frame(x: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
    """The video adapter's image conditioning (METHOD.md section 2: image-to-video): frame 0
    of the noisy clip x (B, C, F, H, W) is replaced by the clean first frame (B, C, H, W), in
    training and at every sampling step, so the temporal layers carry it to the other frames.
    (Ours: the paper does not say how Emu Video reads its first frame.)"""
    return torch.cat([first.unsqueeze(2).to(x.dtype), x[:, :, 1:]], dim=2)


def motion_parameters(model: Any) -> list[torch.nn.Parameter]:
    return [p for n, p in model.named_parameters() if "motion_modules" in n]


def add_lora(model: Any, name: str, rank: int = 4, alpha: float | None = None, targets: Sequence[str] = LORA_TARGETS) -> Any:
    """A peft LoRA adapter called `name` on the backbone's layers named by `targets` (by
    default the attention projections) of a `UNet2DConditionModel` or the spatial part of a
    `UNetMotionModel`, never on the motion modules. Afterwards only LoRA weights require
    gradients."""
    from peft import LoraConfig

    has_motion = any("motion_modules" in n for n, _ in model.named_modules())
    config = LoraConfig(
        r=rank, lora_alpha=alpha or rank, init_lora_weights="gaussian", target_modules=list(targets),
        exclude_modules=r".*motion_modules.*" if has_motion else None,  # peft warns when it excludes nothing
    )
    model.add_adapter(config, adapter_name=name)
    return model


def load_lora(model: Any, directory: str | Path, name: str) -> Any:
    """The LoRA saved in `directory` (diffusers' `save_lora_adapter` layout) added to `model`
    as adapter `name`, with the rank it was saved with."""
    path = Path(directory) / LORA_WEIGHTS
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no LoRA weights there (expected what save_lora_adapter writes)")
    import warnings

    with warnings.catch_warnings():  # the saved config's exclude_modules has nothing to exclude among the saved keys
        warnings.filterwarnings("ignore", message="You have passed exclude_modules")
        model.load_lora_adapter(str(directory), weight_name=LORA_WEIGHTS, prefix=None, adapter_name=name)
    return model


def _token_ids(tokenizer: Any, words: Sequence[str]) -> list[int]:
    ids = [tokenizer.convert_tokens_to_ids(w) for w in words]
    missing = [w for w, i in zip(words, ids) if i is None or i == tokenizer.unk_token_id]
    if missing:
        raise ValueError(f"concept word(s) {missing} are not single tokens of the tokenizer (its vocabulary has "
                         f"{len(tokenizer)} entries); concept tokens need one token per word")
    return ids


class ConceptTokens(torch.nn.Module):
    """Trainable input-embedding rows for a concept's own words (words the base world never
    uses; textual inversion, with a LoRA "pivotal tuning"). While attached, the text encoder's
    token embedding returns these rows for those words; nothing else in the encoder changes
    (the rows are the only parameters: weight decay or a stray gradient cannot touch other
    words). They start as the words' current rows."""

    def __init__(self, text_encoder: Any, tokenizer: Any, words: Sequence[str]):
        super().__init__()
        self.words = tuple(words)
        ids = _token_ids(tokenizer, self.words)
        embedding = text_encoder.get_input_embeddings()
        self._embedding = [embedding]  # a list: not a submodule, so not in state_dict or parameters()
        self.register_buffer("ids", torch.tensor(ids, dtype=torch.long), persistent=False)
        self.rows = torch.nn.Parameter(embedding.weight.detach()[ids].clone().float())
        self._handle = None

    def _replace(self, module: Any, args: tuple, output: torch.Tensor) -> torch.Tensor:
        return self(args[0], output)  # through this module's own call, so DDP (train/parallel.py) sees the rows used

    def forward(self, ids: torch.Tensor, embedded: torch.Tensor) -> torch.Tensor:
        """The token embedding's output `embedded` of token `ids`, with these rows where a
        concept word is (the rows take part even where none is: each DDP replica uses them)."""
        match = ids.unsqueeze(-1) == self.ids.to(ids.device)  # (..., L, words)
        rows = match.to(self.rows.dtype) @ self.rows  # each position's row (zero where no word matches)
        return torch.where(match.any(-1, keepdim=True), rows.to(embedded.dtype), embedded)

    def attach(self) -> "ConceptTokens":
        if self._handle is None:
            self._handle = self._embedding[0].register_forward_hook(self._replace)
        return self

    def detach(self) -> "ConceptTokens":
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        return self

    def save(self, directory: str | Path) -> Path:
        from safetensors.torch import save_file

        path = Path(directory) / TOKEN_EMBEDDINGS
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({w: r.detach().contiguous() for w, r in zip(self.words, self.rows)}, path)
        return path


def load_token_embeddings(text_encoder: Any, tokenizer: Any, path: str | Path) -> list[str]:
    """Write the rows of a `ConceptTokens.save` file into the text encoder's token embedding
    (in place: from then on those words mean what was learned); returns the words."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no learned token embeddings there")
    rows = load_file(path)
    weight = text_encoder.get_input_embeddings().weight
    wrong = {w: tuple(r.shape) for w, r in rows.items() if tuple(r.shape) != (weight.shape[1],)}
    if wrong:
        raise ValueError(f"{path}: rows of shape {wrong}, but the text encoder's embeddings have width {weight.shape[1]}")
    words = list(rows)
    with torch.no_grad():
        for word, i in zip(words, _token_ids(tokenizer, words)):
            weight[i] = rows[word].to(weight.device, weight.dtype)
    return words


def frames_to_batch(x: torch.Tensor) -> torch.Tensor:
    """(B, C, F, H, W) -> (B*F, C, H, W), frame-major within each clip."""
    b, c, f, h, w = x.shape
    return x.transpose(1, 2).reshape(b * f, c, h, w)


def batch_to_frames(x: torch.Tensor, frames: int) -> torch.Tensor:
    bf, c, h, w = x.shape
    return x.reshape(bf // frames, frames, c, h, w).transpose(1, 2)


def is_motion_unet(unet: Any) -> bool:
    """A UNetMotionModel (backbone + temporal layers)? By class, not class name: DDP
    (train/parallel.py) subclasses a trained module in place."""
    from diffusers import UNetMotionModel

    return isinstance(unet, UNetMotionModel)


@dataclass
class EditVideoModel:
    """Backbone (a `UNet2DConditionModel`, or a `UNetMotionModel` when the video adapter is
    on) + optional edit adapter. One call predicts the model output for images (B, C, H, W)
    or clips (B, C, F, H, W):
      caption_emb      output caption, for the backbone      (B, L, D)
      instruction_emb  instruction, for the edit adapter      (B, L, D)
      source           input image / video (the edit adapter's condition), like x
      tasks            task label ids (B,)
    With the video adapter the edit adapter runs frame by frame on the input video and its
    residuals go into the motion UNet (METHOD.md section 2: the plug-and-play student)."""

    unet: Any
    controlnet: Any = None
    edit_scale: float = 1.0

    @property
    def is_video(self) -> bool:
        return is_motion_unet(self.unet)

    def __call__(self, x, t, caption_emb, instruction_emb=None, source=None, tasks=None):
        # the conditions on the sample's device (timesteps and task labels are often made on the CPU)
        t, caption_emb, instruction_emb, source, tasks = (None if v is None else torch.as_tensor(v).to(x.device)
                                                          for v in (t, caption_emb, instruction_emb, source, tasks))
        clip = x.ndim == 5
        if clip and not self.is_video:  # the image model on every frame
            f = x.shape[2]
            out = self._image(frames_to_batch(x), t.repeat_interleave(f), caption_emb.repeat_interleave(f, 0),
                              _rep(instruction_emb, f), frames_to_batch(source) if source is not None else None, _rep(tasks, f))
            return batch_to_frames(out, f)
        if not clip:
            if self.is_video:
                raise ValueError("the video model takes clips (B, C, F, H, W); got an image batch")
            return self._image(x, t, caption_emb, instruction_emb, source, tasks)
        f = x.shape[2]
        extra = {}
        if self.controlnet is not None:
            down, mid = self._control(frames_to_batch(x), t.repeat_interleave(f), _rep(instruction_emb, f),
                                      frames_to_batch(source), _rep(tasks, f))
            extra = {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}
        return self.unet(x, t, encoder_hidden_states=caption_emb.repeat_interleave(f, 0), **extra).sample

    def _image(self, x, t, caption_emb, instruction_emb, source, tasks):
        extra = {}
        if self.controlnet is not None:
            down, mid = self._control(x, t, instruction_emb, source, tasks)
            extra = {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}
        return self.unet(x, t, encoder_hidden_states=caption_emb, **extra).sample

    def _control(self, x, t, instruction_emb, source, tasks):
        if instruction_emb is None or source is None or tasks is None:
            raise ValueError("the edit adapter needs instruction_emb, source and tasks")
        down, mid = self.controlnet(
            x, t, encoder_hidden_states=instruction_emb, controlnet_cond=source, class_labels=tasks,
            conditioning_scale=self.edit_scale, return_dict=False,
        )
        return down, mid


def _rep(x: torch.Tensor | None, f: int) -> torch.Tensor | None:
    return None if x is None else x.repeat_interleave(f, 0)
