"""Zero-shot tracking speed: features and matching for one 24-frame 320x576 clip with 1,000 queries.

Feature extraction (VAE encode + one UNet pass with the hook, `DiffusionFeatures` through
`video_features`) and matching (`match_queries`: cosine cost maps + the loss's soft-argmax in
every frame) are timed apart; medians of --repeats runs after one warm-up. The model is the
tiny SVD-shaped one (`track4gen.tiny_model`, random weights), or with --full SVD-xt's shapes
(UNet, VAE and CLIP image encoder at full size, random weights; use a GPU: the UNet alone is
1.5 B parameters). The clip is a synthetic scene (trackprep.core.synthetic).

Run: PYTHONPATH=. python benchmarks/bench_zero_shot.py [--full] [--device cuda] [--repeats 3] [--threads N]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import numpy as np
import torch

from track4gen.tracking.features import DiffusionFeatures, FeatureModel, video_features
from track4gen.tracking.matching import match_queries
from trackprep.core.synthetic import make_scene


def full_size_model(device: torch.device) -> FeatureModel:
    """SVD-xt's architecture with random weights (diffusers' and CLIP's SVD configurations)."""
    from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    from track4gen.tiny_model import CLIP_MEAN, CLIP_STD

    with torch.device(device):
        unet = UNetSpatioTemporalConditionModel(num_frames=25)  # the defaults are SVD's UNet
        vae = AutoencoderKLTemporalDecoder()  # the defaults are SVD's VAE
        encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(  # ViT-H/14 of SVD's image_encoder/config.json
            hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16,
            patch_size=14, image_size=224, projection_dim=1024, hidden_act="gelu"))
    fe = CLIPImageProcessor(crop_size={"height": 224, "width": 224}, size={"shortest_edge": 224},
                            image_mean=CLIP_MEAN, image_std=CLIP_STD)
    return FeatureModel(unet=unet, vae=vae, image_encoder=encoder, feature_extractor=fe, head=None, source="SVD-xt shapes")


def tiny_model() -> FeatureModel:
    from track4gen.tiny_model import build_tiny_pipeline

    pipe = build_tiny_pipeline(num_frames=24)
    return FeatureModel(unet=pipe.unet, vae=pipe.vae, image_encoder=pipe.image_encoder,
                        feature_extractor=pipe.feature_extractor, head=None, source="tiny")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="full-size SVD-xt shapes instead of the tiny model")
    ap.add_argument("--device", default=None, help="default: cuda when available")
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    height, width = 320, 576
    model = full_size_model(device) if args.full else tiny_model()
    extract = DiffusionFeatures(model, device=device)
    frames, _ = make_scene(seed=0, num_frames=args.frames, height=height, width=width).render()
    rng = np.random.default_rng(0)
    queries = torch.from_numpy(np.stack([rng.integers(0, args.frames, args.queries), rng.uniform(0, width - 1, args.queries),
                                         rng.uniform(0, height - 1, args.queries)], 1)).float()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t_feat, t_match = [], []
    for i in range(args.repeats + 1):  # the first run warms up (allocator, kernels) and is not counted
        sync(device)
        t0 = time.perf_counter()
        feats = video_features(frames, extract, length=min(24, args.frames))
        sync(device)
        t1 = time.perf_counter()
        m = match_queries(feats, queries, image_size=(height, width), device=device)
        sync(device)
        t2 = time.perf_counter()
        if i:
            t_feat.append(t1 - t0)
            t_match.append(t2 - t1)
    f, mt = statistics.median(t_feat), statistics.median(t_match)
    print(f"model: {model.source}; device {device} ({torch.get_num_threads()} CPU threads); clip {args.frames}x{height}x{width}, "
          f"{args.queries} queries; features {tuple(feats.shape)} {feats.dtype}; visible {100 * m.visible.float().mean():.1f}%")
    print(f"features {f:.2f} s, matching {mt:.2f} s, total {f + mt:.2f} s per clip "
          f"(median of {args.repeats}; runs: {', '.join(f'{a + b:.2f}' for a, b in zip(t_feat, t_match))})")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB"
          + (f", peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB" if device.type == "cuda" else ""))


if __name__ == "__main__":
    main()
