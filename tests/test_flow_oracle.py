"""The oracle backend returns a synthetic clip's exact flow, at the clip's own size."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trackprep.core.resize import resize_frames, resize_masks
from trackprep.core.synthetic import make_scene
from trackprep.core.types import Clip
from trackprep.flow import make_estimator


def test_oracle_returns_the_scene_flow():
    scene = make_scene(seed=1, num_frames=3, height=64, width=96)
    clip = scene.to_clip("s")
    flow = make_estimator("oracle").estimate(clip)
    exact = scene.flow()
    assert torch.equal(flow.forward, exact.forward) and torch.equal(flow.backward, exact.backward)
    assert flow.forward.abs().max() > 0.5


def test_oracle_follows_a_resized_clip():
    scene = make_scene(seed=1, num_frames=3, height=64, width=96)
    frames, masks = scene.render()
    small = Clip(
        "s", resize_frames(frames, size=(32, 48)), resize_masks(masks, size=(32, 48)), np.ones(3, bool), scene=scene
    )
    flow = make_estimator("oracle").estimate(small)
    assert flow.forward.shape == (2, 2, 32, 48)
    torch.testing.assert_close(flow.forward, scene.rescaled(height=32, width=48).flow().forward)
    # half the resolution, half the motion (up to occlusion boundaries)
    assert float(flow.forward.abs().median()) == pytest.approx(float(scene.flow().forward.abs().median()) / 2, rel=0.1)


def test_oracle_on_real_video_is_a_clear_error():
    frames = np.zeros((2, 8, 8, 3), np.uint8)
    clip = Clip("blackswan", frames, np.zeros((2, 8, 8), np.uint8), np.zeros(2, bool))
    with pytest.raises(ValueError, match=r"'blackswan'.*synthetic clip"):
        make_estimator("oracle").estimate(clip)
