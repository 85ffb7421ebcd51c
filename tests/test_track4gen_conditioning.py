"""SVD conditioning built for training agrees with diffusers' StableVideoDiffusionPipeline."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from track4gen import conditioning as cond
from track4gen.tiny_model import build_tiny_pipeline


@pytest.fixture(scope="module")
def pipe():
    return build_tiny_pipeline(seed=0)


@pytest.fixture(scope="module")
def picture():
    arr = np.random.default_rng(0).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    return arr, torch.from_numpy(arr).permute(2, 0, 1)[None].float() / 127.5 - 1.0


def test_clip_embedding_matches_the_pipelines_image_encoding(pipe, picture):
    arr, x = picture
    with torch.no_grad():
        ref = pipe._encode_image(Image.fromarray(arr), "cpu", 1, False)
        ours = cond.clip_image_embeddings(pipe.image_encoder, x, mean=pipe.feature_extractor.image_mean,
                                          std=pipe.feature_extractor.image_std)
    assert ours.shape == ref.shape == (1, 1, 32)
    # The pipeline resizes with its own blur + bicubic kernel, we with torch's antialiased bicubic.
    assert torch.nn.functional.cosine_similarity(ours.flatten(), ref.flatten(), dim=0).item() > 0.99


def test_first_frame_latents_are_the_pipelines_unscaled_latent_mode(pipe, picture):
    _, x = picture
    with torch.no_grad():
        assert torch.equal(cond.encode_condition(pipe.vae, x), pipe._encode_vae_image(x, "cpu", 1, False))


def test_video_latents_are_scaled_posterior_samples(pipe, picture):
    _, x = picture
    frames = x.unsqueeze(1).repeat(1, 3, 1, 1, 1)
    with torch.no_grad():
        lat = cond.encode_video(pipe.vae, frames, generator=torch.Generator().manual_seed(0))
        dist = pipe.vae.encode(frames[0]).latent_dist
        want = dist.sample(generator=torch.Generator().manual_seed(0)) * pipe.vae.config.scaling_factor
    assert lat.shape == (1, 3, 4, 8, 12)
    assert torch.equal(lat[0], want)
    assert not torch.equal(lat[0, 0], lat[0, 1])  # a fresh sample per frame, not the mode


def test_added_time_ids_are_fps_minus_one_motion_bucket_and_noise_strength():
    ids = cond.added_time_ids(fps=7, motion_bucket_id=127, noise_aug_strength=torch.tensor([0.02, 0.5]))
    assert torch.allclose(ids, torch.tensor([[6.0, 127.0, 0.02], [6.0, 127.0, 0.5]]))


def test_conditioning_noise_strength_is_log_normal():
    s = cond.sample_cond_aug(100_000, generator=torch.Generator().manual_seed(0))
    assert s.log().mean().item() == pytest.approx(-3.0, abs=0.01)
    assert s.log().std().item() == pytest.approx(0.5, abs=0.01)


def test_conditioning_dropout_rates():
    keep_emb, keep_img = cond.conditioning_dropout_masks(200_000, prob=0.1, generator=torch.Generator().manual_seed(0))
    assert 1 - keep_emb.mean().item() == pytest.approx(0.2, abs=0.005)
    assert 1 - keep_img.mean().item() == pytest.approx(0.2, abs=0.005)
    assert ((1 - keep_emb) * (1 - keep_img)).mean().item() == pytest.approx(0.1, abs=0.005)  # both dropped
    with pytest.raises(ValueError, match="0.5"):
        cond.conditioning_dropout_masks(4, prob=0.5)
