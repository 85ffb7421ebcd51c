"""The points of the tracks a `TrackChainer` has not handed out yet, and their collection.

While chaining, every live track gains a point per frame; a track can be handed out only once
it has ended, whole and contiguous. Gathering each ended track from the windows it was recorded
in costs a pass over all the history per window: quadratic in the video's length (at 800
frames of a static camera, decoding the history took most of the run). So the history is kept
like a copying garbage collector keeps a heap:

- each window of records becomes a block (track after track, sorted by id) appended to the
  history; nothing is handed out then;
- a *collection* at frame b makes one pass over all blocks in id order, in batches of about
  OUT_POINTS points: the tracks that ended at frame b or before are handed out (those of at
  least `min_length` frames), the others are rewritten into one new block, and the old blocks
  are released. The chainer decides the frames of the collections frame by frame (see
  trackprep.core.chaining), so what comes out, and in which order, does not depend on the
  windows.

Blocks are stored in parts of PART_POINTS points through a `HistoryCodec`: the store's own
rounding and compression, kept in memory or spilled to a file (trackprep.io.annotation_store.
HistoryCodec), so the history costs disk, not memory.
"""

from __future__ import annotations

from typing import Iterator, Protocol

import numpy as np

from trackprep.core.types import VOID, TrackSet, point_items, ragged_offsets, ragged_ranges

# Points per batch of handed-out tracks (and per step of a collection's pass).
OUT_POINTS = 1 << 18
# Points per encoded part of a block: the unit of decoding (2 MiB of float32 x, y).
PART_POINTS = 1 << 18


class HistoryCodec(Protocol):
    """Keeps a part's points (float32 [p, 2]) somewhere compact and gives them back. A lossy
    codec must round no further than the store will anyway."""

    def encode(self, points: np.ndarray) -> object: ...

    def decode(self, packed: object) -> np.ndarray: ...

    def release(self, packed: object) -> None: ...


class _Raw:
    """No codec: parts are the arrays themselves."""

    def encode(self, points: np.ndarray) -> object:
        return points

    def decode(self, packed: object) -> np.ndarray:
        return packed  # type: ignore[return-value]

    def release(self, packed: object) -> None:
        pass


