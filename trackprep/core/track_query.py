"""Answer point-tracking queries (t, x, y) from dense annotation tracks.

An annotation store holds many tracks per video ([N, T, 2], NaN where undefined),
not one per benchmark query, so a query is answered by the tracks around it:

1. Among the tracks *defined at the query frame t*, take the k nearest to (x, y)
   at frame t (default k = 4).
2. The neighbours within `radius` px of the query at frame t (default 2 px, about
   two pixel spacings of tracks seeded at every pixel) are blended by inverse
   distance; if none besides the nearest is that close, the nearest track alone is
   followed, however far it is (a query always gets an answer where any track exists).
   A neighbour exactly at the query point is followed alone.
3. Each used neighbour contributes its displacement since frame t, so the prediction
   at frame s is (x, y) + sum_i w_i (p_i(s) - p_i(t)) / sum_i w_i over the used
   neighbours defined at s; it is NaN where none of them is defined.
4. The point is predicted visible at frame s where the used neighbours defined at s
   hold at least half of the weight (with one neighbour: where it is defined). Our
   tracks end at their first cycle-consistency failure, which is how an occlusion
   shows up in chained flow (Track4Gen Sec. 4.1, Appendix A.1); a vote rather than
   the nearest track alone keeps a query visible before its frame when its nearest
   track was only seeded there (new seeds fill pixels no earlier track covers).

Stores are read one block of rows at a time (`rows_per_chunk`): each block updates
every query's k nearest candidates and only those candidates' rows are kept, so
memory is bounded by one block plus Q * k tracks, however long the video. The scan
first looks only within 8 px of each query (dense tracks lie about 1 px apart), and
scans again without limit for the queries that found fewer than k tracks there.
`tracks`/`visible` may be numpy arrays or anything sliceable by rows that returns
one (a Zarr array).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.spatial import cKDTree

DEFAULT_NEIGHBOURS = 4
DEFAULT_RADIUS = 2.0  # px at the store's resolution
DEFAULT_ROWS_PER_CHUNK = 32768  # ~26 MB of float32 tracks per block at T = 100
_SEARCH_PX = 8.0  # first-pass search radius, px at the store's resolution


def check_queries(queries: np.ndarray, num_frames: int) -> np.ndarray:
    """float64 [Q, 3] (t, x, y) with integral t in [0, num_frames)."""
    queries = np.asarray(queries, dtype=np.float64)
    if queries.ndim != 2 or queries.shape[1] != 3:
        raise ValueError(f"queries: expected [Q, 3] rows of (t, x, y), got shape {queries.shape}")
    if not np.isfinite(queries).all():
        raise ValueError("queries: expected finite (t, x, y), got NaN or inf")
    t = queries[:, 0]
    if t.size and (np.any(t != np.round(t)) or t.min() < 0 or t.max() > num_frames - 1):
        raise ValueError(
            f"queries: frame index t must be an integer in [0, {num_frames - 1}], "
            f"got values in [{t.min()}, {t.max()}]"
        )
    return queries


def _cell_keys(points: np.ndarray, cell: float, *, around: bool = False) -> np.ndarray:
    """int64 keys of the `cell`-sized grid cells holding points [P, 2] (with `around`, also
    their 8 neighbouring cells, so that every point within `cell` of them is covered)."""
    ij = np.floor(points / cell).astype(np.int64)
    if around:
        offsets = np.array([(di, dj) for di in (-1, 0, 1) for dj in (-1, 0, 1)])
        ij = (ij[:, None, :] + offsets[None]).reshape(-1, 2)
    return ij[:, 0] * (1 << 32) + ij[:, 1]


def _nearest_in_block(tracks: np.ndarray, visible: np.ndarray, queries: np.ndarray, *, k: int, bound: float):
    """Per query, its k nearest rows of this block among those defined at the query frame and
    closer than `bound`: (dist float64 [Q, k] inf-padded, rows int64 [Q, k] -1-padded, block-local)."""
    q = queries.shape[0]
    dist = np.full((q, k), np.inf)
    rows = np.full((q, k), -1, dtype=np.int64)
    frames = queries[:, 0].astype(np.int64)
    for t in np.unique(frames):
        candidates = np.flatnonzero(visible[:, t])
        which = np.flatnonzero(frames == t)
        points = tracks[candidates, t]
        if np.isfinite(bound) and candidates.size > 8 * which.size:
            # Few queries, many tracks: keep only tracks in the bound-sized grid cells around
            # some query (a superset of those within `bound`) before building a tree.
            keep = np.isin(_cell_keys(points, bound), _cell_keys(queries[which, 1:], bound, around=True))
            candidates, points = candidates[keep], points[keep]
        if candidates.size == 0:
            continue
        kk = min(k, candidates.size)
        tree = cKDTree(points, balanced_tree=False, compact_nodes=False)  # faster to build, as fast to query
        d, i = tree.query(queries[which, 1:], k=kk, distance_upper_bound=bound)
        d, i = d.reshape(which.size, kk), i.reshape(which.size, kk)
        found = np.isfinite(d)  # scipy marks a missing neighbour with inf and index n
        dist[which, :kk] = d
        rows[which, :kk] = np.where(found, candidates[np.minimum(i, candidates.size - 1)], -1)
    return dist, rows


def _merge(dist_a, rows_a, dist_b, rows_b, *, k: int):
    dist = np.concatenate([dist_a, dist_b], axis=1)
    rows = np.concatenate([rows_a, rows_b], axis=1)
    order = np.argsort(dist, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(dist, order, axis=1), np.take_along_axis(rows, order, axis=1)


def _scan(tracks: Any, visible: Any, queries: np.ndarray, *, k: int, rows_per_chunk: int, bound: float):
    """One pass over the rows in blocks: each query's k nearest tracks closer than `bound`,
    with those tracks' rows (see `nearest_tracks`)."""
    n, t = int(tracks.shape[0]), int(tracks.shape[1])
    q = queries.shape[0]
    best_d = np.full((q, k), np.inf)
    best_r = np.full((q, k), -1, dtype=np.int64)
    kept_rows = np.zeros(0, dtype=np.int64)  # sorted rows held in memory, all current candidates
    kept_tracks = np.zeros((0, t, 2), dtype=np.float32)
    kept_visible = np.zeros((0, t), dtype=bool)
    for a in range(0, n, rows_per_chunk):
        b = min(n, a + rows_per_chunk)
        block_tracks = np.asarray(tracks[a:b], dtype=np.float32)
        block_visible = np.asarray(visible[a:b], dtype=bool)
        d, r = _nearest_in_block(block_tracks, block_visible, queries, k=k, bound=bound)
        best_d, best_r = _merge(best_d, best_r, d, np.where(r >= 0, r + a, -1), k=k)
        wanted = np.unique(best_r[best_r >= 0])
        new = wanted[(wanted >= a) & (wanted < b)]
        old = np.isin(kept_rows, wanted)
        kept_rows = np.concatenate([kept_rows[old], new])  # old rows < a <= new rows: stays sorted
        kept_tracks = np.concatenate([kept_tracks[old], block_tracks[new - a]])
        kept_visible = np.concatenate([kept_visible[old], block_visible[new - a]])
    valid = best_r >= 0
    nb_tracks = np.full((q, k, t, 2), np.nan, dtype=np.float32)
    nb_visible = np.zeros((q, k, t), dtype=bool)
    at = np.searchsorted(kept_rows, best_r[valid])
    nb_tracks[valid] = kept_tracks[at]
    nb_visible[valid] = kept_visible[at]
    return best_d, best_r, nb_tracks, nb_visible


