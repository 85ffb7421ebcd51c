"""BADJA-style PCK against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from trackprep.core.pck import FIXED_THRESHOLD_PX, foreground_areas, pck, segmentation_pck


def _tracks(errors_per_frame):
    """One query whose prediction is off by the given x errors, frame by frame."""
    errs = np.asarray(errors_per_frame, dtype=np.float64)
    gt = np.zeros((1, errs.size, 2))
    pred = gt.copy()
    pred[0, :, 0] = errs
    return pred, gt


def test_fixed_threshold_is_strict_and_scores_only_visible_evaluated_points():
    pred, gt = _tracks([0.0, 2.9, 3.0, 3.1, 0.0, 0.0])
    visible = np.array([[True, True, True, True, False, True]])
    evaluated = np.array([[False, True, True, True, True, False]])  # query at 0; frame 5 excluded
    # scored: frames 1, 2, 3 (frame 4 occluded) -> only 2.9 < 3
    assert pck(pred_tracks=pred, gt_tracks=gt, gt_visible=visible, thresholds=FIXED_THRESHOLD_PX,
               evaluated=evaluated) == pytest.approx(1 / 3)
    # without `evaluated`, frames 0 and 5 (exact) count too: 3 of 5
    assert pck(pred_tracks=pred, gt_tracks=gt, gt_visible=visible, thresholds=3.0) == pytest.approx(3 / 5)


def test_segmentation_threshold_from_foreground_area():
    masks = np.zeros((3, 20, 20), np.uint8)
    masks[0, :10, :10] = 1  # area 100 -> threshold 0.2 * 10 = 2
    masks[1, :5, :5] = 2  # area 25 -> threshold 1
    masks[1, 10:, 10:] = 255  # void is not foreground
    masks[2, :20, :20] = 1  # area 400 -> threshold 4
    areas = foreground_areas(masks)
    np.testing.assert_array_equal(areas, [100, 25, 400])
    pred, gt = _tracks([1.9, 1.0, 3.9])
    visible = np.ones((1, 3), bool)
    # frame 0: 1.9 < 2 yes; frame 1: 1.0 < 1 no (strict); frame 2: 3.9 < 4 yes
    assert segmentation_pck(pred_tracks=pred, gt_tracks=gt, gt_visible=visible, areas=areas) == pytest.approx(2 / 3)
    # a frame without a mask (NaN area) is not scored
    areas[1] = np.nan
    assert segmentation_pck(pred_tracks=pred, gt_tracks=gt, gt_visible=visible, areas=areas) == 1.0


def test_nan_prediction_is_wrong_and_empty_is_nan():
    pred, gt = _tracks([0.0, np.nan])
    vis = np.ones((1, 2), bool)
    assert pck(pred_tracks=pred, gt_tracks=gt, gt_visible=vis, thresholds=3.0) == 0.5
    assert np.isnan(pck(pred_tracks=pred, gt_tracks=gt, gt_visible=~vis, thresholds=3.0))


def test_shape_errors_name_the_argument():
    pred, gt = _tracks([0.0, 1.0])
    with pytest.raises(ValueError, match=r"gt_visible: expected shape \[1, 2\], got \[1, 3\]"):
        pck(pred_tracks=pred, gt_tracks=gt, gt_visible=np.ones((1, 3), bool), thresholds=3.0)
    with pytest.raises(ValueError, match=r"areas: expected one per frame, shape \[2\], got \[3\]"):
        segmentation_pck(pred_tracks=pred, gt_tracks=gt, gt_visible=np.ones((1, 2), bool), areas=np.ones(3))
    with pytest.raises(ValueError, match=r"masks: expected \[T, H, W\]"):
        foreground_areas(np.zeros((4, 4)))
