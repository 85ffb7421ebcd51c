"""Run the trajectory core on a synthetic clip with exact ground truth and measure it.

Used by `trackprep selfcheck` (a quick check of an installation); benchmarks/bench_core.py times
the chaining alone.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from trackprep.core.chaining import DEFAULT_CYCLE_THRESHOLD, chain_tracks
from trackprep.core.labels import is_foreground, label_tracks
from trackprep.core.synthetic import make_scene


@dataclass(frozen=True)
class SelfCheck:
    num_frames: int
    height: int
    width: int
    num_tracks: int
    foreground_share: float
    median_error_px: float
    p99_error_px: float
    render_s: float
    flow_s: float
    chain_s: float
    label_s: float


def run_selfcheck(
    *, seed: int = 0, num_frames: int = 24, height: int = 320, width: int = 576,
    cycle_threshold: float = DEFAULT_CYCLE_THRESHOLD, seed_stride: int = 1, sample: int = 20000,
) -> SelfCheck:
    """Chain the exact flow of a synthetic scene and compare `sample` random tracks with ground truth."""
    t0 = time.perf_counter()
    scene = make_scene(seed=seed, num_frames=num_frames, height=height, width=width)
    frames, masks = scene.render()
    t1 = time.perf_counter()
    flow = scene.flow()
    t2 = time.perf_counter()
    tracks = chain_tracks(flow, cycle_threshold=cycle_threshold, seed_stride=seed_stride)
    t3 = time.perf_counter()
    tracks = label_tracks(tracks, masks, np.ones(num_frames, dtype=bool))
    t4 = time.perf_counter()

    rows = np.random.default_rng(seed).choice(len(tracks), min(sample, len(tracks)), replace=False)
    err = scene.track_errors(*tracks.dense(rows))
    return SelfCheck(
        num_frames=num_frames, height=height, width=width, num_tracks=len(tracks),
        foreground_share=float(is_foreground(tracks.labels).mean()),
        median_error_px=float(np.median(err)), p99_error_px=float(np.percentile(err, 99)),
        render_s=t1 - t0, flow_s=t2 - t1, chain_s=t3 - t2, label_s=t4 - t3,
    )
