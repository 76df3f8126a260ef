"""Training and checking the edit adapter (stage `edit_adapter`, METHOD.md section 2).

Data: the `edit_pairs` table (single images, never videos). The backbone is frozen and reads
the output caption; the ControlNet reads the input image, the instruction and the task label
and is the only part trained (v-prediction on the backbone's schedule, uniform t).
Check: DDIM samples for held-out pairs, compared with the ground-truth edited image, per
task, against the "return the input unchanged" baseline. Errors are mean absolute error on
[0, 1] pixels over three regions: the whole image, the pixels the edit changes
(any channel differs; the identity baseline's error lives only there) and
the pixels it must leave alone (the identity baseline is exact there). Where the right
answer is not unique in pixels (an added shape may sit anywhere in the named region), the
world's detector says whether the edited scene's captioned shapes and background show
(`present`), for the adapter and for the input image.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..data import tables
from ..evaluate import per_task_means
from ..diffusion import NoiseSchedule, ddim_sample, inference_timesteps
from ..models.adapters import EditVideoModel, task_ids
from ..models.backbone import Backbone
from ..models.placement import module_device, randn
from ..world import EditSpec, Scene, apply_edit
from ..world.detect import detect
from .backbone import to_uint8, to_unit

CHANGED = 0.5 / 255  # a pixel is "changed by the edit" when any channel differs at all (both images are exact renders)


@dataclass
class EditPairs:
    """An edit-pairs split: images kept as uint8 (N, H, W, 3) and given as [-1, 1] floats
    (N, 3, H, W) by `source` / `target`, so a large ingested set costs a quarter of the memory
    and only the batch taken is converted."""

    ids: list[str]
    tasks: list[str]
    source_u8: np.ndarray
    target_u8: np.ndarray
    captions: list[str]  # output captions (the backbone's text)
    instructions: list[str]  # the edit adapter's text
    output_scenes: list = field(default_factory=list)  # Shapes: the edited scenes (world.Scene), for the detector

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def source(self) -> torch.Tensor:
        return to_unit(self.source_u8)

    @property
    def target(self) -> torch.Tensor:
        return to_unit(self.target_u8)

    def take(self, index: list[int] | np.ndarray) -> "EditPairs":
        idx = [int(i) for i in index]
        return EditPairs([self.ids[i] for i in idx], [self.tasks[i] for i in idx], self.source_u8[idx], self.target_u8[idx],
                         [self.captions[i] for i in idx], [self.instructions[i] for i in idx],
                         [self.output_scenes[i] for i in idx] if self.output_scenes else [])


def load_pairs(path: Any, split: str) -> EditPairs:
    """The `split` ("train" or "test") rows of an edit-pairs parquet file. Shapes pairs carry
    their scene and edit (the detector's truth); ingested pairs (full profile) do not."""
    rows = [r for r in tables.read_table(tables.EDIT_PAIRS, path) if r["split"] == split]
    if not rows:
        raise ValueError(f"{path}: no {split!r} pairs (the edit adapter needs both train and test pairs; "
                         "with few pairs raise edit_pairs.test_fraction)")

    def images(col: str) -> np.ndarray:
        return np.stack([np.frombuffer(r[col], dtype=np.uint8).reshape(r["height"], r["width"], 3) for r in rows])

    with_scenes = split == "test" and all(r["scene"] is not None and r["edit_spec"] is not None for r in rows)
    scenes = [apply_edit(Scene.from_json(r["scene"]), EditSpec.from_json(r["edit_spec"])) for r in rows] if with_scenes else []
    return EditPairs([r["pair_id"] for r in rows], [r["task"] for r in rows], images("input_image"), images("output_image"),
                     [r["output_caption"] for r in rows], [r["instruction"] for r in rows], scenes)


def edit_loss(backbone: Backbone, model: EditVideoModel, schedule: NoiseSchedule, pairs: EditPairs, generator: torch.Generator,
              text_dropout: float = 0.0) -> torch.Tensor:
    """Diffusion loss of the edited image given the input image, instruction and task, in the
    backbone's model space (the edited image encoded: pixels on Shapes, VAE latents at full
    scale; the input image conditions the ControlNet in pixels). A share `text_dropout` of
    pairs loses both texts (caption and instruction -> ""), so the adapter also learns the
    text-free prediction that classifier-free guidance on the edit needs."""
    device = module_device(model.unet)
    source = pairs.source.to(device)
    x0 = backbone.space.encode(pairs.target.to(device))
    drop = (torch.rand(len(pairs), generator=generator) < text_dropout).tolist()
    captions = ["" if d else c for c, d in zip(pairs.captions, drop)]
    instructions = ["" if d else i for i, d in zip(pairs.instructions, drop)]
    t = torch.randint(0, schedule.train_timesteps, (len(pairs),), generator=generator).to(device)
    noise = randn(x0.shape, generator, like=x0)
    with torch.no_grad():  # the backbone's text encoder is frozen
        caption_emb = backbone.encode_text(captions)
        instruction_emb = backbone.encode_text(instructions)
    out = model(schedule.add_noise(x0, noise, t), t, caption_emb, instruction_emb, source, task_ids(pairs.tasks))
    return torch.nn.functional.mse_loss(out, schedule.target(x0, noise, t))


@torch.no_grad()
def sample_edits(backbone: Backbone, model: EditVideoModel, schedule: NoiseSchedule, timesteps: torch.Tensor,
                 pairs: EditPairs, generator: torch.Generator, batch_size: int = 32, guidance_scale: float = 1.0) -> torch.Tensor:
    """Edited images (N, 3, H, W) in [-1, 1] pixels, sampled by DDIM from noise in the backbone's
    model space and decoded. With
    `guidance_scale` > 1, classifier-free guidance on the texts (the input image and the task
    label condition both branches): uncond + scale * (cond - uncond)."""
    out = []
    for i in range(0, len(pairs), batch_size):
        part = pairs.take(range(i, min(i + batch_size, len(pairs))))
        cap, ins, tasks = backbone.encode_text(part.captions), backbone.encode_text(part.instructions), task_ids(part.tasks)
        source = part.source.to(module_device(model.unet))
        space = backbone.space
        noise = randn((len(part), space.channels, source.shape[-2] // space.scale, source.shape[-1] // space.scale), generator, like=source)
        if guidance_scale == 1.0:
            denoise = lambda x, t: model(x, t, cap, ins, source, tasks)  # noqa: E731
        else:
            empty = backbone.encode_text([""] * len(part))
            both = lambda a, b: torch.cat([a, b])  # noqa: E731

            def denoise(x, t):
                u, c = model(both(x, x), both(t, t), both(empty, cap), both(empty, ins), both(source, source), both(tasks, tasks)).chunk(2)
                return u + guidance_scale * (c - u)
        out.append(space.decode(ddim_sample(denoise, noise, schedule, timesteps)).float().cpu())
    return torch.cat(out)


def region_errors(edited: torch.Tensor, source: torch.Tensor, target: torch.Tensor) -> dict[str, np.ndarray]:
    """Per-image mean absolute error of `edited` against `target` (all in [-1, 1]) on the whole
    image, on the pixels the edit changes and on the pixels it keeps; NaN where a region is empty."""
    e, s, g = ((x.clamp(-1, 1) + 1) / 2 for x in (edited, source, target))
    err = (e - g).abs().mean(dim=1)  # (N, H, W)
    changed = ((g - s).abs().amax(dim=1) > CHANGED).float()
    kept = 1.0 - changed

    def masked(mask: torch.Tensor) -> np.ndarray:
        n = mask.sum(dim=(1, 2))
        return torch.where(n > 0, (err * mask).sum(dim=(1, 2)) / n.clamp(min=1), torch.nan).numpy()

    return {"all": err.mean(dim=(1, 2)).numpy(), "changed": masked(changed), "kept": masked(kept)}


@dataclass
class EditCheck:
    metrics: dict[str, float]  # "<region>.<task>" and "<region>.mean" for the adapter and the identity baseline
    samples: np.ndarray  # uint8 (N, 3 images: input | edited | ground truth, H, W, 3)
    labels: list[str]


def check(backbone: Backbone, model: EditVideoModel, scheduler: Any, pairs: EditPairs, steps: int, seed: int, show: int = 14,
          guidance_scale: float = 1.0) -> EditCheck:
    """Sample every pair of `pairs` and score it per task against the identity baseline."""
    schedule = NoiseSchedule.from_scheduler(scheduler)
    edited = sample_edits(backbone, model, schedule, inference_timesteps(scheduler, steps), pairs, torch.Generator().manual_seed(seed),
                          guidance_scale=guidance_scale)
    ours = region_errors(edited, pairs.source, pairs.target)
    identity = region_errors(pairs.source, pairs.source, pairs.target)
    tasks = np.array(pairs.tasks)
    metrics: dict[str, float] = {}
    for name, errs in (("adapter", ours), ("identity", identity)):
        metrics |= per_task_means({f"{name}.{region}": values for region, values in errs.items()}, pairs.tasks)
    if pairs.output_scenes:
        for name, images in (("adapter", to_uint8(edited)), ("identity", to_uint8(pairs.source))):
            found = np.array([detect(img, scene).all_present for img, scene in zip(images, pairs.output_scenes)])
            for task in sorted(set(pairs.tasks)):
                metrics[f"{name}.present.{task}"] = round(float(found[tasks == task].mean()), 5)
            metrics[f"{name}.present.mean"] = round(float(np.mean([metrics[f"{name}.present.{t}"] for t in sorted(set(pairs.tasks))])), 5)
    picked = round_robin(pairs.tasks, show)
    grid = np.stack([np.stack([to_uint8(x[i : i + 1])[0] for x in (pairs.source, edited, pairs.target)]) for i in picked]) if picked else np.zeros((0, 3, 1, 1, 3), np.uint8)
    return EditCheck(metrics, grid, [f"{pairs.tasks[i]}: {pairs.instructions[i]}" for i in picked])


def round_robin(tasks: list[str], count: int) -> list[int]:
    """Up to `count` indices, cycling through the tasks so that every task shows evenly."""
    order: dict[str, list[int]] = {}
    for i, t in enumerate(tasks):
        order.setdefault(t, []).append(i)
    out, depth = [], 0
    while len(out) < count and any(depth < len(v) for v in order.values()):
        out += [v[depth] for v in order.values() if depth < len(v)][: count - len(out)]
        depth += 1
    return out
