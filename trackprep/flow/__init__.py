"""Optical flow between consecutive frames: RAFT (default), OpenCV DIS, or a synthetic oracle.

`make_estimator` builds one by name; call its `check_ready()` before reading any video so
missing weights or an unavailable device stop a run at once.
"""

from __future__ import annotations

from pathlib import Path

from trackprep.flow.base import DEFAULT_ITERS, FlowEstimator, FlowSetupError, select_device
from trackprep.flow.dis import DIS_PRESETS, DisEstimator
from trackprep.flow.oracle import OracleEstimator

FLOW_BACKENDS = ("raft", "dis", "oracle")


def make_estimator(
    name: str,
    *,
    raft_model: str = "large",
    raft_weights: str | Path | None = None,
    iters: int = DEFAULT_ITERS,
    batch_size: int | None = None,
    device: str = "auto",
    half: bool | str = False,
    dis_preset: str = "medium",
) -> FlowEstimator:
    """The estimator called `name` (one of FLOW_BACKENDS); options of other backends are ignored."""
    if name == "raft":
        from trackprep.flow.raft import RaftEstimator  # torchvision only when RAFT is asked for

        return RaftEstimator(
            model=raft_model, weights=raft_weights, iters=iters, batch_size=batch_size, device=device, half=half
        )
    if name == "dis":
        return DisEstimator(preset=dis_preset)
    if name == "oracle":
        return OracleEstimator()
    raise FlowSetupError(f"flow backend: expected one of {list(FLOW_BACKENDS)}, got {name!r}")


def __getattr__(name: str):
    # RaftEstimator is imported on first use: torchvision costs DIS- and oracle-only runs ~1.5 s and ~160 MB.
    if name == "RaftEstimator":
        from trackprep.flow.raft import RaftEstimator

        return RaftEstimator
    raise AttributeError(f"module 'trackprep.flow' has no attribute {name!r}")


__all__ = [
    "DIS_PRESETS", "FLOW_BACKENDS", "DisEstimator", "FlowEstimator", "FlowSetupError", "OracleEstimator",
    "RaftEstimator", "make_estimator", "select_device",
]
