"""Optical-flow accuracy against ground truth: average end-point error (AEPE) and the share
of pixels whose end-point error exceeds 1 px and 3 px (the measures Middlebury and Sintel
report; KITTI's outlier rate uses 3 px)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Middlebury marks pixels of unknown flow with values above 1e9 (flow-code's UNKNOWN_FLOW_THRESH).
UNKNOWN_FLOW_THRESHOLD = 1e9


@dataclass(frozen=True)
class FlowErrors:
    aepe: float  # average end-point error over valid pixels, in px
    over_1px: float  # fraction in [0, 1] of valid pixels with error > 1 px
    over_3px: float  # fraction in [0, 1] of valid pixels with error > 3 px
    num_valid: int  # pixels counted

    def summary(self) -> str:
        return (
            f"AEPE {self.aepe:.4f} px   >1px {100 * self.over_1px:.2f} %   >3px {100 * self.over_3px:.2f} %"
            f"   ({self.num_valid} pixels)"
        )


def flow_errors(pred: np.ndarray, gt: np.ndarray, *, valid: np.ndarray | None = None) -> FlowErrors:
    """Compare flows [H, W, 2] (dx, dy). Pixels whose ground truth is non-finite or marked
    unknown (> 1e9) are left out, and so are pixels where `valid` (bool [H, W]) is False."""
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    if pred.ndim != 3 or pred.shape[-1] != 2 or pred.shape != gt.shape:
        raise ValueError(f"flow_errors: expected predicted and ground-truth flow [H, W, 2] of one shape, got {pred.shape} and {gt.shape}")
    known = np.isfinite(gt).all(-1) & (np.abs(gt) < UNKNOWN_FLOW_THRESHOLD).all(-1)
    if valid is not None:
        if valid.shape != known.shape:
            raise ValueError(f"flow_errors: valid mask must be {known.shape}, got {valid.shape}")
        known &= valid.astype(bool)
    if not known.any():
        raise ValueError("flow_errors: no pixel has known ground-truth flow")
    epe = np.linalg.norm(pred - gt, axis=-1)[known]
    return FlowErrors(
        aepe=float(epe.mean()),
        over_1px=float((epe > 1.0).mean()),
        over_3px=float((epe > 3.0).mean()),
        num_valid=int(known.sum()),
    )
