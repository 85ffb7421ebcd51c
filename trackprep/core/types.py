"""The data contracts passed between stages, one frozen dataclass each.

Conventions (../shared/DESIGN.md): points are (x, y) in pixels of the working
resolution with pixel centres at integer coordinates; images uint8 [T, H, W, 3];
masks uint8 [T, H, W] with 0 = background, k = object k, 255 = void.
Every dataclass checks its shapes on construction, so a wrong array fails at
the stage that made it, not three stages later.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # imported where a FlowPair is checked, so that readers and checkers start without torch
    import torch

VOID = 255  # mask value for "not annotated" pixels (DAVIS) and unknown track labels


def ragged_offsets(lengths: np.ndarray) -> np.ndarray:
    """int64 [n + 1]: where each row of a ragged array with these lengths starts, then the total."""
    offsets = np.zeros(np.shape(lengths)[0] + 1, dtype=np.int64)
    np.cumsum(lengths, dtype=np.int64, out=offsets[1:])
    return offsets


def point_items(points: np.ndarray) -> np.ndarray:
    """float32 [p, 2] (x, y) as int64 [p], one 8-byte item per point (a view when contiguous):
    scattering and gathering whole points this way is several times faster than row indexing."""
    return np.ascontiguousarray(points, dtype=np.float32).view(np.int64).reshape(-1)


def ragged_ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """int64 indices of the concatenated ranges starts[i] .. starts[i] + lengths[i] - 1: the
    gather that turns rows of a ragged array into its points."""
    lengths = np.asarray(lengths, dtype=np.int64)
    total = int(lengths.sum())
    if total == 0:
        return np.empty(0, dtype=np.int64)
    ends = np.cumsum(lengths)
    return np.arange(total, dtype=np.int64) + np.repeat(np.asarray(starts, np.int64) - (ends - lengths), lengths)


def check_frames(frames: np.ndarray, *, what: str = "frames") -> None:
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        got = f"{type(frames).__name__} {getattr(frames, 'dtype', '?')} {getattr(frames, 'shape', '?')}"
        raise ValueError(f"{what}: expected uint8 array [T, H, W, 3], got {got}")


def check_masks(masks: np.ndarray, frames_shape: tuple[int, ...], *, what: str = "masks") -> None:
    expected = tuple(frames_shape[:3])
    if not isinstance(masks, np.ndarray) or masks.dtype != np.uint8 or masks.shape != expected:
        got = f"{type(masks).__name__} {getattr(masks, 'dtype', '?')} {getattr(masks, 'shape', '?')}"
        raise ValueError(f"{what}: expected uint8 array {list(expected)} matching the frames, got {got}")


@dataclass(frozen=True)
class Clip:
    """One video in memory at the working resolution."""

    name: str
    frames: np.ndarray  # uint8 [T, H, W, 3]
    masks: np.ndarray  # uint8 [T, H, W]; 0 background, k object k, 255 void
    has_mask: np.ndarray  # bool [T]; True where the frame has a ground-truth mask
    # Ground truth that only synthetic clips have (a trackprep.core.synthetic.Scene);
    # the oracle flow estimator reads it. None for real data.
    scene: Any = field(default=None, compare=False)

    def __post_init__(self) -> None:
        check_frames(self.frames, what=f"clip {self.name!r} frames")
        check_masks(self.masks, self.frames.shape, what=f"clip {self.name!r} masks")
        if self.has_mask.dtype != np.bool_ or self.has_mask.shape != (self.frames.shape[0],):
            raise ValueError(
                f"clip {self.name!r} has_mask: expected bool [{self.frames.shape[0]}], "
                f"got {self.has_mask.dtype} {self.has_mask.shape}"
            )

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        """(H, W)."""
        return int(self.frames.shape[1]), int(self.frames.shape[2])


@dataclass(frozen=True)
class FlowPair:
    """Forward and backward optical flow between consecutive frames.

    Channel-first, as torchvision's RAFT returns it: channel 0 is dx, channel 1 is dy.
    forward[t] maps a pixel of frame t to frame t+1; backward[t] maps a pixel of frame t+1 to frame t.
    """

    forward: torch.Tensor  # float32 [T-1, 2, H, W]
    backward: torch.Tensor  # float32 [T-1, 2, H, W]

    def __post_init__(self) -> None:
        import torch

        for name in ("forward", "backward"):
            f = getattr(self, name)
            if not isinstance(f, torch.Tensor) or f.ndim != 4 or f.shape[1] != 2 or not f.is_floating_point():
                got = f"{type(f).__name__} {getattr(f, 'dtype', '?')} {tuple(getattr(f, 'shape', ()))}"
                raise ValueError(f"FlowPair.{name}: expected float tensor [T-1, 2, H, W], got {got}")
        if self.forward.shape != self.backward.shape:
            raise ValueError(
                f"FlowPair: forward {tuple(self.forward.shape)} and backward {tuple(self.backward.shape)} differ"
            )

    @property
    def num_frames(self) -> int:
        return int(self.forward.shape[0]) + 1


@dataclass(frozen=True)
class TrackSet:
    """Dense tracks of one clip in a compact, ragged form.

    Each track is defined on one contiguous run of frames, start[i] .. start[i] + length[i] - 1
    (it starts where it was seeded and ends at its first cycle-consistency failure or when it
    leaves the frame). Its points lie in points[offsets[i]:offsets[i+1]], one per frame.
    Memory grows with the number of defined points, i.e. linearly with video length, where the
    dense [N, T, 2] form grows with N * T; `dense()` expands any row range on demand.
    """

    num_frames: int
    start: np.ndarray  # int32 [N]
    offsets: np.ndarray  # int64 [N + 1]; offsets[0] == 0, lengths = diff(offsets) >= 1
    points: np.ndarray  # float32 [P, 2] (x, y), P == offsets[-1]
    labels: np.ndarray  # uint8 [N]; object id (0 background, 255 unknown/void)

    def __post_init__(self) -> None:
        n = self.start.shape[0]
        if self.start.dtype != np.int32 or self.start.ndim != 1:
            raise ValueError(f"TrackSet.start: expected int32 [N], got {self.start.dtype} {self.start.shape}")
        if self.offsets.dtype != np.int64 or self.offsets.shape != (n + 1,):
            raise ValueError(f"TrackSet.offsets: expected int64 [{n + 1}], got {self.offsets.dtype} {self.offsets.shape}")
        if self.points.dtype != np.float32 or self.points.ndim != 2 or self.points.shape[1] != 2:
            raise ValueError(f"TrackSet.points: expected float32 [P, 2], got {self.points.dtype} {self.points.shape}")
        if self.labels.dtype != np.uint8 or self.labels.shape != (n,):
            raise ValueError(f"TrackSet.labels: expected uint8 [{n}], got {self.labels.dtype} {self.labels.shape}")
        if self.offsets[0] != 0 or self.offsets[-1] != self.points.shape[0]:
            raise ValueError("TrackSet.offsets: must start at 0 and end at len(points)")
        lengths = np.diff(self.offsets)
        if n and (lengths.min() < 1 or (self.start.astype(np.int64) + lengths).max() > self.num_frames or self.start.min() < 0):
            raise ValueError("TrackSet: every track needs >= 1 point and must lie within the clip's frames")

    def __len__(self) -> int:
        return int(self.start.shape[0])

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def first_points(self) -> np.ndarray:
        """float32 [N, 2]: each track's point at its start frame."""
        return self.points[self.offsets[:-1]]

    def dense(self, rows: slice | np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(tracks float32 [n, T, 2] with NaN where undefined, visible bool [n, T]) for the given rows."""
        idx = np.arange(len(self))[rows] if rows is not None else np.arange(len(self))
        idx = np.asarray(idx, dtype=np.int64)
        n, t = idx.shape[0], self.num_frames
        tracks = np.full((n, t, 2), np.nan, dtype=np.float32)
        visible = np.zeros((n, t), dtype=bool)
        if n == 0:
            return tracks, visible
        lengths = self.lengths[idx]
        row = np.repeat(np.arange(n), lengths)
        col = ragged_ranges(self.start[idx], lengths)
        tracks[row, col] = self.points[ragged_ranges(self.offsets[idx], lengths)]
        visible[row, col] = True
        return tracks, visible

    def select(self, rows: np.ndarray) -> "TrackSet":
        """A TrackSet holding only the given rows, in the given order."""
        rows = np.asarray(rows, dtype=np.int64)
        lengths = self.lengths[rows]
        offsets = ragged_offsets(lengths)
        return TrackSet(
            num_frames=self.num_frames,
            start=self.start[rows],
            offsets=offsets,
            points=self.points[ragged_ranges(self.offsets[rows], lengths)],
            labels=self.labels[rows],
        )

    @classmethod
    def concat(cls, parts: "list[TrackSet]", *, num_frames: int | None = None) -> "TrackSet":
        """The tracks of `parts` one after another (e.g. the batches a TrackChainer hands out)."""
        num_frames = max([p.num_frames for p in parts], default=0) if num_frames is None else num_frames
        lengths = np.concatenate([p.lengths for p in parts]) if parts else np.zeros(0, np.int64)
        offsets = ragged_offsets(lengths)
        return cls(
            num_frames=num_frames,
            start=np.concatenate([p.start for p in parts]) if parts else np.zeros(0, np.int32),
            offsets=offsets,
            points=np.concatenate([p.points for p in parts]) if parts else np.zeros((0, 2), np.float32),
            labels=np.concatenate([p.labels for p in parts]) if parts else np.zeros(0, np.uint8),
        )
