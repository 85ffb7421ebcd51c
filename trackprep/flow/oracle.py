"""The oracle backend: the exact flow of a synthetic clip (trackprep.core.synthetic), so that
chaining, labelling and sharding can be tested with the flow error taken out."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from trackprep.core.types import Clip, FlowPair
from trackprep.flow.base import FlowEstimator, check_pairs


_NO_SCENE = (
    "the oracle flow backend needs a synthetic clip carrying its scene (trackprep.core.synthetic Scene.to_clip); "
    "real videos have no ground-truth flow, use --flow raft or dis"
)


class OracleEstimator(FlowEstimator):
    name = "oracle"

    def estimate(self, clip: Clip) -> FlowPair:
        if clip.scene is None:
            raise ValueError(f"clip {clip.name!r}: {_NO_SCENE}")
        return super().estimate(clip)

    def estimate_pairs(
        self, frames: np.ndarray, pairs: Sequence[tuple[int, int]], *, first: int = 0, scene: Any = None
    ) -> FlowPair:
        if scene is None:
            raise ValueError(_NO_SCENE)
        check_pairs(pairs, frames.shape[0])
        height, width = frames.shape[1:3]
        if (scene.height, scene.width) != (height, width):
            # The clip was resized after rendering: take the scene's exact flow at the clip's size.
            scene = scene.rescaled(height=height, width=width)
        last = first + frames.shape[0] - 1
        if last >= scene.num_frames:
            raise ValueError(f"frames {first}..{last} requested, but the scene has {scene.num_frames} frames")
        flow = scene.flow_pairs([(first + a, first + b) for a, b in pairs])
        return FlowPair(forward=flow.forward.float().cpu(), backward=flow.backward.float().cpu())
