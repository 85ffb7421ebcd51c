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

from typing import Iterator, Protocol

import numpy as np
import torch

from trackprep.core.labels import nearest_pixel
from trackprep.core.sampling import sample_bilinear
from trackprep.core.types import VOID, FlowPair, TrackSet, ragged_ranges

# Points per batch of finished tracks: bounds the memory of handing out a video's last tracks.
OUT_POINTS = 1 << 22

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
    tracks that have ended since its last call; `close()` ends the live ones and returns the rest.

    The live points go through exactly the operations `chain_tracks` applies to a whole video,
    in the same order, so the tracks are the same bit for bit however the flow is cut into
    windows. Tracks come out ordered by their last frame, then by seeding order (row-major
    within a frame, earlier frames first); that order does not depend on the windows either.
    Memory: the records since the last `finished()` plus the live tracks' points so far, kept in
    one block per compaction (packed by `history_codec` if given, e.g. the store's own rounding
    and compression: trackprep.io.annotation_store.HistoryCodec); an ended track is handed out
    whole, in batches of at most OUT_POINTS points, and forgotten. On a static camera tracks
    live as long as the video, so this history still grows with it (about 2 bytes a point packed).

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
        # Live tracks, in the order chaining keeps them: position, id (seeding order), label.
        self._pos = torch.empty((0, 2), dtype=torch.float32, device=self.device)
        self._id = torch.empty(0, dtype=torch.int64, device=self.device)
        self._label = np.empty(0, dtype=np.uint8)
        self._labelled = np.empty(0, dtype=bool)
        self._next_id = 0
        # Records since the last compaction, frame-major: ids and points of the live tracks at
        # each frame, the ids seeded at each frame, and the tracks that ended (with labels).
        self._rec_ids: list[np.ndarray] = []
        self._rec_pos: list[np.ndarray] = []
        self._rec_frames: list[int] = []
        self._seeded: list[tuple[int, int]] = []  # (frame, count) for ids from self._known_next_id on
        self._ended: list[tuple[int, np.ndarray, np.ndarray]] = []  # (frame, ids, labels)
        # The tracks live at the last compaction ("known" tracks), sorted by id, and their start.
        self._known_ids = np.empty(0, dtype=np.int64)
        self._known_start = np.empty(0, dtype=np.int32)
        self._known_next_id = 0  # ids from here on were seeded after the last compaction
        # Their points so far, one block per compaction (see _Block); `history_codec` packs them.
        self._blocks: list[_Block] = []
        self._codec = history_codec
        self._emission: object | None = None  # token of the latest finished()/close() batches

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
        self._pos = torch.cat([self._pos, new])
        self._id = torch.cat([self._id, torch.arange(self._next_id, self._next_id + count, device=self.device)])
        self._next_id += count
        self._seeded.append((self.frame, count))
        self._label = np.concatenate([self._label, np.full(count, VOID, dtype=np.uint8)])
        self._labelled = np.concatenate([self._labelled, np.zeros(count, dtype=bool)])
        pos = self._pos.cpu().numpy()
        self._rec_ids.append(self._id.cpu().numpy())
        self._rec_pos.append(pos)  # shares the tensor's memory: live tensors are replaced, never written to
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
            drop = ~keep_np
            self._ended.append((self.frame, self._id.cpu().numpy()[drop], self._label[drop]))
        self._pos, self._id = nxt[keep], self._id[keep]
        self._label, self._labelled = self._label[keep_np], self._labelled[keep_np]
        self._at_frame = False

    def finished(self) -> Iterator[TrackSet]:
        """The tracks that have ended since the last call (at least `min_length` frames long),
        in batches of at most OUT_POINTS points; consume them before the next call."""
        return self._compact()

    def close(self) -> Iterator[TrackSet]:
        """End every live track at the current frame; every track not yet handed out, in batches."""
        if not self._at_frame:
            raise RuntimeError(f"close: expected add_frame() for frame {self.frame + 1} first (a video ends on a frame)")
        if self.num_live:
            self._ended.append((self.frame, self._id.cpu().numpy(), self._label.copy()))
        self._pos, self._id = self._pos[:0], self._id[:0]
        self._label, self._labelled = self._label[:0], self._labelled[:0]
        out = self._compact()
        self._at_frame = False
        return out

    def _compact(self) -> Iterator[TrackSet]:
        """Fold the records since the last compaction into a new history block; hand out the
        tracks that have ended, each gathered from its pieces in the blocks and the records.
        The folding is done here; the gathering, batch by batch, as the iterator is consumed.

        Local index of a track: its rank by id among the known tracks (sorted by id), then
        those seeded since (ids from _known_next_id on, consecutive). Every step is a gather
        or scatter over the records, the ended tracks' points or one block: the history of
        the tracks still live is never copied whole."""
        n_known = self._known_ids.shape[0]
        new_start = np.repeat(
            np.array([f for f, _ in self._seeded], dtype=np.int32), [c for _, c in self._seeded]
        )
        n = n_known + new_start.shape[0]
        ids = np.concatenate([self._known_ids, np.arange(self._known_next_id, self._next_id, dtype=np.int64)])
        start = np.concatenate([self._known_start, new_start])

        rec_counts = np.array([r.shape[0] for r in self._rec_ids], dtype=np.int64)
        rec_ids = np.concatenate(self._rec_ids) if self._rec_ids else np.empty(0, np.int64)
        rec_pos = np.concatenate(self._rec_pos) if self._rec_pos else np.empty((0, 2), np.float32)
        rec_frame = np.repeat(np.array(self._rec_frames, dtype=np.int64), rec_counts)
        first_rec = self._rec_frames[0] if self._rec_frames else self.frame + 1
        self._rec_ids, self._rec_pos, self._rec_frames, self._seeded = [], [], [], []

        # This window's records, track-major.
        loc = self._local(rec_ids, n_known)
        win_len = np.bincount(loc, minlength=n)
        win_off = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(win_len, out=win_off[1:])
        win_pts = np.empty((int(win_off[-1]), 2), dtype=np.float32)
        first_new = np.maximum(start.astype(np.int64), first_rec)  # first frame of each track's records
        win_pts[win_off[loc] + rec_frame - first_new[loc]] = rec_pos
        del rec_pos, rec_ids, rec_frame, loc

        ended = np.zeros(n, dtype=bool)
        labels = np.full(n, VOID, dtype=np.uint8)
        end_frame = np.full(n, -1, dtype=np.int64)
        for frame, e_ids, e_labels in self._ended:
            e_loc = self._local(e_ids, n_known)
            ended[e_loc], labels[e_loc], end_frame[e_loc] = True, e_labels, frame
        self._ended = []

        done = np.flatnonzero(ended)
        done = done[np.lexsort((ids[done], end_frame[done]))]  # by last frame, then seeding order
        length = end_frame[done] - start[done] + 1
        done = done[length >= self.min_length]
        ended_ids = ids[ended]  # every ended track, handed out or too short
        for block in self._blocks:  # their pieces stay readable until the batches are out
            block.forget(ended_ids)
        old_blocks = self._blocks
        live = np.flatnonzero(~ended)
        if live.size and win_len[live].sum():
            live_len = win_len[live]
            self._blocks = [*old_blocks, _Block.make(ids[live], live_len, win_pts[ragged_ranges(win_off[live], live_len)], self._codec)]
        self._known_ids, self._known_start = ids[live], start[live]
        self._known_next_id = self._next_id
        self._emission = token = object()
        return self._emit(token, old_blocks, ids[done], start[done], labels[done], win_off[done], win_len[done], win_pts)

    def _emit(
        self, token: object, blocks: list["_Block"], ids: np.ndarray, start: np.ndarray, labels: np.ndarray,
        win_off: np.ndarray, win_len: np.ndarray, win_pts: np.ndarray,
    ) -> Iterator[TrackSet]:
        frames = self.frame + 1
        lengths = win_len + sum((blk.length_in(ids) for blk in blocks), np.zeros(ids.shape[0], np.int64))
        cum = np.cumsum(lengths)
        edges = np.searchsorted(cum, np.arange(OUT_POINTS, int(cum[-1]) if cum.size else 0, OUT_POINTS), side="left")
        cuts = [0, *edges.tolist(), ids.shape[0]]
        for a, b in zip(cuts[:-1], cuts[1:]):
            if self._emission is not token:
                raise RuntimeError("TrackChainer: a batch of finished tracks was read after a later finished()/close()")
            if b <= a:
                continue
            off = np.zeros(b - a + 1, dtype=np.int64)
            np.cumsum(lengths[a:b], out=off[1:])
            pts = np.empty((int(off[-1]), 2), dtype=np.float32)
            filled = np.zeros(b - a, dtype=np.int64)  # points placed so far per output track
            for block in blocks:  # oldest first: a track's pieces in frame order
                hit, piece_len, pieces = block.take(ids[a:b], self._codec)
                pts[ragged_ranges(off[hit] + filled[hit], piece_len)] = pieces
                filled[hit] += piece_len
            pts[ragged_ranges(off[:-1] + filled, win_len[a:b])] = win_pts[ragged_ranges(win_off[a:b], win_len[a:b])]
            yield TrackSet(num_frames=frames, start=start[a:b], offsets=off, points=pts, labels=labels[a:b])
        if self._emission is token:
            self._blocks = [blk.compacted(self._codec) for blk in self._blocks if blk.live_points]

    def _local(self, track_ids: np.ndarray, n_known: int) -> np.ndarray:
        old = track_ids < self._known_next_id
        return np.where(old, np.searchsorted(self._known_ids, track_ids), n_known + track_ids - self._known_next_id)


