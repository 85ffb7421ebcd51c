"""The streaming dataset: correspondence pairs, value ranges, and exactly-once sharding over ranks x workers."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from track4gen.data import SegmentStream, model_frames, sample_pairs
from train_fixtures import HEIGHT, LENGTH, WIDTH, make_segment_store

NUM_SEGMENTS = 8


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_segment_store(tmp_path_factory.mktemp("data") / "s.zarr", num_segments=NUM_SEGMENTS)


def toy_tracks(rng: np.random.Generator, n: int = 40, length: int = 6):
    tracks = rng.uniform(0, 50, (n, length, 2)).astype(np.float32)
    visible = rng.random((n, length)) < 0.6
    labels = np.where(np.arange(n) < 10, 1, 0).astype(np.uint8)  # 10 foreground, 30 background
    labels[-3:] = 255  # void tracks must never be drawn
    return tracks, visible, labels


def test_pairs_are_visible_distinct_frames_on_the_same_track():
    rng = np.random.default_rng(0)
    tracks, visible, labels = toy_tracks(rng)
    p = sample_pairs(tracks, visible, labels, num_pairs=64, rng=np.random.default_rng(1))
    assert p["valid"].all()
    assert (p["query_frame"] != p["target_frame"]).all()
    # Each pair's two points are one track's points at the two frames, both visible.
    usable = visible.sum(1) >= 2
    for qf, qxy, tf, txy in zip(p["query_frame"], p["query_xy"], p["target_frame"], p["target_xy"]):
        rows = np.flatnonzero((tracks[:, qf] == qxy).all(1) & (tracks[:, tf] == txy).all(1))
        assert rows.size == 1
        r = rows[0]
        assert visible[r, qf] and visible[r, tf] and usable[r] and labels[r] != 255


def test_pairs_are_balanced_between_foreground_and_background():
    n, length = 400, 5
    tracks = np.arange(n * length * 2, dtype=np.float32).reshape(n, length, 2)
    visible = np.ones((n, length), bool)
    labels = np.zeros(n, np.uint8)
    labels[:100] = 3
    p = sample_pairs(tracks, visible, labels, num_pairs=128, rng=np.random.default_rng(0))
    row = (p["query_xy"][:, 0] // (length * 2)).astype(int)  # tracks are numbered by their values
    assert (labels[row] > 0).sum() == 64 and (labels[row] == 0).sum() == 64


def test_pairs_reuse_tracks_when_short_and_flag_segments_without_any():
    tracks = np.zeros((2, 4, 2), np.float32)
    visible = np.array([[1, 1, 0, 0], [0, 1, 1, 1]], bool)
    p = sample_pairs(tracks, visible, np.zeros(2, np.uint8), num_pairs=10, rng=np.random.default_rng(0))
    assert p["valid"].all() and (p["query_frame"] != p["target_frame"]).all()
    none = sample_pairs(tracks, np.eye(2, 4, dtype=bool), np.zeros(2, np.uint8), num_pairs=5, rng=np.random.default_rng(0))
    assert not none["valid"].any()


def test_frames_scale_to_minus_one_one_channel_first():
    frames = torch.tensor([0, 255, 128], dtype=torch.uint8).reshape(1, 1, 3, 1).repeat(2, 1, 1, 3)  # [2, 1, 3, 3]
    t = model_frames(frames)
    assert t.shape == (2, 3, 1, 3)
    assert t[0, :, 0, 0].tolist() == [-1.0, -1.0, -1.0] and t[0, :, 0, 1].tolist() == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="uint8"):
        model_frames(t)


def test_items_have_the_documented_shapes_and_ranges(store):
    ds = SegmentStream(store, num_pairs=32, rank=0, world_size=1)
    item = next(iter(ds))
    assert item["frames"].shape == (LENGTH, 3, HEIGHT, WIDTH) and item["frames"].dtype == torch.float32
    assert -1.0 <= item["frames"].min().item() < 0 < item["frames"].max().item() <= 1.0
    assert item["query_xy"].shape == (32, 2) and item["valid"].all()
    assert ((item["query_xy"] >= 0) & (item["query_xy"] <= torch.tensor([WIDTH - 1, HEIGHT - 1]))).all()
    raw = next(iter(SegmentStream(store, num_pairs=32, scale_frames=False, rank=0, world_size=1)))
    assert raw["frames"].dtype == torch.uint8 and raw["frames"].shape == (LENGTH, HEIGHT, WIDTH, 3)
    assert torch.equal(model_frames(raw["frames"]), item["frames"])


def epoch_indices(store, epoch: int, *, ranks: int, workers: int, **kw) -> list[int]:
    seen = []
    for rank in range(ranks):
        ds = SegmentStream(store, num_pairs=4, seed=7, rank=rank, world_size=ranks)
        ds.set_epoch(epoch, **kw)
        loader = DataLoader(ds, batch_size=1, num_workers=workers)
        seen += [int(b["index"]) for b in loader]
    return seen


def test_two_ranks_by_two_workers_read_every_segment_exactly_once(store):
    first = epoch_indices(store, 0, ranks=2, workers=2)
    assert Counter(first) == Counter(range(NUM_SEGMENTS))
    second = epoch_indices(store, 1, ranks=2, workers=2)
    assert Counter(second) == Counter(range(NUM_SEGMENTS))
    assert first != second  # a new permutation each epoch
    assert epoch_indices(store, 0, ranks=2, workers=2) == first  # and the same one for the same epoch


def test_resume_skips_exactly_the_batches_already_consumed(store):
    full = epoch_indices(store, 3, ranks=1, workers=2)
    assert epoch_indices(store, 3, ranks=1, workers=2, skip_batches=3, batch_size=1) == full[3:]
    assert epoch_indices(store, 3, ranks=1, workers=0, skip_batches=5, batch_size=1) == full[5:]


def test_uneven_split_drops_the_tail_rather_than_duplicating(store):
    ds = [SegmentStream(store, rank=r, world_size=3) for r in range(3)]
    parts = [list(d.rank_indices(0)) for d in ds]
    assert all(len(p) == NUM_SEGMENTS // 3 for p in parts)
    flat = sum(parts, [])
    assert len(set(flat)) == len(flat)


def test_bad_arguments_are_reported(store, tmp_path):
    with pytest.raises(ValueError, match="rank 2"):
        SegmentStream(store, rank=2, world_size=2)
    with pytest.raises(ValueError, match="num_pairs"):
        SegmentStream(store, num_pairs=0, rank=0, world_size=1)
    with pytest.raises(FileNotFoundError, match="missing.zarr"):
        SegmentStream(tmp_path / "missing.zarr", rank=0, world_size=1)
