"""The Shapes profile's metric models: a small `CLIPModel` (CLIPFrame, PickScore) and a small
`XCLIPModel` (ViCLIP_out, ViCLIP_dir), of the classes the full profile loads, with the world's
word-level tokenizer, trained contrastively on frames / clips and their captions.

Ours: the Shapes world has no human preferences, so PickScore's model on this profile is the
same small CLIP (PickScore_v1 is a CLIP fine-tuned on preferences; its score is read the same
way). The training scenes are drawn by the stage itself from seeds apart from the dataset's, and
include edited scenes (every task), so every word the captions use is seen.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..data.splits import stream_seed
from ..world import applicable, caption, make_edit, random_scene, render_frame, render_video
from ..world.vocab import TASKS
from ..models.placement import module_device
from .paper_metrics import _features, viclip_dir


def tiny_clip(vocab_size: int, image_size: int, hidden: int, layers: int, heads: int, patch: int, max_length: int,
              seed: int = 0) -> Any:
    """A small randomly initialised `CLIPModel` (the class of CLIP ViT-L/14 and PickScore_v1)."""
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(seed)
    return CLIPModel(CLIPConfig(text_config=_text(vocab_size, hidden, layers, heads, max_length),
                                vision_config=_vision(hidden, layers, heads, image_size, patch), projection_dim=hidden))


def tiny_xclip(vocab_size: int, image_size: int, hidden: int, layers: int, heads: int, patch: int, max_length: int, frames: int,
               seed: int = 0) -> Any:
    """A small randomly initialised `XCLIPModel` reading `frames` frames."""
    from transformers import XCLIPConfig, XCLIPModel

    torch.manual_seed(seed)
    vision = _vision(hidden, layers, heads, image_size, patch) | dict(
        num_frames=frames, mit_hidden_size=hidden, mit_intermediate_size=2 * hidden, mit_num_hidden_layers=1, mit_num_attention_heads=heads)
    # the text is pooled at the highest token id whatever eos_token_id says (transformers forces
    # CLIP's legacy pooling on XCLIP): give it a tokenizer whose </s> is the last id
    # (shapes_tokenizer(eos_last=True))
    text = _text(vocab_size, hidden, layers, heads, max_length) | dict(eos_token_id=vocab_size - 1)
    return XCLIPModel(XCLIPConfig(text_config=text, vision_config=vision,
                                  projection_dim=hidden, prompt_layers=1, prompt_attention_heads=heads))


def _text(vocab_size: int, hidden: int, layers: int, heads: int, max_length: int) -> dict:
    # the world tokenizer's ids (models/text.py): <pad> 0, <unk> 1, <s> 2, </s> 3; pooled at </s>
    return dict(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                num_attention_heads=heads, max_position_embeddings=max_length, pad_token_id=0, bos_token_id=2, eos_token_id=3)


def _vision(hidden: int, layers: int, heads: int, image_size: int, patch: int) -> dict:
    return dict(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers, num_attention_heads=heads,
                image_size=image_size, patch_size=patch)


KINDS = ("clip", "xclip")


@dataclass
class Pairs:
    """Scenes and one edit of each (every task in turn): clips, captions and the edit's task."""

    clips: np.ndarray  # (N, F, H, W, 3) uint8, the scenes
    captions: list[str]
    edited: np.ndarray  # (N, F, H, W, 3) uint8, each scene after its edit
    edited_captions: list[str]
    tasks: list[str]


def pairs(world: Any, seed: int, stream: int, indices: range, single_frame: bool = False) -> Pairs:
    """Scenes `indices` of a seed stream, each with an edit (tasks in turn, details drawn from its
    seed); `single_frame`: one frame of each (the same random one for the scene and its edit),
    all an image model reads, so 8 times less rendering."""
    clips, captions, edited, edited_captions, tasks = [], [], [], [], []
    for i in indices:
        s = stream_seed(seed, i, stream)
        scene = random_scene(s, world.min_shapes, world.max_shapes, world.speed)
        rng = np.random.default_rng(s)
        # tasks in turn (scene i: task i mod 7, or the next one that applies), so every task is seen equally
        task = next(t for t in (TASKS[(i + j) % len(TASKS)] for j in range(len(TASKS))) if applicable(scene, t))
        edit = make_edit(scene, task, rng, tuple(world.speed))
        if single_frame:
            f = int(rng.integers(world.frames))
            clips.append(render_frame(scene, f, world.size, world.supersample)[None])
            edited.append(render_frame(edit.scene, f, world.size, world.supersample)[None])
        else:
            clips.append(render_video(scene, world.frames, world.size, world.supersample))
            edited.append(render_video(edit.scene, world.frames, world.size, world.supersample))
        captions.append(caption(scene))
        edited_captions.append(edit.output_caption)
        tasks.append(task)
    return Pairs(np.stack(clips), captions, np.stack(edited), edited_captions, tasks)