class HistoryCodec(Protocol):
    """Packs a history block's points (float32 [p, 2], track after track) into a compact
    object and back. A lossy codec must round no further than the store will anyway."""

    def encode(self, points: np.ndarray) -> object: ...

    def decode(self, packed: object) -> np.ndarray: ...


class _Block:
    """The points one compaction window added to the tracks live at its end: ids sorted, each
    track's points contiguous. Ended tracks are forgotten (their points become dead); a block
    more than half dead is rewritten without them, so blocks hold at most twice the live history."""

    def __init__(self, ids: np.ndarray, lengths: np.ndarray, data: object, total: int) -> None:
        self.ids, self.lengths, self.data = ids, lengths.astype(np.int32), data  # 13 bytes a track
        self.alive = np.ones(ids.shape[0], dtype=bool)
        self.total = total
        self.live_points = total

    @classmethod
    def make(cls, ids: np.ndarray, lengths: np.ndarray, points: np.ndarray, codec: HistoryCodec | None) -> "_Block":
        keep = lengths > 0
        ids, lengths = ids[keep], lengths[keep]
        return cls(ids, lengths, points if codec is None else codec.encode(points), int(lengths.sum()))

    def offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.lengths, dtype=np.int64)[:-1]])

    def points(self, codec: HistoryCodec | None) -> np.ndarray:
        return self.data if codec is None else codec.decode(self.data)

    def _rows(self, track_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(indices into track_ids present here, their rows in this block)."""
        pos = np.minimum(np.searchsorted(self.ids, track_ids), max(self.ids.shape[0] - 1, 0))
        hit = np.flatnonzero(self.ids[pos] == track_ids) if self.ids.shape[0] else np.empty(0, np.int64)
        return hit, pos[hit]

    def length_in(self, track_ids: np.ndarray) -> np.ndarray:
        """int64 [len(track_ids)]: points this block holds for each track (0 where absent)."""
        out = np.zeros(track_ids.shape[0], dtype=np.int64)
        hit, rows = self._rows(track_ids)
        out[hit] = self.lengths[rows]
        return out

    def take(self, track_ids: np.ndarray, codec: HistoryCodec | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(indices into track_ids present here, their piece lengths, the pieces concatenated)."""
        hit, rows = self._rows(track_ids)
        if hit.size == 0:
            return hit, np.zeros(0, np.int64), np.empty((0, 2), np.float32)
        lengths = self.lengths[rows].astype(np.int64)
        return hit, lengths, self.points(codec)[ragged_ranges(self.offsets()[rows], lengths)]

    def forget(self, track_ids: np.ndarray) -> None:
        _, rows = self._rows(track_ids)
        rows = rows[self.alive[rows]]
        self.alive[rows] = False
        self.live_points -= int(self.lengths[rows].sum())

    def compacted(self, codec: HistoryCodec | None) -> "_Block":
        if 2 * self.live_points > self.total:
            return self
        rows = np.flatnonzero(self.alive)
        points = self.points(codec)[ragged_ranges(self.offsets()[rows], self.lengths[rows])]
        return _Block.make(self.ids[rows], self.lengths[rows], points, codec)

