"""A randomly initialised model with Stable Video Diffusion's layout, small enough for CPU tests.

It has every component of `stable-video-diffusion-img2vid-xt` (unet/, vae/, image_encoder/,
feature_extractor/, scheduler/) and the same structure where it matters to Track4Gen: four
UNet levels, so that `up_blocks[2].upsamplers[0]` (the hook point, Sec. 3.3) exists, a VAE
that downsamples by 8, and a 224-pixel CLIP image encoder. Only the widths are tiny.
"""

from __future__ import annotations

from pathlib import Path

import torch

# SVD-xt's scheduler/scheduler_config.json: EDM sigmas on a Karras schedule, v-prediction,
# continuous timesteps (c_noise = 0.25 ln sigma).
SVD_SCHEDULER_CONFIG = {
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "interpolation_type": "linear",
    "num_train_timesteps": 1000,
    "prediction_type": "v_prediction",
    "sigma_max": 700.0,
    "sigma_min": 0.002,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "timestep_type": "continuous",
    "use_karras_sigmas": True,
}

# CLIP's normalisation constants (the SVD feature extractor's image_mean / image_std).
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def build_tiny_pipeline(*, seed: int = 0, num_frames: int = 8):
    """A StableVideoDiffusionPipeline with random tiny weights (deterministic given `seed`)."""
    from diffusers import (
        AutoencoderKLTemporalDecoder,
        EulerDiscreteScheduler,
        StableVideoDiffusionPipeline,
        UNetSpatioTemporalConditionModel,
    )
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    # Seed a private generator's state into torch for the duration of construction only:
    # module initialisers draw from the global RNG, and a caller's RNG must not be disturbed.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        # Widths are multiples of 32 because every norm layer is GroupNorm(32).
        unet = UNetSpatioTemporalConditionModel(
            sample_size=8,
            in_channels=8,  # 4 noisy latent channels + 4 first-frame latent channels, as SVD
            out_channels=4,
            block_out_channels=(32, 64, 64, 64),  # up_blocks[2] works at 64 channels (SVD: 640)
            layers_per_block=1,
            num_attention_heads=(1, 2, 2, 2),
            cross_attention_dim=32,  # = CLIP projection_dim
            addition_time_embed_dim=8,
            projection_class_embeddings_input_dim=3 * 8,  # fps, motion bucket, noise strength
            num_frames=num_frames,
        )
        vae = AutoencoderKLTemporalDecoder(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 4,
            block_out_channels=(32, 32, 32, 32),  # 4 levels: latents at 1/8 of the image, as SVD
            layers_per_block=1,
            latent_channels=4,
            sample_size=64,
        )
        image_encoder = CLIPVisionModelWithProjection(
            CLIPVisionConfig(
                image_size=224,
                patch_size=32,
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=2,
                projection_dim=32,
            )
        )
    feature_extractor = CLIPImageProcessor(
        crop_size={"height": 224, "width": 224},
        size={"shortest_edge": 224},
        image_mean=CLIP_MEAN,
        image_std=CLIP_STD,
    )
    scheduler = EulerDiscreteScheduler(**SVD_SCHEDULER_CONFIG)
    return StableVideoDiffusionPipeline(
        vae=vae, image_encoder=image_encoder, unet=unet, scheduler=scheduler, feature_extractor=feature_extractor
    )


def make_tiny_model(out_dir: str | Path, *, seed: int = 0, num_frames: int = 8) -> Path:
    """Save a tiny random SVD-shaped pipeline to `out_dir` (loadable with `--pretrained out_dir`)."""
    out = Path(out_dir)
    pipe = build_tiny_pipeline(seed=seed, num_frames=num_frames)
    pipe.save_pretrained(out, safe_serialization=True)
    return out
