"""Random segment reads from a local segment store, and bytes per segment on disk.

Target (issue 6): reading one random segment (frames, masks, tracks) takes < 50 ms at
24 x 320 x 576 with 8192 tracks. Frames are real DAVIS-2016 frames when ../shared/data is
there (natural images barely compress, so this is the honest size), otherwise a synthetic
scene; tracks are smooth random walks, cut short at random like chained flow tracks.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_segments.py [--segments 24] [--reads 60]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from trackprep.core.resize import resize_frames
from trackprep.io import segment_store as sstore

L, H, W, N = 24, 320, 576, 8192
DAVIS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "davis2016"


def source_frames(count: int) -> tuple[list[np.ndarray], str]:
    """`count` clips of L frames at H x W, and where they came from."""
    seqs = sorted((DAVIS / "JPEGImages" / "480p").glob("*")) if DAVIS.is_dir() else []
    if seqs:
        from PIL import Image

        clips = []
        for i in range(count):
            files = sorted(seqs[i % len(seqs)].glob("*.jpg"))[:L]
            raw = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])
            clips.append(resize_frames(raw, size=(H, W)))
        return clips, f"DAVIS-2016 frames ({min(count, len(seqs))} sequences)"
    from trackprep.core.synthetic import make_scene

    clips = [make_scene(seed=i, num_frames=L, height=H, width=W).render()[0] for i in range(min(count, 4))]
    return [clips[i % len(clips)] for i in range(count)], "synthetic frames (../shared/data not found)"


def fake_segment(frames: np.ndarray, rng: np.random.Generator) -> dict:
    start = rng.uniform([0, 0], [W, H], (N, 1, 2))
    steps = rng.normal(0, 1.5, (N, L, 2)).cumsum(axis=1)
    tracks = (start + steps).astype(np.float32)
    first = rng.integers(0, L - 2, N)
    last = np.minimum(L, first + 2 + rng.integers(0, L, N))
    t = np.arange(L)
    visible = (t >= first[:, None]) & (t < last[:, None])
    tracks[~visible] = np.nan
    labels = np.where(np.arange(N) < N // 2, 1, 0).astype(np.uint8)
    masks = np.zeros((L, H, W), np.uint8)
    masks[:, H // 4 : H // 2, W // 3 : W // 2] = 1
    return dict(frames=frames, masks=masks, has_mask=np.ones(L, bool), tracks=tracks, visible=visible,
                labels=labels, video="bench/x", start=0, track_ids=np.arange(N))


def build(path: Path, clips: list[np.ndarray], *, tracks_dtype: str, spp: int) -> float:
    rng = np.random.default_rng(0)
    root = sstore.create_segment_store(path, num_segments=len(clips), length=L, height=H, width=W, max_tracks=N,
                                       config={"benchmark": True}, tracks_dtype=tracks_dtype, segments_per_shard=spp)
    t0 = time.perf_counter()
    for a in range(0, len(clips), spp):
        sstore.write_segments(root, a, [fake_segment(f, rng) for f in clips[a : a + spp]])
    sstore.mark_complete(root)
    return time.perf_counter() - t0


def time_reads(path: Path, reads: int) -> tuple[np.ndarray, np.ndarray]:
    """Wall-clock and CPU milliseconds (all threads of this process) per random segment read."""
    reader = sstore.SegmentReader(path)
    rng = np.random.default_rng(1)
    reader.read(0)  # first-call setup (event loop, codecs) is not a per-segment cost
    wall, cpu = [], []
    for i in rng.integers(0, len(reader), reads):
        t0, c0 = time.perf_counter(), time.process_time()
        seg = reader.read(int(i))
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        assert seg["frames"].shape == (L, H, W, 3) and seg["tracks"].shape == (N, L, 2)
    return np.asarray(wall) * 1e3, np.asarray(cpu) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--segments", type=int, default=24)
    ap.add_argument("--reads", type=int, default=60)
    ap.add_argument("--segments-per-shard", type=int, default=sstore.DEFAULT_SEGMENTS_PER_SHARD)
    args = ap.parse_args()
    clips, origin = source_frames(args.segments)
    print(f"segment store benchmark: {args.segments} segments of {L}x{H}x{W}, {N} tracks each; {origin}")
    raw = L * H * W * 3 + L * H * W + L + N * L * 2 * 4 + N * L + N + N * 4
    print(f"uncompressed segment: {raw / 1e6:.2f} MB")
    with tempfile.TemporaryDirectory() as tmp:
        for dtype in ("float32", "float16"):
            path = Path(tmp) / f"S_{dtype}.zarr"
            write_s = build(path, clips, tracks_dtype=dtype, spp=args.segments_per_shard)
            per_segment = sstore.store_bytes(path) / args.segments
            ms, cpu = time_reads(path, args.reads)
            files = sum(1 for f in path.rglob("*") if f.is_file())
            print(f"tracks {dtype}: {per_segment / 1e6:.2f} MB/segment on disk ({files} files); "
                  f"write {args.segments / write_s:.1f} segments/s")
            print(f"  random read of one segment (all arrays), {args.reads} reads: wall median {np.median(ms):.1f} ms, "
                  f"p95 {np.percentile(ms, 95):.1f} ms; CPU median {np.median(cpu):.1f} ms (target < 50 ms)")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"machine: {os.cpu_count()} cores, 1-minute load average {load:.1f} (wall times grow with load)")


if __name__ == "__main__":
    main()
