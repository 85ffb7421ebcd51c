"""Streaming annotation (issue 13): the streamed store equals the whole-video computation bit
for bit (synthetic clip with oracle flow, real DAVIS-2016 with DIS), memory does not grow with
the video's length, and each task's torch threads stay within its share of the cores."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import trackprep
from trackprep.config import resolve_config
from trackprep.core.chaining import chain_tracks
from trackprep.core.labels import label_tracks
from trackprep.core.synthetic import Layer, Scene
from trackprep.flow import make_estimator
from trackprep.io import annotation_store as S
from trackprep.io.datasets import open_dataset, read_clip
from trackprep.io.datasets.synthetic import write_synthetic_dataset, write_synthetic_video
from trackprep.pipeline import annotate as annotate_mod
from trackprep.pipeline.annotate import annotate

REPO = Path(__file__).resolve().parents[1]


def whole_video_reference(dataset: str, root: Path, video: str, cfg: dict):
    """Today's whole-video path: read the clip, flow for all pairs at once, chain, label; then
    the tracks shorter than min_track_length dropped and the points as the store keeps them."""
    source = open_dataset(dataset, root).video(video)
    clip = read_clip(source, size=tuple(cfg["size"]))
    scene = source.extras.get("scene") if source.extras else None
    if scene is not None:
        scene = Scene.from_dict(scene).rescaled(height=cfg["size"][0], width=cfg["size"][1])
    est = make_estimator(**cfg["flow"])
    flow = est.estimate_frames(clip.frames, scene=scene)
    tracks = chain_tracks(flow, cycle_threshold=cfg["tracks"]["cycle_threshold"], seed_stride=cfg["tracks"]["seed_stride"])
    tracks = label_tracks(tracks, clip.masks, clip.has_mask)
    tracks = tracks.select(np.flatnonzero(tracks.lengths >= cfg["tracks"]["min_track_length"]))
    return clip, tracks


def assert_store_equals(store: Path, key: str, clip, tracks) -> None:
    v = trackprep.open_annotations(store)[key]
    assert v.num_tracks == len(tracks) > 0
    np.testing.assert_array_equal(v.start, tracks.start)
    np.testing.assert_array_equal(v.length, tracks.lengths)
    np.testing.assert_array_equal(v.labels, tracks.labels)
    quantised = (np.rint(tracks.points * S.POINT_SCALE) / S.POINT_SCALE).astype(np.float32)
    np.testing.assert_array_equal(v.points[:], quantised)
    np.testing.assert_array_equal(v.frames[:], clip.frames)
    np.testing.assert_array_equal(v.masks[:], clip.masks)
    np.testing.assert_array_equal(v.has_mask[:], clip.has_mask)


@pytest.mark.parametrize("window", [1, 4, 64])
def test_streaming_equals_the_whole_video_path_on_a_synthetic_clip(tmp_path, monkeypatch, window):
    data = tmp_path / "data"
    write_synthetic_dataset(data, num_videos=1, seed=4, num_frames=19, height=48, width=64)
    cfg = resolve_config(overrides={"size": [48, 64], "flow": {"name": "oracle"}})
    monkeypatch.setattr(annotate_mod, "WINDOW_PAIRS", window)  # 1 and 4: many windows; 64: one
    out = tmp_path / "a.zarr"
    summary = annotate(datasets=[("synthetic", data)], out=out, config=cfg, scheduler="serial")
    assert not summary.failed
    clip, tracks = whole_video_reference("synthetic", data, "scene004", cfg)
    assert (tracks.lengths >= 2).all() and tracks.num_frames == 19
    assert_store_equals(out, "synthetic/scene004", clip, tracks)


def test_streaming_equals_the_whole_video_path_on_davis_with_dis(shared_data, tmp_path, monkeypatch):
    """car-shadow (40 frames) at 160x288 with DIS, in windows of 6 pairs (the last one shorter)."""
    src = shared_data / "davis2016"
    root = tmp_path / "davis"
    for kind in ("JPEGImages", "Annotations"):
        (root / kind / "480p").mkdir(parents=True)
        (root / kind / "480p" / "car-shadow").symlink_to(src / kind / "480p" / "car-shadow")
    cfg = resolve_config(overrides={"size": [160, 288], "flow": {"name": "dis"}})
    monkeypatch.setattr(annotate_mod, "WINDOW_PAIRS", 6)
    out = tmp_path / "a.zarr"
    summary = annotate(datasets=[("davis2016", root)], out=out, config=cfg, scheduler="serial")
    assert not summary.failed, summary.lines()
    clip, tracks = whole_video_reference("davis2016", root, "car-shadow", cfg)
    assert clip.num_frames == 40 and (tracks.labels == 1).sum() > 100
    assert_store_equals(out, "davis2016/car-shadow", clip, tracks)


_MEASURE = r"""
import json, sys, tracemalloc
from pathlib import Path
from trackprep.config import resolve_config
from trackprep.pipeline.annotate import annotate

