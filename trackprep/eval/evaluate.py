"""Score an annotation store against ground-truth point tracks, one row per video.

For every ground-truth video with a complete video of the same name in the store:
queries are taken from the ground truth (or sampled per TAP-Vid query mode), moved
to the store's resolution, answered from the store's dense tracks
(`trackprep.core.track_query`, reading track rows in blocks), and scored:

- TAP-Vid position accuracy, occlusion accuracy and average Jaccard at 256x256
  (`trackprep.core.tapvid_metrics`);
- PCK at the ground truth's resolution, BADJA-style (0.2 * sqrt(foreground area)) and
  within 3 px (`trackprep.core.pck`). Foreground areas come from the ground truth's
  masks when it has them, else from the store's masks scaled to the ground truth's
  size; frames without a mask or without foreground are not scored by the former.

Video names match a store key "<dataset>/<video>" exactly or by its "<video>" part.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from trackprep.core.pck import FIXED_THRESHOLD_PX, foreground_areas, pck, segmentation_pck
from trackprep.core.tapvid_metrics import (
    TAPVID_SIZE,
    check_mode,
    evaluation_frames,
    mean_over_videos,
    rescale_points,
    sample_queries,
    tapvid_metrics,
)
from trackprep.core.track_query import DEFAULT_NEIGHBOURS, DEFAULT_RADIUS, DEFAULT_ROWS_PER_CHUNK, query_tracks
from trackprep.eval.groundtruth import GroundTruthVideo, read_groundtruth
from trackprep.io.annotation_reader import VideoAnnotations, open_annotations

# Columns of the printed table: (metric key, header). Values are printed x100.
TABLE_COLUMNS = (
    ("position_accuracy", "pos. acc. (<δ avg)"),
    ("occlusion_accuracy", "occ. acc."),
    ("average_jaccard", "AJ"),
    ("pck_segmentation", "PCK 0.2√A"),
    ("pck_3px", "PCK 3px"),
)


class EvaluationError(ValueError):
    """Ground truth and store do not fit together (no common video, other frame count)."""


@dataclass(frozen=True)
class VideoScore:
    video: str  # store key "<dataset>/<video>"
    num_queries: int
    metrics: dict[str, float]  # fractions in [0, 1]; NaN where nothing could be scored


@dataclass(frozen=True)
class EvalReport:
    mode: str
    videos: list[VideoScore]
    mean: dict[str, float]
    unmatched: list[str] = field(default_factory=list)  # ground-truth videos absent from the store

    def to_dict(self) -> dict:
        def clean(m: dict[str, float]) -> dict[str, float | None]:
            return {k: (None if math.isnan(v) else v) for k, v in m.items()}

        return {
            "mode": self.mode,
            "videos": [{"video": v.video, "num_queries": v.num_queries, **clean(v.metrics)} for v in self.videos],
            "mean": clean(self.mean),
            "unmatched": list(self.unmatched),
        }


def match_videos(store_keys: list[str], gt_names: list[str]) -> tuple[dict[str, str], list[str]]:
    """(ground-truth name -> store key, unmatched names). A name matches a key exactly or
    its last component; two candidate keys are an error (name the dataset in the ground truth)."""
    by_video: dict[str, list[str]] = {}
    for key in store_keys:
        by_video.setdefault(key.rsplit("/", 1)[-1], []).append(key)
    matched, unmatched = {}, []
    for name in gt_names:
        if name in store_keys:
            matched[name] = name
            continue
        candidates = by_video.get(name, [])
        if len(candidates) > 1:
            raise EvaluationError(
                f"ground-truth video {name!r} matches several store videos {candidates}; "
                "name it '<dataset>/<video>' in the ground truth"
            )
        if candidates:
            matched[name] = candidates[0]
        else:
            unmatched.append(name)
    return matched, unmatched


def benchmark_queries(gt: GroundTruthVideo, *, mode: str):
    """(query frames int64 [Q], query xy [Q, 2], gt tracks [Q, T, 2], gt occluded [Q, T]) at gt.size."""
    if gt.queries is not None:
        frames = np.round(gt.queries[:, 0]).astype(np.int64)
        if frames.size and (frames.min() < 0 or frames.max() >= gt.num_frames):
            raise EvaluationError(
                f"ground-truth video {gt.name!r}: query frames must lie in [0, {gt.num_frames - 1}], "
                f"got [{frames.min()}, {frames.max()}]"
            )
        return frames, gt.queries[:, 1:].astype(np.float64), gt.tracks, gt.occluded
    rows, frames = sample_queries(gt.occluded, mode=mode)
    tracks = gt.tracks[rows]
    return frames, tracks[np.arange(rows.size), frames].astype(np.float64), tracks, gt.occluded[rows]


def first_frames(gt: GroundTruthVideo, frames: int) -> GroundTruthVideo:
    """The ground truth of the video's first `frames` frames (queries after them dropped)."""
    keep = slice(None) if gt.queries is None else gt.queries[:, 0] < frames - 0.5
    return replace(
        gt,
        tracks=np.ascontiguousarray(gt.tracks[keep, :frames]),
        occluded=np.ascontiguousarray(gt.occluded[keep, :frames]),
        queries=None if gt.queries is None else gt.queries[keep],
        masks=None if gt.masks is None else gt.masks[:frames],
        frames=None if gt.frames is None else gt.frames[:frames],
    )


