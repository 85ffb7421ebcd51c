"""Answering (t, x, y) queries from dense tracks: known answers for the documented rule."""

from __future__ import annotations

import numpy as np
import pytest

from trackprep.core.track_query import check_queries, nearest_tracks, query_tracks


def _grid_tracks(h, w, t, velocity):
    """A track at every pixel of frame 0 translating by `velocity` px/frame."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    start = np.stack([xs.ravel(), ys.ravel()], axis=1)
    steps = np.arange(t, dtype=np.float32)[None, :, None] * np.asarray(velocity, np.float32)
    return start[:, None, :] + steps, np.ones((h * w, t), bool)


@pytest.mark.parametrize("k", [1, 4])
def test_constant_translation_is_followed_exactly(k):
    tracks, visible = _grid_tracks(12, 16, 6, (1.5, -0.5))
    queries = np.array([[2, 10.3, 7.6], [0, 3.0, 4.0], [5, 0.2, 0.9]])
    pred, pred_vis = query_tracks(tracks, visible, queries, k=k)
    expected = queries[:, None, 1:] + (np.arange(6)[None, :, None] - queries[:, :1, None]) * np.array([1.5, -0.5])
    np.testing.assert_allclose(pred, expected, atol=1e-4)
    assert pred_vis.all()


def test_inverse_distance_blend_of_close_neighbours():
    # Two tracks at frame 0: A at (0, 0) moving +1 px/frame in x, B at (2, 0) moving +1 in y.
    tracks = np.array([[[0, 0], [1, 0], [2, 0]], [[2, 0], [2, 1], [2, 2]]], np.float32)
    visible = np.ones((2, 3), bool)
    q = np.array([[0, 0.5, 0.0]])  # 0.5 px from A, 1.5 px from B -> weights 2 : 2/3 = 0.75 : 0.25
    pred, vis = query_tracks(tracks, visible, q, k=2, radius=2.0)
    np.testing.assert_allclose(pred[0], [[0.5, 0], [0.5 + 0.75, 0.25], [0.5 + 1.5, 0.5]], atol=1e-6)
    assert vis.all()
    # Beyond the radius only the nearest is followed, keeping the query's offset from it.
    pred1, _ = query_tracks(tracks, visible, q, k=2, radius=1.0)
    np.testing.assert_allclose(pred1[0], [[0.5, 0], [1.5, 0], [2.5, 0]], atol=1e-6)
    # A query exactly on a track follows that track alone.
    pred2, _ = query_tracks(tracks, visible, np.array([[1, 2.0, 1.0]]), k=2, radius=5.0)
    np.testing.assert_allclose(pred2[0], tracks[1], atol=1e-6)


def test_visibility_is_a_weighted_vote_and_positions_use_defined_neighbours():
    # A (nearest, weight 0.75) ends after frame 1; B (0.25) goes on.
    tracks = np.array([[[0, 0], [1, 0], [np.nan, np.nan]], [[2, 0], [2, 1], [2, 2]]], np.float32)
    visible = np.array([[True, True, False], [True, True, True]])
    pred, vis = query_tracks(tracks, visible, np.array([[0, 0.5, 0.0]]), k=2, radius=2.0)
    assert vis[0].tolist() == [True, True, False]
    np.testing.assert_allclose(pred[0, 2], [0.5, 2.0], atol=1e-6)  # B's displacement alone
    # The other way round, the far neighbour ending does not make the point occluded.
    pred, vis = query_tracks(tracks, visible, np.array([[0, 1.5, 0.0]]), k=2, radius=2.0)
    assert vis[0].tolist() == [True, True, True]


def test_only_tracks_defined_at_the_query_frame_are_candidates_and_none_gives_nan():
    tracks = np.array([[[5, 5], [np.nan, np.nan], [np.nan, np.nan]], [[np.nan, np.nan], [9, 9], [10, 9]]], np.float32)
    visible = ~np.isnan(tracks[..., 0])
    # At frame 1 only track 1 exists, although track 0's frame-0 point is closer to (5, 5).
    pred, vis = query_tracks(tracks, visible, np.array([[1, 5.0, 5.0]]), k=4)
    np.testing.assert_allclose(pred[0, 1:], [[5, 5], [6, 5]])
    assert vis[0].tolist() == [False, True, True] and np.isnan(pred[0, 0]).all()
    # No track at all at frame 2 for a video whose tracks end early: NaN and occluded.
    pred, vis = query_tracks(tracks[:1], visible[:1], np.array([[2, 1.0, 1.0]]), k=4)
    assert np.isnan(pred).all() and not vis.any()


@pytest.mark.parametrize("extent", [50.0, 2000.0])  # dense, and so sparse that few tracks lie within 8 px
def test_reading_in_blocks_gives_the_same_answer(extent):
    rng = np.random.default_rng(1)
    n, t = 500, 8
    tracks = rng.uniform(0, extent, (n, t, 2)).astype(np.float32)
    visible = rng.random((n, t)) < 0.7
    tracks[~visible] = np.nan
    queries = np.stack([rng.integers(0, t, 40), rng.uniform(0, extent, 40), rng.uniform(0, extent, 40)], 1)
    whole = query_tracks(tracks, visible, queries, k=4, radius=3.0)
    blocks = query_tracks(tracks, visible, queries, k=4, radius=3.0, rows_per_chunk=37)
    np.testing.assert_array_equal(whole[0], blocks[0])
    np.testing.assert_array_equal(whole[1], blocks[1])
    d1, r1, _, _ = nearest_tracks(tracks, visible, queries, k=4, rows_per_chunk=37)
    # brute force: nearest rows among those defined at each query's frame
    for i, (qt, x, y) in enumerate(queries):
        cand = np.flatnonzero(visible[:, int(qt)])
        dist = np.hypot(tracks[cand, int(qt), 0] - x, tracks[cand, int(qt), 1] - y)
        order = np.argsort(dist)[:4]
        np.testing.assert_allclose(d1[i], dist[order], rtol=1e-6)
        assert set(r1[i]) == set(cand[order])


def test_query_validation():
    with pytest.raises(ValueError, match=r"expected \[Q, 3\] rows of \(t, x, y\), got shape \(2, 2\)"):
        check_queries(np.zeros((2, 2)), 5)
    with pytest.raises(ValueError, match=r"integer in \[0, 4\], got values in \[0.0, 5.0\]"):
        check_queries(np.array([[0, 1, 1], [5, 1, 1]]), 5)
    with pytest.raises(ValueError, match=r"integer in \[0, 4\], got values in \[1.5, 1.5\]"):
        check_queries(np.array([[1.5, 1, 1]]), 5)
    with pytest.raises(ValueError, match=r"tracks/visible: expected \[N, T, 2\] and \[N, T\]"):
        query_tracks(np.zeros((3, 4, 2)), np.zeros((3, 5), bool), np.zeros((1, 3)))
