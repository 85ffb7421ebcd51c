"""TAP-Vid metrics against hand-computed values (definitions of tapnet's compute_tapvid_metrics)."""

from __future__ import annotations

import numpy as np
import pytest

from trackprep.core.tapvid_metrics import (
    THRESHOLDS,
    evaluation_frames,
    mean_over_videos,
    rescale_points,
    sample_queries,
    sample_queries_first,
    sample_queries_strided,
    tapvid_metrics,
)


def _one_query(gt_xy, pred_xy, gt_occ, pred_occ, *, query_frame, mode):
    gt = np.asarray(gt_xy, dtype=np.float64)[None]
    pred = np.asarray(pred_xy, dtype=np.float64)[None]
    return tapvid_metrics(
        query_frames=np.array([query_frame]), gt_tracks=gt, gt_occluded=np.array([gt_occ], bool),
        pred_tracks=pred, pred_occluded=np.array([pred_occ], bool), mode=mode,
    )


def test_position_accuracy_hand_computed_and_query_frame_not_scored():
    # Query at frame 1 ("first"): only frames 2 and 3 are scored. Frame 0 (before the query)
    # and frame 1 (the query itself) are wildly wrong and must not matter.
    gt = [[0, 0], [10, 10], [20, 20], [30, 30]]
    pred = [[99, 99], [80, 80], [20.5, 20], [33, 30]]  # errors: -, -, 0.5, 3.0
    m = _one_query(gt, pred, [False] * 4, [False] * 4, query_frame=1, mode="first")
    # within 1: {0.5} of 2 -> 0.5; within 2: 0.5; within 4, 8, 16: both -> 1
    assert m["pts_within_1"] == 0.5 and m["pts_within_2"] == 0.5
    assert m["pts_within_4"] == m["pts_within_8"] == m["pts_within_16"] == 1.0
    assert m["position_accuracy"] == pytest.approx((0.5 + 0.5 + 1 + 1 + 1) / 5)
    assert m["occlusion_accuracy"] == 1.0
    # Jaccard at 1 and 2: TP 1, GT positives 2, FP 1 (visible but too far) -> 1/3
    assert m["jaccard_1"] == pytest.approx(1 / 3) and m["jaccard_2"] == pytest.approx(1 / 3)
    assert m["average_jaccard"] == pytest.approx((1 / 3 + 1 / 3 + 1 + 1 + 1) / 5)


def test_thresholds_are_strict():
    # Errors of exactly 1, 2, 4, 8 and 16 px: each fails its own threshold and passes the next.
    errors = [1.0, 2.0, 4.0, 8.0, 16.0]
    gt = np.zeros((5, 2, 2))
    pred = gt.copy()
    pred[:, 1, 0] = errors
    m = tapvid_metrics(
        query_frames=np.zeros(5, int), gt_tracks=gt, gt_occluded=np.zeros((5, 2), bool),
        pred_tracks=pred, pred_occluded=np.zeros((5, 2), bool), mode="first",
    )
    assert [m[f"pts_within_{t}"] for t in THRESHOLDS] == [0.0, 0.2, 0.4, 0.6, 0.8]


def test_visible_prediction_of_occluded_point_is_jaccard_false_positive():
    # Frames 1..3 scored. GT: visible, occluded, visible. Pred: all exact and all visible.
    gt = [[5, 5]] * 4
    m = _one_query(gt, gt, [False, False, True, False], [False] * 4, query_frame=0, mode="first")
    # Positions ignore occlusion: both GT-visible frames are exact.
    assert m["position_accuracy"] == 1.0
    assert m["occlusion_accuracy"] == pytest.approx(2 / 3)
    # TP 2, GT positives 2, FP 1 (frame 2: predicted visible, GT occluded) -> 2/3 at every threshold
    assert m["average_jaccard"] == pytest.approx(2 / 3)
    # Predicting that frame occluded removes the false positive.
    m2 = _one_query(gt, gt, [False, False, True, False], [False, False, True, False], query_frame=0, mode="first")
    assert m2["average_jaccard"] == 1.0 and m2["occlusion_accuracy"] == 1.0


def test_occluded_prediction_of_visible_point_is_a_miss_for_jaccard_only():
    gt = [[5, 5]] * 3
    m = _one_query(gt, gt, [False] * 3, [False, True, False], query_frame=0, mode="first")
    assert m["position_accuracy"] == 1.0  # position ignores predicted occlusion
    assert m["average_jaccard"] == pytest.approx(1 / 2)  # TP 1 of GT positives 2, no FP
    assert m["occlusion_accuracy"] == pytest.approx(1 / 2)


def test_strided_scores_frames_before_the_query_but_not_the_query():
    gt = [[0, 0], [1, 0], [2, 0], [3, 0]]
    pred = [[0, 0], [50, 0], [2, 0], [3, 5]]  # frame 1 is the query frame: its error is ignored
    m = _one_query(gt, pred, [False] * 4, [False] * 4, query_frame=1, mode="strided")
    # scored frames 0, 2, 3: exact, exact, 5 px off -> within 1, 2, 4: 2/3; within 8, 16: 1
    assert m["pts_within_4"] == pytest.approx(2 / 3) and m["pts_within_8"] == 1.0
    m_first = _one_query(gt, pred, [False] * 4, [False] * 4, query_frame=1, mode="first")
    assert m_first["pts_within_4"] == pytest.approx(1 / 2)  # frames 2, 3 only


def test_nan_prediction_is_never_within():
    gt = [[0, 0], [1, 1], [2, 2]]
    pred = [[0, 0], [np.nan, np.nan], [2, 2]]
    m = _one_query(gt, pred, [False] * 3, [False, True, False], query_frame=0, mode="first")
    assert m["position_accuracy"] == 0.5


