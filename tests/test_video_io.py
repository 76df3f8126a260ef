"""Decoding, resizing and writing video files (eve_fdd.data.video)."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clips import encode_gif, encode_mp4
from eve_fdd.data.video import (
    CAPTION_HEIGHT,
    GAP,
    ClipError,
    contact_sheet,
    decode_clip,
    read_video,
    resize_center_crop,
    write_gif,
    write_mp4,
)

H, W = 40, 48  # deliberately not square


def indexed_frames(n: int, h: int = H, w: int = W) -> np.ndarray:
    """Frame i is grey at brightness 10*i with a small white square moving right."""
    frames = np.zeros((n, h, w, 3), np.uint8)
    for i in range(n):
        frames[i] = 10 * i
        frames[i, 4:8, i % (w - 4) : i % (w - 4) + 4] = 255
    return frames


def brightness(frames: np.ndarray) -> np.ndarray:
    """Mean of the background (the rows below the moving square), per frame."""
    return frames[:, 12:].reshape(len(frames), -1).mean(axis=1)


@pytest.fixture
def mp4(tmp_path: Path) -> Path:
    return encode_mp4(indexed_frames(24), tmp_path / "clip.mp4")


def test_decode_shape_dtype_and_fps(mp4: Path) -> None:
    frames, fps = decode_clip(mp4, frames=6, stride=2, size=16)
    assert frames.shape == (6, 16, 16, 3) and frames.dtype == np.uint8
    assert fps == pytest.approx(6.0)


@pytest.mark.parametrize("stride", [1, 3, 4])
def test_decode_stride_picks_every_stride_th_frame(mp4: Path, stride: int) -> None:
    frames, _ = decode_clip(mp4, frames=5, stride=stride, size=W)
    expected = 10.0 * stride * np.arange(5)
    np.testing.assert_allclose(brightness(frames), expected, atol=3)


def test_decode_gif(tmp_path: Path) -> None:
    path = encode_gif(indexed_frames(10), tmp_path / "clip.gif")
    frames, fps = decode_clip(path, frames=5, stride=2, size=W)
    np.testing.assert_allclose(brightness(frames), 20.0 * np.arange(5), atol=1)
    assert fps == pytest.approx(4.0, abs=0.3)  # 125 ms per frame, stride 2


def test_decode_center_crops_non_square(tmp_path: Path) -> None:
    # Column x has brightness 5*x, so the crop's columns say where they came from.
    frames = np.broadcast_to((5 * np.arange(W, dtype=np.uint8))[None, None, :, None], (10, H, W, 3)).copy()
    out, _ = decode_clip(encode_mp4(frames, tmp_path / "ramp.mp4"), frames=2, stride=1, size=H)
    assert out.shape == (2, H, H, 3)
    offset = (W - H) // 2
    np.testing.assert_allclose(out[0, H // 2].mean(axis=-1), 5.0 * np.arange(offset, offset + H), atol=4)


def test_resize_center_crop_keeps_the_middle() -> None:
    frame = np.zeros((40, 80, 3), np.uint8)
    frame[:, 20:60] = 255  # the central square is white, the sides black
    out = resize_center_crop(frame, 20)
    assert out.shape == (20, 20, 3) and out.dtype == np.uint8
    assert out[:, 1:-1].min() > 200  # bicubic may ring at the very edge only
    portrait = resize_center_crop(np.zeros((90, 30, 3), np.uint8), 10)
    assert portrait.shape == (10, 10, 3)


def test_too_short_says_what_it_has_and_needs(mp4: Path) -> None:
    with pytest.raises(ClipError) as err:
        decode_clip(mp4, frames=9, stride=3, size=16)
    assert err.value.reason == "too_short"
    assert "clip.mp4" in str(err.value) and "24 frames" in str(err.value) and "25" in str(err.value)


def test_garbage_and_truncated_files_are_unreadable(tmp_path: Path, mp4: Path) -> None:
    garbage = tmp_path / "notes.mp4"
    garbage.write_text("this is not a video\n" * 50)
    truncated = tmp_path / "cut.mp4"
    truncated.write_bytes(mp4.read_bytes()[: mp4.stat().st_size // 3])
    for path in (garbage, truncated, tmp_path / "absent.mp4"):
        with pytest.raises(ClipError) as err:
            decode_clip(path, frames=4, stride=1, size=16)
        assert err.value.reason == "unreadable" and path.name in err.value.detail


def test_audio_only_file_has_no_video_stream(tmp_path: Path) -> None:
    path = tmp_path / "tone.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(b"\0\0" * 800)
    with pytest.raises(ClipError) as err:
        read_video(path)
    assert err.value.reason == "no_video_stream" and "tone.wav" in str(err.value)


def test_write_mp4_round_trip_pads_odd_sizes(tmp_path: Path) -> None:
    frames = indexed_frames(12, h=15, w=21)
    path = tmp_path / "out.mp4"
    write_mp4(frames, path, fps=8.0, scale=2)
    back, fps = read_video(path)
    assert back.shape == (12, 30, 42, 3)  # 2x upscale is already even
    assert fps == pytest.approx(8.0)
    np.testing.assert_allclose(brightness(back), brightness(frames.repeat(2, 1).repeat(2, 2)), atol=3)
    write_mp4(frames, path, fps=7.5)
    back, fps = read_video(path)
    assert back.shape == (12, 16, 22, 3) and fps == pytest.approx(7.5)


def test_write_gif_round_trip_keeps_every_frame(tmp_path: Path) -> None:
    frames = indexed_frames(8)
    frames[4] = frames[3]  # identical neighbours must not be merged
    path = tmp_path / "out.gif"
    write_gif(frames, path, fps=8.0, scale=3)
    back, fps = read_video(path)
    assert back.shape == (8, 3 * H, 3 * W, 3)
    np.testing.assert_array_equal(back[:, ::3, ::3], frames)  # few colours: palette is exact
    assert fps == pytest.approx(8.0, abs=0.5)  # GIF delays are whole centiseconds
    with Image.open(path) as gif:
        assert gif.info.get("loop") == 0  # loop forever


def test_contact_sheet_size(tmp_path: Path) -> None:
    videos = [indexed_frames(4, 8, 10), indexed_frames(6, 8, 10)]
    path = tmp_path / "sheet.png"
    contact_sheet(videos, path, scale=2, captions=["four frames", "six frames " * 20])
    with Image.open(path) as sheet:
        assert sheet.format == "PNG"
        assert sheet.size == (GAP + 6 * (20 + GAP), GAP + 2 * (16 + CAPTION_HEIGHT + GAP))
        pixels = np.asarray(sheet.convert("RGB"))
    cell = pixels[GAP : GAP + 16, GAP : GAP + 20]
    np.testing.assert_array_equal(cell, videos[0][0].repeat(2, 0).repeat(2, 1))
    contact_sheet(videos, path, scale=1)
    with Image.open(path) as sheet:
        assert sheet.size == (GAP + 6 * (10 + GAP), GAP + 2 * (8 + GAP))


def test_rate_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="fps"):
        write_mp4(indexed_frames(2), tmp_path / "x.mp4", fps=0)
