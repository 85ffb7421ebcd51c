"""Splitting annotated videos into fixed-length training segments (pure planning and selection).

Track4Gen trains on 24-frame clips (paper Sec. 4 / App. A.4: 567 clips cut from the
annotated videos). A video of T frames is cut every `stride` frames into L-frame
segments; when frames are left over at the end, one more segment covers the final
L frames, borrowing the frames it lacks from the segment before it (App. A.4: a
38-frame video gives segments [0, 24) and [14, 38), i.e. 14 leftover + 10 borrowed).
Videos shorter than L give no segment.

Within a segment a track is kept when it is defined in at least `min_visible` (2) of
the segment's frames: one point gives no correspondence to learn from. Its label is
the stored label of the whole video's track (the mask value at the track's first
annotated frame, DINO-Tracker's rule), not recomputed at the segment's first frame,
so a track keeps one identity in every segment it appears in.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from trackprep.core.balance import balanced_subsample

SEGMENT_LENGTH = 24  # Track4Gen App. A.4: 24-frame training clips
MIN_VISIBLE = 2  # a kept track must give at least one correspondence inside the segment


def _check_int(name: str, value: object, *, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
        raise ValueError(f"{name}: expected an integer >= {lo}, got {value!r}")
    return int(value)


def segment_starts(num_frames: int, *, length: int = SEGMENT_LENGTH, stride: int | None = None) -> list[int]:
    """First frames of the L-frame segments of a `num_frames`-frame video (tail rule of App. A.4).

    >>> segment_starts(38, length=24)
    [0, 14]
    >>> segment_starts(48, length=24)
    [0, 24]
    >>> segment_starts(23, length=24)
    []
    """
    num_frames = _check_int("num_frames", num_frames, lo=0)
    length = _check_int("length", length, lo=1)
    stride = length if stride is None else _check_int("stride", stride, lo=1)
    if num_frames < length:
        return []
    starts = list(range(0, num_frames - length + 1, stride))
    if starts[-1] + length < num_frames:  # leftover tail: the last segment is the final L frames
        starts.append(num_frames - length)
    return starts


@dataclass(frozen=True)
class SegmentPlan:
    """Every segment of a set of videos, in video order then start order."""

    videos: tuple[str, ...]  # [S] video key of each segment
    starts: tuple[int, ...]  # [S] first frame of each segment in its video
    skipped: tuple[tuple[str, int], ...]  # (video, num_frames) of videos shorter than L

    def __len__(self) -> int:
        return len(self.videos)


def plan_segments(
    num_frames: Sequence[tuple[str, int]], *, length: int = SEGMENT_LENGTH, stride: int | None = None
) -> SegmentPlan:
    """The segments of videos given as (key, number of frames) pairs."""
    videos: list[str] = []
    starts: list[int] = []
    skipped: list[tuple[str, int]] = []
    for key, t in num_frames:
        s = segment_starts(t, length=length, stride=stride)
        if not s:
            skipped.append((key, int(t)))
        videos.extend([key] * len(s))
        starts.extend(s)
    return SegmentPlan(videos=tuple(videos), starts=tuple(starts), skipped=tuple(skipped))


def shard_ranges(num_segments: int, *, segments_per_shard: int) -> list[range]:
    """Consecutive index ranges of `segments_per_shard` segments (the last may be shorter)."""
    num_segments = _check_int("num_segments", num_segments, lo=0)
    spp = _check_int("segments_per_shard", segments_per_shard, lo=1)
    return [range(a, min(a + spp, num_segments)) for a in range(0, num_segments, spp)]


def segment_seed(seed: int, video: str, start: int) -> tuple[int, int, int]:
    """A seed for one segment's track sample that depends only on (seed, video, start).

    crc32, not hash(): Python salts str hashes per process, and the sample must be the
    same in every worker and on every rerun.
    """
    return (int(seed), zlib.crc32(video.encode("utf-8")), int(start))


def select_segment_tracks(
    visible: np.ndarray,
    labels: np.ndarray,
    *,
    n: int,
    fg_share: float = 0.5,
    seed: int | Sequence[int],
    min_visible: int = MIN_VISIBLE,
) -> np.ndarray:
    """Sorted int64 rows of the tracks a segment keeps.

    visible: bool [N, L], the tracks' visibility within the segment's frames; labels: uint8 [N].
    Keeps tracks visible in >= `min_visible` frames, then draws up to `n` of them with
    round(n * fg_share) foreground when enough exist (trackprep.core.balance); void (255)
    tracks are never drawn.
    """
    if visible.ndim != 2 or visible.dtype != np.bool_:
        raise ValueError(f"visible: expected bool [N, L], got {visible.dtype} {list(visible.shape)}")
    if labels.shape != visible.shape[:1]:
        raise ValueError(f"labels: expected [{visible.shape[0]}] (one per track), got {list(labels.shape)}")
    candidates = np.flatnonzero(visible.sum(axis=1) >= min_visible)
    picked = balanced_subsample(labels[candidates], n=n, fg_share=fg_share, seed=seed)
    return candidates[picked]