def test_matches_per_point_loop_on_random_data():
    """The vectorised metrics equal a literal loop over queries and frames."""
    rng = np.random.default_rng(0)
    q, t = 30, 12
    gt = rng.uniform(0, 256, (q, t, 2))
    pred = gt + rng.normal(0, 6, (q, t, 2))
    gt_occ = rng.random((q, t)) < 0.3
    pred_occ = rng.random((q, t)) < 0.3
    frames = rng.integers(0, t, q)
    for mode in ("first", "strided"):
        m = tapvid_metrics(query_frames=frames, gt_tracks=gt, gt_occluded=gt_occ, pred_tracks=pred,
                           pred_occluded=pred_occ, mode=mode)
        agree = scored = vis = 0
        within = dict.fromkeys(THRESHOLDS, 0)
        tp = dict.fromkeys(THRESHOLDS, 0)
        fp = dict.fromkeys(THRESHOLDS, 0)
        for i in range(q):
            for s in range(t):
                if s == frames[i] or (mode == "first" and s < frames[i]):
                    continue
                scored += 1
                agree += gt_occ[i, s] == pred_occ[i, s]
                vis += not gt_occ[i, s]
                d = np.linalg.norm(pred[i, s] - gt[i, s])
                for th in THRESHOLDS:
                    close = d < th
                    within[th] += close and not gt_occ[i, s]
                    tp[th] += close and not gt_occ[i, s] and not pred_occ[i, s]
                    fp[th] += (not pred_occ[i, s]) and (gt_occ[i, s] or not close)
        assert m["occlusion_accuracy"] == pytest.approx(agree / scored)
        assert m["position_accuracy"] == pytest.approx(np.mean([within[th] / vis for th in THRESHOLDS]))
        assert m["average_jaccard"] == pytest.approx(np.mean([tp[th] / (vis + fp[th]) for th in THRESHOLDS]))


def test_evaluation_frames():
    np.testing.assert_array_equal(
        evaluation_frames(np.array([0, 2]), 4, mode="first"), [[0, 1, 1, 1], [0, 0, 0, 1]]
    )
    np.testing.assert_array_equal(
        evaluation_frames(np.array([0, 2]), 4, mode="strided"), [[0, 1, 1, 1], [1, 1, 0, 1]]
    )
    with pytest.raises(ValueError, match=r"query frames must lie in \[0, 3\].*\[0, 4\]"):
        evaluation_frames(np.array([0, 4]), 4, mode="first")


def test_bad_mode_and_shapes_are_rejected():
    z = np.zeros((2, 3, 2))
    with pytest.raises(ValueError, match=r"expected one of \['first', 'strided'\], got 'all'"):
        tapvid_metrics(query_frames=np.zeros(2, int), gt_tracks=z, gt_occluded=np.zeros((2, 3), bool),
                       pred_tracks=z, pred_occluded=np.zeros((2, 3), bool), mode="all")
    with pytest.raises(ValueError, match=r"pred_tracks: expected shape \[2, 3, 2\].*got \[2, 4, 2\]"):
        tapvid_metrics(query_frames=np.zeros(2, int), gt_tracks=z, gt_occluded=np.zeros((2, 3), bool),
                       pred_tracks=np.zeros((2, 4, 2)), pred_occluded=np.zeros((2, 3), bool), mode="first")


def test_rescale_points_pixel_centre_convention():
    # The image edges (-0.5 and W - 0.5) map onto each other; pixel centres scale about them.
    pts = np.array([[-0.5, -0.5], [99.5, 49.5], [0.0, 0.0], [np.nan, 1.0]])
    out = rescale_points(pts, from_size=(50, 100), to_size=(256, 256))
    np.testing.assert_allclose(out[:2], [[-0.5, -0.5], [255.5, 255.5]])
    np.testing.assert_allclose(out[2], [0.5 * 2.56 - 0.5, 0.5 * 5.12 - 0.5], rtol=1e-6)
    assert np.isnan(out[3, 0]) and out[3, 1] == pytest.approx(1.5 * 5.12 - 0.5)
    back = rescale_points(out[:3], from_size=(256, 256), to_size=(50, 100))
    np.testing.assert_allclose(back, pts[:3], atol=1e-5)
    with pytest.raises(ValueError, match=r"expected points \[\.\.\., 2\].*\(4, 3\)"):
        rescale_points(np.zeros((4, 3)), from_size=(1, 1), to_size=(2, 2))


def test_query_sampling():
    occ = np.array([
        [True, False, False, False, False, False, False],   # first visible at 1; visible at 5
        [False, True, True, True, True, True, False],        # visible at 0 only among 0, 5
        [True, True, True, True, True, True, True],          # never visible: dropped
    ])
    rows, frames = sample_queries_first(occ)
    assert rows.tolist() == [0, 1] and frames.tolist() == [1, 0]
    rows, frames = sample_queries_strided(occ)  # frames 0 and 5
    assert rows.tolist() == [1, 0] and frames.tolist() == [0, 5]
    rows2, frames2 = sample_queries(occ, mode="strided")
    assert rows2.tolist() == rows.tolist() and frames2.tolist() == frames.tolist()
    with pytest.raises(ValueError, match="stride: expected an integer >= 1, got 0"):
        sample_queries_strided(occ, stride=0)


def test_mean_over_videos_skips_videos_with_nothing_scored():
    mean = mean_over_videos([{"a": 0.5, "b": 1.0}, {"a": 1.0, "b": float("nan")}])
    assert mean == {"a": 0.75, "b": 1.0}
    with pytest.raises(ValueError, match="no videos"):
        mean_over_videos([])
