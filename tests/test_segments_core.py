"""Segment planning and per-segment track selection (trackprep.core.segments), issue 6."""

import numpy as np
import pytest

from trackprep.core.segments import (
    plan_segments, segment_seed, segment_starts, select_segment_tracks, shard_ranges,
)


def test_tail_rule_of_appendix_a4():
    # 38 frames, L = 24: [0, 24) and the final 24 frames [14, 38) (14 leftover + 10 borrowed).
    assert segment_starts(38, length=24) == [0, 14]
    assert segment_starts(24, length=24) == [0]
    assert segment_starts(48, length=24) == [0, 24]
    assert segment_starts(50, length=24) == [0, 24, 26]
    assert segment_starts(23, length=24) == []
    assert segment_starts(10, length=4, stride=3) == [0, 3, 6]  # 6 + 4 == 10: no tail needed
    assert segment_starts(11, length=4, stride=3) == [0, 3, 6, 7]


@pytest.mark.parametrize("length,stride", [(24, None), (24, 12), (8, 5)])
def test_segments_cover_every_frame_and_stay_inside(length, stride):
    for t in range(1, 120):
        starts = segment_starts(t, length=length, stride=stride)
        if t < length:
            assert starts == []
            continue
        assert starts == sorted(set(starts)) and starts[0] == 0 and starts[-1] == t - length
        covered = np.zeros(t, bool)
        for s in starts:
            covered[s : s + length] = True
        assert covered.all(), (t, starts)


def test_plan_lists_short_videos_as_skipped():
    plan = plan_segments([("d/a", 38), ("d/b", 10), ("d/c", 24)], length=24)
    assert plan.videos == ("d/a", "d/a", "d/c") and plan.starts == (0, 14, 0)
    assert plan.skipped == (("d/b", 10),)
    assert len(plan) == 3


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_bad_lengths_are_refused_with_the_value(bad):
    with pytest.raises(ValueError, match=f"length: expected an integer >= 1, got {bad!r}"):
        segment_starts(30, length=bad)


def test_shard_ranges_partition_the_segments():
    assert shard_ranges(10, segments_per_shard=4) == [range(0, 4), range(4, 8), range(8, 10)]
    assert shard_ranges(0, segments_per_shard=4) == []


def test_segment_seed_is_stable_and_distinct():
    assert segment_seed(3, "davis/cows", 14) == segment_seed(3, "davis/cows", 14)
    assert segment_seed(3, "davis/cows", 14) == (3, 163714119, 14)  # CRC-32 of the key: the same in every process
    assert segment_seed(3, "davis/cows", 14) != segment_seed(3, "davis/dog", 14)


def test_selection_keeps_tracks_seen_twice_with_exact_class_shares():
    rng = np.random.default_rng(0)
    n_tracks, L = 5000, 24
    visible = rng.random((n_tracks, L)) < 0.08  # many tracks are seen in 0 or 1 frame
    labels = rng.choice(np.array([0, 1, 2, 255], np.uint8), n_tracks, p=[0.6, 0.15, 0.15, 0.1])
    rows = select_segment_tracks(visible, labels, n=400, fg_share=0.5, seed=(1, 2, 3))
    assert rows.dtype == np.int64 and np.all(np.diff(rows) > 0)
    assert visible[rows].sum(1).min() >= 2
    fg = ((labels[rows] > 0) & (labels[rows] != 255)).sum()
    assert len(rows) == 400 and fg == 200 and (labels[rows] == 0).sum() == 200
    # same seed, same draw; other seed, other draw
    assert np.array_equal(rows, select_segment_tracks(visible, labels, n=400, seed=(1, 2, 3)))
    assert not np.array_equal(rows, select_segment_tracks(visible, labels, n=400, seed=(1, 2, 4)))


def test_selection_takes_all_eligible_when_fewer_than_n():
    visible = np.zeros((6, 4), bool)
    visible[[0, 2, 3, 5], :2] = True
    visible[1, 0] = True  # one frame only: dropped
    labels = np.array([0, 1, 255, 1, 3, 0], np.uint8)  # row 2 void: never drawn; row 4 never visible
    rows = select_segment_tracks(visible, labels, n=100, seed=0)
    assert rows.tolist() == [0, 3, 5]


def test_selection_rejects_mismatched_labels():
    with pytest.raises(ValueError, match=r"labels: expected \[3\]"):
        select_segment_tracks(np.ones((3, 4), bool), np.zeros(2, np.uint8), n=1, seed=0)
