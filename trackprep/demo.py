"""`trackprep demo`: the whole preprocessing on a small synthetic dataset, offline, in under a minute.

1. write synthetic videos to disk (PNG frames and masks + scene.json: io/datasets/synthetic.py);
2. annotate them (oracle flow: exact motion, no weights or GPU needed; or DIS);
3. score the stored tracks against the scenes' exact ground truth;
4. cut the annotation store into 24-frame training segments (pipeline/shard.py);
5. draw the tracks of the first video (trackprep.viz).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from trackprep.config import resolve_config
from trackprep.core.synthetic import Scene
from trackprep.io.annotation_reader import VideoAnnotations, open_annotations
from trackprep.io.datasets.synthetic import SCENE_FILE, write_synthetic_dataset
from trackprep.pipeline.annotate import AnnotateSummary, annotate

# Small enough for a minute on two CPU cores (chaining every pixel dominates), large
# enough that objects, occlusions and disocclusions are plainly visible.
DEMO_SIZE = (160, 288)
DEMO_FRAMES = 24  # one Track4Gen training segment (Sec. 4.1)


@dataclass(frozen=True)
class TrackAccuracy:
    points: int  # visible stored points compared
    median_px: float
    p95_px: float


def score_against_scene(video: VideoAnnotations, scene: Scene, *, sample: int = 2000, seed: int = 0) -> TrackAccuracy:
    """Distance between `sample` stored tracks and the scene's exact tracks of the same start points."""
    n = video.num_tracks
    rows = np.sort(np.random.default_rng(seed).choice(n, size=min(sample, n), replace=False))
    tracks, visible = video.dense(rows)
    err = scene.track_errors(tracks, visible)
    return TrackAccuracy(points=int(err.size), median_px=float(np.median(err)), p95_px=float(np.percentile(err, 95)))


@dataclass
class DemoResult:
    out: Path
    dataset: Path
    store: Path
    summary: AnnotateSummary
    accuracy: dict[str, TrackAccuracy]
    segments: Path | None = None
    num_segments: int = 0
    picture: Path | None = None
    timings: dict[str, float] = field(default_factory=dict)


def run_demo(
    out: str | Path,
    *,
    num_videos: int = 2,
    num_frames: int = DEMO_FRAMES,
    size: tuple[int, int] = DEMO_SIZE,
    flow: str = "oracle",
    seed: int = 0,
    scheduler: str = "local",
    overwrite: bool = True,
    progress: Any = None,
    log: Callable[[str], None] | None = None,
) -> DemoResult:
    out = Path(out)
    log = log or (lambda _msg: None)
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    dataset = out / "synthetic"
    if not all((dataset / f"scene{seed + i:03d}" / SCENE_FILE).is_file() for i in range(num_videos)):
        log(f"writing {num_videos} synthetic videos ({num_frames} frames, {size[0]}x{size[1]}) to {dataset}")
        write_synthetic_dataset(dataset, num_videos=num_videos, seed=seed, num_frames=num_frames, height=size[0], width=size[1])
    timings["dataset"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    config = resolve_config(overrides={"size": list(size), "flow": {"name": flow, "device": "cpu"}})
    store = out / "annotations.zarr"
    summary = annotate(
        datasets=[("synthetic", dataset)], out=store, config=config, scheduler=scheduler,
        overwrite=overwrite, progress=progress, log=log,
    )
    timings["annotate"] = time.perf_counter() - t0

    annotations = open_annotations(store)
    accuracy = {}
    for key in annotations:
        scene = Scene.from_dict(json.loads((dataset / key.split("/", 1)[1] / SCENE_FILE).read_text()))
        accuracy[key] = score_against_scene(annotations[key], scene.rescaled(height=size[0], width=size[1]))

    result = DemoResult(out=out, dataset=dataset, store=store, summary=summary, accuracy=accuracy, timings=timings)

    # Segments for the trainer: 24-frame clips with a balanced, fixed number of tracks each.
    t0 = time.perf_counter()
    from trackprep.pipeline.shard import shard

    segments = out / "segments.zarr"
    shard_cfg = config["shard"]
    sharded = shard(
        store, segments, length=min(shard_cfg["segment_length"], num_frames), tracks=shard_cfg["tracks_per_segment"],
        fg_share=shard_cfg["fg_share"], seed=shard_cfg["seed"], scheduler="serial", overwrite=True,
    )
    result.segments, result.num_segments = segments, sharded.num_segments
    timings["shard"] = time.perf_counter() - t0

    # Pictures of the first video's tracks: a grid of frames and an animation.
    t0 = time.perf_counter()
    from trackprep.viz import viz

    done = annotations.keys()
    if done:
        result.picture = viz(store, out / "tracks.png", video=done[0])
        viz(store, out / "tracks.gif", video=done[0])
    timings["pictures"] = time.perf_counter() - t0
    return result