def rss_kib(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])

data, warm, out = (Path(a) for a in sys.argv[1:4])
cfg = resolve_config(overrides={"size": [72, 120], "flow": {"name": "oracle"}})
annotate(datasets=[("synthetic", warm)], out=out / "warm.zarr", config=cfg, scheduler="serial")  # imports, codecs
Path("/proc/self/clear_refs").write_text("5")  # reset the peak RSS (VmHWM) to the current RSS
before = rss_kib("VmRSS")
tracemalloc.start()
summary = annotate(datasets=[("synthetic", data)], out=out / "a.zarr", config=cfg, scheduler="serial")
traced = tracemalloc.get_traced_memory()[1]
assert not summary.failed, summary.lines()
print(json.dumps({"traced": traced, "rss": (rss_kib("VmHWM") - before) * 1024}))
"""


# glibc keeps freed memory in per-thread arenas (zarr encodes chunks in a thread pool) and
# raises its mmap threshold after large frees; then RSS creeps up with run time whatever the
# live memory. One arena and a fixed threshold make RSS follow the live memory.
MALLOC = {"MALLOC_ARENA_MAX": "1", "MALLOC_MMAP_THRESHOLD_": "131072"}


def panning_scene(num_frames: int) -> Scene:
    """72x120: the background pans by (4, 2.5) px per frame, so every track leaves the frame
    within 30 frames (as tracks end on real video); an object crosses it the other way."""
    bg = Layer(texture_seed=1, tint=(0.6, 0.5, 0.4), c0=(60.0, 36.0), v=(4.0, 2.5))
    obj = Layer(texture_seed=2, tint=(0.2, 0.7, 0.3), c0=(110.0, 8.0), v=(-2.0, 1.0), radius=15.0, lobes=3, lobe_amp=0.2)
    return Scene(height=72, width=120, num_frames=num_frames, layers=(bg, obj))


def _peak_memory(tmp_path: Path, num_frames: int, warm: Path) -> dict:
    data = tmp_path / f"data{num_frames}"
    write_synthetic_video(data / "pan", panning_scene(num_frames))
    out = tmp_path / f"out{num_frames}"
    out.mkdir()
    proc = subprocess.run([sys.executable, "-c", _MEASURE, str(data), str(warm), str(out)], capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **MALLOC}, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc to reset the peak RSS")
def test_peak_memory_of_a_long_video_is_that_of_a_short_one(tmp_path):
    """400 frames against 50 at 72x120 (oracle flow), each in a fresh process after a warm-up run.

    Two measures: tracemalloc's peak sees every numpy array (frames, flow windows, the chainer's
    track history, write buffers) but not torch's own allocations; the peak RSS above the RSS
    before the run (the kernel's high-water mark, reset through /proc/self/clear_refs) sees
    everything, torch and OpenCV included."""
    warm = tmp_path / "warm"
    write_synthetic_video(warm / "pan", panning_scene(20))
    short, long = _peak_memory(tmp_path, 50, warm), _peak_memory(tmp_path, 400, warm)
    assert long["traced"] <= 1.3 * short["traced"], (short, long)
    assert long["rss"] <= 1.3 * max(short["rss"], 8 << 20), (short, long)  # below 8 MiB the RSS is noise
    print(f"peak memory, 50 -> 400 frames: traced {short['traced'] / 2**20:.1f} -> {long['traced'] / 2**20:.1f} MiB, "
          f"RSS {short['rss'] / 2**20:.1f} -> {long['rss'] / 2**20:.1f} MiB")
    # and the long video really is bigger: 8x the frames, more than 4x the points in the store
    ann_short = trackprep.open_annotations(tmp_path / "out50" / "a.zarr")
    ann_long = trackprep.open_annotations(tmp_path / "out400" / "a.zarr")
    points = [next(iter(a[k].num_points for k in a)) for a in (ann_short, ann_long)]
    assert points[1] > 4 * points[0], points


def test_each_task_runs_torch_with_its_share_of_the_cores(tmp_path, monkeypatch):
    """Local scheduler, 2 videos at once on a machine said to have 4 cores: 2 torch threads per task,
    and the caller's own torch setting untouched."""
    import torch

    data = tmp_path / "data"
    write_synthetic_dataset(data, num_videos=2, seed=0, num_frames=6, height=32, width=48)
    cfg = resolve_config(overrides={"size": [32, 48], "flow": {"name": "oracle"}})
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    before = torch.get_num_threads()
    out = tmp_path / "a.zarr"
    summary = annotate(datasets=[("synthetic", data)], out=out, config=cfg, scheduler="local", workers=2)
    assert not summary.failed and torch.get_num_threads() == before
    root = S.open_store(out)
    assert [root[k].attrs["torch_threads"] for k in S.complete_videos(root)] == [2, 2]
    serial = annotate(datasets=[("synthetic", data)], out=tmp_path / "b.zarr", config=cfg, scheduler="serial")
    assert not serial.failed
    root = S.open_store(tmp_path / "b.zarr")
    assert [root[k].attrs["torch_threads"] for k in S.complete_videos(root)] == [before, before]


def test_history_spill_goes_to_tmpdir_is_removed_and_a_full_disk_fails_the_video_in_one_line(tmp_path, monkeypatch):
    """The chaining history lives in a folder of $TMPDIR for the video's run only; when it
    cannot be written the video fails with one line naming the file, and nothing is left."""
    import tempfile

    root = tmp_path / "synthetic"
    write_synthetic_dataset(root, num_videos=1, seed=0, num_frames=12, height=32, width=48)
    cfg = resolve_config(overrides={"size": [32, 48], "flow": {"name": "oracle"}})
    spill_root = tmp_path / "tmp"
    spill_root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spill_root))
    seen = []
    real_pwrite = os.pwrite

    def pwrite(fd, data, offset):
        seen.append(os.readlink(f"/proc/self/fd/{fd}") if Path("/proc/self/fd").exists() else str(fd))
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(S.os, "pwrite", pwrite)
    ok = annotate(datasets=[("synthetic", root)], out=tmp_path / "a.zarr", config=cfg, scheduler="serial")
    assert not ok.failed and seen and all(str(spill_root) in p for p in seen)
    assert list(spill_root.iterdir()) == []

    def full(fd, data, offset):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(S.os, "pwrite", full)
    bad = annotate(datasets=[("synthetic", root)], out=tmp_path / "b.zarr", config=cfg, scheduler="serial")
    (failure,) = bad.failed
    assert failure.error.startswith("track: OSError: [Errno 28] ") and "history-00000.bin: cannot write the tracks' " \
        "history spill (No space left on device); expected room in $TMPDIR" in failure.error, failure.error
    assert "\n" not in failure.error and list(spill_root.iterdir()) == []


