"""Diffusion features of a real video: one UNet pass per 24-frame segment, read by a hook on a named block.

Sec. 3.2 / 4.3.1: the video is encoded by the VAE, a small amount of noise is added, and one
UNet pass (conditioned as SVD's sampler conditions it: first-frame CLIP embedding and latents,
fps, motion bucket, noise augmentation 0.02) gives the features of `up_blocks[2].upsamplers[0]`,
refined by the Track4Gen head when the model has one, or of any block named (the block
analysis of Sec. 3.2). App. A.4: long videos are cut into 24-frame segments encoded
independently; a short last segment borrows the frames before it, whose features are dropped.
One segment is on the device at a time; the features of the whole video are kept on the CPU
(float16 by default: 3.7 MB a frame for SVD's 640 x 40 x 72 map at 320 x 576).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from track4gen import conditioning as cond
from track4gen.data import model_frames
from track4gen.losses import edm_scalings
from trackprep.core.segments import SEGMENT_LENGTH, segment_starts

DEFAULT_BLOCK = "up_blocks.2.upsamplers.0"  # Track4Gen's hook point (Sec. 3.2, Fig. 3)
# Noise level of the single UNet pass, EDM sigma (latent units). benchmarks/sweep_sigma.py on the
# tiny model trained in miniature: the trained features are flat over 0.02-1.5, raw features do
# best at 0.02-0.1; 0.05 sits inside that plateau (README, "Zero-shot tracking"). DIFT's t = 261
# of SD's 1000-step schedule would be sigma 0.72. Still to be swept on SVD-xt with real video.
DEFAULT_SIGMA = 0.05
# The sampler's conditioning-frame noise (diffusers StableVideoDiffusionPipeline default).
NOISE_AUG_STRENGTH = 0.02
_BLOCK = re.compile(r"^(down_blocks\.\d+|up_blocks\.\d+|mid_block)(\.(resnets|attentions|upsamplers|downsamplers)\.\d+)?$")

FeatureFn = Callable[[np.ndarray], torch.Tensor]  # uint8 [L, H, W, 3] -> [L, C, h, w]


def canonical_block(name: str) -> str:
    """'up_blocks[2].upsamplers[0]' (the paper's spelling) -> 'up_blocks.2.upsamplers.0' (module name)."""
    return re.sub(r"\[(\d+)\]", r".\1", name.strip())


def block_names(unet: nn.Module) -> list[str]:
    """Names of the UNet modules whose output is a feature map: blocks and their resnets,
    attentions, up- and downsamplers."""
    return [n for n, _ in unet.named_modules() if _BLOCK.match(n)]


def find_block(unet: nn.Module, name: str) -> nn.Module:
    name = canonical_block(name)
    names = block_names(unet)
    if name not in names:
        raise ValueError(f"--block {name!r}: not a feature block of this UNet; valid: {', '.join(names)}")
    return unet.get_submodule(name)


@dataclass(frozen=True)
class Segment:
    start: int  # first frame the segment encodes
    keep_from: int  # first frame whose features are kept (earlier ones were borrowed)
    stop: int  # one past the last frame


def video_segments(num_frames: int, *, length: int = SEGMENT_LENGTH) -> list[Segment]:
    """App. A.4's segments of a video: every `length` frames, and a last one covering the
    final `length` frames whose frames before the previous segment's end are borrowed.

    >>> [(s.start, s.keep_from, s.stop) for s in video_segments(60)]
    [(0, 0, 24), (24, 24, 48), (36, 48, 60)]
    """
    starts = segment_starts(num_frames, length=length)  # the trainer's tail rule, one implementation
    if not starts:
        raise ValueError(f"video has {num_frames} frames; tracking needs at least one {length}-frame segment "
                         f"(pass a shorter segment length, at most {num_frames})")
    segments, covered = [], 0
    for s in starts:
        segments.append(Segment(start=s, keep_from=max(s, covered), stop=s + length))
        covered = s + length
    return segments


def video_features(frames: np.ndarray, extract: FeatureFn, *, length: int = SEGMENT_LENGTH,
                   dtype: torch.dtype = torch.float16) -> torch.Tensor:
    """[T, C, h, w] on the CPU in `dtype`: each frame's features from the segment that owns it.

    frames uint8 [T, H, W, 3]; `extract` maps one segment's frames to their features.
    """
    out = None
    for seg in video_segments(frames.shape[0], length=length):
        feats = extract(frames[seg.start : seg.stop])
        if feats.shape[0] != seg.stop - seg.start:
            raise ValueError(f"feature extractor returned {feats.shape[0]} frames for a {seg.stop - seg.start}-frame segment")
        if out is None:
            out = torch.empty((frames.shape[0], *feats.shape[1:]), dtype=dtype)
        out[seg.keep_from : seg.stop] = feats[seg.keep_from - seg.start :].to("cpu", dtype)
    return out


@dataclass
class FeatureModel:
    """What feature extraction needs of a model: SVD's parts and the Track4Gen head (None for base SVD)."""

    unet: nn.Module
    vae: nn.Module
    image_encoder: nn.Module
    feature_extractor: object  # CLIPImageProcessor
    head: nn.Module | None  # track4gen.model.tracking_head(unet): owned and hooked by the UNet
    source: str  # what --model named, for tables and errors
    # The soft-argmax the model was trained with ({"weighting", "temperature"} of the training
    # config; the loss's defaults for base SVD): matching reads its features the same way.
    soft_argmax: dict = field(default_factory=dict)


class DiffusionFeatures:
    """FeatureFn over a FeatureModel: encode, noise to `sigma`, one UNet pass, read `block`.

    Deterministic: the VAE posterior and the added noise are drawn from generators seeded
    with `seed` for every segment, so a rerun gives the same tracks.
    """

    def __init__(self, model: FeatureModel, *, block: str = DEFAULT_BLOCK, sigma: float = DEFAULT_SIGMA,
                 seed: int = 0, device: str | torch.device | None = None, dtype: torch.dtype | None = None,
                 fps: int = cond.FPS, motion_bucket_id: int = cond.MOTION_BUCKET_ID) -> None:
        if not sigma > 0:
            raise ValueError(f"sigma: expected a noise level > 0, got {sigma}")
        self.model, self.sigma, self.seed, self.fps, self.motion_bucket_id = model, float(sigma), seed, fps, motion_bucket_id
        self.block = canonical_block(block)
        self.module = find_block(model.unet, self.block)
        # The head's map at its own block: refined (R(h)), or h itself for a "no-refiner" head.
        self.from_head = model.head is not None and self.block == DEFAULT_BLOCK
        self.refined = self.from_head and bool(model.head.refine)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dtype = dtype or (torch.float16 if self.device.type == "cuda" else torch.float32)
        for part in (model.unet, model.vae, model.image_encoder):  # the UNet owns the head
            part.to(self.device).eval()  # eval: the head's BatchNorm uses its running statistics
            # The VAE stays in float32 (as the trainer keeps it): fp16 VAE encodes can overflow.
            want = torch.float32 if part is model.vae else self.dtype
            if next(part.parameters()).dtype != want:
                part.to(want)

    @property
    def label(self) -> str:
        return f"{self.block} ({'refined' if self.refined else 'raw'})"

    @torch.inference_mode()
    def __call__(self, frames: np.ndarray) -> torch.Tensor:
        m, dev = self.model, self.device
        x = model_frames(torch.from_numpy(np.ascontiguousarray(frames)).to(dev))[None]  # float32 [1, L, 3, H, W]
        gen = torch.Generator().manual_seed(self.seed)
        latents = cond.encode_video(m.vae, x, generator=gen).float()
        first = x[:, 0]
        aug = torch.full((1,), NOISE_AUG_STRENGTH)
        cond_latents = cond.encode_condition(m.vae, first + NOISE_AUG_STRENGTH * torch.randn(first.shape, generator=gen).to(dev))
        fe = m.feature_extractor
        embeddings = cond.clip_image_embeddings(m.image_encoder, first, mean=fe.image_mean, std=fe.image_std)
        time_ids = cond.added_time_ids(fps=self.fps, motion_bucket_id=self.motion_bucket_id, noise_aug_strength=aug).to(dev)
        sigma = torch.full((1,), self.sigma, device=dev)
        noisy = latents + self.sigma * torch.randn(latents.shape, generator=gen).to(dev)
        sc = edm_scalings(sigma)
        unet_in = torch.cat([sc.c_in * noisy, cond_latents.float().unsqueeze(1).expand(-1, x.shape[1], -1, -1, -1)], dim=2)
        captured: list[torch.Tensor] = []
        handle = self.module.register_forward_hook(lambda _m, _i, out: captured.append(_output_map(out)))
        try:
            m.unet(unet_in.to(self.dtype), sc.c_noise.to(self.dtype), encoder_hidden_states=embeddings.to(self.dtype),
                   added_time_ids=time_ids.to(self.dtype), return_dict=False)
        finally:
            handle.remove()
        refined = m.head.pop_features() if m.head is not None else None  # always popped: never a stale map
        return (refined if self.from_head else captured[-1]).float()


def _output_map(out) -> torch.Tensor:
    """The feature map [B*F, C, h, w] of a block's output (down blocks return (map, skips),
    transformers a 1-tuple)."""
    if isinstance(out, tuple):
        out = out[0]
    return getattr(out, "sample", out)
