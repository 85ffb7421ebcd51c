"""Shared fixtures for the track4gen tests: a small segment store and a tiny SVD model.

The store is made by the pipeline's own stages at a small size (8 frames x 64 x 96): synthetic
scenes -> exact flow -> chained, labelled tracks -> annotation store -> `trackprep shard`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from trackprep.core.chaining import chain_tracks
from trackprep.core.labels import label_tracks
from trackprep.core.synthetic import make_scene
from trackprep.io import annotation_store as astore
from trackprep.pipeline.shard import shard

LENGTH, HEIGHT, WIDTH = 8, 64, 96
MAX_TRACKS = 256


def make_segment_store(
    path: Path,
    *,
    num_segments: int = 4,
    length: int = LENGTH,
    height: int = HEIGHT,
    width: int = WIDTH,
    max_tracks: int = MAX_TRACKS,
    seed: int = 0,
) -> Path:
    """A complete segment store of `num_segments` segments, one `length`-frame synthetic video each."""
    path = Path(path)
    annotations = path.with_name(f"{path.stem}-annotations.zarr")
    root = astore.create_store(annotations, config={"fixture": "tests/train_fixtures.py", "seed": seed})
    for s in range(num_segments):
        scene = make_scene(seed=seed + s, num_frames=length, height=height, width=width,
                           num_objects=2, max_speed=3.0, min_relative_speed=1.5)
        clip = scene.to_clip(f"scene{seed + s}")
        tracks = label_tracks(chain_tracks(scene.flow()), clip.masks, clip.has_mask)
        astore.write_video(root, astore.video_key("synthetic", clip.name), clip, tracks)
    shard(annotations, path, length=length, tracks=max_tracks, seed=seed, scheduler="serial")
    return path


def make_tiny_model_dir(path: Path) -> Path:
    from track4gen.tiny_model import make_tiny_model

    return make_tiny_model(path, num_frames=LENGTH)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # The tiny model is far too small to gain from threads; on a shared CPU they only contend.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
