"""Bilinear sampling of a field at float pixel positions: the one helper that chaining and
the cycle test both use.

Pixel centres are at integer coordinates, so a point (x, y) lies inside a W x H frame when
0 <= x <= W-1 and 0 <= y <= H-1. The four-neighbour gather is written out rather than going
through `grid_sample`, whose normalised coordinates add rounding error (about 1e-5 px at
576 px) that would break the "constant flow gives exact tracks" guarantee.
"""

from __future__ import annotations

import torch


def sample_bilinear(field: torch.Tensor, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample `field` [C, H, W] at `points` [..., 2] (x, y).

    Returns (values [..., C], inside bool [...]). Values of points outside the frame are
    computed from the nearest border pixels and must be ignored: `inside` says which are valid.
    """
    if field.ndim != 3:
        raise ValueError(f"sample_bilinear: field must be [C, H, W], got shape {tuple(field.shape)}")
    if points.shape[-1] != 2:
        raise ValueError(f"sample_bilinear: points must be [..., 2] (x, y), got shape {tuple(points.shape)}")
    c, h, w = field.shape
    lead = points.shape[:-1]
    pts = points.reshape(-1, 2).to(field.dtype)
    x, y = pts[:, 0], pts[:, 1]
    inside = (x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)  # NaN compares False: NaN points are outside

    xc = x.nan_to_num(0.0).clamp(0, w - 1)
    yc = y.nan_to_num(0.0).clamp(0, h - 1)
    x0 = xc.floor().long().clamp(max=max(w - 2, 0))
    y0 = yc.floor().long().clamp(max=max(h - 2, 0))
    x1 = (x0 + 1).clamp(max=w - 1)
    y1 = (y0 + 1).clamp(max=h - 1)
    wx = (xc - x0).unsqueeze(0)
    wy = (yc - y0).unsqueeze(0)

    flat = field.reshape(c, h * w)
    v00 = flat[:, y0 * w + x0]
    v01 = flat[:, y0 * w + x1]
    v10 = flat[:, y1 * w + x0]
    v11 = flat[:, y1 * w + x1]
    top = v00 + (v01 - v00) * wx
    bottom = v10 + (v11 - v10) * wx
    values = top + (bottom - top) * wy  # [C, P]
    return values.T.reshape(*lead, c), inside.reshape(lead)