def contrastive_loss(kind: str, model: Any, tokenizer: Any, processor: Any, data: Pairs, generator: torch.Generator) -> torch.Tensor:
    """CLIP's symmetric contrastive loss over the scenes and their edits together, so each batch
    holds near misses: a scene and its edited self. CLIP sees one random frame of each clip
    (the model's own loss, `return_loss=True`); X-CLIP the whole clip, on exactly the features
    the metrics read (`get_video_features`, `get_text_features`): XCLIPModel's own loss scores
    text embeddings rewritten by its video-conditioned prompt generator, which the metrics never
    see, and training on it left the plain features at chance (pair accuracy 0.07)."""
    clips = np.concatenate([data.clips, data.edited])
    texts = tokenizer(data.captions + data.edited_captions, padding="max_length", truncation=True,
                      max_length=tokenizer.model_max_length, return_tensors="pt")
    n, f = clips.shape[:2]
    if kind == "clip":  # one frame of each clip (pairs(..., single_frame=True) renders only that one)
        frame = torch.randint(0, f, (n,), generator=generator).numpy()
        pixels = processor(images=list(clips[np.arange(n), frame]), return_tensors="pt").pixel_values
    else:
        pixels = processor(images=list(clips.reshape(n * f, *clips.shape[2:])), return_tensors="pt").pixel_values
        pixels = pixels.reshape(n, f, *pixels.shape[1:])
    device = module_device(model)
    ids, mask, pixels = texts.input_ids.to(device), texts.attention_mask.to(device), pixels.to(device)
    if kind != "clip":
        videos = F.normalize(_features(model.get_video_features(pixel_values=pixels)), dim=-1)
        words = F.normalize(_features(model.get_text_features(input_ids=ids, attention_mask=mask)), dim=-1)
        logits = model.logit_scale.exp() * words @ videos.T  # (texts, videos); pair i is the diagonal
        target = torch.arange(n, device=device)
        return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
    return model(input_ids=ids, attention_mask=mask, pixel_values=pixels, return_loss=True).loss


def check(kind: str, encoder: Any, data: Pairs) -> dict[str, float]:
    """Held-out scenes and their edits: `pair_accuracy` = both the scene and its edit are
    closer to their own caption than to the other's (per task and overall; chance 0.25);
    for X-CLIP also ViCLIP_dir of the ground-truth edit (`dir.ground_truth`, positive share)
    and of the edit read backwards (`dir.reversed`), which should be as negative."""
    if kind == "clip":
        a, b = encoder.images(data.clips[:, 0]), encoder.images(data.edited[:, 0])
    else:
        a, b = encoder.videos(data.clips), encoder.videos(data.edited)
    ta, tb = encoder.texts(data.captions), encoder.texts(data.edited_captions)
    ok = (((a * ta).sum(-1) > (a * tb).sum(-1)) & ((b * tb).sum(-1) > (b * ta).sum(-1))).numpy().astype(float)
    out = {"check.pair_accuracy": round(float(ok.mean()), 4)}
    tasks = np.array(data.tasks)
    out |= {f"check.pair_accuracy.{t}": round(float(ok[tasks == t].mean()), 4) for t in TASKS if (tasks == t).any()}
    if kind == "xclip":
        gt = viclip_dir(encoder, data.edited, data.clips, data.captions, data.edited_captions)
        back = viclip_dir(encoder, data.edited, data.clips, data.edited_captions, data.captions)
        out |= {"check.dir.ground_truth": round(float(gt.mean()), 4), "check.dir.ground_truth_positive": round(float((gt > 0).mean()), 4),
                "check.dir.reversed": round(float(back.mean()), 4)}
    return out
