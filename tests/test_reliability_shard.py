"""`shard` killed at each of its stages, then rerun, equals an uninterrupted run (issue 14, item 4);
refusals name only the settings that differ; a full disk is reported with the path."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr
from zarr.storage import LocalStore

from trackprep.config import resolve_config
from trackprep.io import schema
from trackprep.io import segment_store as G
from trackprep.io.datasets.synthetic import write_synthetic_dataset
from trackprep.io.faults import ENV, SimulatedCrash, crash_at
from trackprep.io.validate import validate_store
from trackprep.pipeline.annotate import annotate
from trackprep.pipeline.shard import shard

REPO = Path(__file__).resolve().parents[1]
SIZE = (32, 48)
ORACLE = resolve_config(overrides={"size": list(SIZE), "flow": {"name": "oracle"}})
ARGS = dict(length=8, tracks=40, seed=3, segments_per_shard=2, scheduler="serial")
CLI_ARGS = ["--length", "8", "--tracks", "40", "--seed", "3", "--segments-per-shard", "2"]
# Every marked point of a shard run, in the order they are reached (trackprep.io.segment_store,
# trackprep.pipeline.shard). The segment-writing points are reached once per shard: the first one counts.
POINTS = ["shard:root-written", "shard:arrays-created", "shard:index-written", "shard:store-created",
          "shard:segments-written", "shard:shard-done", "shard:before-complete"]


@pytest.fixture(scope="module")
def annotations(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("shard-faults")
    write_synthetic_dataset(base / "synth", num_videos=2, seed=0, num_frames=20, height=SIZE[0], width=SIZE[1])
    annotate(datasets=[("synthetic", base / "synth")], out=base / "A.zarr", config=ORACLE, scheduler="serial")
    return base / "A.zarr"


@pytest.fixture(scope="module")
def reference(annotations, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reference") / "S.zarr"
    shard(annotations, out, **ARGS)
    return out


def assert_same_store(got: Path, want: Path) -> None:
    """Every array of the two segment stores holds the same values (done flags and checksums of
    the files included), and the root attributes agree; nothing is left beside `got`."""
    a, b = zarr.open_group(str(got), mode="r"), zarr.open_group(str(want), mode="r")
    assert dict(a.attrs) == dict(b.attrs)
    ga, gb = a[schema.SEGMENTS_GROUP], b[schema.SEGMENTS_GROUP]
    names = sorted(name for name, _ in gb.arrays())
    assert sorted(name for name, _ in ga.arrays()) == names and len(names) == 12
    for name in names:
        np.testing.assert_array_equal(ga[name][:], gb[name][:], err_msg=name)
    assert validate_store(got) == []
    assert sorted(p.name for p in got.parent.iterdir() if p.name.startswith(f".{got.name}")) == []


@pytest.mark.parametrize("point", POINTS)
def test_killed_at_each_stage_then_rerun_equals_an_uninterrupted_run(annotations, reference, tmp_path, point):
    out = tmp_path / "S.zarr"
    with crash_at(point), pytest.raises(SimulatedCrash):
        shard(annotations, out, **ARGS)
    result = shard(annotations, out, **ARGS)
    assert result.num_segments == len(G.SegmentReader(reference))
    assert_same_store(out, reference)


@pytest.mark.parametrize("point", ["shard:index-written", "shard:old-store-moved-aside", "shard:store-created"])
def test_overwrite_killed_part_way_keeps_or_replaces_the_old_store_whole(annotations, reference, tmp_path, point):
    out = tmp_path / "S.zarr"
    shard(annotations, out, **{**ARGS, "tracks": 30})
    with crash_at(point), pytest.raises(SimulatedCrash):
        shard(annotations, out, **ARGS, overwrite=True)
    if point == "shard:index-written":  # the new store was still being built aside: the old one is intact
        assert validate_store(out) == [] and G.SegmentReader(out).max_tracks == 30
    shard(annotations, out, **ARGS, overwrite=True)
    assert_same_store(out, reference)


@pytest.mark.parametrize("point", ["shard:index-written", "shard:shard-done"])
def test_sigkilled_shard_process_then_rerun_equals_an_uninterrupted_run(annotations, reference, tmp_path, point):
    out = tmp_path / "S.zarr"
    cmd = [sys.executable, "-m", "trackprep", "shard", "--store", str(annotations), "--out", str(out), *CLI_ARGS,
           "--scheduler", "local"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    killed = subprocess.run(cmd, env={**env, ENV: point}, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert_same_store(out, reference)


def test_a_changed_setting_is_refused_naming_only_that_setting(annotations, reference, tmp_path):
    out = tmp_path / "S.zarr"
    shard(annotations, out, **ARGS)
    with pytest.raises(ValueError) as info:
        shard(annotations, out, **{**ARGS, "tracks": 30, "fg_share": 0.25})
    message = str(info.value)
    assert "(fg_share: stored 0.5, now 0.25; tracks: stored 40, now 30)" in message
    assert "source_config" not in message and "cycle_threshold" not in message and len(message) < 300


def _disk_full(monkeypatch, *, under: str) -> None:
    original = LocalStore.set

    async def full(self, key, value):
        if under in key:
            raise OSError(errno.ENOSPC, "No space left on device")
        return await original(self, key, value)

    monkeypatch.setattr(LocalStore, "set", full)


def test_disk_full_while_sharding_names_the_store_and_a_rerun_finishes(annotations, reference, tmp_path, monkeypatch):
    out = tmp_path / "S.zarr"
    _disk_full(monkeypatch, under="segments/frames/c/")
    with pytest.raises(OSError) as info:
        shard(annotations, out, **ARGS)
    assert str(info.value).startswith(f"{out}: No space left on device (errno {errno.ENOSPC}) while writing; free space")
    monkeypatch.undo()
    shard(annotations, out, **ARGS)
    assert_same_store(out, reference)


def test_disk_full_while_annotating_names_the_store_and_a_rerun_finishes(annotations, tmp_path, monkeypatch):
    out = tmp_path / "A.zarr"
    synth = annotations.parent / "synth"
    _disk_full(monkeypatch, under="scene001/frames/c/")
    summary = annotate(datasets=[("synthetic", synth)], out=out, config=ORACLE, scheduler="serial")
    assert [r.key for r in summary.completed] == ["synthetic/scene000"]
    (failed,) = summary.failed
    assert failed.error.startswith(f"write: {out.resolve()}/synthetic/scene001: No space left on device")
    monkeypatch.undo()
    again = annotate(datasets=[("synthetic", synth)], out=out, config=ORACLE, scheduler="serial")
    assert [r.key for r in again.completed] == ["synthetic/scene001"] and validate_store(out) == []


def test_one_shard_run_per_segment_store_at_a_time(annotations, reference, tmp_path):
    from trackprep.io.locks import Locks

    out = tmp_path / "S.zarr"
    with Locks(tmp_path) as other:  # another shard run, alive, writing S.zarr
        assert other.try_acquire(".S.zarr") is None
        with pytest.raises(G.SegmentStoreError, match=rf"^{out}: another `trackprep shard` is writing it \(pid {os.getpid()} on"):
            shard(annotations, out, **ARGS)
        assert not out.exists()
    shard(annotations, out, **ARGS)  # once it has stopped
    assert_same_store(out, reference)


def test_overwrite_replaces_a_store_left_half_made_by_an_older_trackprep(annotations, reference, tmp_path):
    """Killed between creating the root group and writing its attributes (issue 14): no format
    attribute yet, only the empty `segments` group."""
    out = tmp_path / "S.zarr"
    root = zarr.open_group(str(out), mode="w", zarr_format=3)
    root.create_group(schema.SEGMENTS_GROUP)
    shard(annotations, out, **ARGS, overwrite=True)
    assert_same_store(out, reference)
    other = tmp_path / "other.zarr"  # a group holding anything else is not taken for a segment store
    zarr.open_group(str(other), mode="w", zarr_format=3).create_group("mine")
    with pytest.raises(FileExistsError, match="is not a segment store; refusing to overwrite it"):
        shard(annotations, other, **ARGS, overwrite=True)
