"""The teacher-sample pool (ours; the paper samples its teachers as it goes).

Each FDD data point needs the edited first frame that conditions the video adapter, and the
discriminators need "real" samples, which the teachers make by multi-step DDIM from noise
(METHOD.md section 4.4). Sampling both teachers for every batch would cost far more than
the student's own k steps, so the pool holds `size` data points with their teacher samples:

  first       the edited first frame (edit teacher, from noise)
  edit_real   every frame of the input video edited by the edit teacher (D_e's real samples)
  video_real  a clip by the video teacher from that first frame and the output caption (D_v's)

All three are in the model's space (latents at full scale: 1/48 of the pixels); the
discriminators decode what they read.

(With a second teacher that is not first-frame conditioned, `ConceptTeacher` in
`fdd_personal`, there is no first frame and `video_real` holds that teacher's samples.)

It is filled once, and then `refresh * size` entries per iteration (on average; a rate
below one means one entry every few iterations) are replaced by new data points with fresh
teacher samples, so over a run the student sees `size + refresh * size * iterations` data
points. Student batches and real
samples are drawn from the pool. `refresh=1` regenerates everything every iteration: the
"no pool" baseline that benchmarks/fdd_iteration.py compares against.

The pool is part of a run's state: `state_dict()` is checkpointed with the weights
(train/loop.py), so a resumed run continues with the entries the interrupted one held, not a
fresh fill.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import torch

from ..models.placement import randn
from .batch import EditBatch
from .teachers import EditTeacher, VideoTeacher

FIELDS = tuple(f.name for f in dataclasses.fields(EditBatch))  # in order

# indices of data points -> their batch (source clips, encoded texts, task ids)
DataFn = Callable[[Sequence[int]], EditBatch]


class TeacherPool:
    def __init__(self, data: DataFn, data_size: int, edit_teacher: EditTeacher, video_teacher: VideoTeacher,
                 timesteps: Sequence[int] | torch.Tensor, size: int, refresh: float, seed: int, chunk: int = 8):
        if size < 1 or data_size < 1:
            raise ValueError(f"teacher pool: size ({size}) and the data ({data_size} points) must be at least 1")
        if not 0.0 <= refresh <= 1.0:
            raise ValueError(f"teacher pool: refresh must be a fraction in [0, 1], got {refresh}")
        self.data, self.data_size = data, data_size
        self.edit_teacher, self.video_teacher = edit_teacher, video_teacher
        self.timesteps = [int(t) for t in timesteps]
        self.size, self.refresh_rate, self.seed, self.chunk = min(size, data_size), refresh, seed, chunk
        self.items: list[int] = []
        self.batch: EditBatch | None = None
        self.edit_real: torch.Tensor | None = None
        self.video_real: torch.Tensor | None = None
        self.generated = 0  # data points sampled by the teachers so far
        self._next = 0      # the next data point to bring in (a seeded permutation, cycled)
        self._order = torch.randperm(data_size, generator=torch.Generator().manual_seed(seed))

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Which data points the pool holds, their samples and where the data order stands."""
        state = {"generated": torch.tensor(self.generated), "next": torch.tensor(self._next)}
        if self.batch is None:
            return state
        state |= {"items": torch.tensor(self.items), "edit_real": self.edit_real, "video_real": self.video_real}
        return state | {f"batch.{n}": getattr(self.batch, n) for n in FIELDS if getattr(self.batch, n) is not None}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.generated, self._next = int(state["generated"]), int(state["next"])
        if "items" not in state:  # saved before the first fill
            self.items, self.batch, self.edit_real, self.video_real = [], None, None, None
            return
        if len(state["items"]) != self.size:
            raise ValueError(f"teacher pool: the checkpoint holds {len(state['items'])} entries, this run's pool has {self.size} (fdd.pool_size changed?)")
        self.items = [int(i) for i in state["items"].tolist()]
        self.edit_real, self.video_real = state["edit_real"], state["video_real"]
        self.batch = EditBatch(*(state.get(f"batch.{n}") for n in FIELDS))

    def fill(self) -> None:
        self.items = self._take(self.size)
        self.batch, self.edit_real, self.video_real = self._sample(self.items)

    def refresh(self, step: int) -> int:
        """Replace `refresh` of the entries with new data points; returns how many."""
        if self.batch is None:
            self.fill()
            return self.size
        n = self.due(step)
        if n == 0:
            return 0
        slots = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed * 1_000_003 + step))[:n]
        items = self._take(n)
        batch, edit_real, video_real = self._sample(items)
        for j, slot in enumerate(slots.tolist()):
            self.items[slot] = items[j]
            for name in FIELDS:
                if getattr(batch, name) is not None:
                    getattr(self.batch, name)[slot] = getattr(batch, name)[j]
            self.edit_real[slot] = edit_real[j]
            self.video_real[slot] = video_real[j]
        return n

    def due(self, step: int) -> int:
        """Entries to replace at `step`: `refresh * size` per iteration on average, spread
        evenly (a rate below one entry per iteration replaces one every few iterations)."""
        rate = self.refresh_rate * self.size
        return int((step + 1) * rate) - int(step * rate)

    def draw(self, batch_size: int, generator: torch.Generator) -> tuple[EditBatch, torch.Tensor, torch.Tensor]:
        """A batch of pool entries: (the data points with their edited first frames, the edit
        teacher's frames, the video teacher's clips)."""
        if self.batch is None:
            raise RuntimeError("teacher pool: fill() it before drawing")
        idx = torch.randperm(self.size, generator=generator)[:batch_size]
        b = self.batch
        picked = EditBatch(*(None if getattr(b, n) is None else getattr(b, n)[idx] for n in FIELDS))
        return picked, self.edit_real[idx], self.video_real[idx]

    def _take(self, n: int) -> list[int]:
        out = [int(self._order[(self._next + i) % self.data_size]) for i in range(n)]
        self._next += n
        return out

    @torch.no_grad()
    def _sample(self, items: list[int]) -> tuple[EditBatch, torch.Tensor, torch.Tensor]:
        parts = []
        for i in range(0, len(items), self.chunk):
            chunk = items[i : i + self.chunk]
            batch = self.data(chunk)
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + 7919 * self.generated + i)
            if self.video_teacher.needs_first:
                first = self.edit_teacher.edit_first_frame(randn(batch.source[:, :, 0].shape, g, like=batch.source), batch, self.timesteps)
                batch = batch.with_first(first)
            edit_real = self.edit_teacher.sample(randn(batch.source.shape, g, like=batch.source), batch, self.timesteps)
            video_real = self.video_teacher.sample(randn(batch.source.shape, g, like=batch.source), batch, self.timesteps)
            parts.append((batch, edit_real, video_real))
        self.generated += len(items)
        batch = EditBatch(*(None if getattr(parts[0][0], n) is None else torch.cat([getattr(p[0], n) for p in parts]) for n in FIELDS))
        return batch, torch.cat([p[1] for p in parts]), torch.cat([p[2] for p in parts])
