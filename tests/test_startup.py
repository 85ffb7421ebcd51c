"""Start-up (issue 15): commands that compute nothing run with torch, dask and diffusers made
unimportable, as whole processes; option defaults spelled out for that agree with the library."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
BLOCKED = ("torch", "torchvision", "dask", "distributed", "diffusers", "transformers", "accelerate")

BLOCKER = f'''
import sys

class _Blocker:
    """Refuses {BLOCKED}, and every submodule of them, as if they were not installed."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {BLOCKED!r}:
            raise ImportError(f"{{name}} is blocked by tests/test_startup.py")
        return None

sys.meta_path.insert(0, _Blocker())
'''


@pytest.fixture(scope="module")
def blocked_env(tmp_path_factory) -> dict[str, str]:
    """An environment whose Python refuses the heavy libraries (a sitecustomize on PYTHONPATH)."""
    site = tmp_path_factory.mktemp("blocker")
    (site / "sitecustomize.py").write_text(BLOCKER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO)]), "OMP_NUM_THREADS": "1"}
    control = subprocess.run([sys.executable, "-c", "import torch.nn"], env=env, capture_output=True, text=True)
    assert control.returncode != 0 and "blocked by tests/test_startup.py" in control.stderr  # the blocker works
    return env


def cli(env: dict[str, str], tool: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", f"from {tool}.cli import main; main()", *args], env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> tuple[Path, Path]:
    """An annotation store of one synthetic video and a segment store cut from it (made with torch)."""
    from trackprep.config import resolve_config
    from trackprep.io.datasets.synthetic import write_synthetic_dataset
    from trackprep.pipeline.annotate import annotate
    from trackprep.pipeline.shard import shard

    tmp = tmp_path_factory.mktemp("stores")
    write_synthetic_dataset(tmp / "synth", num_videos=1, seed=0, num_frames=8, height=32, width=48)
    config = resolve_config(overrides={"flow": {"name": "oracle"}, "size": [32, 48]})
    annotate(datasets=[("synthetic", tmp / "synth")], out=tmp / "a.zarr", config=config, scheduler="serial")
    shard(tmp / "a.zarr", tmp / "s.zarr", length=4, tracks=16, scheduler="serial")
    return tmp / "a.zarr", tmp / "s.zarr"


@pytest.mark.parametrize("tool", ["trackprep", "track4gen"])
def test_help_runs_without_torch_or_dask(blocked_env, tool):
    r = cli(blocked_env, tool, "--help")
    assert r.returncode == 0, r.stderr
    assert "Usage" in r.stdout and ("train" if tool == "track4gen" else "annotate") in r.stdout


@pytest.mark.parametrize("command", ["annotate", "shard", "fetch", "check", "datasets", "viz", "eval-tracks",
                                     "train", "track", "eval-tracking"])
def test_command_help_runs_without_torch_or_dask(blocked_env, command):
    r = cli(blocked_env, "track4gen" if command in ("train", "track", "eval-tracking") else "trackprep", command, "--help")
    assert r.returncode == 0, r.stderr
    assert "--help" in r.stdout


def test_info_and_validate_run_without_torch_or_dask(blocked_env, stores):
    annotations, segments = stores
    r = cli(blocked_env, "trackprep", "info", str(annotations))
    assert r.returncode == 0, r.stderr
    assert "videos: 1 complete, 0 failed, 0 incomplete" in r.stdout
    r = cli(blocked_env, "trackprep", "info", str(segments))
    assert r.returncode == 0, r.stderr
    assert "segments: 2 of 4 frames at 32x48, from 1 videos" in r.stdout
    r = cli(blocked_env, "trackprep", "validate", str(annotations))
    assert r.returncode == 0 and f"{annotations}: valid" in r.stdout, r.stderr


def test_check_datasets_and_fetch_run_without_torch_or_dask(blocked_env, tmp_path):
    # One DAVIS-2016 validation sequence, 40 frames of 8x8: the check decodes a frame and reports the split.
    root = tmp_path / "home" / "davis2016"
    for folder, ext in (("JPEGImages", "jpg"), ("Annotations", "png")):
        (root / folder / "480p" / "car-shadow").mkdir(parents=True)
    for t in range(40):
        Image.fromarray(np.full((8, 8, 3), 6 * t, np.uint8)).save(root / "JPEGImages" / "480p" / "car-shadow" / f"{t:05d}.jpg")
        Image.fromarray(np.where(np.arange(64).reshape(8, 8) > 30, 255, 0).astype(np.uint8)).save(
            root / "Annotations" / "480p" / "car-shadow" / f"{t:05d}.png")
    env = {**blocked_env, "TRACKPREP_DATA": str(tmp_path / "home")}

    r = cli(env, "trackprep", "check", "davis2016", "--split", "val")
    assert r.returncode == 1, r.stderr  # 1 of the 20 validation sequences
    assert "split val: incomplete, 1/20 sequences present, 40/1376 frames" in r.stdout
    r = cli(env, "trackprep", "datasets")
    assert r.returncode == 0, r.stderr
    assert any(line.split()[:2] == ["davis2016", "incomplete"] for line in r.stdout.splitlines()), r.stdout
    r = cli(env, "trackprep", "fetch", "jumpcut")  # a manual download: prints the steps, downloads nothing
    assert r.returncode == 2 and "needs a manual download" in r.stdout, r.stderr


def test_spelled_out_option_defaults_agree_with_the_library():
    import track4gen.cli as t4g_cli
    from track4gen import conditioning, data, losses, model, train
    from track4gen.tracking import cli as tracking_cli
    from track4gen.tracking import features
    from trackprep.cli import shard_cmds
    from trackprep.io import segment_store
    from trackprep import viz

    assert (t4g_cli.FPS, t4g_cli.MOTION_BUCKET_ID) == (conditioning.FPS, conditioning.MOTION_BUCKET_ID)
    assert (t4g_cli.FG_SHARE, t4g_cli.NUM_PAIRS) == (data.FG_SHARE, data.NUM_PAIRS)
    assert (t4g_cli.CORRESPONDENCE_WEIGHT, t4g_cli.SOFTMAX_TEMPERATURE) == (losses.CORRESPONDENCE_WEIGHT, losses.SOFTMAX_TEMPERATURE)
    assert (t4g_cli.DEFAULT_PRETRAINED, t4g_cli.TRAINABLE_CHOICES, t4g_cli.VARIANTS) == (
        model.DEFAULT_PRETRAINED, model.TRAINABLE_CHOICES, model.VARIANTS)
    assert (t4g_cli.EMA_DECAY, t4g_cli.EXPORT_DIR) == (train.EMA_DECAY, train.EXPORT_DIR)
    assert (tracking_cli.DEFAULT_BLOCK, tracking_cli.DEFAULT_SIGMA) == (features.DEFAULT_BLOCK, features.DEFAULT_SIGMA)
    assert shard_cmds.DEFAULT_SEGMENTS_PER_SHARD == segment_store.DEFAULT_SEGMENTS_PER_SHARD
    assert shard_cmds.DEFAULT_MAX_TRACKS == viz.DEFAULT_MAX_TRACKS


def test_help_names_every_dataset():
    import re

    from trackprep.cli import annotate_cmds, dataset_cmds
    from trackprep.io.datasets import ALIASES, READERS
    from trackprep.io.manifests import manifest_names

    annotate_names = set(re.findall(r"[a-z0-9]+", annotate_cmds.DATASET_NAMES_HELP))
    assert set(READERS) | set(ALIASES) <= annotate_names
    assert set(manifest_names()) | set(ALIASES) <= set(re.findall(r"[a-z0-9]+", dataset_cmds.NAMES_HELP))