class _Block:
    """Points of some tracks over a range of frames: ids sorted, each track's points contiguous,
    encoded in parts of PART_POINTS points (the last one shorter). The index is kept small (5
    bytes a track in a window's block: ids as uint32 above the first, lengths as uint8) since
    every block lists all the tracks live in its frames."""

    def __init__(self, ids: np.ndarray, lengths: np.ndarray, parts: list[object], total: int) -> None:
        self._id0 = int(ids[0]) if ids.size else 0
        span = int(ids[-1]) - self._id0 if ids.size else 0
        self._id_off = (ids - self._id0).astype(np.uint32 if span < 1 << 32 else np.int64)
        self.lengths = lengths.astype(np.min_scalar_type(int(lengths.max()) if lengths.size else 0))
        self.parts, self.total = parts, total
        self._cached: tuple[int, np.ndarray] | None = None  # (part index, decoded points)

    @property
    def num_tracks(self) -> int:
        return int(self.lengths.shape[0])

    def ids(self, j0: int = 0, j1: int | None = None) -> np.ndarray:
        """int64 ids of entries j0 .. j1-1."""
        return self._id_off[j0:j1].astype(np.int64) + self._id0

    def count_upto(self, track_id: int) -> int:
        """Number of entries with id <= track_id."""
        rel = track_id - self._id0
        if rel < 0:
            return 0
        return int(np.searchsorted(self._id_off, self._id_off.dtype.type(min(rel, np.iinfo(self._id_off.dtype).max)), side="right"))

    def read(self, a: int, b: int, codec: HistoryCodec) -> np.ndarray:
        """Points a .. b-1, decoding only the parts they lie in (the last one is kept: a pass
        reads consecutive ranges)."""
        out = []
        for k in range(a // PART_POINTS, -(-b // PART_POINTS)):
            if self._cached is None or self._cached[0] != k:
                self._cached = (k, codec.decode(self.parts[k]))
            lo = k * PART_POINTS
            out.append(self._cached[1][max(a - lo, 0) : b - lo])
        return out[0] if len(out) == 1 else np.concatenate(out) if out else np.empty((0, 2), np.float32)

    def release(self, codec: HistoryCodec) -> None:
        for part in self.parts:
            codec.release(part)
        self.parts, self._cached = [], None


class _BlockBuilder:
    """Builds a block from tracks given in id order, encoding each full part as it fills."""

    def __init__(self, codec: HistoryCodec) -> None:
        self._codec = codec
        self._ids: list[np.ndarray] = []
        self._lengths: list[np.ndarray] = []
        self._parts: list[object] = []
        self._pending: list[np.ndarray] = []
        self._pending_points = 0
        self._total = 0

    def add(self, ids: np.ndarray, lengths: np.ndarray, points: np.ndarray) -> None:
        if ids.shape[0] == 0:
            return
        self._ids.append(ids)
        self._lengths.append(lengths)
        self._total += int(points.shape[0])
        self._pending.append(points)
        self._pending_points += int(points.shape[0])
        if self._pending_points >= PART_POINTS:
            buf = np.concatenate(self._pending)
            full = buf.shape[0] // PART_POINTS * PART_POINTS
            self._parts += [self._codec.encode(buf[a : a + PART_POINTS]) for a in range(0, full, PART_POINTS)]
            self._pending, self._pending_points = [buf[full:]], buf.shape[0] - full

    def finish(self) -> _Block | None:
        if not self._ids:
            return None
        if self._pending_points:
            self._parts.append(self._codec.encode(np.concatenate(self._pending)))
        return _Block(np.concatenate(self._ids), np.concatenate(self._lengths), self._parts, self._total)


class TrackHistory:
    """The tracks not handed out yet (sorted by id: first frame, last frame or -1 while live,
    label) and their points so far, in blocks."""

    def __init__(self, *, codec: HistoryCodec | None = None, min_length: int = 1) -> None:
        self.codec: HistoryCodec = _Raw() if codec is None else codec
        self.min_length = min_length
        self.ids = np.empty(0, dtype=np.int64)
        self.start = np.empty(0, dtype=np.int32)
        self.end = np.empty(0, dtype=np.int32)
        self.labels = np.empty(0, dtype=np.uint8)
        self.blocks: list[_Block] = []

    @property
    def stored_points(self) -> int:
        return sum(b.total for b in self.blocks)

    def add_window(
        self, *, new_ids: np.ndarray, new_start: np.ndarray, ids: np.ndarray, lengths: np.ndarray,
        points: np.ndarray, ended_ids: np.ndarray, ended_frame: np.ndarray, ended_labels: np.ndarray,
    ) -> None:
        """Append a window: the tracks seeded in it (ids above every known one), the points it
        recorded (tracks `ids`, sorted, `lengths` points each, track-major), the tracks that
        ended in it (their last frame and label)."""
        self.ids = np.concatenate([self.ids, new_ids])
        self.start = np.concatenate([self.start, new_start.astype(np.int32)])
        self.end = np.concatenate([self.end, np.full(new_ids.shape[0], -1, dtype=np.int32)])
        self.labels = np.concatenate([self.labels, np.full(new_ids.shape[0], VOID, dtype=np.uint8)])
        rows = np.searchsorted(self.ids, ended_ids)
        self.end[rows], self.labels[rows] = ended_frame, ended_labels
        builder = _BlockBuilder(self.codec)
        off = ragged_offsets(lengths)
        step = 1 << 16  # tracks per add: bounded copies of the window's points
        for a in range(0, ids.shape[0], step):
            z = min(a + step, ids.shape[0])
            builder.add(ids[a:z], lengths[a:z], points[off[a] : off[z]])
        block = builder.finish()
        if block is not None:
            self.blocks.append(block)

    def collect(self, frame: int) -> Iterator[TrackSet]:
        """Hand out the tracks that ended at `frame` or before (in id order, batches of about
        OUT_POINTS points) and rewrite the others into one block."""
        total = np.zeros(self.ids.shape[0], dtype=np.int64)
        step = 1 << 20  # entries at a time: no block-sized temporaries
        for block in self.blocks:
            for j in range(0, block.num_tracks, step):
                total[np.searchsorted(self.ids, block.ids(j, j + step))] += block.lengths[j : j + step]
        out = (self.end >= 0) & (self.end <= frame)
        cum = np.cumsum(total)
        cuts = [0, *np.searchsorted(cum, np.arange(OUT_POINTS, int(cum[-1]) if cum.size else 0, OUT_POINTS)).tolist(),
                self.ids.shape[0]]
        kept = _BlockBuilder(self.codec)
        cursors = [(0, 0)] * len(self.blocks)  # per block: entries and points passed so far
        for a, z in zip(cuts[:-1], cuts[1:]):
            if z <= a:
                continue
            lengths = total[a:z]
            # The batch's tracks laid out as: handed out, kept, dropped (too short); each piece
            # is put straight into its place, so both parts come out as slices.
            give = np.flatnonzero(out[a:z] & (lengths >= self.min_length))
            keep = np.flatnonzero(~out[a:z])
            order = np.concatenate([give, keep, np.flatnonzero(out[a:z] & (lengths < self.min_length))])
            off = ragged_offsets(lengths[order])
            row_off = np.empty(z - a, dtype=np.int64)
            row_off[order] = off[:-1]
            buf = np.empty((int(off[-1]), 2), dtype=np.float32)
            flat = point_items(buf)
            for k, block in enumerate(self.blocks):  # oldest first: pieces in frame order
                j0, p0 = cursors[k]
                j1 = block.count_upto(int(self.ids[z - 1]))
                if j1 <= j0:
                    continue
                local = np.searchsorted(self.ids[a:z], block.ids(j0, j1))
                piece = block.lengths[j0:j1].astype(np.int64)
                p1 = p0 + int(piece.sum())
                pieces = block.read(p0, p1, self.codec)
                flat[ragged_ranges(row_off[local], piece)] = point_items(pieces)
                row_off[local] += piece
                cursors[k] = (j1, p1)
            n_give, n_keep = int(lengths[give].sum()), int(lengths[keep].sum())
            if give.size:
                yield TrackSet(num_frames=frame + 1, start=self.start[a + give], offsets=ragged_offsets(lengths[give]),
                               points=buf[:n_give], labels=self.labels[a + give])
            kept.add(self.ids[a + keep], lengths[keep], buf[n_give : n_give + n_keep])
        for block in self.blocks:
            block.release(self.codec)
        merged = kept.finish()
        self.blocks = [] if merged is None else [merged]
        keep = ~out
        self.ids, self.start, self.end, self.labels = self.ids[keep], self.start[keep], self.end[keep], self.labels[keep]
