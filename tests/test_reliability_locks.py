"""One writer per video across runs (issue 14, item 1): lock files, staleness, two runs at once."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from trackprep.config import resolve_config
from trackprep.io import annotation_store as S
from trackprep.io import locks as L
from trackprep.io import schema
from trackprep.io.datasets.synthetic import write_synthetic_dataset
from trackprep.io.validate import validate_store
from trackprep.pipeline.annotate import annotate, annotate_video, plan_annotation
from trackprep.pipeline.executors import _failed
from trackprep.pipeline.plan import RunContext, VideoTask

SIZE = (32, 48)
ORACLE = resolve_config(overrides={"size": list(SIZE), "flow": {"name": "oracle"}})
VIDEOS = [f"synthetic/scene{i:03d}" for i in range(4)]


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    write_synthetic_dataset(root, num_videos=4, seed=0, num_frames=12, height=SIZE[0], width=SIZE[1])
    return root


def _write_lock(store: Path, key: str, **owner) -> Path:
    path = L.lock_path(store, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    base = dict(host=socket.gethostname(), machine=L._MACHINE, pid=os.getpid(), process_start=0.0, run="other-run",
                since=time.time())
    path.write_text(json.dumps({**base, **owner}))
    return path


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_two_annotate_processes_on_one_store_write_each_video_exactly_once(synth, tmp_path):
    out = tmp_path / "A.zarr"
    cmd = [sys.executable, "-m", "trackprep", "annotate", "--dataset", "synthetic", "--root", str(synth),
           "--out", str(out), "--flow", "oracle", "--size", "32x48", "--scheduler", "serial", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    for p, (stdout, stderr) in zip(procs, outputs):
        assert p.returncode == 0, stdout + stderr  # no false failure in either run
        assert "Traceback" not in stderr and "FAILED" not in stdout
    # Each video annotated by exactly one of the two runs; the other skipped it (complete) or left it (busy).
    annotated = [int(re.search(r"(\d+) video\(s\) annotated", stdout).group(1)) for stdout, _ in outputs]
    assert sum(annotated) == len(VIDEOS), outputs
    root = S.open_store(out)
    assert S.complete_videos(root) == VIDEOS
    assert validate_store(out) == []
    assert not (out / L.LOCK_DIR).exists()  # both runs gave their locks back


@pytest.mark.parametrize("scheduler", ["serial", "local"])
def test_a_video_locked_by_a_live_run_is_left_to_it_and_never_touched(synth, tmp_path, scheduler):
    out = tmp_path / "A.zarr"
    plan_annotation(datasets=[("synthetic", synth)], out=out, config=ORACLE)  # creates the store
    other = L.Locks(L.lock_dir(out))
    assert other.try_acquire(VIDEOS[1]) is None  # a live run (this process) holds scene001 ...
    root = S.open_store(out, mode="r+")
    S.require_dataset_group(root, "synthetic")
    root.create_group(VIDEOS[1]).attrs.update({schema.ATTR_STATUS: "writing", "marker": "other run's"})
    try:
        summary = annotate(datasets=[("synthetic", synth)], out=out, config=ORACLE, scheduler=scheduler)
        assert sorted(r.key for r in summary.completed) == [VIDEOS[0], *VIDEOS[2:]]
        assert [r.key for r in summary.left] == [VIDEOS[1]] and not summary.failed
        assert f"{VIDEOS[1]}: another run is writing it (pid {os.getpid()} on" in summary.lines()[1]
        assert S.open_store(out)[VIDEOS[1]].attrs["marker"] == "other run's"  # ... and its group is untouched
    finally:
        other.close()
    again = annotate(datasets=[("synthetic", synth)], out=out, config=ORACLE, scheduler="serial")
    assert [r.key for r in again.completed] == [VIDEOS[1]] and validate_store(out) == []


def test_a_dead_writers_lock_is_stale_on_its_host(synth, tmp_path):
    out = tmp_path / "A.zarr"
    plan_annotation(datasets=[("synthetic", synth)], out=out, config=ORACLE)  # creates the store
    _write_lock(out, VIDEOS[0], pid=_dead_pid(), process_start=1.0)
    _write_lock(out, VIDEOS[1], process_start=1.0)  # this pid, but another process start time: a reused pid
    summary = annotate(datasets=[("synthetic", synth)], out=out, config=ORACLE, scheduler="serial")
    assert len(summary.completed) == 4 and not summary.left
    assert S.complete_videos(S.open_store(out)) == VIDEOS


def test_another_hosts_lock_is_stale_once_its_heartbeat_stops(tmp_path):
    locks = L.Locks(L.lock_dir(tmp_path), heartbeat_s=1, stale_after_s=60)
    # Another machine, even one with this host name (containers): its pid says nothing here.
    fresh = _write_lock(tmp_path, "d/fresh", host="elsewhere", machine="elsewhere:boot", pid=1)
    old = _write_lock(tmp_path, "d/old", machine=f"{socket.gethostname()}:another-boot", pid=os.getpid())
    past = time.time() - 61
    os.utime(old, (past, past))
    holder = locks.try_acquire("d/fresh")
    assert holder is not None and holder.host == "elsewhere"  # its heartbeat is fresh: alive
    assert fresh.exists() and L.read_owner(fresh).run == "other-run"
    assert locks.try_acquire("d/old") is None and locks.holds("d/old")  # broken and taken
    locks.close()
    assert not old.exists() and fresh.exists()  # its own lock given back; the other host's kept


def test_breaking_a_stale_lock_twice_never_deletes_the_new_owners_lock(tmp_path):
    path = _write_lock(tmp_path, "d/v", pid=_dead_pid(), process_start=1.0)
    seen = path.stat()  # what a second, slower run saw when it judged the lock stale
    first = L.Locks(L.lock_dir(tmp_path))
    assert first.try_acquire("d/v") is None
    late = L.Locks(L.lock_dir(tmp_path))
    late._break(path, seen, L.fs_now(path.parent))
    assert first.holds("d/v")
    assert late.try_acquire("d/v").run == first.run
    first.close()


def test_heartbeat_keeps_a_lock_fresh_and_notices_a_takeover(tmp_path):
    locks = L.Locks(L.lock_dir(tmp_path), heartbeat_s=0.05, stale_after_s=5)
    assert locks.try_acquire("d/a") is None and locks.try_acquire("d/b") is None
    path = L.lock_path(tmp_path, "d/a")
    past = time.time() - 1000
    os.utime(path, (past, past))
    deadline = time.time() + 10
    while path.stat().st_mtime < past + 500 and time.time() < deadline:
        time.sleep(0.05)
    assert path.stat().st_mtime > past + 500  # refreshed by the heartbeat thread
    _write_lock(tmp_path, "d/b", run="thief")
    deadline = time.time() + 10
    while "d/b" not in locks.lost() and time.time() < deadline:
        time.sleep(0.05)
    assert locks.lost() == {"d/b"} and not locks.holds("d/b")
    locks.close()
    assert L.read_owner(L.lock_path(tmp_path, "d/b")).run == "thief"  # close releases only its own locks
    assert not path.exists()


def test_a_run_never_writes_or_marks_failed_a_video_another_run_holds(synth, tmp_path, monkeypatch):
    """The bug of the issue: the losing writer's record_failure deleted the winner's finished video."""
    import psutil

    from trackprep.pipeline import annotate as annotate_mod

    out = tmp_path / "A.zarr"
    annotate(datasets=[("synthetic", synth)], out=out, config=ORACLE, videos=[VIDEOS[0]], scheduler="serial")
    before = dict(S.open_store(out)[VIDEOS[0]].attrs)
    _write_lock(out, VIDEOS[0], run="winner", process_start=psutil.Process().create_time())  # alive
    task = VideoTask(dataset="synthetic", root=str(synth), video="scene000")
    ctx = RunContext(store=str(out), config=ORACLE, lock_run="loser")
    result = annotate_video(task, ctx)
    assert result.status == "left" and result.ok and "another run is writing it" in result.error
    assert not _failed(task.key, "lost worker", ctx).ok  # a lost worker's failure is not recorded either
    assert dict(S.open_store(out)[VIDEOS[0]].attrs) == before and validate_store(out) == []

    # Lost while writing (its heartbeat judged stale elsewhere): the video is neither completed nor marked failed.
    task = VideoTask(dataset="synthetic", root=str(synth), video="scene001")
    stream = annotate_mod._stream_video

    def stream_then_lose_the_lock(*args, **kwargs):
        writer = stream(*args, **kwargs)
        _write_lock(out, task.key, run="winner", process_start=psutil.Process().create_time())
        return writer

    monkeypatch.setattr(annotate_mod, "_stream_video", stream_then_lose_the_lock)
    result = annotate_video(task, ctx)
    assert not result.ok and "lock on the video was taken over" in result.error
    assert S.video_status(S.open_store(out), task.key) == "writing"  # left for the winner to replace
    assert L.read_owner(L.lock_path(out, task.key)).run == "winner"
