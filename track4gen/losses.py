"""The two Track4Gen losses (Sec. 3.3): SVD's EDM diffusion loss and the correspondence loss (Eq. 2-4).

Pure tensor code: no model, no I/O. Point coordinates are (x, y) with pixel centres at
integers: image pixels for inputs, feature-map cells for the cost volume and soft-argmax, and
[-1, 1] over the frame for the Huber loss itself (DINO-Tracker's scale, see below).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from trackprep.core.sampling import sample_bilinear

# EDM training distribution and preconditioning as SVD trains it (Karras et al. 2022;
# Blattmann et al. 2023, SVD's EDM v-prediction): ln sigma ~ N(P_mean, P_std^2).
P_MEAN = 0.7
P_STD = 1.6

CORRESPONDENCE_WEIGHT = 8.0  # lambda in L = L_diff + lambda * L_corr (Sec. 4.1)
# The correspondence loss is DINO-Tracker's (tnarek/dino-tracker, which Track4Gen's tracking
# supervision builds on): positions normalised to [-1, 1] over the frame (its RangeNormalizer:
# x / (W - 1) * 2 - 1), a Huber loss with delta 1/32 (`HuberLoss(delta=1/32)` in
# dino_tracker.py), averaged over points and both coordinates. On this scale lambda = 8 puts
# L_corr next to L_diff, where a loss in feature cells is ~1,000x larger.
HUBER_DELTA = 1.0 / 32.0
# Soft-argmax window: DINO-Tracker's TrackerHead uses argmax_radius=35 in *pixels* of the input
# frame (its grid is in pixel coordinates; the paper's 44 x 81 map is its ViT grid at 320 x 576,
# patch 14, stride 7). Converted to cells of whatever map is hooked: 4.375 cells on SVD's 40 x 72.
PAPER_RADIUS_PX = 35.0
SOFT_ARGMAX_CHOICES = ("cosine", "softmax")
# Only for weighting="softmax" (an option, not the paper's Eq. 3): cosine similarities lie in
# [-1, 1], and a softmax over them is nearly flat, so it is sharpened by 1/temperature. Our
# choice; the paper gives none (0.1 is also DINO-Tracker's cl_temp for cosine logits).
SOFTMAX_TEMPERATURE = 0.1


def sample_sigmas(n: int, *, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """[n] noise levels with ln sigma ~ N(P_MEAN, P_STD^2)."""
    z = torch.randn(n, generator=generator)  # drawn on CPU so a seeded generator gives the same draws anywhere
    return (P_MEAN + P_STD * z).exp().to(device)


@dataclass(frozen=True)
class EDMScalings:
    c_in: torch.Tensor
    c_skip: torch.Tensor
    c_out: torch.Tensor
    c_noise: torch.Tensor  # what the UNet receives as its timestep
    weight: torch.Tensor  # loss weight lambda(sigma)


def edm_scalings(sigma: torch.Tensor) -> EDMScalings:
    """SVD's v-prediction preconditioning with sigma_data = 1."""
    s2 = sigma.square()
    return EDMScalings(
        c_in=1.0 / (s2 + 1.0).sqrt(),
        c_skip=1.0 / (s2 + 1.0),
        c_out=-sigma / (s2 + 1.0).sqrt(),
        c_noise=0.25 * sigma.log(),
        weight=(1.0 + s2) / s2,
    )


def _per_sample(x: torch.Tensor, ndim: int) -> torch.Tensor:
    return x.reshape(x.shape[0], *([1] * (ndim - 1)))


