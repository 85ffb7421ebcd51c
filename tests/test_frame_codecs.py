"""Frames as JPEG in both stores (issue 13, item 4): smaller than lossless, close to the
original (PSNR), readable by a fresh process, and masks always lossless."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import trackprep
from trackprep.config import ConfigError, resolve_config
from trackprep.core.chaining import chain_tracks
from trackprep.core.labels import label_tracks
from trackprep.core.synthetic import make_scene
from trackprep.io import annotation_store as S
from trackprep.io import segment_store as sstore
from trackprep.io.frame_codecs import FrameCodecError, frame_codecs
from trackprep.pipeline.shard import shard

REPO = Path(__file__).resolve().parents[1]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / mse))


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("jpeg")
    scene = make_scene(seed=1, num_frames=26, height=64, width=96, num_objects=2)
    clip = scene.to_clip("v")
    tracks = label_tracks(chain_tracks(scene.flow(), seed_stride=2), clip.masks, clip.has_mask)
    out = {}
    for codec in ("lossless", "jpeg"):
        root = S.create_store(tmp / f"{codec}.zarr", config={"frames": codec})
        S.write_video(root, "synth/v", clip, tracks, frames_codec=codec, jpeg_quality=90)
        out[codec] = tmp / f"{codec}.zarr"
    return clip, out


def test_jpeg_frames_are_smaller_and_close_to_the_original(stores):
    clip, paths = stores
    lossless, jpeg = (trackprep.open_annotations(paths[c])["synth/v"] for c in ("lossless", "jpeg"))
    np.testing.assert_array_equal(lossless.frames[:], clip.frames)
    decoded = jpeg.frames[:]
    assert decoded.shape == clip.frames.shape and decoded.dtype == np.uint8
    assert psnr(decoded, clip.frames) > 30
    assert jpeg.frames.nbytes_stored() < 0.5 * lossless.frames.nbytes_stored()
    np.testing.assert_array_equal(jpeg.masks[:], clip.masks)  # masks stay lossless
    np.testing.assert_array_equal(jpeg.points[:], lossless.points[:])
    assert '"trackprep.jpeg"' in (paths["jpeg"] / "synth" / "v" / "frames" / "zarr.json").read_text()


def test_a_fresh_process_reads_jpeg_frames_through_open_annotations(stores):
    clip, paths = stores
    code = ("import sys, numpy as np, trackprep; v = trackprep.open_annotations(sys.argv[1])['synth/v']; "
            "print(int(v.frames[3].astype(int).sum()))")
    out = subprocess.run([sys.executable, "-c", code, str(paths["jpeg"])], capture_output=True, text=True,
                         env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    expected = int(trackprep.open_annotations(paths["jpeg"])["synth/v"].frames[3].astype(int).sum())
    assert int(out.stdout) == expected


def test_segment_store_with_jpeg_frames(stores, tmp_path):
    clip, paths = stores
    out = shard(paths["lossless"], tmp_path / "S.zarr", length=24, tracks=64, frames_codec="jpeg", jpeg_quality=90,
                scheduler="serial")
    seg = sstore.SegmentReader(out.out).read(0)
    assert psnr(seg["frames"], clip.frames[:24]) > 30
    np.testing.assert_array_equal(seg["masks"], clip.masks[:24])
    assert sstore.open_segment_store(out.out).attrs["config"]["jpeg_quality"] == 90


def test_bad_codec_settings_are_one_line_errors():
    with pytest.raises(FrameCodecError, match="frames codec: expected one of lossless, jpeg, got 'png'"):
        frame_codecs("png")
    with pytest.raises(FrameCodecError, match="jpeg_quality: expected an integer in 1..100, got 0"):
        frame_codecs("jpeg", quality=0)
    with pytest.raises(ConfigError, match=r"frames.codec = 'webp', expected one of \['lossless', 'jpeg'\]"):
        resolve_config(overrides={"frames": {"codec": "webp"}})
