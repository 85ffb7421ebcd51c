"""TAP-Vid point-tracking metrics (Doersch et al. 2022), per video.

The definitions follow tapnet's `compute_tapvid_metrics`
(tapnet/tapvid/evaluation_datasets.py), which every TAP-Vid number in the
literature, Track4Gen's Table 2 included, is computed with:

- points are compared in a 256x256 raster (`TAPVID_SIZE`), whatever the video's size;
- a prediction is within a threshold when its distance is *strictly less* than it,
  for thresholds 1, 2, 4, 8, 16 px; "position accuracy" (< delta^x_avg) is the mean
  over thresholds of the share of ground-truth-visible points within it, ignoring the
  predicted occlusion;
- occlusion accuracy is the share of evaluated points whose predicted occlusion flag
  equals the ground truth's;
- Jaccard at a threshold is TP / (TP + FP + FN) with TP = visible in both and within,
  FP = predicted visible but occluded in ground truth or not within; average Jaccard
  (AJ) is its mean over thresholds;
- the query frame itself is never scored; in "first" mode frames before the query
  are not scored either (the query is the track's first visible point), in "strided"
  mode every other frame is.

A video's metrics pool all its queries; the benchmark figure is the plain mean over
videos (`mean_over_videos`). Values are fractions in [0, 1]; tables print x100.
Coordinates here are (x, y) with pixel centres at integers (../shared/DESIGN.md);
`rescale_points` converts between resolutions under that convention.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

TAPVID_SIZE = (256, 256)  # (H, W) raster the TAP-Vid paper scores in
THRESHOLDS = (1, 2, 4, 8, 16)  # px at 256x256 (TAP-Vid Sec. 4)
QUERY_STRIDE = 5  # "strided" mode samples queries every 5 frames (tapnet sample_queries_strided)
QUERY_MODES = ("first", "strided")

METRIC_NAMES = (
    "position_accuracy",
    "occlusion_accuracy",
    "average_jaccard",
    *(f"pts_within_{t}" for t in THRESHOLDS),
    *(f"jaccard_{t}" for t in THRESHOLDS),
)


def check_mode(mode: str) -> None:
    if mode not in QUERY_MODES:
        raise ValueError(f"query mode: expected one of {list(QUERY_MODES)}, got {mode!r}")


def rescale_points(points: np.ndarray, *, from_size: tuple[int, int], to_size: tuple[int, int]) -> np.ndarray:
    """(x, y) points [..., 2] from an image of size (H, W) `from_size` to one of `to_size`.

    Pixel centres sit at integers, so pixel edges at -0.5 and W - 0.5 map onto each
    other: x' = (x + 0.5) * W' / W - 0.5. NaN stays NaN.
    """
    points = np.asarray(points, dtype=np.float64)
    if points.shape[-1:] != (2,):
        raise ValueError(f"rescale_points: expected points [..., 2] as (x, y), got shape {points.shape}")
    (h0, w0), (h1, w1) = from_size, to_size
    if min(h0, w0, h1, w1) <= 0:
        raise ValueError(f"rescale_points: sizes must be positive (H, W), got {from_size} -> {to_size}")
    scale = np.array([w1 / w0, h1 / h0])
    return ((points + 0.5) * scale - 0.5).astype(np.float32)


def evaluation_frames(query_frames: np.ndarray, num_frames: int, *, mode: str) -> np.ndarray:
    """bool [Q, T]: which frames of each query's track are scored."""
    check_mode(mode)
    query_frames = np.asarray(query_frames, dtype=np.int64)
    if query_frames.size and (query_frames.min() < 0 or query_frames.max() >= num_frames):
        raise ValueError(
            f"query frames must lie in [0, {num_frames - 1}], got range "
            f"[{query_frames.min()}, {query_frames.max()}]"
        )
    frames = np.arange(num_frames)[None, :]
    q = query_frames[:, None]
    return frames > q if mode == "first" else frames != q


def _ratio(num: float, den: float) -> float:
    # A video with nothing to score gives NaN (tapnet divides 0/0 too); the mean over
    # videos leaves it out rather than letting one empty video poison the table.
    return float(num) / float(den) if den else float("nan")


