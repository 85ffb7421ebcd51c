"""Resizing frames and masks to the working resolution (320x576 in Track4Gen, Sec. 4.1)."""

from __future__ import annotations

import numpy as np


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    h, w = (int(v) for v in size)
    if h < 1 or w < 1:
        raise ValueError(f"size must be (H, W) with positive entries, got {size}")
    return h, w


def resize_frames(frames: np.ndarray, *, size: tuple[int, int]) -> np.ndarray:
    """uint8 [T, H, W, 3] -> uint8 [T, h, w, 3], bilinear with antialiasing when shrinking."""
    import torch  # here, not at the top: the dataset readers import this module and must start without torch
    import torch.nn.functional as F

    h, w = _check_size(size)
    if frames.shape[1:3] == (h, w):
        return frames
    out = np.empty((frames.shape[0], h, w, frames.shape[3]), dtype=np.uint8)
    for start in range(0, frames.shape[0], 16):  # bounded float32 working memory for long videos
        x = torch.from_numpy(frames[start : start + 16]).permute(0, 3, 1, 2).float()
        y = F.interpolate(x, size=(h, w), mode="bilinear", antialias=True, align_corners=False)
        out[start : start + 16] = y.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return out


def nearest_index(src: int, dst: int) -> np.ndarray:
    """Source index of each destination pixel under nearest-neighbour resampling (pixel-centre convention)."""
    return np.minimum(((np.arange(dst) + 0.5) * (src / dst)).astype(np.int64), src - 1)


def resize_masks(masks: np.ndarray, *, size: tuple[int, int]) -> np.ndarray:
    """uint8 [T, H, W] -> uint8 [T, h, w] by nearest neighbour: object ids are never blended."""
    h, w = _check_size(size)
    if masks.shape[1:3] == (h, w):
        return masks
    rows = nearest_index(masks.shape[1], h)
    cols = nearest_index(masks.shape[2], w)
    return masks[:, rows[:, None], cols[None, :]]
