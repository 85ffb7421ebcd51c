"""The two Track4Gen losses (Sec. 3.3): SVD's EDM diffusion loss and the correspondence loss (Eq. 2-4).

Pure tensor code: no model, no I/O. Point coordinates are (x, y) with pixel centres at
integers, in image pixels for inputs and in feature-map cells for the loss itself.
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

# Sec. 3.3: soft-argmax window radius 35 on the 44 x 81 feature map of the paper's resolution.
PAPER_RADIUS = 35.0
PAPER_FEATURE_SIZE = (44, 81)
CORRESPONDENCE_WEIGHT = 8.0  # lambda in L = L_diff + lambda * L_corr
# Cosine similarities lie in [-1, 1]; a plain softmax over them is nearly flat, so the
# soft-argmax sharpens them by 1/temperature (our choice; the paper gives no value).
SOFTMAX_TEMPERATURE = 0.1
HUBER_DELTA = 1.0  # in feature cells


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


def scaled_radius(height: int, width: int) -> float:
    """The paper's radius 35 on a 44 x 81 map, scaled by the map's linear size (geometric mean)."""
    ph, pw = PAPER_FEATURE_SIZE
    return PAPER_RADIUS * math.sqrt((height * width) / (ph * pw))


def image_to_feature(points: torch.Tensor, *, image_size: tuple[int, int], feature_size: tuple[int, int]) -> torch.Tensor:
    """Map (x, y) from image pixels to feature cells; both grids have pixel centres at integers."""
    (ih, iw), (fh, fw) = image_size, feature_size
    scale = points.new_tensor([fw / iw, fh / ih])
    return (points + 0.5) * scale - 0.5


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


def soft_argmax(cost: torch.Tensor, *, radius: float, temperature: float = SOFTMAX_TEMPERATURE) -> torch.Tensor:
    """(x, y) [Q, 2] in cells: softmax-weighted mean position within `radius` of each map's argmax.

    cost [Q, h, w]. Cells farther than `radius` from the argmax get zero weight, so a second
    mode elsewhere in the frame cannot pull the estimate between the two (Eq. 3).
    """
    if radius <= 0 or temperature <= 0:
        raise ValueError(f"soft_argmax: radius and temperature must be > 0, got {radius}, {temperature}")
    q, h, w = cost.shape
    flat = cost.reshape(q, h * w)
    ys = torch.arange(h, device=cost.device, dtype=cost.dtype).repeat_interleave(w)
    xs = torch.arange(w, device=cost.device, dtype=cost.dtype).repeat(h)
    best = flat.argmax(dim=1)
    bx, by = xs[best], ys[best]
    near = (xs[None] - bx[:, None]).square() + (ys[None] - by[:, None]).square() <= radius * radius
    logits = (flat / temperature).masked_fill(~near, float("-inf"))
    weights = logits.softmax(dim=1)
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
    temperature: float = SOFTMAX_TEMPERATURE,
    radius: float | None = None,
) -> torch.Tensor:
    """Eq. 2-4: Huber distance between soft-argmax of the cost volume and the true target, in cells.

    features [B, F, C, h, w] (refined); query_frame, target_frame int [B, K]; query_xy,
    target_xy float [B, K, 2] in image pixels; valid bool [B, K]. Mean over valid pairs.
    """
    b, nf, c, h, w = features.shape
    radius = scaled_radius(h, w) if radius is None else radius
    qf = image_to_feature(query_xy.float(), image_size=image_size, feature_size=(h, w))
    tf = image_to_feature(target_xy.float(), image_size=image_size, feature_size=(h, w))
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
        pred = soft_argmax(cost_volume(qfeat, fmap, target_frame[i, keep]), radius=radius, temperature=temperature)
        losses.append(F.huber_loss(pred, tf[i, keep], delta=HUBER_DELTA, reduction="none").sum(dim=1))
    if not losses:
        return features.sum() * 0.0  # keeps the graph (and DDP's bookkeeping) intact
    return torch.cat(losses).mean()