_FREES = r"""
import os, sys
import numpy as np
from trackprep.pipeline.malloc import return_large_frees_to_os

applied = return_large_frees_to_os() if sys.argv[1] == "tuned" else False
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
a = np.ones((16 << 20) // 8)
del a  # glibc's dynamic mmap threshold rises past 16 MiB here
base, keep = rss(), []
for _ in range(5):  # an 8 MiB temporary, then a small object allocated after it and kept
    big = np.ones((8 << 20) // 8)
    keep.append(np.ones(100))
    del big
print(applied, (rss() - base) / 2**20)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or not Path("/proc/self/statm").exists(),
                    reason="glibc on Linux: mallopt and /proc/self/statm")
def test_annotate_malloc_setting_gives_freed_temporaries_back_to_the_os():
    """What `trackprep annotate` sets (trackprep.pipeline.malloc): an 8 MiB temporary freed
    under a live small object stays resident with glibc's defaults, and is returned with ours;
    a MALLOC_* variable in the environment is left to win."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env["PYTHONPATH"] = str(REPO)
    out = {}
    for mode in ("default", "tuned"):
        proc = subprocess.run([sys.executable, "-c", _FREES, mode], capture_output=True, text=True, env=env, timeout=120)
        assert proc.returncode == 0, proc.stderr
        applied, mib = proc.stdout.split()
        out[mode] = (applied == "True", float(mib))
    if not out["tuned"][0]:
        pytest.skip("mallopt not available (not glibc)")
    assert out["default"][1] >= 6 and out["tuned"][1] <= 1, out
    proc = subprocess.run([sys.executable, "-c", _FREES, "tuned"], capture_output=True, text=True,
                          env={**env, "MALLOC_ARENA_MAX": "4"}, timeout=120)
    assert proc.stdout.split()[0] == "False", proc.stdout
