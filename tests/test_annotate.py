"""`trackprep annotate`: the plan, both executors, resume, failure isolation and the CLI.

Synthetic videos (exact motion, oracle flow) give known answers; real DAVIS-2016 frames
with DIS flow check labels against masks. Clips are small (64x96, 8 frames) except where
the check needs real data at the paper's 320x576.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import trackprep
from trackprep.cli import app
from trackprep.config import resolve_config
from trackprep.core.synthetic import Scene, make_scene
from trackprep.demo import score_against_scene
from trackprep.io import annotation_store as S
from trackprep.io import schema
from trackprep.io.datasets.synthetic import SCENE_FILE, write_synthetic_dataset
from trackprep.io.validate import validate_store
from trackprep.pipeline.annotate import annotate
from trackprep.pipeline.executors import make_executor

REPO = Path(__file__).resolve().parents[1]
SIZE = (64, 96)
ORACLE = resolve_config(overrides={"size": list(SIZE), "flow": {"name": "oracle"}})
SYNTH_VIDEOS = ["scene000", "scene001", "scene002"]


def assert_stores_equal(a: Path, b: Path, keys: list[str] | None = None) -> None:
    ra, rb = S.open_store(a), S.open_store(b)
    if keys is None:
        keys = S.complete_videos(ra)
        assert keys == S.complete_videos(rb)
    assert keys and set(keys) <= set(S.complete_videos(ra)) & set(S.complete_videos(rb))
    for key in keys:
        for spec in schema.ANNOTATION_ARRAYS:
            np.testing.assert_array_equal(ra[key][spec.name][:], rb[key][spec.name][:], err_msg=f"{key}/{spec.name}")


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    write_synthetic_dataset(root, num_videos=3, seed=0, num_frames=8, height=SIZE[0], width=SIZE[1])
    return root


@pytest.fixture(scope="module")
def serial_store(synth, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("serial") / "a.zarr"
    summary = annotate(datasets=[("synthetic", synth)], out=out, config=ORACLE, scheduler="serial")
    assert [r.key for r in summary.completed] == [f"synthetic/{v}" for v in SYNTH_VIDEOS]
    return out


@pytest.fixture(scope="module")
def cluster():
    """A real dask.distributed LocalCluster with two worker processes, shared by the Dask tests."""
    import logging

    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                      silence_logs=logging.ERROR) as c:
        yield c


def test_oracle_tracks_match_ground_truth(serial_store, synth):
    root = S.open_store(serial_store)
    assert validate_store(serial_store) == []
    assert root.attrs[schema.ATTR_CONFIG] == ORACLE
    for name in SYNTH_VIDEOS:
        video = trackprep.open_annotations(serial_store)[f"synthetic/{name}"]
        scene = Scene.from_dict(json.loads((synth / name / SCENE_FILE).read_text()))
        acc = score_against_scene(video, scene, sample=3000)
        assert acc.points > 10000
        assert acc.median_px < 0.05, acc
        assert video.num_tracks >= SIZE[0] * SIZE[1]  # every pixel of frame 0 seeds a track
        fg = video.labels
        assert 0 < np.mean((fg > 0) & (fg < 255)) < 1  # objects and background both present
        assert video.length.min() >= ORACLE["tracks"]["min_track_length"] == 2


def test_local_cluster_equals_serial(serial_store, synth, tmp_path):
    """--scheduler processes: a LocalCluster of 2 worker processes writes the same store as the serial path."""
    out = tmp_path / "dask.zarr"
    lines = []
    summary = annotate(datasets=[("synthetic", synth)], out=out, config=ORACLE,
                       scheduler="processes", workers=2, log=lines.append)
    assert len(summary.completed) == 3 and not summary.failed
    assert any("LocalCluster, 2 worker process(es); dashboard: http" in line for line in lines), lines
    assert_stores_equal(out, serial_store)


def test_cluster_address_equals_serial(serial_store, synth, cluster, tmp_path):
    """--scheduler ADDRESS: an existing cluster (here a LocalCluster started by the test)."""
    out = tmp_path / "dask.zarr"
    lines = []
    summary = annotate(datasets=[("synthetic", synth)], out=out, config=ORACLE,
                       scheduler=cluster.scheduler_address, log=lines.append)
    assert len(summary.completed) == 3 and not summary.failed
    assert any(f"Dask cluster at {cluster.scheduler_address}, 2 worker(s)" in line and "dashboard: http" in line
               for line in lines), lines
    assert_stores_equal(out, serial_store)


def test_unknown_scheduler_name(synth, tmp_path):
    with pytest.raises(ValueError, match="--scheduler 'loacl': expected one of serial, local, processes"):
        annotate(datasets=[("synthetic", synth)], out=tmp_path / "a.zarr", config=ORACLE, scheduler="loacl")
    assert not (tmp_path / "a.zarr").exists()


def test_gpu_resource_requested_only_when_a_worker_offers_it(cluster):
    lines = []
    cfg = resolve_config(overrides={"flow": {"device": "cuda"}})
    with make_executor(cluster.scheduler_address, config=cfg, num_tasks=1, log=lines.append) as ex:
        assert ex.gpu_resource is False  # no worker has "GPU": asking for it would hang the flow tasks
    assert any("no worker offers a 'GPU' resource" in line for line in lines)


def test_flow_tasks_run_on_the_gpu_worker_of_a_mixed_cluster(serial_store, synth, tmp_path):
    """A cluster with one worker offering `--resources GPU=1` and one without: every video's
    task (it streams flow and chaining together) carries the GPU resource and runs on that worker."""
    import logging

    from distributed import LocalCluster
    from distributed.diagnostics.plugin import SchedulerPlugin

    class Placement(SchedulerPlugin):
        def __init__(self):
            self.seen = {}  # task key -> (worker, resource restrictions)

        def transition(self, key, start, finish, *args, **kwargs):
            if finish == "processing":
                ts = self.scheduler.tasks[key]
                self.seen[str(key)] = (ts.processing_on.address, dict(ts.resource_restrictions or {}))

    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, resources={"GPU": 1},
                      dashboard_address=":0", silence_logs=logging.ERROR) as cluster:
        spec = dict(next(iter(cluster.worker_spec.values())))
        cluster.worker_spec["cpu-only"] = {**spec, "options": {**spec["options"], "resources": {}}}
        cluster.sync(cluster._correct_state)
        placement = Placement()
        placement.scheduler = cluster.scheduler
        cluster.scheduler.add_plugin(placement)
        workers = cluster.scheduler.workers
        deadline = time.time() + 30
        while len(workers) < 2 and time.time() < deadline:
            time.sleep(0.05)
        gpu = [a for a, ws in workers.items() if ws.resources.get("GPU")]
        assert len(workers) == 2 and len(gpu) == 1

        out = tmp_path / "a.zarr"
        lines = []
        summary = annotate(datasets=[("synthetic", synth)], out=out, config=ORACLE,
                           scheduler=cluster.scheduler_address, log=lines.append)
    assert not summary.failed and any("2 worker(s), 1 with a GPU" in line for line in lines), lines
    flow = {k: v for k, v in placement.seen.items() if k.startswith("annotate-")}
    assert len(flow) == 3 and all(v == (gpu[0], {"GPU": 1}) for v in flow.values()), flow
    assert_stores_equal(out, serial_store)


def test_worker_killed_mid_task_is_retried(cluster, tmp_path):
    """SIGKILL the worker process running a video's tracking task: the scheduler reruns it elsewhere."""
    from distributed import Client

    data = tmp_path / "data"
    write_synthetic_dataset(data, num_videos=2, seed=10, num_frames=16, height=96, width=160)
    cfg = resolve_config(overrides={"size": [96, 160], "flow": {"name": "oracle"}})
    reference = tmp_path / "serial.zarr"
    annotate(datasets=[("synthetic", data)], out=reference, config=cfg, scheduler="serial")

    out = tmp_path / "dask.zarr"
    box = {}
    runner = threading.Thread(target=lambda: box.setdefault("summary", annotate(
        datasets=[("synthetic", data)], out=out, config=cfg, scheduler=cluster.scheduler_address)))
    killed = None
    with Client(cluster.scheduler_address) as client:
        runner.start()
        deadline = time.time() + 120
        while killed is None and runner.is_alive() and time.time() < deadline:
            executing = client.run(lambda dask_worker: [str(ts.key) for ts in dask_worker.state.executing])
            for addr, keys in executing.items():
                track_keys = [k for k in keys if k.startswith("annotate-")]
                if track_keys:
                    pid = client.run(os.getpid, workers=[addr])[addr]
                    os.kill(pid, signal.SIGKILL)
                    killed = (addr, track_keys[0])
                    break
            time.sleep(0.01)
        runner.join(timeout=180)
        assert killed is not None, "no tracking task was ever seen executing"
        # The scheduler's record of the killed task: sent to a worker twice, finished once.
        story = client.run_on_scheduler(
            lambda dask_scheduler, key: [(t[1], t[2]) for t in dask_scheduler.transition_log if t[0] == key],
            key=killed[1],
        )
    assert story.count(("waiting", "processing")) + story.count(("queued", "processing")) >= 2, story
    assert ("processing", "memory") in story, story
    summary = box["summary"]
    assert not summary.failed and len(summary.completed) == 2
    assert_stores_equal(out, reference)