def areas_at_gt_size(stored: VideoAnnotations | None, gt: GroundTruthVideo) -> np.ndarray:
    """float64 [T] foreground area per frame in ground-truth pixels; NaN where not scorable.
    From the ground truth's masks, else the store's (`stored`; None: no masks, all NaN)."""
    if gt.masks is not None:
        areas = foreground_areas(gt.masks)
    elif stored is None:
        return np.full(gt.num_frames, np.nan)
    else:
        h, w = stored.masks.shape[1:3]
        areas = np.array([foreground_areas(np.asarray(stored.masks[t : t + 1]))[0] for t in range(gt.num_frames)])
        areas = areas * (gt.size[0] * gt.size[1]) / (h * w)
        areas[~np.asarray(stored.has_mask[: gt.num_frames], dtype=bool)] = np.nan
    areas[areas == 0] = np.nan  # no foreground: a zero threshold would score nothing (BADJA frames all show the animal)
    return areas


def score_predictions(
    gt: GroundTruthVideo,
    *,
    query_frames: np.ndarray,
    gt_tracks: np.ndarray,
    gt_occluded: np.ndarray,
    pred_tracks: np.ndarray,
    pred_visible: np.ndarray,
    areas: np.ndarray,
    mode: str,
) -> dict[str, float]:
    """Every metric of one video's predictions: TAP-Vid's at 256x256 and PCK at gt.size.

    pred_tracks float [Q, T, 2] in ground-truth pixels; areas float [T] foreground area per
    frame in ground-truth pixels (NaN: not scored by the segmentation PCK).
    """
    metrics = tapvid_metrics(
        query_frames=query_frames,
        gt_tracks=rescale_points(gt_tracks, from_size=gt.size, to_size=TAPVID_SIZE),
        gt_occluded=gt_occluded,
        pred_tracks=rescale_points(pred_tracks, from_size=gt.size, to_size=TAPVID_SIZE),
        pred_occluded=~pred_visible,
        mode=mode,
    )
    scored = evaluation_frames(query_frames, gt.num_frames, mode=mode)
    common = dict(pred_tracks=pred_tracks, gt_tracks=gt_tracks, gt_visible=~gt_occluded, evaluated=scored)
    metrics["pck_segmentation"] = segmentation_pck(**common, areas=areas)
    metrics["pck_3px"] = pck(**common, thresholds=FIXED_THRESHOLD_PX)
    return metrics


