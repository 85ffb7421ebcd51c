"""Tracking videos with diffusion features, and scoring them as Table 2 of Track4Gen does.

`track_video` resizes a video to the model's working resolution (320 x 576, Sec. 4.1),
extracts features segment by segment (`features.video_features`), matches the queries
(`matching.match_queries`) and maps the tracks back to the video's pixels.
`evaluate_tracking` does that for every ground-truth video and scores the result with the
metrics `trackprep eval-tracks` uses (trackprep.eval.evaluate.score_predictions): TAP-Vid
position accuracy, occlusion accuracy and AJ at 256 x 256, PCK within 0.2 sqrt(A) and 3 px.
Protocols (Table 2): "24" scores each video's first 24 frames (queries and targets inside
them, one segment); "all" its whole duration (App. A.4 segments).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from track4gen.losses import SOFT_ARGMAX_CHOICES
from track4gen.tracking.features import FeatureFn, video_features
from track4gen.tracking.matching import OCCLUSION_THRESHOLD, match_queries
from trackprep.core import draw
from trackprep.core.resize import resize_frames
from trackprep.core.segments import SEGMENT_LENGTH
from trackprep.core.tapvid_metrics import check_mode, mean_over_videos, rescale_points
from trackprep.eval.evaluate import (
    TABLE_COLUMNS,
    EvalReport,
    VideoScore,
    areas_at_gt_size,
    benchmark_queries,
    first_frames,
    format_value,
    score_predictions,
)
from trackprep.eval.groundtruth import GroundTruthVideo, read_groundtruth
from trackprep.viz import write_gif, write_png

WORK_SIZE = (320, 576)  # Track4Gen's training and evaluation resolution (Sec. 4.1)
PROTOCOLS = ("24", "all")
PICTURE_QUERIES = 100  # queries drawn per picture, spread over the first frame


def track_video(
    frames: np.ndarray,
    queries: np.ndarray,
    *,
    extract: FeatureFn,
    size: tuple[int, int] = WORK_SIZE,
    segment_length: int = SEGMENT_LENGTH,
    threshold: float = OCCLUSION_THRESHOLD,
    device: str | torch.device | None = None,
    soft_argmax: dict | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(tracks float32 [Q, T, 2], visible bool [Q, T]) of queries [Q, 3] (t, x, y) in the pixels
    of frames uint8 [T, H, W, 3]. `soft_argmax`: {"weighting", "temperature"} as the model was
    trained (default: the loss's defaults)."""
    own = frames.shape[1:3]
    work = resize_frames(frames, size=size)
    feats = video_features(work, extract, length=segment_length)
    q = np.asarray(queries, np.float64).copy()
    q[:, 1:] = rescale_points(q[:, 1:], from_size=own, to_size=size)
    m = match_queries(feats, torch.from_numpy(q).float(), image_size=size, threshold=threshold, device=device,
                      **(soft_argmax or {}))
    tracks = rescale_points(m.tracks.numpy(), from_size=size, to_size=own)
    tracks[np.arange(q.shape[0]), q[:, 0].astype(np.int64)] = queries[:, 1:]  # a query is exactly where it was asked
    return tracks, m.visible.numpy()


@dataclass(frozen=True)
class TrackingRow:
    """One row of the table: a model's features from one block, over every video."""

    model: str
    features: str  # block and whether refined by the head
    report: EvalReport


def _protocol_view(gt: GroundTruthVideo, protocol: str, *, segment_length: int) -> GroundTruthVideo:
    if gt.frames is None:
        raise ValueError(f"ground-truth video {gt.name!r} has no frames to track (a TAP-Vid pickle's 'video', "
                         f"or '<video>/frames' uint8 [T, H, W, 3] in an npz)")
    need = 24 if protocol == "24" else segment_length
    if gt.num_frames < need:
        raise ValueError(f"ground-truth video {gt.name!r} has {gt.num_frames} frames; the {protocol!r} protocol "
                         f"needs at least {need}")
    return first_frames(gt, 24) if protocol == "24" and gt.num_frames > 24 else gt