def diffusion_loss(model_output: torch.Tensor, noisy: torch.Tensor, clean: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Weighted EDM loss: lambda(sigma) * ||c_skip x_noisy + c_out F(x) - x_clean||^2, mean over all.

    model_output, noisy, clean: [B, F, C, h, w]; sigma: [B].
    """
    sc = edm_scalings(sigma.float())
    nd = clean.ndim
    denoised = _per_sample(sc.c_skip, nd) * noisy.float() + _per_sample(sc.c_out, nd) * model_output.float()
    err = (denoised - clean.float()).square().reshape(clean.shape[0], -1).mean(dim=1)
    return (sc.weight * err).mean()


def radius_cells(*, feature_size: tuple[int, int], image_size: tuple[int, int],
                 radius_px: float = PAPER_RADIUS_PX) -> float:
    """A radius in image pixels as feature cells (geometric mean of the two axes' cell sizes).

    35 px at 320 x 576 is 4.375 cells on SVD's 40 x 72 map (8 px per cell).
    """
    (fh, fw), (ih, iw) = feature_size, image_size
    if min(fh, fw, ih, iw) <= 0 or radius_px <= 0:
        raise ValueError(f"radius_cells: sizes and radius must be > 0, got feature_size={feature_size}, "
                         f"image_size={image_size}, radius_px={radius_px}")
    return float(radius_px) * math.sqrt((fh / ih) * (fw / iw))


def image_to_feature(points: torch.Tensor, *, image_size: tuple[int, int], feature_size: tuple[int, int]) -> torch.Tensor:
    """Map (x, y) from image pixels to feature cells; both grids have pixel centres at integers."""
    (ih, iw), (fh, fw) = image_size, feature_size
    scale = points.new_tensor([fw / iw, fh / ih])
    return (points + 0.5) * scale - 0.5


def feature_to_image(points: torch.Tensor, *, image_size: tuple[int, int], feature_size: tuple[int, int]) -> torch.Tensor:
    """The inverse of `image_to_feature`: (x, y) in feature cells to image pixels."""
    (ih, iw), (fh, fw) = image_size, feature_size
    scale = points.new_tensor([iw / fw, ih / fh])
    return (points + 0.5) * scale - 0.5


def normalize_pixels(points: torch.Tensor, *, image_size: tuple[int, int]) -> torch.Tensor:
    """(x, y) pixels -> [-1, 1] over the frame, pixel centres 0 and W-1 at -1 and 1 (DINO-Tracker's RangeNormalizer)."""
    ih, iw = image_size
    return points * points.new_tensor([2.0 / (iw - 1), 2.0 / (ih - 1)]) - 1.0


def cost_volume(queries: torch.Tensor, maps: torch.Tensor, target_frame: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of each query feature with every cell of its target frame's map.

    queries [Q, C]; maps [F, C, h, w]; target_frame int [Q] in 0..F-1. Returns [Q, h, w].
    One matmul against all F normalised maps, then a gather of each query's frame: the maps
    are normalised once and never copied per query.
    """
    nf, c, h, w = maps.shape
    q = F.normalize(queries, dim=-1)
    m = F.normalize(maps.reshape(nf, c, h * w), dim=1)  # [F, C, hw]
    sims = torch.matmul(q, m.transpose(0, 1).reshape(c, nf * h * w))  # [Q, F*hw]
    sims = sims.reshape(-1, nf, h * w)
    idx = target_frame.long().reshape(-1, 1, 1).expand(-1, 1, h * w)
    return sims.gather(1, idx).reshape(-1, h, w)


def soft_argmax(cost: torch.Tensor, *, radius: float, weighting: str = "cosine",
                temperature: float = SOFTMAX_TEMPERATURE) -> torch.Tensor:
    """(x, y) [Q, 2] in cells: the weighted mean position within `radius` cells of each map's argmax.

    cost [Q, h, w] of cosine similarities. Cells farther than `radius` from the argmax get
    zero weight, so a second mode elsewhere cannot pull the estimate between the two.
    weighting="cosine" is the paper's Eq. 3: weights are the similarities S(p) themselves
    (clamped at 0, as DINO-Tracker's ReLU on its cost maps; refined features are >= 0, so
    their cosines already are); "softmax" weights by softmax(S / temperature) in the window.
    """
    if radius <= 0 or temperature <= 0:
        raise ValueError(f"soft_argmax: radius and temperature must be > 0, got {radius}, {temperature}")
    if weighting not in SOFT_ARGMAX_CHOICES:
        raise ValueError(f"soft_argmax: weighting must be one of {SOFT_ARGMAX_CHOICES}, got {weighting!r}")
    q, h, w = cost.shape
    flat = cost.reshape(q, h * w)
    ys = torch.arange(h, device=cost.device, dtype=cost.dtype).repeat_interleave(w)
    xs = torch.arange(w, device=cost.device, dtype=cost.dtype).repeat(h)
    best = flat.argmax(dim=1)
    bx, by = xs[best], ys[best]
    near = (xs[None] - bx[:, None]).square() + (ys[None] - by[:, None]).square() <= radius * radius
    if weighting == "softmax":
        weights = (flat / temperature).masked_fill(~near, float("-inf")).softmax(dim=1)
    else:
        raw = flat.clamp(min=0) * near
        total = raw.sum(dim=1, keepdim=True)
        # All-zero window (every similarity <= 0): fall back to its centre, as DINO-Tracker
        # falls back to uniform weights; the argmax cell is then the estimate.
        flat_window = near.to(cost.dtype) / near.sum(dim=1, keepdim=True)
        weights = torch.where(total > 1e-8, raw / total.clamp(min=1e-8), flat_window)
    return torch.stack([(weights * xs).sum(dim=1), (weights * ys).sum(dim=1)], dim=1)


def correspondence_loss(
    features: torch.Tensor,
    *,
    query_frame: torch.Tensor,
    query_xy: torch.Tensor,
    target_frame: torch.Tensor,
    target_xy: torch.Tensor,
    valid: torch.Tensor,
    image_size: tuple[int, int],
    weighting: str = "cosine",
    temperature: float = SOFTMAX_TEMPERATURE,
    radius_px: float = PAPER_RADIUS_PX,
) -> torch.Tensor:
    """Eq. 2-4 on DINO-Tracker's scale: Huber (delta 1/32) between the soft-argmax of the cost volume
    and the true target, both in [-1, 1] frame coordinates; mean over valid pairs and x, y.

    features [B, F, C, h, w] (refined, or raw for the no-refiner variant); query_frame,
    target_frame int [B, K]; query_xy, target_xy float [B, K, 2] in image pixels; valid bool [B, K].
    """
    b, nf, c, h, w = features.shape
    grid = {"image_size": image_size, "feature_size": (h, w)}
    radius = radius_cells(radius_px=radius_px, **grid)
    qf = image_to_feature(query_xy.float(), **grid)
    tf = image_to_feature(target_xy.float(), **grid)
    # Feature-grid positions can land up to half a cell outside [0, w-1]; clamp onto the map:
    # queries so they sample real cells, targets because the soft-argmax cannot leave the grid.
    limit = qf.new_tensor([w - 1, h - 1])
    qf = torch.minimum(qf.clamp(min=0), limit)
    tf = torch.minimum(tf.clamp(min=0), limit)
    losses = []
    for i in range(b):
        keep = valid[i]
        if not bool(keep.any()):
            continue
        fmap = features[i].float()  # [F, C, h, w]
        # Stack frames vertically so one bilinear sampler reads each query from its own frame.
        stacked = fmap.permute(1, 0, 2, 3).reshape(c, nf * h, w)
        pts = qf[i, keep] + torch.stack([torch.zeros_like(qf[i, keep, 0]), query_frame[i, keep].float() * h], dim=1)
        qfeat, _ = sample_bilinear(stacked, pts)  # [k, C]
        cost = cost_volume(qfeat, fmap, target_frame[i, keep])
        pred = soft_argmax(cost, radius=radius, weighting=weighting, temperature=temperature)
        pred_n = normalize_pixels(feature_to_image(pred, **grid), image_size=image_size)
        true_n = normalize_pixels(feature_to_image(tf[i, keep], **grid), image_size=image_size)
        losses.append(F.huber_loss(pred_n, true_n, delta=HUBER_DELTA, reduction="none"))
    if not losses:
        return features.sum() * 0.0  # keeps the graph (and DDP's bookkeeping) intact
    return torch.cat(losses).mean()
