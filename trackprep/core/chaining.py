"""Dense tracks from optical flow: forward chaining, the cycle-consistency test and seeding.

Track4Gen (Appendix A.1) builds its training trajectories the way DINO-Tracker's
preprocessing does: chain forward flow, x_{t+1} = x_t + f_{t->t+1}(x_t), and keep the step only
if the backward flow brings the point home, ||x_t - (x_{t+1} + f_{t+1->t}(x_{t+1}))|| <= 1.5 px.
A track ends at its first failed step (an occlusion or a flow error) or when it leaves the frame,
and is never resumed. Every pixel of the first frame (every k-th with `seed_stride`) starts a
track; at each later frame new tracks start on the grid points that no live track covers, so
regions that appear (disocclusions, content entering at the borders) gain tracks too.

All points of a frame are processed at once; the only Python loop is over frames. `TrackChainer`
does this as the flow arrives (a window of frame pairs at a time, so memory does not grow with the
video's length); `chain_tracks` feeds it a whole video's flow.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from trackprep.core.labels import nearest_pixel
from trackprep.core.sampling import sample_bilinear
from trackprep.core.track_history import HistoryCodec, TrackHistory
from trackprep.core.types import VOID, FlowPair, TrackSet, point_items, ragged_offsets

# Collections of ended tracks (trackprep.core.track_history), decided frame by frame: when the
# points of the tracks ended since the last one reach the live tracks' points so far (a copying
# collector's rule: rewriting the live history costs no more than what is handed out) and at
# least MIN_COLLECT_POINTS; and COLLECT_FRAMES frames after the last one (a static camera's
# tracks seldom end: this bounds the number of history blocks, and how long ended tracks wait).
MIN_COLLECT_POINTS = 1 << 18
COLLECT_FRAMES = 256

# Track4Gen Appendix A.1 (after DINO-Tracker): forward-backward error threshold in pixels.
DEFAULT_CYCLE_THRESHOLD = 1.5


def seed_grid(height: int, width: int, *, stride: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """float32 [G, 2] (x, y): every `stride`-th pixel, row-major, starting at (0, 0)."""
    ys = torch.arange(0, height, stride, device=device, dtype=torch.float32)
    xs = torch.arange(0, width, stride, device=device, dtype=torch.float32)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1)


def covered_cells(points: torch.Tensor, *, height: int, width: int, stride: int) -> torch.Tensor:
    """bool [G]: grid points (of `seed_grid`) that some point has as its nearest grid point."""
    gh, gw = -(-height // stride), -(-width // stride)
    cx = torch.floor(points[:, 0] / stride + 0.5).long().clamp(0, gw - 1)
    cy = torch.floor(points[:, 1] / stride + 0.5).long().clamp(0, gh - 1)
    covered = torch.zeros(gh * gw, dtype=torch.bool, device=points.device)
    covered[cy * gw + cx] = True
    return covered


def cycle_step(
    forward: torch.Tensor, backward: torch.Tensor, points: torch.Tensor, *, cycle_threshold: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One chaining step for points [M, 2] of frame t.

    forward: [2, H, W] flow t -> t+1; backward: [2, H, W] flow t+1 -> t.
    Returns (next points [M, 2], keep bool [M], cycle error [M]); a point is kept when it lands
    inside frame t+1 and its forward-backward error is at most `cycle_threshold`.
    """
    step, inside0 = sample_bilinear(forward, points)
    nxt = points + step
    back, inside1 = sample_bilinear(backward, nxt)
    error = torch.linalg.vector_norm(nxt + back - points, dim=1)
    keep = inside0 & inside1 & (error <= cycle_threshold)  # NaN error compares False
    return nxt, keep, error


def chain_tracks(
    flow: FlowPair, *, cycle_threshold: float = DEFAULT_CYCLE_THRESHOLD, seed_stride: int = 1, min_length: int = 1
) -> TrackSet:
    """Chain the whole of `flow` into dense tracks (ordered as `TrackChainer` hands them out).

    Labels are VOID (255) until `label_tracks` sets them."""
    _, _, height, width = flow.forward.shape
    chainer = TrackChainer(
        height=height, width=width, cycle_threshold=cycle_threshold, seed_stride=seed_stride,
        min_length=min_length, device=flow.forward.device,
    )
    for t in range(flow.num_frames - 1):
        chainer.add_frame()
        chainer.advance(flow.forward[t], flow.backward[t])
    chainer.add_frame()
    return TrackSet.concat(list(chainer.close()), num_frames=flow.num_frames)


