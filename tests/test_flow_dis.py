"""OpenCV DIS backend: accuracy on real ground truth (Middlebury Grove3), direction of the two
flows, and dense tracks chained from it on a synthetic clip with exact ground truth."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trackprep.core.chaining import chain_tracks
from trackprep.core.flow_metrics import flow_errors
from trackprep.core.synthetic import make_scene
from trackprep.core.types import Clip, FlowPair
from trackprep.flow import FlowSetupError, make_estimator
from trackprep.flow.evaluate import evaluate_pair


def test_dis_on_middlebury_grove3_is_accurate(shared_data):
    grove3 = shared_data / "middlebury" / "Grove3"
    errors = evaluate_pair(
        grove3 / "frame10_gray.png", grove3 / "frame11_gray.png", gt=grove3 / "flow10.flo", estimator=make_estimator("dis")
    )
    assert errors.num_valid == 640 * 480
    assert errors.aepe < 1.2, errors.summary()
    assert 0.0 < errors.over_3px < errors.over_1px < 1.0


def shifted_pair(dx: int, dy: int, *, height: int = 96, width: int = 128) -> Clip:
    """Frame 1 is frame 0 with its content moved by (+dx, +dy) pixels."""
    rng = np.random.default_rng(3)
    big = rng.integers(0, 256, (height // 4 + 8, width // 4 + 8, 3)).astype(np.float32)
    big = torch.nn.functional.interpolate(torch.from_numpy(big).permute(2, 0, 1)[None], scale_factor=4, mode="bicubic")
    big = big[0].permute(1, 2, 0).clamp(0, 255).numpy().astype(np.uint8)
    m = 12
    f0 = big[m : m + height, m : m + width]
    f1 = big[m - dy : m - dy + height, m - dx : m - dx + width]
    frames = np.stack([f0, f1])
    return Clip("shift", frames, np.zeros((2, height, width), np.uint8), np.zeros(2, bool))


def test_forward_points_along_the_motion_and_backward_against_it():
    flow = make_estimator("dis").estimate(shifted_pair(3, -2))
    inner = (slice(None), slice(16, -16), slice(16, -16))
    fwd, bwd = flow.forward[0][inner], flow.backward[0][inner]
    assert fwd[0].median() == pytest.approx(3.0, abs=0.25) and fwd[1].median() == pytest.approx(-2.0, abs=0.25)
    assert bwd[0].median() == pytest.approx(-3.0, abs=0.25) and bwd[1].median() == pytest.approx(2.0, abs=0.25)


def test_greyscale_frames_are_accepted(tmp_path):
    from PIL import Image

    from trackprep.io.flo import write_flo

    clip = shifted_pair(2, 0)
    for i in range(2):
        Image.fromarray(clip.frames[i].mean(-1).astype(np.uint8), mode="L").save(tmp_path / f"{i}.png")
    gt = np.zeros((96, 128, 2), np.float32)
    gt[..., 0] = 2.0
    write_flo(tmp_path / "gt.flo", gt)
    errors = evaluate_pair(tmp_path / "0.png", tmp_path / "1.png", gt=tmp_path / "gt.flo", estimator=make_estimator("dis"))
    assert errors.aepe < 0.5, errors.summary()
    # a missing or truncated frame is named, with what was expected
    with pytest.raises(ValueError, match=r"2\.png: file not found; expected an image"):
        evaluate_pair(tmp_path / "0.png", tmp_path / "2.png", gt=tmp_path / "gt.flo", estimator=make_estimator("dis"))
    (tmp_path / "1.png").write_bytes((tmp_path / "1.png").read_bytes()[:200])
    with pytest.raises(ValueError, match=r"1\.png: cannot decode image"):
        evaluate_pair(tmp_path / "0.png", tmp_path / "1.png", gt=tmp_path / "gt.flo", estimator=make_estimator("dis"))


def _median_track_error(scene, flow: FlowPair, *, frames: int) -> float:
    tracks = chain_tracks(flow, seed_stride=4)
    rows = np.nonzero(tracks.start == 0)[0]
    pred, defined = tracks.dense(rows)
    queries = np.concatenate([np.zeros((rows.size, 1)), pred[:, 0]], axis=1)  # (t=0, x, y)
    gt, gt_visible = scene.ground_truth(queries)
    use = defined[:, 1:frames] & gt_visible[:, 1:frames]
    assert use.sum() > 1000
    return float(np.median(np.linalg.norm(pred[:, 1:frames] - gt[:, 1:frames], axis=-1)[use]))


def test_dis_flow_chained_by_the_core_tracks_a_synthetic_clip():
    scene = make_scene(seed=0, num_frames=8, height=160, width=288, max_speed=3.0)
    clip = scene.to_clip("synthetic")
    flow = make_estimator("dis").estimate(clip)
    assert _median_track_error(scene, flow, frames=8) < 1.5
    # The measure can fail: the same flows with directions swapped track badly.
    swapped = FlowPair(forward=flow.backward, backward=flow.forward)
    assert _median_track_error(scene, swapped, frames=8) > 1.5


def test_dis_presets():
    for preset in ("ultrafast", "fast", "MEDIUM"):
        assert make_estimator("dis", dis_preset=preset).config()["dis_preset"] == preset.lower()
    with pytest.raises(FlowSetupError, match="'slow'"):
        make_estimator("dis", dis_preset="slow")


def test_a_one_frame_clip_is_refused():
    clip = shifted_pair(0, 0)
    one = Clip("one", clip.frames[:1], clip.masks[:1], clip.has_mask[:1])
    with pytest.raises(ValueError, match="at least 2 frames"):
        make_estimator("dis").estimate(one)


def test_flow_errors_on_known_answers():
    gt = np.zeros((4, 5, 2), np.float32)
    pred = gt.copy()
    pred[..., 0] = 2.0  # every pixel off by exactly 2 px
    pred[0, 0] = (3.0, 4.0)  # one pixel off by 5 px
    e = flow_errors(pred, gt)
    assert e.aepe == pytest.approx((19 * 2.0 + 5.0) / 20)
    assert e.over_1px == 1.0 and e.over_3px == pytest.approx(1 / 20) and e.num_valid == 20
    gt[0, 0] = 1e10  # Middlebury's "unknown" marker: left out
    e = flow_errors(pred, gt)
    assert e.num_valid == 19 and e.aepe == pytest.approx(2.0) and e.over_3px == 0.0
    with pytest.raises(ValueError, match=r"\(4, 5, 2\) and \(5, 4, 2\)"):
        flow_errors(pred, np.zeros((5, 4, 2)))
