"""evaluate/paper_metrics.py: the metric math on small models of the real classes (CLIPModel,
XCLIPModel) saved and loaded as the full profile's are."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from eve_fdd.evaluate.metric_models import tiny_clip, tiny_xclip
from eve_fdd.evaluate.paper_metrics import (MetricModels, clip_frame, frame_processor, load_image_text, load_video_text,
                                            paper_metrics, pick_score, viclip_dir, viclip_out)
from eve_fdd.models.text import shapes_tokenizer
from eve_fdd.world import random_scene, render_video

CAPTIONS = ["a small red circle on a white background", "a large blue square on a black background",
            "a medium green triangle on a gray background"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Tiny models saved to disk and loaded back through the loaders the full profile uses."""
    root = tmp_path_factory.mktemp("metric-models")
    tok = shapes_tokenizer(max_length=32)
    xtok = shapes_tokenizer(max_length=32, eos_last=True)  # XCLIPModel pools at the highest id
    for name, model, tokenizer in (("clip", tiny_clip(tok.vocab_size, 32, 32, 2, 2, 8, 32, seed=1), tok),
                                   ("xclip", tiny_xclip(tok.vocab_size, 32, 32, 2, 2, 8, 32, frames=4, seed=2), xtok)):
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
        frame_processor(32).save_pretrained(root / name)
    clip = load_image_text(root / "clip")
    return MetricModels(clip, clip, load_video_text(root / "xclip"))


def _clips(n: int, frames: int = 6, first_seed: int = 0) -> np.ndarray:
    return np.stack([render_video(random_scene(s), frames, 32) for s in range(first_seed, first_seed + n)])


def test_identical_frames_give_clip_frame_one_and_motion_less(models):
    still = np.repeat(_clips(2, 1), 5, axis=1)
    np.testing.assert_allclose(clip_frame(models.image_text, still), 1.0, atol=1e-5)
    moving = _clips(2)
    assert (clip_frame(models.image_text, moving) < 1.0 - 1e-6).all()


def test_clip_frame_averages_every_ordered_pair_of_frames_as_tgve_does(models):
    """TGVE's clip_score_frame: sklearn's cosine_similarity matrix of the frames' features, diagonal
    set to 0, summed over F (F - 1). Three frames a, a, b: consecutive pairs would give
    (1 + cos(a, b)) / 2, all pairs (2 + 4 cos(a, b)) / 6."""
    a, b = _clips(2, 1)[:, 0]
    clip = np.stack([a, a, b])[None]
    e = models.image_text.images(np.stack([a, b])).numpy()
    cos = float(e[0] @ e[1])
    assert cos < 1 - 1e-3
    np.testing.assert_allclose(clip_frame(models.image_text, clip), (2 + 4 * cos) / 6, rtol=1e-5)


def test_pick_score_is_clips_own_scaled_similarity_averaged_over_frames(models):
    clips = _clips(2, 3)
    m = models.pick
    ours = pick_score(m, clips, CAPTIONS[:2])
    tok = m.tokenizer(CAPTIONS[:2], padding="max_length", max_length=m.tokenizer.model_max_length, return_tensors="pt")
    pixels = m.processor(images=list(clips.reshape(6, 32, 32, 3)), return_tensors="pt").pixel_values
    with torch.no_grad():
        logits = m.model(input_ids=tok.input_ids, attention_mask=tok.attention_mask, pixel_values=pixels).logits_per_image
    expected = [logits[3 * i : 3 * i + 3, i].mean().item() for i in range(2)]  # frames of clip i against caption i
    np.testing.assert_allclose(ours, expected, rtol=1e-5)


def test_video_model_reads_frames_sampled_evenly(models):
    clips = _clips(2, 10)
    pick = np.round(np.linspace(0, 9, 4)).astype(int)
    torch.testing.assert_close(models.video_text.videos(clips), models.video_text.videos(clips[:, pick]))


def test_direction_flips_sign_with_the_caption_change_and_is_bounded(models):
    edited, inputs = _clips(3), _clips(3, first_seed=10)
    fwd = viclip_dir(models.video_text, edited, inputs, CAPTIONS, CAPTIONS[1:] + CAPTIONS[:1])
    back = viclip_dir(models.video_text, edited, inputs, CAPTIONS[1:] + CAPTIONS[:1], CAPTIONS)
    np.testing.assert_allclose(fwd, -back, atol=1e-6)
    assert (np.abs(fwd) <= 1 + 1e-6).all() and (np.abs(fwd) > 0).all()
    rev = viclip_dir(models.video_text, inputs, edited, CAPTIONS[1:] + CAPTIONS[:1], CAPTIONS)  # both changes reversed
    np.testing.assert_allclose(fwd, rev, atol=1e-6)
    out = viclip_out(models.video_text, edited, CAPTIONS)
    assert out.shape == (3,) and (np.abs(out) <= 1 + 1e-6).all()


def test_batching_does_not_change_results(models):
    edited, inputs = _clips(5), _clips(5, first_seed=10)
    captions_in, captions_out = [CAPTIONS[i % 3] for i in range(5)], [CAPTIONS[(i + 1) % 3] for i in range(5)]
    one = paper_metrics(models, edited, inputs, captions_in, captions_out, batch_size=1)
    all_ = paper_metrics(models, edited, inputs, captions_in, captions_out, batch_size=16)
    assert set(one) == {"clip_frame", "pick_score", "viclip_out", "viclip_dir"}
    for k in one:
        assert one[k].shape == (5,)
        np.testing.assert_allclose(one[k], all_[k], rtol=1e-4, atol=1e-5, err_msg=k)


def test_bad_clips_and_counts_are_named(models):
    with pytest.raises(ValueError, match="clip_frame: expected uint8 clips"):
        clip_frame(models.image_text, _clips(1).astype(np.float32))
    with pytest.raises(ValueError, match="2 edited videos, 1 inputs"):
        paper_metrics(models, _clips(2), _clips(1), CAPTIONS[:2], CAPTIONS[:2])
