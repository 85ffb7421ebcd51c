"""The oracle backend: the exact flow of a synthetic clip (trackprep.core.synthetic), so that
chaining, labelling and sharding can be tested with the flow error taken out."""

from __future__ import annotations

from trackprep.core.types import Clip, FlowPair
from trackprep.flow.base import FlowEstimator


class OracleEstimator(FlowEstimator):
    name = "oracle"

    def estimate(self, clip: Clip) -> FlowPair:
        self._check_clip(clip)
        scene = clip.scene
        if scene is None:
            raise ValueError(
                f"clip {clip.name!r}: the oracle flow backend needs a synthetic clip carrying its scene "
                f"(trackprep.core.synthetic Scene.to_clip); real videos have no ground-truth flow, use --flow raft or dis"
            )
        height, width = clip.size
        flow = scene.flow()
        if tuple(flow.forward.shape[-2:]) != (height, width):
            # The clip was resized after rendering: take the scene's exact flow at the clip's size.
            flow = scene.rescaled(height=height, width=width).flow()
        if flow.num_frames != clip.num_frames:
            raise ValueError(
                f"clip {clip.name!r}: has {clip.num_frames} frames but its scene has {flow.num_frames}"
            )
        return FlowPair(forward=flow.forward.float().cpu(), backward=flow.backward.float().cpu())