def score_tracker(
    videos: list[GroundTruthVideo],
    *,
    extract: FeatureFn,
    mode: str = "first",
    protocol: str = "24",
    size: tuple[int, int] = WORK_SIZE,
    segment_length: int = SEGMENT_LENGTH,
    threshold: float = OCCLUSION_THRESHOLD,
    device: str | torch.device | None = None,
    soft_argmax: dict | None = None,
    pictures: Path | None = None,
) -> EvalReport:
    """Track every video's benchmark queries with `extract`'s features and score them; with
    `pictures`, write `<pictures>/<video>.png` (query points on the first frame, matches later)."""
    check_mode(mode)
    if protocol not in PROTOCOLS:
        raise ValueError(f"--frames: expected one of {list(PROTOCOLS)}, got {protocol!r}")
    scores = []
    for gt in videos:
        gt = _protocol_view(gt, protocol, segment_length=segment_length)
        query_frames, query_xy, gt_tracks, gt_occluded = benchmark_queries(gt, mode=mode)
        queries = np.concatenate([query_frames[:, None], query_xy], axis=1)
        tracks, visible = track_video(gt.frames, queries, extract=extract, size=size, segment_length=segment_length,
                                      threshold=threshold, device=device, soft_argmax=soft_argmax)
        metrics = score_predictions(gt, query_frames=query_frames, gt_tracks=gt_tracks, gt_occluded=gt_occluded,
                                    pred_tracks=tracks, pred_visible=visible, areas=areas_at_gt_size(None, gt),
                                    mode=mode)
        scores.append(VideoScore(video=gt.name, num_queries=int(query_frames.size), metrics=metrics))
        if pictures is not None:
            write_picture(pictures / f"{_file_name(gt.name)}.png", gt.frames, tracks, visible, queries)
    return EvalReport(mode=mode, videos=scores, mean=mean_over_videos([s.metrics for s in scores]))


def load_videos(gt: str | Path, *, format: str | None = None) -> list[GroundTruthVideo]:
    videos = read_groundtruth(gt, format=format)
    missing = [v.name for v in videos if v.frames is None]
    if missing:
        raise ValueError(f"{gt}: videos {missing[:5]} have no frames; tracking needs them "
                         "(TAP-Vid pickles have 'video'; in an npz add '<video>/frames' uint8 [T, H, W, 3])")
    return videos


def _file_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "video"


def draw_matches(frames: np.ndarray, tracks: np.ndarray, visible: np.ndarray, queries: np.ndarray,
                 *, max_queries: int = PICTURE_QUERIES) -> np.ndarray:
    """uint8 [T, H, W, 3]: frames with up to `max_queries` tracked points drawn as dots (no tails),
    coloured by where they were queried (Fig. 3 / 7: query points, then their matches)."""
    h, w = frames.shape[1:3]
    rows = draw.spread_tracks(queries[:, 1:], np.ones(len(queries), np.int64), n=max_queries, height=h, width=w)
    colors = draw.rainbow_colors(queries[rows, 1:], height=h, width=w)
    return draw.draw_tracks(frames, tracks[rows], visible[rows], colors, radius=max(2, round(h / 100)), tail=0)


def write_picture(path: Path, frames: np.ndarray, tracks: np.ndarray, visible: np.ndarray, queries: np.ndarray) -> Path:
    """A .png grid of frames spread over the clip (first frame first), or a .gif of all frames."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pictures = draw_matches(frames, tracks, visible, queries)
    if path.suffix.lower() == ".gif":
        write_gif(pictures, path, fps=8)
    elif path.suffix.lower() == ".png":
        write_png(pictures, path, frame=None, columns=4, count=8)
    else:
        raise ValueError(f"{path}: expected a picture ending in .png or .gif")
    return path


def format_tracking_table(rows: list[TrackingRow], *, protocol: str, mode: str) -> str:
    """Table 2's layout: one row per model (and block), mean over videos, values x100."""
    clip = "first 24 frames of each video" if protocol == "24" else "whole videos, 24-frame segments"
    n = len(rows[0].report.videos) if rows else 0
    lines = [f"zero-shot tracking, query mode {mode}, {clip}; mean over {n} video{'s' if n != 1 else ''}; values x100",
             "| model | features | " + " | ".join(title for _, title in TABLE_COLUMNS) + " |",
             "|---|---|" + "---:|" * len(TABLE_COLUMNS)]
    for r in rows:
        lines.append(f"| {r.model} | {r.features} | " + " | ".join(format_value(r.report.mean[k]) for k, _ in TABLE_COLUMNS) + " |")
    return "\n".join(lines)


def _check_weighting(weighting: str | None) -> None:
    if weighting is not None and weighting not in SOFT_ARGMAX_CHOICES:
        raise ValueError(f"--soft-argmax: expected one of {list(SOFT_ARGMAX_CHOICES)}, got {weighting!r}")


def _soft_argmax(model, weighting: str | None) -> dict:
    """The model's training soft-argmax, with `weighting` ("cosine"/"softmax") overriding it."""
    return {**model.soft_argmax, **({"weighting": weighting} if weighting else {})}


