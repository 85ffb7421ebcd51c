"""Streaming training items from a segment store (trackprep shard's output).

Each epoch visits the segments in a permutation seeded by (seed, epoch); the permutation is
split by distributed rank, then by DataLoader worker, so every segment is read exactly once
per epoch across all processes (the tail that does not divide evenly among ranks is dropped
for that epoch, as DistributedSampler(drop_last=True) does, so that no rank waits on another).
All randomness is derived from (seed, epoch, segment index) when an item is made: nothing is
seeded at import or construction, and an item does not depend on the worker layout.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from trackprep.core.balance import balanced_subsample
from trackprep.io.segment_store import SegmentReader

NUM_PAIRS = 512  # Track4Gen follows DINO-Tracker: 512 correspondences per step, half fg, half bg
FG_SHARE = 0.5


def sample_pairs(
    tracks: np.ndarray,
    visible: np.ndarray,
    labels: np.ndarray,
    *,
    num_pairs: int,
    fg_share: float = FG_SHARE,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """`num_pairs` correspondences (query frame i + point, target frame j + point), i != j, both visible.

    tracks float [N, L, 2], visible bool [N, L], labels uint8 [N] (padding rows already cut).
    Tracks are drawn balanced between foreground and background (255 never); when fewer usable
    tracks than pairs exist, tracks are reused with fresh frame pairs. `valid` is False only
    when the segment has no track visible in two frames.
    """
    if num_pairs < 1:
        raise ValueError(f"num_pairs must be >= 1, got {num_pairs}")
    length = visible.shape[1]
    usable = np.flatnonzero(visible.sum(axis=1) >= 2)
    out = {
        "query_frame": np.zeros(num_pairs, np.int64),
        "query_xy": np.zeros((num_pairs, 2), np.float32),
        "target_frame": np.zeros(num_pairs, np.int64),
        "target_xy": np.zeros((num_pairs, 2), np.float32),
        "valid": np.zeros(num_pairs, bool),
    }
    rows = usable[balanced_subsample(labels[usable], n=num_pairs, fg_share=fg_share, seed=int(rng.integers(2**63)))]
    if rows.size == 0:
        return out
    rows = rng.permutation(np.resize(rows, num_pairs))  # reuse tracks when short
    # Two distinct visible frames per pair: the two largest random keys among visible frames.
    keys = np.where(visible[rows], rng.random((num_pairs, length)), -1.0)
    two = np.argsort(-keys, axis=1)[:, :2]
    qi, ti = two[:, 0], two[:, 1]
    out["query_frame"][:] = qi
    out["target_frame"][:] = ti
    out["query_xy"][:] = tracks[rows, qi]
    out["target_xy"][:] = tracks[rows, ti]
    out["valid"][:] = True
    return out


def model_frames(frames: torch.Tensor) -> torch.Tensor:
    """uint8 [..., H, W, 3] -> float32 [..., 3, H, W] in [-1, 1] (SVD's VAE input range), on frames' device.

    The trainer calls this after moving the uint8 batch to the GPU: a float copy is 4x the
    bytes to decode, pass between worker processes and pin, and is the largest CPU cost of
    an item at 24 x 320 x 576.
    """
    if frames.dtype != torch.uint8 or frames.shape[-1] != 3:
        raise ValueError(f"model_frames: expected uint8 [..., H, W, 3], got {frames.dtype} {tuple(frames.shape)}")
    return frames.movedim(-1, -3).float().div_(127.5).sub_(1.0)


def _default_rank() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


class SegmentStream(IterableDataset):
    """Training items from a segment store, shuffled per epoch, split by rank then worker.

    Item: frames float32 [L, 3, H, W] in [-1, 1] (or, with scale_frames=False, the stored
    uint8 [L, H, W, 3] for `model_frames` to scale on the GPU); query_frame, target_frame
    int64 [K]; query_xy, target_xy float32 [K, 2] (x, y) pixels; valid bool [K]; index int64.
    Call `set_epoch(e)` before each epoch (as with DistributedSampler).
    """

    def __init__(
        self,
        store: str | os.PathLike,
        *,
        num_pairs: int = NUM_PAIRS,
        fg_share: float = FG_SHARE,
        seed: int = 0,
        shuffle: bool = True,
        scale_frames: bool = True,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        super().__init__()
        self.reader = SegmentReader(store)
        if num_pairs < 1:
            raise ValueError(f"num_pairs must be >= 1, got {num_pairs}")
        if rank is None or world_size is None:
            rank, world_size = _default_rank()
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in 0..world_size-1 (world_size={world_size})")
        if len(self.reader) < world_size:
            raise ValueError(
                f"{Path(store)}: {len(self.reader)} segments cannot be split over {world_size} processes"
            )
        self.num_pairs, self.fg_share, self.seed, self.shuffle = num_pairs, fg_share, seed, shuffle
        self.scale_frames = scale_frames
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self.skip_batches = 0
        self.batch_size = 1

    def set_epoch(self, epoch: int, *, skip_batches: int = 0, batch_size: int = 1) -> None:
        """Select the epoch; skip the first `skip_batches` batches of it (used on resume)."""
        self.epoch, self.skip_batches, self.batch_size = int(epoch), int(skip_batches), int(batch_size)

    @property
    def segments_per_rank(self) -> int:
        return len(self.reader) // self.world_size

    def epoch_order(self, epoch: int) -> np.ndarray:
        n = len(self.reader)
        return np.random.default_rng([self.seed, epoch]).permutation(n) if self.shuffle else np.arange(n)

    def rank_indices(self, epoch: int, *, worker: int = 0, num_workers: int = 1) -> np.ndarray:
        """The segments worker `worker` of this rank reads in `epoch`, in order."""
        order = self.epoch_order(epoch)[: self.segments_per_rank * self.world_size]
        return order[self.rank :: self.world_size][worker::num_workers]

    def item(self, index: int, epoch: int) -> dict[str, torch.Tensor]:
        seg = self.reader.read(int(index))
        n = seg["num_tracks"]
        rng = np.random.default_rng([self.seed, epoch, int(index)])
        pairs = sample_pairs(seg["tracks"][:n], seg["visible"][:n], seg["labels"][:n],
                             num_pairs=self.num_pairs, fg_share=self.fg_share, rng=rng)
        item = {k: torch.from_numpy(v) for k, v in pairs.items()}
        frames = torch.from_numpy(seg["frames"])
        item["frames"] = model_frames(frames) if self.scale_frames else frames
        item["index"] = torch.tensor(int(index), dtype=torch.int64)
        return item

    def __iter__(self):
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        # DataLoader takes whole batches from its workers in turn (0, 1, ..., 0, 1, ...), so batch
        # b of the epoch comes from worker b % num_workers. After skipping s batches, worker w
        # plays the part of worker (w + s) % num_workers, and the epoch continues in the same order.
        role = (worker + self.skip_batches) % num_workers
        indices = self.rank_indices(self.epoch, worker=role, num_workers=num_workers)
        done_here = len(range(role, self.skip_batches, num_workers)) * self.batch_size
        for index in indices[done_here:]:
            yield self.item(int(index), self.epoch)
