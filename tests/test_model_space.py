"""models/space.py: pixels <-> the diffusion model's space (identity for Shapes, SD's VAE at
full scale), on a tiny AutoencoderKL of the real class; and the full profile's text limit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from eve_fdd.distill.data import clip_batch
from eve_fdd.models.space import LatentSpace, PixelSpace, check_compatible, model_space, pixels_from_uint8


@pytest.fixture(scope="module")
def vae():
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    return AutoencoderKL(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                         up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=8, latent_channels=4,
                         sample_size=16, scaling_factor=0.5).requires_grad_(False).eval()


def test_pixel_space_is_the_identity():
    x = torch.rand(2, 3, 4, 8, 8)
    space = model_space(None)
    assert isinstance(space, PixelSpace) and not space.latent and space.scale == 1
    assert space.encode(x) is x and space.decode(x) is x


def test_latent_space_encodes_frame_by_frame_in_chunks_with_the_scaling_factor(vae):
    clips = torch.rand(2, 3, 3, 16, 16) * 2 - 1
    space = LatentSpace(vae, chunk=2)
    z = space.encode(clips)
    assert z.shape == (2, 4, 3, 8, 8) and space.scale == 2 and space.channels == 4
    with torch.no_grad():  # the posterior mean of each frame, scaled
        one = vae.encode(clips[1, :, 2][None]).latent_dist.mode() * 0.5
    torch.testing.assert_close(z[1, :, 2], one[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(LatentSpace(vae, chunk=6).encode(clips), z, rtol=1e-5, atol=1e-5)  # chunks change nothing
    assert space.decode(z).shape == clips.shape and space.encode(clips[:, :, 0]).shape == (2, 4, 8, 8)
    with pytest.raises(ValueError, match="divisible by 2"):
        space.encode(torch.zeros(1, 3, 15, 16))


def test_decoding_is_differentiable_so_the_adversarial_gradient_reaches_the_latents(vae):
    space = LatentSpace(vae, chunk=1)
    z = torch.randn(1, 4, 2, 8, 8, requires_grad=True)
    space.decode(z).square().mean().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    assert all(p.grad is None for p in vae.parameters())  # the frozen VAE is not trained


def test_a_latent_batch_carries_its_pixels_for_the_controlnet(vae):
    frames = np.random.default_rng(0).integers(0, 255, (2, 3, 16, 16, 3), dtype=np.uint8)
    emb, tasks = torch.zeros(2, 5, 8), torch.zeros(2, dtype=torch.long)
    latent = clip_batch(frames, emb, emb, tasks, LatentSpace(vae))
    assert latent.source.shape == (2, 4, 3, 8, 8) and torch.equal(latent.condition, pixels_from_uint8(frames))
    assert latent.frames_of(slice(1, 3)).condition.shape == (2, 3, 2, 16, 16)
    pixel = clip_batch(frames, emb, emb, tasks, PixelSpace())
    assert pixel.pixels is None and pixel.condition is pixel.source


def test_mismatched_parts_are_named_before_training(vae):
    from diffusers import ControlNetModel, UNet2DConditionModel

    unet = UNet2DConditionModel(sample_size=8, in_channels=3, out_channels=3, block_out_channels=(8, 16), norm_num_groups=4,
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
                                cross_attention_dim=8, attention_head_dim=2, layers_per_block=1)
    with pytest.raises(ValueError, match="reads 3 channels but the model space has 4"):
        check_compatible(LatentSpace(vae), unet)
    cn = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16,))
    check_compatible(PixelSpace(), unet, cn)
    unet4 = UNet2DConditionModel.from_config({**dict(unet.config), "in_channels": 4, "out_channels": 4})
    with pytest.raises(ValueError, match=r"shrinks its condition image 1x .* expected 2 entries"):
        check_compatible(LatentSpace(vae), unet4, ControlNetModel.from_unet(unet4, conditioning_embedding_out_channels=(16,)))


def test_full_profile_text_is_cut_to_the_tokenizer_limit_and_counted():
    from eve_fdd.models.text import encode_text, shapes_tokenizer, tiny_clip_text_encoder

    tok = shapes_tokenizer(max_length=12)
    enc = tiny_clip_text_encoder(len(tok), 16, 1, 2, 12)
    counts: dict[str, int] = {"texts": 0, "truncated": 0}
    long = "a red circle " * 10
    emb = encode_text(tok, enc, ["a red circle", long], truncate=True, counts=counts)
    assert emb.shape == (2, 12, 16) and counts == {"texts": 2, "truncated": 1}
    with pytest.raises(ValueError, match="more than the text encoder's 12"):
        encode_text(tok, enc, [long])
