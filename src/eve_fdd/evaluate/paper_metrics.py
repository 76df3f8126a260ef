"""The paper's automatic metrics (METHOD.md section 7), computed the same way on both profiles,
on uint8 clips (B, F, H, W, 3):

- CLIPFrame: mean cosine similarity of the CLIP image embeddings over all ordered pairs of
  different frames, TGVE's frame consistency (loveu-tgve-2023 `scripts/run_eval.py`,
  `clip_score_frame`: the similarity matrix, diagonal zeroed, summed over F (F - 1)); identical
  frames give 1, and a static video scores highest.
- PickScore: mean over frames of exp(logit_scale) * cos(image, output caption), PickScore_v1's
  score (it is a `CLIPModel`, read like any other).
- ViCLIP_out: cosine of the edited video's and the output caption's video-text embeddings.
- ViCLIP_dir: cosine of text(c_out) - text(c_in) with video(edited) - video(input): does the
  video change the way the caption does.

Models (params.yaml `evaluate.metrics`): the full profile names hub ids or local directories
(CLIP ViT-L/14, PickScore_v1 with its processor); the Shapes profile uses small models of the
same classes that stage `metric_models` trains on the world's own captions. Ours: the video-text
model is a transformers `XCLIPModel` (ViCLIP, InternVid's model, is not a transformers class and
needs its own code); it reads `num_frames` frames sampled evenly from the clip, as ViCLIP reads 8.
Frames are prepared by CLIP's image processor (resize, centre crop, CLIP's mean and std; its PIL
backend, so torchvision is not needed).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..models.placement import module_device

NAMES = ("clip_frame", "pick_score", "viclip_out", "viclip_dir")


def _features(out: Any) -> torch.Tensor:
    """transformers 5 returns the projected features as `pooler_output` of a model output."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


@dataclass
class ImageText:
    """A `CLIPModel` with its tokenizer and image processor: CLIPFrame, PickScore."""

    model: Any
    tokenizer: Any
    processor: Any

    @torch.no_grad()
    def images(self, frames: np.ndarray) -> torch.Tensor:
        """Unit image embeddings (N, D) of uint8 frames (N, H, W, 3)."""
        pixels = self.processor(images=list(frames), return_tensors="pt").pixel_values
        return _unit(self.model.get_image_features(pixel_values=_on(self.model, pixels)))

    @torch.no_grad()
    def texts(self, texts: list[str]) -> torch.Tensor:
        return _text_embeds(self.model, self.tokenizer, texts)

    @property
    def scale(self) -> float:
        return float(self.model.logit_scale.detach().exp())


@dataclass
class VideoText:
    """An `XCLIPModel` with its tokenizer and a frame processor: ViCLIP_out, ViCLIP_dir."""

    model: Any
    tokenizer: Any
    processor: Any

    @property
    def frames(self) -> int:
        return self.model.config.vision_config.num_frames

    @torch.no_grad()
    def videos(self, clips: np.ndarray) -> torch.Tensor:
        """Unit video embeddings (B, D) of uint8 clips (B, F, H, W, 3), from `frames` frames
        sampled evenly (the first and the last included)."""
        b, f = clips.shape[:2]
        pick = np.round(np.linspace(0, f - 1, self.frames)).astype(int)
        flat = clips[:, pick].reshape(b * self.frames, *clips.shape[2:])
        pixels = self.processor(images=list(flat), return_tensors="pt").pixel_values
        pixels = pixels.reshape(b, self.frames, *pixels.shape[1:])
        return _unit(self.model.get_video_features(pixel_values=_on(self.model, pixels)))

    @torch.no_grad()
    def texts(self, texts: list[str]) -> torch.Tensor:
        return _text_embeds(self.model, self.tokenizer, texts)


def _text_embeds(model: Any, tokenizer: Any, texts: list[str]) -> torch.Tensor:
    tok = tokenizer(texts, padding="max_length", truncation=True, max_length=tokenizer.model_max_length, return_tensors="pt")
    device = module_device(model)
    return _unit(model.get_text_features(input_ids=tok.input_ids.to(device), attention_mask=tok.attention_mask.to(device)))


def _on(model: Any, pixels: torch.Tensor) -> torch.Tensor:
    """Processed pixels on the model's device, in its dtype (bf16 where frozen weights are)."""
    p = next(model.parameters())
    return pixels.to(p.device, p.dtype)


def _unit(out: Any) -> torch.Tensor:
    """Unit embeddings, float32 on the CPU (the metrics are numpy)."""
    return F.normalize(_features(out).float(), dim=-1).cpu()


@dataclass
class MetricModels:
    image_text: ImageText  # CLIPFrame
    pick: ImageText  # PickScore
    video_text: VideoText  # ViCLIP_out, ViCLIP_dir


