"""Matching query points through diffusion features (Track4Gen Sec. 4.3.1): pure tensor code.

Each query's feature is read bilinearly at its query frame; in every other frame its cosine
similarity with every cell forms a cost map, and the position is the soft-argmax within R of
the best cell: the same `cost_volume` and `soft_argmax` the correspondence loss trains
(track4gen.losses), so the tracker is exactly what the loss optimised. A point is occluded
where the best similarity is below 0.6 (Track4Gen Sec. 4.3.1, after DIFT's [67] threshold).

Points are (x, y) with pixel centres at integers: image pixels outside, feature cells inside.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from track4gen.losses import PAPER_RADIUS_PX, cost_volume, feature_to_image, image_to_feature, radius_cells, soft_argmax
from trackprep.core.sampling import sample_bilinear

OCCLUSION_THRESHOLD = 0.6  # best cosine similarity below this: occluded (Track4Gen Sec. 4.3.1)
QUERY_CHUNK = 4096  # queries matched at once: bounds the [Q, h*w] cost maps to ~50 MB at 40x72


@dataclass(frozen=True)
class Matches:
    tracks: torch.Tensor  # float32 [Q, T, 2] (x, y) in image pixels
    visible: torch.Tensor  # bool [Q, T]
    similarity: torch.Tensor  # float32 [Q, T] best cosine similarity (1 at the query frame)


def check_queries(queries: torch.Tensor, *, num_frames: int) -> torch.Tensor:
    """float32 [Q, 3] rows of (t, x, y) with integral t in [0, num_frames)."""
    if queries.ndim != 2 or queries.shape[1] != 3:
        raise ValueError(f"queries: expected [Q, 3] rows of (t, x, y), got shape {tuple(queries.shape)}")
    t = queries[:, 0]
    if not torch.isfinite(queries).all():
        raise ValueError("queries: expected finite (t, x, y), got NaN or inf")
    if t.numel() and (bool((t != t.round()).any()) or t.min() < 0 or t.max() > num_frames - 1):
        raise ValueError(f"queries: frame t must be an integer in [0, {num_frames - 1}], "
                         f"got values in [{t.min().item():g}, {t.max().item():g}]")
    return queries.float()


def query_features(features: torch.Tensor, queries: torch.Tensor, *, image_size: tuple[int, int]) -> torch.Tensor:
    """float32 [Q, C]: each query's feature, bilinear at (x, y) of its frame t.

    features [T, C, h, w] (any float dtype, any device); queries [Q, 3] (t, x, y) in image pixels.
    Positions are clamped onto the feature grid, as the loss clamps its queries.
    """
    t_len, c, h, w = features.shape
    queries = check_queries(queries, num_frames=t_len)
    cells = image_to_feature(queries[:, 1:], image_size=image_size, feature_size=(h, w))
    cells = torch.minimum(cells.clamp(min=0), cells.new_tensor([w - 1, h - 1]))
    out = torch.empty(queries.shape[0], c, dtype=torch.float32)
    frames = queries[:, 0].long()
    for t in frames.unique().tolist():
        sel = frames == t
        fmap = features[t].float()
        out[sel] = sample_bilinear(fmap, cells[sel].to(fmap.device))[0].cpu()
    return out


def locate(cost: torch.Tensor, *, radius: float, threshold: float = OCCLUSION_THRESHOLD, **soft_argmax_options):
    """(xy cells float [Q, 2], best similarity [Q], visible bool [Q]) from cost maps [Q, h, w].

    The position is the loss's soft-argmax within `radius` cells of the best cell; the point
    is visible where that best similarity reaches `threshold`.
    """
    best = cost.flatten(1).amax(dim=1)
    return soft_argmax(cost, radius=radius, **soft_argmax_options), best, best >= threshold


def match_queries(
    features: torch.Tensor,
    queries: torch.Tensor,
    *,
    image_size: tuple[int, int],
    radius_px: float = PAPER_RADIUS_PX,
    threshold: float = OCCLUSION_THRESHOLD,
    device: torch.device | str | None = None,
    **soft_argmax_options,
) -> Matches:
    """Track queries [Q, 3] (t, x, y) through features [T, C, h, w] of a video of `image_size`.

    The soft-argmax window is `radius_px` image pixels, converted to cells as the training loss
    converts it (35 px: 4.375 cells on SVD's 40 x 72 map at 320 x 576); `soft_argmax_options`
    (weighting, temperature) default to the loss's too.
    Frames are moved to `device` one at a time, so `features` may live on the CPU in float16
    for a long video. At its own frame a query is its own position, visible.
    """
    t_len, _, h, w = features.shape
    queries = check_queries(queries, num_frames=t_len)
    radius = radius_cells(feature_size=(h, w), image_size=image_size, radius_px=radius_px)
    device = torch.device(device) if device is not None else features.device
    qfeat = query_features(features, queries, image_size=image_size).to(device)
    n = queries.shape[0]
    cells = torch.empty(n, t_len, 2)
    best = torch.empty(n, t_len)
    visible = torch.empty(n, t_len, dtype=torch.bool)
    zero = torch.zeros(min(n, QUERY_CHUNK), dtype=torch.long, device=device)
    for t in range(t_len):
        fmap = features[t : t + 1].to(device=device, dtype=torch.float32)
        for a in range(0, n, QUERY_CHUNK):
            b = min(n, a + QUERY_CHUNK)
            cost = cost_volume(qfeat[a:b], fmap, zero[: b - a])
            xy, sim, vis = locate(cost, radius=radius, threshold=threshold, **soft_argmax_options)
            cells[a:b, t], best[a:b, t], visible[a:b, t] = xy.cpu(), sim.cpu(), vis.cpu()
    tracks = feature_to_image(cells, image_size=image_size, feature_size=(h, w))
    rows, own = torch.arange(n), queries[:, 0].long()
    tracks[rows, own] = queries[:, 1:]
    best[rows, own] = 1.0
    visible[rows, own] = True
    return Matches(tracks=tracks, visible=visible, similarity=best)
