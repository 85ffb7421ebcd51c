"""Keypoint accuracy (PCK) as BADJA results are reported.

BADJA (Biggs et al. 2018) counts a visible keypoint correct when it lies within
0.2 * sqrt(A) of ground truth, A being the foreground mask's area in that frame;
TAP-Vid and DINO-Tracker (eval/metrics.py, `compute_badja_metrics_for_video`) also
report a fixed 3 px threshold. As there, distances are compared strictly (<), only
ground-truth-visible points are scored, all points of a video are pooled, and the
query frame is not scored (pass `evaluated` from `tapvid_metrics.evaluation_frames`).
Values are fractions in [0, 1].
"""

from __future__ import annotations

import numpy as np

from trackprep.core.types import VOID

SEGMENTATION_ALPHA = 0.2  # BADJA: threshold = 0.2 * sqrt(foreground area)
FIXED_THRESHOLD_PX = 3.0  # DINO-Tracker / TAP-Vid's second BADJA figure


def foreground_areas(masks: np.ndarray) -> np.ndarray:
    """float64 [T]: pixels per frame whose mask value is an object id (1..254; 0 is
    background and 255 void, ../shared/DESIGN.md)."""
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise ValueError(f"masks: expected [T, H, W], got shape {masks.shape}")
    return ((masks > 0) & (masks != VOID)).sum(axis=(1, 2)).astype(np.float64)


def _check(pred_tracks, gt_tracks, gt_visible, evaluated):
    pred_tracks = np.asarray(pred_tracks, dtype=np.float64)
    gt_tracks = np.asarray(gt_tracks, dtype=np.float64)
    if gt_tracks.ndim != 3 or gt_tracks.shape[-1] != 2:
        raise ValueError(f"gt_tracks: expected [Q, T, 2], got shape {gt_tracks.shape}")
    if pred_tracks.shape != gt_tracks.shape:
        raise ValueError(f"pred_tracks: expected shape {list(gt_tracks.shape)}, got {list(pred_tracks.shape)}")
    gt_visible = np.asarray(gt_visible, dtype=bool)
    evaluated = np.ones(gt_visible.shape, bool) if evaluated is None else np.asarray(evaluated, dtype=bool)
    for name, arr in (("gt_visible", gt_visible), ("evaluated", evaluated)):
        if arr.shape != gt_tracks.shape[:2]:
            raise ValueError(f"{name}: expected shape {list(gt_tracks.shape[:2])}, got {list(arr.shape)}")
    dist = np.sqrt(np.sum(np.square(pred_tracks - gt_tracks), axis=-1))
    return dist, gt_visible & evaluated


def pck(
    *,
    pred_tracks: np.ndarray,
    gt_tracks: np.ndarray,
    gt_visible: np.ndarray,
    thresholds: float | np.ndarray,
    evaluated: np.ndarray | None = None,
) -> float:
    """Share of scored points (ground truth visible and `evaluated`) predicted strictly
    within `thresholds` px: a scalar, or float [T] for one threshold per frame (frames
    with a NaN threshold are not scored). NaN predictions count as wrong; NaN when
    nothing is scored."""
    dist, scored = _check(pred_tracks, gt_tracks, gt_visible, evaluated)
    thr = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), dist.shape[1:])[None, :]
    scored = scored & ~np.isnan(thr)
    with np.errstate(invalid="ignore"):
        correct = (dist < thr) & scored
    n = np.count_nonzero(scored)
    return float(np.count_nonzero(correct)) / float(n) if n else float("nan")


def segmentation_pck(
    *,
    pred_tracks: np.ndarray,
    gt_tracks: np.ndarray,
    gt_visible: np.ndarray,
    areas: np.ndarray,
    evaluated: np.ndarray | None = None,
    alpha: float = SEGMENTATION_ALPHA,
) -> float:
    """BADJA's PCK: threshold alpha * sqrt(area[t]) with `areas` float [T] the foreground
    area per frame (`foreground_areas`); NaN areas (frames without a mask) are skipped."""
    areas = np.asarray(areas, dtype=np.float64)
    if areas.shape != np.shape(gt_tracks)[1:2]:
        raise ValueError(f"areas: expected one per frame, shape [{np.shape(gt_tracks)[1]}], got {list(areas.shape)}")
    return pck(pred_tracks=pred_tracks, gt_tracks=gt_tracks, gt_visible=gt_visible,
               thresholds=alpha * np.sqrt(areas), evaluated=evaluated)