def tapvid_metrics(
    *,
    query_frames: np.ndarray,
    gt_tracks: np.ndarray,
    gt_occluded: np.ndarray,
    pred_tracks: np.ndarray,
    pred_occluded: np.ndarray,
    mode: str,
) -> dict[str, float]:
    """TAP-Vid metrics of one video.

    query_frames int [Q]; gt_tracks, pred_tracks float [Q, T, 2] (x, y) already in the
    256x256 raster (see `rescale_points`); gt_occluded, pred_occluded bool [Q, T].
    A NaN predicted position is never within any threshold.
    """
    gt_tracks = np.asarray(gt_tracks, dtype=np.float64)
    pred_tracks = np.asarray(pred_tracks, dtype=np.float64)
    gt_occluded = np.asarray(gt_occluded, dtype=bool)
    pred_occluded = np.asarray(pred_occluded, dtype=bool)
    if gt_tracks.ndim != 3 or gt_tracks.shape[-1] != 2:
        raise ValueError(f"gt_tracks: expected [Q, T, 2], got shape {gt_tracks.shape}")
    q, t = gt_tracks.shape[:2]
    for name, arr, shape in (
        ("pred_tracks", pred_tracks, (q, t, 2)),
        ("gt_occluded", gt_occluded, (q, t)),
        ("pred_occluded", pred_occluded, (q, t)),
        ("query_frames", np.asarray(query_frames), (q,)),
    ):
        if arr.shape != shape:
            raise ValueError(f"{name}: expected shape {list(shape)} to match gt_tracks, got {list(arr.shape)}")

    evaluated = evaluation_frames(query_frames, t, mode=mode)
    visible = ~gt_occluded
    pred_visible = ~pred_occluded
    gt_positives = np.count_nonzero(visible & evaluated)

    metrics = {"occlusion_accuracy": _ratio(np.count_nonzero((pred_occluded == gt_occluded) & evaluated),
                                            np.count_nonzero(evaluated))}
    sq_dist = np.sum(np.square(pred_tracks - gt_tracks), axis=-1)
    within_all, jaccard_all = [], []
    for thresh in THRESHOLDS:
        with np.errstate(invalid="ignore"):
            within = sq_dist < thresh**2  # strict, as tapnet; NaN compares False
        correct = within & visible & evaluated
        metrics[f"pts_within_{thresh}"] = _ratio(np.count_nonzero(correct), gt_positives)
        true_pos = np.count_nonzero(correct & pred_visible)
        # predicted visible where ground truth is occluded, or too far: both false positives
        false_pos = np.count_nonzero(pred_visible & (gt_occluded | ~within) & evaluated)
        metrics[f"jaccard_{thresh}"] = _ratio(true_pos, gt_positives + false_pos)
        within_all.append(metrics[f"pts_within_{thresh}"])
        jaccard_all.append(metrics[f"jaccard_{thresh}"])
    metrics["position_accuracy"] = float(np.mean(within_all))
    metrics["average_jaccard"] = float(np.mean(jaccard_all))
    return {name: metrics[name] for name in METRIC_NAMES}


def mean_over_videos(per_video: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """The benchmark figure: each metric's plain mean over videos (NaN videos left out)."""
    if not per_video:
        raise ValueError("mean_over_videos: no videos to average")
    keys = list(per_video[0])
    out = {}
    for key in keys:
        values = np.array([float(row[key]) for row in per_video], dtype=np.float64)
        finite = values[~np.isnan(values)]
        out[key] = float(finite.mean()) if finite.size else float("nan")
    return out


def sample_queries_first(gt_occluded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(track rows int64 [Q], query frames int64 [Q]): each track queried at its first
    visible frame; tracks never visible are dropped (tapnet sample_queries_first)."""
    visible = ~np.asarray(gt_occluded, dtype=bool)
    rows = np.flatnonzero(visible.any(axis=1))
    return rows.astype(np.int64), visible[rows].argmax(axis=1).astype(np.int64)


def sample_queries_strided(gt_occluded: np.ndarray, *, stride: int = QUERY_STRIDE) -> tuple[np.ndarray, np.ndarray]:
    """(track rows, query frames): every track visible at frame 0, stride, 2*stride, ...
    becomes one query there, grouped by frame (tapnet sample_queries_strided)."""
    if stride < 1:
        raise ValueError(f"stride: expected an integer >= 1, got {stride}")
    visible = ~np.asarray(gt_occluded, dtype=bool)
    rows, frames = [], []
    for t in range(0, visible.shape[1], stride):
        r = np.flatnonzero(visible[:, t])
        rows.append(r)
        frames.append(np.full(r.shape, t))
    if not rows:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(rows).astype(np.int64), np.concatenate(frames).astype(np.int64)


def sample_queries(gt_occluded: np.ndarray, *, mode: str) -> tuple[np.ndarray, np.ndarray]:
    check_mode(mode)
    return sample_queries_first(gt_occluded) if mode == "first" else sample_queries_strided(gt_occluded)
