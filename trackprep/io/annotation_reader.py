"""The one reader of annotation stores (format version 2): `open_annotations(path)`.

    ann = open_annotations("A.zarr")
    for key in ann:                                   # complete videos, sorted
        video = ann[key]                              # VideoAnnotations
        tracks, visible = video.dense(rows=slice(0, 1000), frames=slice(10, 34))
        rows = video.overlapping(frames=slice(10, 34))  # tracks defined in some frame of 10..33

Tracks are stored as a contiguous ragged array (../shared/DESIGN.md): start [N], length [N]
and labels [N] are small and read at once; points [P, 2] are read only for the rows and
frames asked for, so a dense slice costs memory for that slice alone. Shard, viz, info,
validate and eval-tracks all read stores through this module.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import zarr

from trackprep.core.labels import is_foreground
from trackprep.core.types import ragged_offsets, ragged_ranges
from trackprep.io import annotation_store as store_io
from trackprep.io import schema


def _frame_range(frames: slice | tuple[int, int] | None, num_frames: int) -> tuple[int, int]:
    if frames is None:
        return 0, num_frames
    if isinstance(frames, slice):
        if frames.step not in (None, 1):
            raise ValueError(f"frames: expected a contiguous range (step 1), got {frames}")
        a, b, _ = frames.indices(num_frames)
        return a, max(a, b)
    a, b = (int(v) for v in frames)
    if not 0 <= a <= b <= num_frames:
        raise ValueError(f"frames: expected 0 <= first <= stop <= {num_frames}, got ({a}, {b})")
    return a, b


class VideoAnnotations:
    """One complete video of an annotation store.

    frames, masks, has_mask and points are lazy Zarr arrays; start, length, labels and
    offsets (int64 [N + 1], track i's points are points[offsets[i] : offsets[i + 1]]) are numpy.
    """

    def __init__(self, group: zarr.Group, key: str, *, where: str) -> None:
        self.key, self.group, self.where = key, group, where
        arrays = {}
        for spec in schema.ANNOTATION_ARRAYS:
            try:
                arrays[spec.name] = group[spec.name]
            except KeyError:
                raise store_io.StoreError(f"{where}: array {spec.name!r} is missing; expected {spec.dtype} {list(spec.dims)}") from None
        self.frames: zarr.Array = arrays[schema.FRAMES.name]  # uint8 [T, H, W, 3]
        self.masks: zarr.Array = arrays[schema.MASKS.name]  # uint8 [T, H, W]
        self.has_mask: zarr.Array = arrays[schema.HAS_MASK.name]  # bool [T]
        self.points: zarr.Array = arrays[schema.POINTS.name]  # float32 [P, 2]
        self.start = np.asarray(arrays[schema.START.name][:], dtype=np.int64)  # [N]
        self.length = np.asarray(arrays[schema.LENGTH.name][:], dtype=np.int64)  # [N]
        self.labels = np.asarray(arrays[schema.LABELS.name][:], dtype=np.uint8)  # [N]
        self.offsets = ragged_offsets(self.length)

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def num_tracks(self) -> int:
        return int(self.start.shape[0])

    @property
    def num_points(self) -> int:
        return int(self.points.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        """(H, W)."""
        return int(self.frames.shape[1]), int(self.frames.shape[2])

    def _rows(self, rows: slice | np.ndarray | None) -> np.ndarray:
        if rows is None:
            return np.arange(self.num_tracks, dtype=np.int64)
        if isinstance(rows, slice):
            return np.arange(self.num_tracks, dtype=np.int64)[rows]
        rows = np.asarray(rows, dtype=np.int64)
        if rows.ndim != 1 or (rows.size and (rows.min() < 0 or rows.max() >= self.num_tracks)):
            raise IndexError(f"{self.where}: rows must be 1-D track indices in 0..{self.num_tracks - 1}, got {rows[:8]}...")
        return rows

    def read_points(self, index: np.ndarray) -> np.ndarray:
        """float32 [len(index), 2]: points at the given indices, each chunk decoded once."""
        if index.size == 0:
            return np.empty((0, 2), dtype=np.float32)
        lo, hi = int(index.min()), int(index.max()) + 1
        if hi - lo <= 4 * index.size:  # nearly contiguous: one range read
            return np.asarray(self.points[lo:hi], dtype=np.float32)[index - lo]
        unique, inverse = np.unique(index, return_inverse=True)
        return np.asarray(self.points.get_orthogonal_selection((unique, slice(None))), dtype=np.float32)[inverse]

    def dense(
        self, rows: slice | np.ndarray | None = None, frames: slice | tuple[int, int] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(tracks float32 [n, F, 2], NaN where undefined; visible bool [n, F]) for the given
        track rows (default all) and frame range (default all; frame `frames.start` is column 0)."""
        idx = self._rows(rows)
        f0, f1 = _frame_range(frames, self.num_frames)
        n = idx.shape[0]
        tracks = np.full((n, f1 - f0, 2), np.nan, dtype=np.float32)
        visible = np.zeros((n, f1 - f0), dtype=bool)
        s, e = self.start[idx], self.start[idx] + self.length[idx]
        a, b = np.maximum(s, f0), np.minimum(e, f1)
        count = np.maximum(b - a, 0)
        if count.sum() == 0:
            return tracks, visible
        src = ragged_ranges(self.offsets[idx] + (a - s), count)
        col = ragged_ranges(a - f0, count)
        row = np.repeat(np.arange(n), count)
        tracks[row, col] = self.read_points(src)
        visible[row, col] = True
        return tracks, visible

    def overlapping(self, frames: slice | tuple[int, int] | None = None) -> np.ndarray:
        """Sorted int64 rows of the tracks defined in at least one frame of the range."""
        f0, f1 = _frame_range(frames, self.num_frames)
        return np.flatnonzero((self.start < f1) & (self.start + self.length > f0) & (f1 > f0))

    def visible(self, rows: slice | np.ndarray | None = None, frames: slice | tuple[int, int] | None = None) -> np.ndarray:
        """bool [n, F]: where the given tracks are defined in the frame range (no points read)."""
        idx = self._rows(rows)
        f0, f1 = _frame_range(frames, self.num_frames)
        t = np.arange(f0, f1)[None, :]
        return (t >= self.start[idx, None]) & (t < (self.start + self.length)[idx, None])

    def points_at(self, rows: np.ndarray, frames: np.ndarray) -> np.ndarray:
        """float32 [n, 2]: track rows[i] at frame frames[i] (which must lie within the track)."""
        rows, frames = np.asarray(rows, np.int64), np.asarray(frames, np.int64)
        inside = (frames >= self.start[rows]) & (frames < self.start[rows] + self.length[rows])
        if not inside.all():
            bad = int(np.flatnonzero(~inside)[0])
            raise IndexError(f"{self.where}: track {rows[bad]} is not defined at frame {frames[bad]}")
        return self.read_points(self.offsets[rows] + frames - self.start[rows])

    def first_points(self) -> np.ndarray:
        """float32 [N, 2]: each track's point at its start frame."""
        return self.points_at(np.arange(self.num_tracks), self.start)

    def dense_rows(self, frames: slice | tuple[int, int] | None = None) -> tuple["DenseRows", "DenseRows"]:
        """(tracks, visible) as arrays [N, F, 2] / [N, F] that are read by blocks of rows
        (`x[a:b]`), for code written for dense arrays (trackprep.core.track_query)."""
        cache = _BlockCache(self, _frame_range(frames, self.num_frames))
        return DenseRows(cache, 0), DenseRows(cache, 1)


class _BlockCache:
    """The last dense block read, shared by a (tracks, visible) pair of DenseRows."""

    def __init__(self, video: VideoAnnotations, frames: tuple[int, int]) -> None:
        self.video, self.frames = video, frames
        self.key: tuple[int, int] | None = None
        self.block: tuple[np.ndarray, np.ndarray] | None = None

    def get(self, rows: slice) -> tuple[np.ndarray, np.ndarray]:
        a, b, _ = rows.indices(self.video.num_tracks)
        if self.key != (a, b):
            self.key, self.block = (a, b), self.video.dense(slice(a, b), self.frames)
        return self.block


class DenseRows:
    """A dense view of a video's tracks (which=0) or visibility (which=1), read by row blocks."""

    def __init__(self, cache: _BlockCache, which: int) -> None:
        self.cache, self.which = cache, which

    @property
    def shape(self) -> tuple[int, ...]:
        n, frames = self.cache.video.num_tracks, self.cache.frames[1] - self.cache.frames[0]
        return (n, frames, 2) if self.which == 0 else (n, frames)

    def __getitem__(self, rows: slice) -> np.ndarray:
        if not isinstance(rows, slice):
            raise TypeError(f"DenseRows: expected a slice of rows, got {type(rows).__name__}")
        return self.cache.get(rows)[self.which]


class Annotations:
    """An annotation store opened for reading: its complete videos by key ("<dataset>/<video>")."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.root = store_io.open_store(self.path, mode="r")
        self.location = store_io.store_location(self.root)

    @property
    def config(self) -> dict:
        return dict(self.root.attrs.get(schema.ATTR_CONFIG) or {})

    def keys(self) -> list[str]:
        """The complete videos, sorted."""
        return store_io.complete_videos(self.root)

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.keys())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and store_io.video_status(self.root, key) == schema.STATUS_COMPLETE

    def summary(self) -> dict[str, Any]:
        """What `trackprep info` prints: counts per status, frames, tracks, points, foreground
        share, stored bytes of the tracks, failures, configuration."""
        per_video = []
        complete = self.keys()
        for key in complete:
            v = self[key]
            n_fg = int(np.count_nonzero(is_foreground(v.labels)))
            track_bytes = sum(int(v.group[spec.name].nbytes_stored()) for spec in schema.TRACK_ARRAYS)
            per_video.append({"video": key, "frames": v.num_frames, "tracks": v.num_tracks, "points": v.num_points,
                              "foreground_tracks": n_fg, "track_bytes": track_bytes})
        failed = store_io.failed_videos(self.root)
        done = set(complete)
        tracks = sum(v["tracks"] for v in per_video)
        return {
            "store": self.location,
            "format": self.root.attrs.get(schema.ATTR_FORMAT),
            "format_version": self.root.attrs.get(schema.ATTR_FORMAT_VERSION),
            "package_version": self.root.attrs.get(schema.ATTR_PACKAGE_VERSION),
            "videos_complete": len(per_video),
            "videos_failed": len(failed),
            "videos_incomplete": [k for k in store_io.video_keys(self.root) if k not in done and k not in failed],
            "frames": sum(v["frames"] for v in per_video),
            "tracks": tracks,
            "points": sum(v["points"] for v in per_video),
            "foreground_share": sum(v["foreground_tracks"] for v in per_video) / tracks if tracks else 0.0,
            "per_video": per_video,
            "failures": failed,
            "damaged": store_io.damaged_videos(self.root, keys=complete),  # chunk files missing
            "config": self.root.attrs.get(schema.ATTR_CONFIG),
        }

    def __getitem__(self, key: str) -> VideoAnnotations:
        status = store_io.video_status(self.root, key)
        where = f"{self.location}/{key}"
        if status != schema.STATUS_COMPLETE:
            detail = "does not exist" if status is None else f"has status {status!r}, expected 'complete'"
            raise store_io.StoreError(f"{where}: video {detail}")
        return VideoAnnotations(self.root[key], key, where=where)


def open_annotations(path: str | os.PathLike) -> Annotations:
    """Open the annotation store at `path` for reading; StoreError (one line naming the path)
    when it is missing, of another format, or of format version 1 (with how to rebuild it)."""
    return Annotations(path)
