"""Foreground/background labels for tracks from segmentation masks."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from trackprep.core.types import VOID, TrackSet


def next_annotated_frame(has_mask: np.ndarray) -> np.ndarray:
    """int64 [T]: for each frame t the first frame >= t with a mask, or T when there is none."""
    t = has_mask.shape[0]
    nxt = np.where(has_mask, np.arange(t), t)
    return np.minimum.accumulate(nxt[::-1])[::-1]


def label_tracks(tracks: TrackSet, masks: np.ndarray, has_mask: np.ndarray) -> TrackSet:
    """Label each track with the mask value under it at its first frame that has a mask.

    On fully annotated data (DAVIS) that is the track's first point, as DINO-Tracker decides
    foreground; on sparsely annotated data (FBMS-59) it is the first annotated frame the track
    lives through. A track that meets no annotated frame, or lands on void, gets VOID (255).
    """
    t, h, w = masks.shape
    if t != tracks.num_frames or has_mask.shape != (t,):
        raise ValueError(
            f"label_tracks: masks {masks.shape} / has_mask {has_mask.shape} do not match {tracks.num_frames} frames"
        )
    labels = np.full(len(tracks), VOID, dtype=np.uint8)
    if len(tracks) == 0:
        return replace(tracks, labels=labels)
    frame = next_annotated_frame(has_mask)[tracks.start]
    ok = frame < tracks.start.astype(np.int64) + tracks.lengths
    rows = np.flatnonzero(ok)
    pts = tracks.points[tracks.offsets[rows] + frame[rows] - tracks.start[rows]]
    y, x = nearest_pixel(pts, height=h, width=w)
    labels[rows] = masks[frame[rows], y, x]
    return replace(tracks, labels=labels)


def nearest_pixel(points: np.ndarray, *, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(row, column) int64 of the pixel whose centre is nearest each (x, y) point, clipped to the frame.

    The one rounding rule of labels: the writer (label_tracks) and the checker
    (trackprep.io.validate) must agree to the pixel.
    """
    x = np.clip(np.rint(points[:, 0]).astype(np.int64), 0, width - 1)
    y = np.clip(np.rint(points[:, 1]).astype(np.int64), 0, height - 1)
    return y, x


def is_foreground(labels: np.ndarray) -> np.ndarray:
    return (labels > 0) & (labels != VOID)
