"""Flow accuracy on an image pair with ground truth (e.g. Middlebury): the work behind
`trackprep eval-flow`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from trackprep.core.flow_metrics import FlowErrors, flow_errors
from trackprep.core.types import Clip
from trackprep.flow.base import FlowEstimator
from trackprep.io.datasets.base import load_rgb
from trackprep.io.flo import read_flo


def evaluate_pair(frame1: str | Path, frame2: str | Path, *, gt: str | Path, estimator: FlowEstimator) -> FlowErrors:
    """Errors of the estimator's forward flow frame1 -> frame2 against the .flo ground truth."""
    estimator.check_ready()  # missing weights stop us before any file is decoded
    gt_flow = read_flo(gt)
    # The dataset readers' decoder: greyscale (Middlebury's *_gray.png) becomes 3 equal channels,
    # and a missing or truncated file is a ValueError naming it.
    a, b = load_rgb(Path(frame1)), load_rgb(Path(frame2))
    if a.shape != b.shape:
        raise ValueError(f"frames {str(frame1)!r} {a.shape[:2]} and {str(frame2)!r} {b.shape[:2]}: expected one size")
    if gt_flow.shape[:2] != a.shape[:2]:
        raise ValueError(
            f"ground truth {str(gt)!r} is {gt_flow.shape[1]}x{gt_flow.shape[0]} (WxH), "
            f"expected the frames' size {a.shape[1]}x{a.shape[0]}"
        )
    frames = np.stack([a, b])
    clip = Clip(
        name=Path(frame1).stem, frames=frames, masks=np.zeros(frames.shape[:3], np.uint8), has_mask=np.zeros(2, bool)
    )
    flow = estimator.estimate(clip)
    return flow_errors(flow.forward[0].permute(1, 2, 0).numpy(), gt_flow)
