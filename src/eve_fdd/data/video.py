"""Video files <-> uint8 RGB arrays of shape (frames, height, width, 3).

Decoding goes through PyAV, so anything FFmpeg reads (mp4, webm, gif, mov, mkv) works.
Every failure to read a clip becomes a `ClipError` with a short machine-readable
`reason`, so callers can turn it into a reject row instead of crashing.

Truncated or corrupt files: decoding is lazy and stops as soon as enough frames are
collected. An FFmpeg error raised *before* that point makes the clip "unreadable"; a
clip whose damage lies after the frames we need is accepted, because those frames
were never touched. A file whose stream just ends early (no error) is "too_short".
Both outcomes depend only on the file's bytes, so they are deterministic.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw, ImageFont

if TYPE_CHECKING:  # PyAV is imported where a video file is read or written, not by the array helpers
    from av.container import InputContainer
    from av.video.stream import VideoStream

DEFAULT_FPS = 8.0  # used when the container declares no frame rate
GAP = 2  # pixels between contact-sheet cells
CAPTION_HEIGHT = 14  # pixels reserved under a contact-sheet row for its caption

PathLike = str | Path


class ClipError(Exception):
    """A clip cannot be used; `reason` is one of "unreadable", "too_short", "no_video_stream"."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail

    def __str__(self) -> str:
        return self.detail


@contextmanager
def _video_stream(path: PathLike) -> Iterator[tuple[InputContainer, VideoStream]]:
    """Open the first video stream of `path`; FFmpeg errors inside the block become ClipError."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ClipError("no_video_stream", f"{path}: has no video stream (expected a video clip)")
            yield container, container.streams.video[0]
    except av.FFmpegError as exc:
        why = exc.strerror or exc  # strerror omits the errno and the repeated file name
        detail = f"{path}: not a readable video ({why}); expected a complete video file"
        raise ClipError("unreadable", detail) from None


def _stream_fps(stream: VideoStream) -> float:
    rate = stream.average_rate
    return float(rate) if rate else DEFAULT_FPS


def resize_center_crop(frame: np.ndarray, size: int) -> np.ndarray:
    """Resize (bicubic) so the short side is `size`, then take the central size x size square."""
    h, w = frame.shape[:2]
    scale = size / min(h, w)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    image = Image.fromarray(frame)
    if (new_w, new_h) != (w, h):
        image = image.resize((new_w, new_h), Image.Resampling.BICUBIC)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return np.asarray(image.crop((left, top, left + size, top + size)))


def decode_clip(path: PathLike, frames: int, stride: int, size: int) -> tuple[np.ndarray, float]:
    """Frames 0, stride, 2*stride, ... (the first `frames` of them), resized and centre-cropped.

    Returns a uint8 (frames, size, size, 3) RGB array and the output fps (source fps / stride).
    """
    picked: list[np.ndarray] = []
    decoded = 0
    with _video_stream(path) as (container, stream):
        fps = _stream_fps(stream) / stride
        for decoded, frame in enumerate(container.decode(stream), start=1):
            # Frames between strides are decoded (codecs need them) but never converted.
            if (decoded - 1) % stride == 0:
                picked.append(resize_center_crop(frame.to_ndarray(format="rgb24"), size))
                if len(picked) == frames:
                    break
    if len(picked) < frames:
        needed = frames * stride - (stride - 1)
        raise ClipError(
            "too_short",
            f"{path}: has {decoded} frames ({len(picked)} at stride {stride}); "
            f"needs at least {needed} for {frames} frames at stride {stride}",
        )
    return np.stack(picked), fps


def read_video(path: PathLike) -> tuple[np.ndarray, float]:
    """Every frame of `path` at its own size, as uint8 (F, H, W, 3) RGB, and its fps."""
    with _video_stream(path) as (container, stream):
        fps = _stream_fps(stream)
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
    if not frames:
        raise ClipError("too_short", f"{path}: has no frames (needs at least 1)")
    return np.stack(frames), fps


def _check_frames(frames: np.ndarray) -> None:
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or not len(frames):
        raise ValueError(f"frames must be non-empty uint8 (F, H, W, 3), got {frames.dtype} {frames.shape}")


def _upscale(frames: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour upscale of (..., H, W, 3) by an integer factor (keeps pixels crisp)."""
    if scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale}")
    return frames.repeat(scale, axis=-3).repeat(scale, axis=-2)