def _status(store: Path, key: str) -> str | None:
    meta = store / key / "zarr.json"
    try:
        return json.loads(meta.read_text()).get("attributes", {}).get("status")
    except (OSError, ValueError):
        return None


def test_sigkill_midway_then_rerun(synth, serial_store, tmp_path):
    out = tmp_path / "a.zarr"
    cmd = [sys.executable, "-m", "trackprep", "annotate", "--dataset", "synthetic", "--root", str(synth),
           "--out", str(out), "--flow", "oracle", "--size", "64x96", "--scheduler", "serial", "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    keys = [f"synthetic/{v}" for v in SYNTH_VIDEOS]
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if any(_status(out, k) == "complete" for k in keys):
                os.killpg(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.005)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()
    done_before = [k for k in keys if _status(out, k) == "complete"]
    assert 1 <= len(done_before) < len(keys), "the kill did not land midway"
    stamps = {k: [(p, p.stat().st_mtime_ns) for p in (out / k).rglob("*") if p.is_file()] for k in done_before}

    summary = annotate(datasets=[("synthetic", synth)], out=out, config=ORACLE, scheduler="serial")
    assert list(summary.skipped) == done_before
    assert sorted(r.key for r in summary.completed) == sorted(set(keys) - set(done_before))
    for k, files in stamps.items():  # finished videos untouched: no file rewritten
        assert all(p.stat().st_mtime_ns == t for p, t in files), k
    assert_stores_equal(out, serial_store)
    assert validate_store(out) == []


# ---------------------------------------------------------------- bad inputs


def _davis_layout(root: Path, names: list[str]) -> None:
    """A DAVIS-2016-shaped folder of small synthetic videos: JPEG frames, binary PNG masks."""
    for i, name in enumerate(names):
        frames, masks = make_scene(seed=20 + i, num_frames=8, height=SIZE[0], width=SIZE[1]).render()
        img_dir, ann_dir = root / "JPEGImages" / "480p" / name, root / "Annotations" / "480p" / name
        img_dir.mkdir(parents=True)
        ann_dir.mkdir(parents=True)
        for t in range(frames.shape[0]):
            Image.fromarray(frames[t]).save(img_dir / f"{t:05d}.jpg", quality=95)
            Image.fromarray(np.where(masks[t] == 1, 255, 0).astype(np.uint8)).save(ann_dir / f"{t:05d}.png")


def test_bad_inputs_fail_alone_with_one_line_errors(tmp_path):
    root = tmp_path / "davis"
    names = ["corrupt", "extra-masks", "good", "mask-size", "missing"]
    _davis_layout(root, names)
    img, ann = root / "JPEGImages" / "480p", root / "Annotations" / "480p"
    (img / "missing" / "00003.jpg").unlink()
    data = (img / "corrupt" / "00002.jpg").read_bytes()
    (img / "corrupt" / "00002.jpg").write_bytes(data[: len(data) // 2])
    shutil.copy(ann / "extra-masks" / "00007.png", ann / "extra-masks" / "00008.png")
    Image.fromarray(np.zeros((32, 48), np.uint8)).save(ann / "mask-size" / "00004.png")

    out = tmp_path / "a.zarr"
    args = ["annotate", "--dataset", "davis2016", "--root", str(root), "--out", str(out), "--flow", "dis",
            "--size", "64x96", "--scheduler", "serial", "--quiet"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    expected = {
        "corrupt": f"{img / 'corrupt' / '00002.jpg'}: cannot decode image",
        "extra-masks": f"{ann / 'extra-masks' / '00008.png'}: mask without a frame",
        "mask-size": f"{ann / 'mask-size' / '00004.png'}: mask is 48x32",
        "missing": f"{img / 'missing' / '00003.jpg'}: frame missing",
    }
    failed = S.failed_videos(S.open_store(out))
    assert sorted(failed) == [f"davis2016/{n}" for n in sorted(expected)]
    for name, text in expected.items():
        error = failed[f"davis2016/{name}"]
        assert text in error and "\n" not in error, error
        assert f"FAILED davis2016/{name}: read: {text}" in result.stdout
    assert S.complete_videos(S.open_store(out)) == ["davis2016/good"]
    assert "1 video(s) annotated, 0 already complete, 4 failed" in result.stdout
    assert validate_store(out) == []  # failures are recorded, not contract violations

    # --strict: the rerun redoes the failed videos and stops at the first failure.
    strict = CliRunner().invoke(app, [*args, "--strict"])
    assert strict.exit_code == 1 and "0 video(s) annotated, 1 already complete, 1 failed (stopped" in strict.stdout

    # Whole-run errors: one line on stderr naming the folder, exit 2, the store untouched.
    empty = tmp_path / "empty"
    empty.mkdir()
    for bad_args, text in [
        (["--dataset", "davis2016", "--root", str(empty)], f"{empty}: no JPEGImages/ folder"),
        (["--dataset", "nope", "--root", str(root)], "unknown dataset 'nope'; expected one of"),
        (["--dataset", "davis2016", "--root", str(tmp_path / "absent")], f"{tmp_path / 'absent'}: dataset folder not found"),
        (["--dataset", "davis2016", "--root", str(root), "--videos", "bear"], "--videos bear: not found in"),
    ]:
        r = CliRunner().invoke(app, ["annotate", *bad_args, "--out", str(out), "--flow", "dis", "--quiet"])
        assert r.exit_code == 2, (bad_args, r.output)
        assert r.stderr.startswith("error: ") and text in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert S.complete_videos(S.open_store(out)) == ["davis2016/good"]


def test_estimator_error_fails_its_video_alone_on_the_dask_path(synth, serial_store, tmp_path):
    """The default scheduler (Dask threads): a flow-stage error is recorded for its video, the others complete."""
    data = tmp_path / "synthetic"
    shutil.copytree(synth, data)
    for kind in ("frames", "masks"):
        (data / "scene001" / kind / "00007.png").unlink()  # 7 frames left, its scene has 8: the oracle refuses
    out = tmp_path / "a.zarr"
    summary = annotate(datasets=[("synthetic", data)], out=out, config=ORACLE, scheduler="local", workers=2)
    assert [r.key for r in summary.failed] == ["synthetic/scene001"]
    error = S.failed_videos(S.open_store(out))["synthetic/scene001"]
    assert error.startswith("read: synthetic/scene001: 7 frames, but its scene has 8"), error
    assert S.complete_videos(S.open_store(out)) == ["synthetic/scene000", "synthetic/scene002"]
    assert_stores_equal(out, serial_store, keys=["synthetic/scene000", "synthetic/scene002"])


def test_config_file_flags_and_refusal(synth, tmp_path):
    cfg_file = tmp_path / "small.yaml"
    cfg_file.write_text("size: [64, 96]\nflow:\n  name: oracle\ntracks:\n  cycle_threshold: 1.0\n")
    out = tmp_path / "a.zarr"
    base = ["annotate", "--dataset", "synthetic", "--root", str(synth), "--out", str(out), "--config", str(cfg_file),
            "--videos", "scene001", "--scheduler", "serial", "--quiet"]
    r = CliRunner().invoke(app, [*base, "--seed-stride", "2"])
    assert r.exit_code == 0, r.output
    root = S.open_store(out)
    assert S.complete_videos(root) == ["synthetic/scene001"]
    recorded = root.attrs[schema.ATTR_CONFIG]
    assert recorded["tracks"] == {"cycle_threshold": 1.0, "seed_stride": 2, "min_track_length": 2, "tracker": "chain"}
    assert recorded["size"] == [64, 96]
    assert recorded["flow"]["iters"] == 24  # untouched defaults are recorded too
    assert trackprep.open_annotations(out)["synthetic/scene001"].num_tracks < 64 * 96  # stride 2: a quarter of the pixels

    refused = CliRunner().invoke(app, [*base, "--seed-stride", "3"])
    assert refused.exit_code == 2 and "another configuration" in refused.stderr and "--overwrite" in refused.stderr
    same = CliRunner().invoke(app, [*base, "--seed-stride", "2"])
    assert same.exit_code == 0 and "0 video(s) annotated, 1 already complete" in same.stdout
    redone = CliRunner().invoke(app, [*base, "--seed-stride", "3", "--overwrite"])
    assert redone.exit_code == 0 and S.open_store(out).attrs[schema.ATTR_CONFIG]["tracks"]["seed_stride"] == 3


def test_refusal_follows_the_raft_weights_file_not_its_name(synth, tmp_path, monkeypatch):
    """Other weights behind the same setting ($TRACKPREP_RAFT_WEIGHTS) change results: refused.
    The same file named another way (--raft-weights): accepted."""
    import torch
    from torchvision.models.optical_flow import raft_small

    from trackprep.io import weights as W
    from trackprep.pipeline import annotate as annotate_mod
    from trackprep.pipeline.annotate import AnnotateError, plan_annotation

    files = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        files.append(tmp_path / f"raft_small_{seed}.pth")
        torch.save(raft_small(weights=None).state_dict(), files[-1])
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setenv(W.ENV_OFFLINE, "1")
    out = tmp_path / "a.zarr"

    def plan(env: Path | None, explicit: Path | None = None):
        monkeypatch.setattr(annotate_mod, "_ESTIMATORS", {})  # a fresh process: weights resolved again
        if env is None:
            monkeypatch.delenv(W.ENV_WEIGHTS, raising=False)
        else:
            monkeypatch.setenv(W.ENV_WEIGHTS, str(env))
        cfg = resolve_config(overrides={"size": list(SIZE), "flow": {"raft_model": "small", "device": "cpu",
                                                                      "raft_weights": explicit and str(explicit)}})
        return plan_annotation(datasets=[("synthetic", synth)], out=out, config=cfg)

    assert len(plan(files[0]).tasks) == 3
    with pytest.raises(AnnotateError, match="flow.raft_weights: stored 'sha256:[0-9a-f]{64}', now 'sha256:"):
        plan(files[1])
    assert len(plan(None, explicit=files[0]).tasks) == 3  # the same weights: the store is resumed


def test_info_and_validate_commands(serial_store, tmp_path):
    info = CliRunner().invoke(app, ["info", str(serial_store)])
    assert info.exit_code == 0
    assert "videos: 3 complete, 0 failed, 0 incomplete" in info.stdout and "frames: 24" in info.stdout
    ok = CliRunner().invoke(app, ["validate", str(serial_store)])
    assert ok.exit_code == 0 and ok.stdout.strip().endswith(": valid")

    broken = tmp_path / "broken.zarr"
    shutil.copytree(serial_store, broken)
    root = S.open_store(broken, mode="r+")
    root["synthetic/scene001/labels"][:5] = 9
    bad = CliRunner().invoke(app, ["validate", str(broken)])
    assert bad.exit_code == 1 and "scene001/labels: values [9] do not occur in the annotated masks" in bad.stdout
    missing = CliRunner().invoke(app, ["info", str(tmp_path / "nope.zarr")])
    assert missing.exit_code == 2 and "nope.zarr: does not exist; expected a trackprep store" in missing.stderr


# ---------------------------------------------------------------- real data


def test_davis2016_with_dis_flow(shared_data, tmp_path):
    """Two DAVIS-2016 sequences (first 24 frames) at 320x576 with DIS flow: valid store, and
    foreground tracks stay on their object (>= 90% of their points within 5 px of the mask)."""
    src = shared_data / "davis2016"
    root = tmp_path / "davis"
    for name in ("blackswan", "car-shadow"):
        for kind, ext in (("JPEGImages", "jpg"), ("Annotations", "png")):
            folder = root / kind / "480p" / name
            folder.mkdir(parents=True)
            for t in range(24):
                (folder / f"{t:05d}.{ext}").symlink_to(src / kind / "480p" / name / f"{t:05d}.{ext}")
    cfg = resolve_config(overrides={"flow": {"name": "dis"}})
    assert cfg["size"] == [320, 576]
    out = tmp_path / "davis.zarr"
    summary = annotate(datasets=[("davis2016", root)], out=out, config=cfg, scheduler="local", workers=2)
    assert len(summary.completed) == 2, summary.lines()
    assert validate_store(out) == []

    ann = trackprep.open_annotations(out)
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (11, 11))  # dilation by 5 px
    for key in ann:
        v = ann[key]
        assert v.frames.shape == (24, 320, 576, 3)
        labels = v.labels
        assert set(np.unique(labels)) <= {0, 1, 255} and (labels == 1).sum() > 1000
        rows = np.flatnonzero(labels == 1)
        tracks, visible = v.dense(rows)
        dilated = np.stack([cv2.dilate((m > 0).astype(np.uint8), disk) for m in np.asarray(v.masks[:])])
        n_idx, t_idx = np.nonzero(visible)
        xy = np.rint(tracks[n_idx, t_idx]).astype(int)
        inside = dilated[t_idx, xy[:, 1], xy[:, 0]] > 0
        assert inside.mean() >= 0.9, (key, inside.mean())


# ---------------------------------------------------------------- progress


def test_progress_bars_on_a_terminal_and_lines_otherwise():
    import io

    from rich.console import Console

    from trackprep.pipeline.annotate import VideoResult
    from trackprep.pipeline.progress import LogProgress, RichProgress, make_progress

    class Pipe(io.StringIO):
        def isatty(self) -> bool:
            return False

    class Tty(Pipe):
        def isatty(self) -> bool:
            return True

    assert isinstance(make_progress(stream=Pipe()), LogProgress)
    assert isinstance(make_progress(stream=Tty()), RichProgress)
    ok = VideoResult(key="d/a", status="complete", num_frames=8, num_tracks=100, fg_tracks=25, timings={"read": 1.0})
    bad = VideoResult(key="d/b", status="failed", error="read: /x/00002.jpg: cannot decode image [truncated]")

    lines = []
    p = LogProgress(lines.append)
    p.start(total=2, keys=["d/a", "d/b"], stages=["read", "write"])
    p.stage_done("d/a", "read")
    p.video_done(ok)
    p.video_done(bad)
    assert lines[1] == "  d/a: read done"
    assert lines[2].startswith("[1/2] d/a: 8 frames, 100 tracks (25% foreground), 1.0 s")
    assert lines[3].startswith("[2/2] d/b: FAILED read: /x/00002.jpg: cannot decode image [truncated]")

    out = io.StringIO()
    rich = RichProgress(console=Console(file=out, force_terminal=True, width=120))
    rich.start(total=2, keys=["d/a", "d/b"], stages=["read", "write"])
    rich.stage_done("d/a", "read")
    assert len(rich.bars.tasks) == 2  # overall + one per video in flight
    rich.video_done(ok)
    rich.video_done(bad)
    assert len(rich.bars.tasks) == 1 and rich.bars.tasks[0].completed == 2
    rich.close()
    assert "cannot decode image [truncated]" in out.getvalue()  # square brackets are not eaten as markup