def evaluate_tracking(
    models: list[str],
    gt: str | Path,
    *,
    format: str | None = None,
    mode: str = "first",
    protocol: str = "24",
    blocks: list[str] | None = None,
    sigma: float | None = None,
    size: tuple[int, int] = WORK_SIZE,
    segment_length: int = SEGMENT_LENGTH,
    device: str | None = None,
    pictures: str | Path | None = None,
    seed: int = 0,
    weighting: str | None = None,
) -> list[TrackingRow]:
    """A row per (model, block): every ground-truth video tracked and scored (module docstring).
    Everything cheap is checked before the first model loads."""
    from track4gen.tracking.features import DEFAULT_BLOCK, DEFAULT_SIGMA, DiffusionFeatures, canonical_block
    from track4gen.tracking.models import load_feature_model

    check_mode(mode)
    _check_weighting(weighting)
    if protocol not in PROTOCOLS:
        raise ValueError(f"--frames: expected one of {list(PROTOCOLS)}, got {protocol!r}")
    videos = load_videos(gt, format=format)
    for v in videos:
        _protocol_view(v, protocol, segment_length=segment_length)
    rows, folders = [], []
    for i, spec in enumerate(models):
        model = load_feature_model(spec)
        folder = _file_name(Path(spec).name or spec)
        folder = folder if folder not in folders else f"{folder}-{i + 1}"  # two runs' "model" folders
        folders.append(folder)
        for block in blocks or [DEFAULT_BLOCK]:
            extract = DiffusionFeatures(model, block=block, sigma=DEFAULT_SIGMA if sigma is None else sigma,
                                        seed=seed, device=device)
            where = None
            if pictures is not None:
                where = Path(pictures) / folder / _file_name(canonical_block(block))
            report = score_tracker(videos, extract=extract, mode=mode, protocol=protocol, size=size,
                                   segment_length=segment_length, device=extract.device, pictures=where,
                                   soft_argmax=_soft_argmax(model, weighting))
            rows.append(TrackingRow(model=spec, features=extract.label, report=report))
        del model, extract  # one model in memory at a time
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return rows


def track_file(
    model: str,
    video: str | Path,
    queries: str | Path,
    out: str | Path,
    *,
    picture: str | Path | None = None,
    block: str | None = None,
    sigma: float | None = None,
    size: tuple[int, int] = WORK_SIZE,
    segment_length: int = SEGMENT_LENGTH,
    device: str | None = None,
    seed: int = 0,
    weighting: str | None = None,
) -> tuple[Path, np.ndarray]:
    """`track4gen track`: track the queries of a file through a video; (npz written, visible [Q, T])."""
    from track4gen.tracking.features import DEFAULT_BLOCK, DEFAULT_SIGMA, DiffusionFeatures, video_segments
    from track4gen.tracking.files import read_queries, read_video, write_tracks
    from track4gen.tracking.models import load_feature_model

    _check_weighting(weighting)
    if Path(out).suffix.lower() != ".npz":
        raise ValueError(f"--out {out}: expected a file ending in .npz")
    if picture is not None and Path(picture).suffix.lower() not in (".png", ".gif"):
        raise ValueError(f"--picture {picture}: expected a file ending in .png or .gif")
    frames = read_video(video)
    try:
        video_segments(frames.shape[0], length=segment_length)
    except ValueError as exc:
        raise ValueError(f"--video {video}: {exc}") from exc
    q = read_queries(queries, num_frames=frames.shape[0], size=frames.shape[1:3])
    loaded = load_feature_model(model)
    extract = DiffusionFeatures(loaded, block=block or DEFAULT_BLOCK, sigma=DEFAULT_SIGMA if sigma is None else sigma,
                                seed=seed, device=device)
    tracks, visible = track_video(frames, q, extract=extract, size=size, segment_length=segment_length,
                                  device=extract.device, soft_argmax=_soft_argmax(loaded, weighting))
    path = write_tracks(out, name=Path(video).stem, tracks=tracks, visible=visible, queries=q, size=frames.shape[1:3])
    if picture is not None:
        write_picture(Path(picture), frames, tracks, visible, q)
    return path, visible


def synthetic_groundtruth(scene, *, name: str, points: int, seed: int = 0) -> GroundTruthVideo:
    """A rendered synthetic scene (trackprep.core.synthetic) with the exact tracks of `points`
    random (t, x, y) queries, its frames and masks: ground truth to track and score."""
    rng = np.random.default_rng(seed)
    queries = np.stack([rng.integers(0, scene.num_frames, points), rng.uniform(0, scene.width - 1, points),
                        rng.uniform(0, scene.height - 1, points)], axis=1)
    tracks, visible = scene.ground_truth(queries)
    frames, masks = scene.render()
    return GroundTruthVideo(name=name, size=(scene.height, scene.width), tracks=tracks, occluded=~visible,
                            queries=queries.astype(np.float32), masks=masks, frames=frames)