def nearest_tracks(
    tracks: Any,
    visible: Any,
    queries: np.ndarray,
    *,
    k: int = DEFAULT_NEIGHBOURS,
    rows_per_chunk: int = DEFAULT_ROWS_PER_CHUNK,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Scan the tracks block by block for each query's k nearest tracks at its frame.

    Returns (dist float64 [Q, k] (inf where fewer than k tracks exist),
    rows int64 [Q, k] (-1 there), and the neighbours' tracks float32 [Q, k, T, 2]
    (NaN-padded) and visible bool [Q, k, T]).
    """
    n, t = int(tracks.shape[0]), int(tracks.shape[1])
    if tuple(tracks.shape) != (n, t, 2) or tuple(visible.shape) != (n, t):
        raise ValueError(
            f"tracks/visible: expected [N, T, 2] and [N, T], got {tuple(tracks.shape)} and {tuple(visible.shape)}"
        )
    if k < 1 or rows_per_chunk < 1:
        raise ValueError(f"k and rows_per_chunk must be >= 1, got k={k}, rows_per_chunk={rows_per_chunk}")
    queries = check_queries(queries, t)
    # Dense annotations have a track about every pixel, so the k nearest are almost always
    # within a few pixels: search there first, and again without limit only for the queries
    # that found fewer than k (sparse tracks, or a query where no track reaches).
    found = _scan(tracks, visible, queries, k=k, rows_per_chunk=rows_per_chunk, bound=_SEARCH_PX)
    short = np.flatnonzero(~np.isfinite(found[0]).all(axis=1))
    if short.size:
        again = _scan(tracks, visible, queries[short], k=k, rows_per_chunk=rows_per_chunk, bound=np.inf)
        for whole, part in zip(found, again):
            whole[short] = part
    return found


def follow_neighbours(
    queries: np.ndarray,
    dist: np.ndarray,
    nb_tracks: np.ndarray,
    nb_visible: np.ndarray,
    *,
    radius: float = DEFAULT_RADIUS,
) -> tuple[np.ndarray, np.ndarray]:
    """Steps 2-4 of the module rule: (pred_tracks float32 [Q, T, 2], pred_visible bool [Q, T])."""
    if radius < 0:
        raise ValueError(f"radius: expected >= 0 px, got {radius}")
    q, k, t = nb_visible.shape
    queries = np.asarray(queries, dtype=np.float64)
    frames = queries[:, 0].astype(np.int64)
    valid = np.isfinite(dist)
    anchor = nb_tracks[np.arange(q)[:, None], np.arange(k)[None, :], frames[:, None]]  # [Q, k, 2]
    disp = nb_tracks.astype(np.float64) - anchor[:, :, None, :]
    use = valid & (dist <= radius)
    use[:, 0] = valid[:, 0]  # the nearest is always followed
    exact = valid[:, 0] & (dist[:, 0] <= 1e-6)
    use[exact, 1:] = False
    weight = np.where(use, 1.0 / np.maximum(dist, 1e-6), 0.0)
    weight_t = weight[:, :, None] * nb_visible  # [Q, k, T]; a neighbour counts where it is defined
    total = weight_t.sum(axis=1)
    shift = np.einsum("qkt,qktc->qtc", weight_t, np.nan_to_num(disp))
    with np.errstate(invalid="ignore", divide="ignore"):
        pred = queries[:, None, 1:] + shift / total[..., None]
    pred[total == 0] = np.nan
    pred_visible = total >= 0.5 * weight.sum(axis=1, keepdims=True)
    pred_visible &= total > 0
    return pred.astype(np.float32), pred_visible


def query_tracks(
    tracks: Any,
    visible: Any,
    queries: np.ndarray,
    *,
    k: int = DEFAULT_NEIGHBOURS,
    radius: float = DEFAULT_RADIUS,
    rows_per_chunk: int = DEFAULT_ROWS_PER_CHUNK,
) -> tuple[np.ndarray, np.ndarray]:
    """Predicted tracks float32 [Q, T, 2] and visibility bool [Q, T] for queries [Q, 3]
    of (t, x, y), from dense tracks [N, T, 2] / visible [N, T] (module docstring rule)."""
    dist, _, nb_tracks, nb_visible = nearest_tracks(tracks, visible, queries, k=k, rows_per_chunk=rows_per_chunk)
    return follow_neighbours(queries, dist, nb_tracks, nb_visible, radius=radius)
