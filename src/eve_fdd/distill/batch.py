"""One FDD data point, in the model's sample space (pixels for Shapes, latents for full).

METHOD.md section 3: y = (c_out, c_instruct, c_vid). The video adapter is conditioned on the
first frame, and that frame is itself edited by the edit adapter (section 6), so a batch also
carries the edited first frame (made by the edit teacher, see teachers.py).

`source` is in the model's space (models/space.py); `pixels` is the same input video in RGB
pixels: the edit adapter's condition (an SD ControlNet reads the input frame at 8x the latent
size) and D_e's input frame. In pixel space (Shapes) they are one tensor, and a batch made
without `pixels` uses `source` for both.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch


@dataclass
class EditBatch:
    source: torch.Tensor           # the input video c_vid (B, C, F, H, W)
    caption_emb: torch.Tensor      # the output caption c_out, encoded (B, L, D)
    instruction_emb: torch.Tensor  # the instruction c_instruct, encoded (B, L, D)
    tasks: torch.Tensor            # task label ids (B,)
    first: torch.Tensor | None = None  # the edited first frame (B, C, H, W)
    pixels: torch.Tensor | None = None  # the input video in pixels (B, 3, F, H*s, W*s); None = `source` (pixel space)

    def __post_init__(self) -> None:
        if self.source.ndim != 5:
            raise ValueError(f"EditBatch.source: expected a clip batch (B, C, F, H, W), got shape {tuple(self.source.shape)}")
        b = self.source.shape[0]
        for name in ("caption_emb", "instruction_emb", "tasks"):
            value = getattr(self, name)
            if value.shape[0] != b:
                raise ValueError(f"EditBatch.{name}: batch size {value.shape[0]}, expected {b} (the source's)")
        if self.first is not None and self.first.shape != self.source[:, :, 0].shape:
            raise ValueError(f"EditBatch.first: shape {tuple(self.first.shape)}, expected {tuple(self.source[:, :, 0].shape)}")
        if self.pixels is not None and (self.pixels.ndim != 5 or self.pixels.shape[0] != b or self.pixels.shape[2] != self.frames):
            raise ValueError(f"EditBatch.pixels: shape {tuple(self.pixels.shape)}, expected (B={b}, 3, F={self.frames}, H, W)")

    @property
    def condition(self) -> torch.Tensor:
        """The input video in pixels (B, 3, F, H, W): the edit adapter's condition, D_e's input."""
        return self.source if self.pixels is None else self.pixels

    def frames_of(self, frames: slice) -> "EditBatch":
        """The same data points on the frames `frames` of their clips (no first frame)."""
        return replace(self, source=self.source[:, :, frames], first=None,
                       pixels=None if self.pixels is None else self.pixels[:, :, frames])

    @property
    def frames(self) -> int:
        return self.source.shape[2]

    def with_first(self, first: torch.Tensor) -> "EditBatch":
        return replace(self, first=first)

    def needs_first(self) -> torch.Tensor:
        if self.first is None:
            raise ValueError("this batch has no edited first frame: make one with EditTeacher.edit_first_frame")
        return self.first
