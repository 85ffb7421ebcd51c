"""Stable Video Diffusion's conditioning, built from a training clip as SVD's own pipeline builds it.

- CLIP image embedding of frame 0 (resized to the encoder's 224 px with antialiasing, mapped
  from [-1, 1] to [0, 1], normalised with the feature extractor's mean and std), [B, 1, D];
- first-frame VAE latents of a noise-augmented frame 0 (latent mode, *not* multiplied by the
  VAE scaling factor), repeated over frames and concatenated to the noisy latents;
- added time ids [fps - 1, motion bucket id, noise augmentation strength] (SVD was trained on
  fps - 1; see diffusers' pipeline_stable_video_diffusion.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

MOTION_BUCKET_ID = 127
FPS = 7
# Noise augmentation of the conditioning frame during training: ln s ~ N(-3.0, 0.5^2), the
# distribution the SVD fine-tuning recipes use (SVD_Xtend's train_svd.py); the pipeline's
# inference default is 0.02 = e^-3.9.
COND_AUG_P_MEAN = -3.0
COND_AUG_P_STD = 0.5


def clip_image_embeddings(image_encoder, image: torch.Tensor, *, mean, std) -> torch.Tensor:
    """image float [B, 3, H, W] in [-1, 1] -> image_embeds [B, 1, D]."""
    size = int(image_encoder.config.image_size)
    x = F.interpolate(image.float(), size=(size, size), mode="bicubic", antialias=True, align_corners=False)
    x = ((x + 1.0) / 2.0).clamp(0.0, 1.0)
    x = (x - x.new_tensor(mean).view(1, 3, 1, 1)) / x.new_tensor(std).view(1, 3, 1, 1)
    dtype = next(image_encoder.parameters()).dtype
    return image_encoder(x.to(dtype)).image_embeds.unsqueeze(1)


def encode_video(vae, frames: torch.Tensor, *, generator: torch.Generator | None = None, chunk: int = 16) -> torch.Tensor:
    """frames [B, F, 3, H, W] in [-1, 1] -> scaled latents [B, F, 4, H/8, W/8] (a posterior sample)."""
    b, f = frames.shape[:2]
    flat = frames.flatten(0, 1).to(vae.dtype)
    parts = []
    for i in range(0, flat.shape[0], chunk):  # bounded memory for 24-frame 320x576 clips
        dist = vae.encode(flat[i : i + chunk]).latent_dist
        parts.append(dist.sample(generator=generator))
    lat = torch.cat(parts) * vae.config.scaling_factor
    return lat.reshape(b, f, *lat.shape[1:])


def encode_condition(vae, image: torch.Tensor) -> torch.Tensor:
    """image [B, 3, H, W] (noise-augmented frame 0) -> latent mode [B, 4, H/8, W/8], unscaled as in SVD."""
    return vae.encode(image.to(vae.dtype)).latent_dist.mode()


def sample_cond_aug(n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """[n] noise-augmentation strengths for the conditioning frame (CPU draw)."""
    return (COND_AUG_P_MEAN + COND_AUG_P_STD * torch.randn(n, generator=generator)).exp()


def added_time_ids(*, fps: int, motion_bucket_id: int, noise_aug_strength: torch.Tensor) -> torch.Tensor:
    """[B, 3]: (fps - 1, motion bucket id, noise augmentation strength) per sample."""
    s = noise_aug_strength.float()
    return torch.stack([torch.full_like(s, fps - 1), torch.full_like(s, motion_bucket_id), s], dim=1)


def conditioning_dropout_masks(
    n: int, *, prob: float, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(keep_embedding, keep_image) float [n] masks for classifier-free guidance training.

    InstructPix2Pix-style: with probability `prob` each, drop only the CLIP embedding, drop
    both, or drop only the first-frame latents (so each is dropped with probability 2 * prob).
    """
    if not 0.0 <= prob <= 1.0 / 3.0:
        raise ValueError(f"conditioning dropout probability must be in [0, 1/3], got {prob}")
    r = torch.rand(n, generator=generator)
    keep_embedding = (r >= 2 * prob).float()
    keep_image = 1.0 - ((r >= prob) & (r < 3 * prob)).float()
    return keep_embedding, keep_image