def _check_clips(clips: np.ndarray, what: str) -> None:
    if clips.dtype != np.uint8 or clips.ndim != 5 or clips.shape[-1] != 3 or clips.shape[1] < 2:
        raise ValueError(f"{what}: expected uint8 clips (B, F>=2, H, W, 3), got {clips.dtype} {clips.shape}")


def clip_frame(m: ImageText, clips: np.ndarray) -> np.ndarray:
    """(B,) mean cosine similarity of the frames' image embeddings over the F (F - 1) ordered
    pairs i != j (TGVE's)."""
    _check_clips(clips, "clip_frame")
    b, f = clips.shape[:2]
    e = m.images(clips.reshape(b * f, *clips.shape[2:])).reshape(b, f, -1)
    sim = (e[:, :, None] * e[:, None]).sum(-1)  # (B, F, F) cosines; not a matmul, which autocast would run in bf16
    return ((sim.sum((1, 2)) - sim.diagonal(dim1=1, dim2=2).sum(1)) / (f * (f - 1))).numpy()


def pick_score(m: ImageText, clips: np.ndarray, captions: list[str]) -> np.ndarray:
    """(B,) mean over frames of exp(logit_scale) * cos(frame, caption)."""
    _check_clips(clips, "pick_score")
    b, f = clips.shape[:2]
    e = m.images(clips.reshape(b * f, *clips.shape[2:])).reshape(b, f, -1)
    return (m.scale * (e * m.texts(captions)[:, None]).sum(-1).mean(1)).numpy()


def viclip_out(m: VideoText, clips: np.ndarray, captions: list[str]) -> np.ndarray:
    """(B,) cosine of the video and its output caption."""
    _check_clips(clips, "viclip_out")
    return (m.videos(clips) * m.texts(captions)).sum(-1).numpy()


def viclip_dir(m: VideoText, edited: np.ndarray, inputs: np.ndarray, input_captions: list[str], output_captions: list[str]) -> np.ndarray:
    """(B,) cosine of the caption's change and the video's change, in the video-text space."""
    _check_clips(edited, "viclip_dir (edited)")
    _check_clips(inputs, "viclip_dir (inputs)")
    dv = m.videos(edited) - m.videos(inputs)
    dt = m.texts(output_captions) - m.texts(input_captions)
    return F.cosine_similarity(dv, dt, dim=-1, eps=1e-8).numpy()


def paper_metrics(models: MetricModels, edited: np.ndarray, inputs: np.ndarray, input_captions: list[str],
                  output_captions: list[str], batch_size: int = 16) -> dict[str, np.ndarray]:
    """Every metric per video, (B,) each, computed `batch_size` videos at a time."""
    n = len(edited)
    if not (len(inputs) == len(input_captions) == len(output_captions) == n):
        raise ValueError(f"paper_metrics: {n} edited videos, {len(inputs)} inputs, {len(input_captions)} input captions, "
                         f"{len(output_captions)} output captions; expected one of each per video")
    parts: dict[str, list[np.ndarray]] = {k: [] for k in NAMES}
    for i in range(0, n, batch_size):
        s = slice(i, i + batch_size)
        parts["clip_frame"].append(clip_frame(models.image_text, edited[s]))
        parts["pick_score"].append(pick_score(models.pick, edited[s], output_captions[s]))
        parts["viclip_out"].append(viclip_out(models.video_text, edited[s], output_captions[s]))
        parts["viclip_dir"].append(viclip_dir(models.video_text, edited[s], inputs[s], input_captions[s], output_captions[s]))
    return {k: np.concatenate(v) for k, v in parts.items()}


def frame_processor(size: int) -> Any:
    """CLIP's preprocessing at `size` pixels (resize the short side, centre crop, CLIP mean/std)."""
    from transformers import CLIPImageProcessorPil  # the PIL backend: no torchvision needed

    return CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size})


def load_image_text(source: str | Path, processor: str | Path | None = None) -> ImageText:
    """A `CLIPModel` from a hub id or directory; tokenizer and image processor from `processor`
    (PickScore_v1 keeps them in another repository) or from the model's own place."""
    from transformers import AutoTokenizer, CLIPImageProcessorPil, CLIPModel

    where = str(processor or source)
    return ImageText(CLIPModel.from_pretrained(str(source)).eval(), AutoTokenizer.from_pretrained(where),
                     CLIPImageProcessorPil.from_pretrained(where))


def load_video_text(source: str | Path, processor: str | Path | None = None) -> VideoText:
    """An `XCLIPModel` from a hub id or directory, its tokenizer, and CLIP's frame processing at
    the model's image size."""
    from transformers import AutoTokenizer, XCLIPModel

    model = XCLIPModel.from_pretrained(str(source)).eval()
    return VideoText(model, AutoTokenizer.from_pretrained(str(processor or source)), frame_processor(model.config.vision_config.image_size))