def _rate(fps: float) -> Fraction:
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    return Fraction(fps).limit_denominator(1001)


def _pal8(frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Quantize one RGB frame to its own 256-colour palette, as PyAV's pal8 (image, ARGB palette)."""
    quantized = Image.fromarray(frame).quantize(256, dither=Image.Dither.NONE)
    rgb = np.asarray(quantized.getpalette(), dtype=np.uint8).reshape(-1, 3)
    palette = np.zeros((256, 4), dtype=np.uint8)
    palette[:, 0] = 255  # opaque
    palette[: len(rgb), 1:] = rgb
    return np.asarray(quantized), palette


def write_gif(frames: np.ndarray, path: PathLike, fps: float, scale: int = 1) -> None:
    """Looping GIF, upscaled by `scale` (nearest neighbour) so small clips are visible.

    Written with FFmpeg rather than PIL because PIL merges identical consecutive frames,
    which would change the frame count seen by `read_video`.
    """
    import av

    _check_frames(frames)
    frames = _upscale(frames, scale)
    height, width = frames.shape[1:3]
    with av.open(str(path), "w", format="gif", options={"loop": "0"}) as container:  # 0 = forever
        stream = container.add_stream("gif", rate=_rate(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "pal8"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(_pal8(frame), format="pal8")))
        container.mux(stream.encode())


def write_mp4(frames: np.ndarray, path: PathLike, fps: float, scale: int = 1) -> None:
    """H.264 / yuv420p MP4 (plays everywhere); edge-padded by one pixel where a side is odd."""
    import av

    _check_frames(frames)
    frames = _upscale(frames, scale)
    height, width = frames.shape[1:3]
    # yuv420p subsamples chroma 2x2, so the encoder needs even dimensions.
    frames = np.pad(frames, ((0, 0), (0, height % 2), (0, width % 2), (0, 0)), mode="edge")
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=_rate(fps), options={"crf": "18"})
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def _fit_text(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont, width: int) -> str:
    """Shorten `text` with an ellipsis until it fits in `width` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


def display_scale(size: int) -> int:
    """The integer upscale that shows `size`-pixel frames at least ~96 pixels wide in contact
    sheets, GIFs and MP4s (Shapes frames are 32 pixels; full-scale frames are shown as they are)."""
    return max(1, 96 // size)


def contact_sheet(videos: list[np.ndarray], path: PathLike, scale: int = 2, captions: list[str] | None = None) -> None:
    """PNG grid: one row per video, one column per frame, GAP-pixel white gaps.

    Cells are sized for the largest video; shorter rows end in blank cells. With
    `captions`, CAPTION_HEIGHT pixels of text go under each row.
    """
    if not videos:
        raise ValueError("contact_sheet needs at least one video")
    if captions is not None and len(captions) != len(videos):
        raise ValueError(f"got {len(captions)} captions for {len(videos)} videos")
    for video in videos:
        _check_frames(video)
    videos = [_upscale(v, scale) for v in videos]
    cell_h = max(v.shape[1] for v in videos)
    cell_w = max(v.shape[2] for v in videos)
    columns = max(len(v) for v in videos)
    row_h = cell_h + (CAPTION_HEIGHT if captions is not None else 0)
    sheet = Image.new("RGB", (GAP + columns * (cell_w + GAP), GAP + len(videos) * (row_h + GAP)), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for r, video in enumerate(videos):
        top = GAP + r * (row_h + GAP)
        for c, frame in enumerate(video):
            sheet.paste(Image.fromarray(frame), (GAP + c * (cell_w + GAP), top))
        if captions is not None:
            text = _fit_text(draw, captions[r], font, sheet.width - 2 * GAP)
            draw.text((GAP, top + cell_h + 1), text, fill="black", font=font)
    sheet.save(str(path), format="PNG")