class TrackChainer:
    """Chaining as the flow arrives: frame by frame, handing out tracks once they have ended.

    For t = 0 .. T-1: `add_frame(mask=...)` (seeds the frame's new tracks, records where every
    live track is, labels the live tracks not yet labelled when the frame has a mask), then,
    unless t is the last frame, `advance(forward[t], backward[t])`. `finished()` returns the
    tracks collected since its last call; `close()` ends the live ones and returns the rest.

    The live points go through exactly the operations `chain_tracks` applies to a whole video,
    in the same order, so the tracks are the same bit for bit however the flow is cut into
    windows. Ended tracks are handed out by collections (trackprep.core.track_history): at a
    frame b where the points of the tracks ended since the last collection reach the live
    tracks' points so far (and MIN_COLLECT_POINTS), or COLLECT_FRAMES frames after the last
    collection, and at the last frame. Collection after collection, tracks come out in seeding
    order (row-major within a frame, earlier frames first). The frames of the collections
    depend only on the tracks, so the output, order included, does not depend on the windows.

    Memory: the records since the last `finished()` (one window) and the live tracks; the
    history of points not handed out yet goes through `history_codec` (e.g. the store's
    rounding and compression, spilled to disk: trackprep.io.annotation_store.HistoryCodec).
    Work: each point is rewritten by the collections while its track lives, about once per
    COLLECT_FRAMES frames (on a moving camera tracks end sooner and the 2x rule collects).

    Labels (`mask` given): the mask value under the track at its first frame with a mask, at
    the nearest pixel (as `label_tracks` does for a whole video); VOID if it meets no mask.
    """

    def __init__(
        self, *, height: int, width: int, cycle_threshold: float = DEFAULT_CYCLE_THRESHOLD, seed_stride: int = 1,
        min_length: int = 1, device: torch.device | str = "cpu", history_codec: HistoryCodec | None = None,
    ) -> None:
        if cycle_threshold <= 0:
            raise ValueError(f"cycle_threshold must be > 0 px, got {cycle_threshold}")
        if isinstance(seed_stride, bool) or not isinstance(seed_stride, int) or seed_stride < 1:
            raise ValueError(f"seed_stride must be a positive integer, got {seed_stride}")
        if isinstance(min_length, bool) or not isinstance(min_length, int) or min_length < 1:
            raise ValueError(f"min_length must be a positive integer number of frames, got {min_length}")
        self.height, self.width = int(height), int(width)
        self.cycle_threshold, self.seed_stride, self.min_length = float(cycle_threshold), seed_stride, min_length
        self.device = torch.device(device)
        self._grid = seed_grid(self.height, self.width, stride=seed_stride, device=self.device)
        self.frame = -1  # the frame the live points are at
        self._at_frame = False  # add_frame done for self.frame, advance not yet
        # Live tracks, in the order chaining keeps them (ascending id = seeding order): position,
        # id, label, first frame, and slot (the track's row in the current window's records).
        self._pos = torch.empty((0, 2), dtype=torch.float32, device=self.device)
        self._id = torch.empty(0, dtype=torch.int64, device=self.device)
        self._label = np.empty(0, dtype=np.uint8)
        self._labelled = np.empty(0, dtype=bool)
        self._start = np.empty(0, dtype=np.int32)
        self._slot = np.empty(0, dtype=np.int32)
        self._next_id = 0
        # The window since the last fold: slots 0 .. n0-1 are the tracks live at its start
        # (_win_ids, _win_start), then the tracks seeded in it (ids from _win_first_new on).
        self._win_ids = np.empty(0, dtype=np.int64)
        self._win_start = np.empty(0, dtype=np.int32)
        self._win_first_new = 0
        self._rec_slots: list[np.ndarray] = []  # per frame: the slots of the live tracks
        self._rec_pos: list[np.ndarray] = []  # ... and their points
        self._rec_frames: list[int] = []
        self._seeded: list[tuple[int, int]] = []  # (frame, count) since the fold
        self._ended: list[tuple[int, np.ndarray, np.ndarray]] = []  # (frame, slots, labels)
        self.history = TrackHistory(codec=history_codec, min_length=min_length)
        # Collections: frames decided, not yet run; points of live tracks so far; points of the
        # tracks ended since the last collection.
        self.collections: list[int] = []  # every collection frame decided so far (for tests)
        self._due: list[int] = []
        self._live_points = 0
        self._dead_points = 0
        self._last_collection = -1
        self._emission_done = True

    @property
    def num_live(self) -> int:
        return int(self._id.shape[0])

    def add_frame(self, *, mask: np.ndarray | None = None) -> None:
        """Move on to the next frame: seed it, record it, and label from `mask` (uint8 [H, W]) if given."""
        if self._at_frame:
            raise RuntimeError(f"add_frame: frame {self.frame} has not been advanced from yet; call advance() first")
        self.frame += 1
        self._at_frame = True
        if self.frame == 0:
            new = self._grid
        else:
            new = self._grid[~covered_cells(self._pos, height=self.height, width=self.width, stride=self.seed_stride)]
        count = int(new.shape[0])
        first_slot = self._win_ids.shape[0] + self._next_id - self._win_first_new
        self._pos = torch.cat([self._pos, new])
        self._id = torch.cat([self._id, torch.arange(self._next_id, self._next_id + count, device=self.device)])
        self._next_id += count
        self._seeded.append((self.frame, count))
        self._label = np.concatenate([self._label, np.full(count, VOID, dtype=np.uint8)])
        self._labelled = np.concatenate([self._labelled, np.zeros(count, dtype=bool)])
        self._start = np.concatenate([self._start, np.full(count, self.frame, dtype=np.int32)])
        self._slot = np.concatenate([self._slot, np.arange(first_slot, first_slot + count, dtype=np.int32)])
        self._live_points += self.num_live
        pos = self._pos.cpu().numpy()
        self._rec_slots.append(self._slot)  # live arrays are replaced, never written to
        self._rec_pos.append(pos)  # shares the tensor's memory, likewise
        self._rec_frames.append(self.frame)
        if mask is not None:
            if mask.shape != (self.height, self.width):
                raise ValueError(f"add_frame: mask of frame {self.frame} is {mask.shape}; expected {(self.height, self.width)}")
            rows = np.flatnonzero(~self._labelled)
            y, x = nearest_pixel(pos[rows], height=self.height, width=self.width)
            self._label[rows] = mask[y, x]
            self._labelled[rows] = True

    def advance(self, forward: torch.Tensor, backward: torch.Tensor) -> None:
        """Chain the live points one frame on: forward [2, H, W] maps this frame to the next,
        backward [2, H, W] the next frame back to this one."""
        if not self._at_frame:
            raise RuntimeError(f"advance: expected add_frame() for frame {self.frame + 1} first")
        self._check_flow(forward=forward, backward=backward, what=f"frame {self.frame}")
        nxt, keep, _ = cycle_step(
            forward.to(self.device).float(), backward.to(self.device).float(), self._pos,
            cycle_threshold=self.cycle_threshold,
        )
        self._move(nxt, keep)

    def _check_flow(self, *, forward: torch.Tensor, backward: torch.Tensor, what: str) -> None:
        expected = (2, self.height, self.width)
        for name, f in (("forward", forward), ("backward", backward)):
            if tuple(f.shape) != expected:
                raise ValueError(f"advance: {name} flow of {what} has shape {tuple(f.shape)}; expected {expected}")

    def _move(self, nxt: torch.Tensor, keep: torch.Tensor) -> None:
        """Finish a step: the live points go to `nxt` [M, 2]; those not in `keep` [M] end here."""
        keep_np = keep.cpu().numpy()
        if not keep_np.all():
            self._end_tracks(~keep_np)
        self._pos, self._id = nxt[keep], self._id[keep]
        self._label, self._labelled = self._label[keep_np], self._labelled[keep_np]
        self._start, self._slot = self._start[keep_np], self._slot[keep_np]
        if self._dead_points and (
            self._dead_points >= max(MIN_COLLECT_POINTS, self._live_points)  # rewriting costs < handing out
            or self.frame - self._last_collection >= COLLECT_FRAMES
        ):
            self._decide_collection()
        self._at_frame = False

    def _end_tracks(self, rows: np.ndarray) -> None:
        """The live tracks at `rows` (bool mask) end at this frame."""
        self._ended.append((self.frame, self._slot[rows], self._label[rows]))
        points = int((self.frame + 1 - self._start[rows].astype(np.int64)).sum())
        self._live_points -= points
        self._dead_points += points

    def _decide_collection(self) -> None:
        self.collections.append(self.frame)
        self._due.append(self.frame)
        self._last_collection, self._dead_points = self.frame, 0

    def finished(self) -> Iterator[TrackSet]:
        """The tracks of the collections decided since the last call (at least `min_length`
        frames long), in batches of about OUT_POINTS points; read them all before the next call."""
        self._check_read()
        self._fold()
        return self._emit()

    def close(self) -> Iterator[TrackSet]:
        """End every live track at the current frame; every track not yet handed out, in batches."""
        if not self._at_frame:
            raise RuntimeError(f"close: expected add_frame() for frame {self.frame + 1} first (a video ends on a frame)")
        self._check_read()
        if self.num_live:
            self._end_tracks(np.ones(self.num_live, dtype=bool))
        self._pos, self._id = self._pos[:0], self._id[:0]
        self._label, self._labelled = self._label[:0], self._labelled[:0]
        self._start, self._slot = self._start[:0], self._slot[:0]
        self._decide_collection()
        self._fold()
        self._at_frame = False
        return self._emit()

    def _check_read(self) -> None:
        if not self._emission_done:
            raise RuntimeError("TrackChainer: the batches of the previous finished()/close() were not all read; "
                               "read them before calling it again")

    def _emit(self) -> Iterator[TrackSet]:
        if not self._due:
            return iter(())
        due, self._due = self._due, []
        self._emission_done = False

        def batches() -> Iterator[TrackSet]:
            for frame in due:
                yield from self.history.collect(frame)
            self._emission_done = True

        return batches()

    def _fold(self) -> None:
        """Turn the window's records (frame-major) into a history block (track-major)."""
        new_ids = np.arange(self._win_first_new, self._next_id, dtype=np.int64)
        new_start = np.repeat(np.array([f for f, _ in self._seeded], dtype=np.int32), [c for _, c in self._seeded])
        ids = np.concatenate([self._win_ids, new_ids])
        start = np.concatenate([self._win_start, new_start])
        e_slots = np.concatenate([s for _, s, _ in self._ended]) if self._ended else np.empty(0, np.int32)
        e_frame = np.repeat(np.array([f for f, _, _ in self._ended], dtype=np.int32), [s.shape[0] for _, s, _ in self._ended])
        e_labels = np.concatenate([lb for _, _, lb in self._ended]) if self._ended else np.empty(0, np.uint8)
        self._ended = []
        # A track is recorded at every frame from its first in this window to its last (the
        # frame it ended at, or the window's last).
        first = np.maximum(start.astype(np.int64), self._rec_frames[0] if self._rec_frames else 0)
        last = np.full(ids.shape[0], self._rec_frames[-1] if self._rec_frames else -1, dtype=np.int64)
        last[e_slots] = e_frame
        lengths = np.maximum(last - first + 1, 0)
        off = ragged_offsets(lengths)
        points = np.empty((int(off[-1]), 2), dtype=np.float32)
        flat, base = point_items(points), off[:-1] - first
        for frame, slots, pos in zip(self._rec_frames, self._rec_slots, self._rec_pos):
            flat[base[slots] + frame] = point_items(pos)
        self._rec_slots, self._rec_pos, self._rec_frames, self._seeded = [], [], [], []
        has = np.flatnonzero(lengths)
        self.history.add_window(new_ids=new_ids, new_start=new_start, ids=ids[has], lengths=lengths[has],
                                points=points, ended_ids=ids[e_slots], ended_frame=e_frame, ended_labels=e_labels)
        # The next window starts with the tracks live now, in their (id) order.
        self._win_ids, self._win_start = self._id.cpu().numpy().copy(), self._start.copy()
        self._win_first_new = self._next_id
        self._slot = np.arange(self.num_live, dtype=np.int32)
