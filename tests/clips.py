"""Reference clip writers for the tests, independent of eve_fdd.data.video's writers."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
from PIL import Image


def encode_mp4(frames: np.ndarray, path: Path, fps: int = 12) -> Path:
    """H.264 through PyAV directly, nearly lossless (crf 10) so pixel checks stay tight."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps, options={"crf": "10"})
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def encode_gif(frames: np.ndarray, path: Path, duration_ms: int = 125) -> Path:
    """GIF through PIL."""
    images = [Image.fromarray(f) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=duration_ms, loop=0)
    return path