def score_video(
    stored: VideoAnnotations,
    gt: GroundTruthVideo,
    *,
    mode: str,
    k: int = DEFAULT_NEIGHBOURS,
    radius: float = DEFAULT_RADIUS,
    rows_per_chunk: int = DEFAULT_ROWS_PER_CHUNK,
    max_frames: int | None = None,
) -> VideoScore:
    """Metrics of one store video against its ground truth; with `max_frames`, of its first
    max_frames frames only (chaining is causal, so the stored tracks cut there are exactly
    the tracks of the shortened video)."""
    check_mode(mode)
    if gt.num_frames != stored.num_frames:
        raise EvaluationError(
            f"video {stored.key!r}: ground truth {gt.name!r} has {gt.num_frames} frames, the store {stored.num_frames}"
        )
    if max_frames is not None:
        if max_frames < 2:
            raise ValueError(f"max_frames: expected an integer >= 2, got {max_frames}")
        if max_frames < gt.num_frames:
            gt = first_frames(gt, max_frames)
    # Dense [N, T', 2] / [N, T'] views over the first T' frames, expanded a block of rows at a time.
    store_tracks, store_visible = stored.dense_rows(frames=(0, gt.num_frames))
    store_size = (int(stored.frames.shape[1]), int(stored.frames.shape[2]))
    frames, query_xy, gt_tracks, gt_occluded = benchmark_queries(gt, mode=mode)
    queries = np.concatenate([frames[:, None], rescale_points(query_xy, from_size=gt.size, to_size=store_size)], axis=1)
    pred, pred_visible = query_tracks(
        store_tracks, store_visible, queries, k=k, radius=radius, rows_per_chunk=rows_per_chunk
    )
    metrics = score_predictions(
        gt, query_frames=frames, gt_tracks=gt_tracks, gt_occluded=gt_occluded,
        pred_tracks=rescale_points(pred, from_size=store_size, to_size=gt.size), pred_visible=pred_visible,
        areas=areas_at_gt_size(stored, gt), mode=mode,
    )
    return VideoScore(video=stored.key, num_queries=int(frames.size), metrics=metrics)


def evaluate_store(
    store: str | Path,
    groundtruth: str | Path,
    *,
    format: str | None = None,
    mode: str = "first",
    k: int = DEFAULT_NEIGHBOURS,
    radius: float = DEFAULT_RADIUS,
    rows_per_chunk: int = DEFAULT_ROWS_PER_CHUNK,
    max_frames: int | None = None,
) -> EvalReport:
    """Score every ground-truth video found in the annotation store; the mean is over videos.
    `max_frames` scores each video's first frames only (Track4Gen Table 2 reports 24-frame clips)."""
    check_mode(mode)
    videos = read_groundtruth(groundtruth, format=format)
    annotations = open_annotations(store)
    keys = annotations.keys()
    matched, unmatched = match_videos(keys, [v.name for v in videos])
    if not matched:
        raise EvaluationError(
            f"{groundtruth}: none of its videos {sorted(v.name for v in videos)[:10]} is a complete video of "
            f"{store} (has {keys[:10]})"
        )
    scores = [
        score_video(
            annotations[matched[gt.name]], gt, mode=mode, k=k, radius=radius, rows_per_chunk=rows_per_chunk,
            max_frames=max_frames,
        )
        for gt in videos
        if gt.name in matched
    ]
    return EvalReport(mode=mode, videos=scores, mean=mean_over_videos([s.metrics for s in scores]), unmatched=unmatched)


def format_value(value: float) -> str:
    """A metric as a table prints it: x100, one decimal; NaN as a dash."""
    return "–" if math.isnan(value) else f"{100.0 * value:.1f}"


def format_table(report: EvalReport) -> str:
    """A markdown table: one row per video and the mean over videos (values x100)."""
    header = ["video", "queries", *(title for _, title in TABLE_COLUMNS)]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for v in report.videos:
        lines.append("| " + " | ".join([v.video, str(v.num_queries), *(format_value(v.metrics[k]) for k, _ in TABLE_COLUMNS)]) + " |")
    total = sum(v.num_queries for v in report.videos)
    lines.append(
        "| " + " | ".join([f"**mean over {len(report.videos)} video{'s' if len(report.videos) != 1 else ''}**", str(total),
                            *(format_value(report.mean[k]) for k, _ in TABLE_COLUMNS)]) + " |"
    )
    return "\n".join(lines)
