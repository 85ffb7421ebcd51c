"""Dataset reading on the real DAVIS-2016 val copy (../shared/data/davis2016, 20 sequences, 1376 frames).

Prints: listing time (no decoding), `check` time in quick and --decode modes, decode throughput
of `iter_frames` at 854x480, `read_clip` throughput to the 320x576 working size, and the peak
resident memory of reading the longest video (cows, 104 frames), which should follow the output
size (104 x 320 x 576 x 4 bytes ~ 77 MB), not the source resolution.
Run: PYTHONPATH=. python benchmarks/bench_datasets.py [--root ../shared/data/davis2016]
"""

import argparse
import resource
import sys
import time
from pathlib import Path

from trackprep.io.check import check_dataset
from trackprep.io.datasets import open_dataset, read_clip


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "davis2016")
    args = ap.parse_args()
    if not (args.root / "JPEGImages").is_dir():
        sys.exit(f"{args.root}: DAVIS-2016 copy not found; pass --root")

    t0 = time.perf_counter()
    ds = open_dataset("davis2016", args.root)
    names = ds.video_names()
    videos = [ds.video(n) for n in names]
    frames = sum(v.num_frames for v in videos)
    list_s = time.perf_counter() - t0
    print(f"listing: {len(names)} sequences, {frames} frames in {list_s * 1000:.0f} ms (nothing decoded)")

    base_rss = rss_mb()
    longest = max(videos, key=lambda v: v.num_frames)
    t0 = time.perf_counter()
    clip = read_clip(longest, size=(320, 576))
    s = time.perf_counter() - t0
    print(f"read_clip {longest.name} ({clip.num_frames} frames, 854x480 -> 576x320): {s:.2f} s, "
          f"{clip.num_frames / s:.0f} frames/s; peak RSS {rss_mb():.0f} MB (before {base_rss:.0f} MB), "
          f"clip arrays {(clip.frames.nbytes + clip.masks.nbytes) / 2**20:.0f} MB")

    for decode in (False, True):
        t0 = time.perf_counter()
        report = check_dataset("davis2016", args.root, decode=decode)
        s = time.perf_counter() - t0
        mode = "--decode" if decode else "quick"
        print(f"check ({mode}): {s:.2f} s, {report.total_frames / s:.0f} frames/s, ok={report.ok}")

    sample = videos[:5]
    n = sum(v.num_frames for v in sample)
    t0 = time.perf_counter()
    for v in sample:
        for _ in v.iter_frames():
            pass
    s = time.perf_counter() - t0
    print(f"iter_frames (decode frame + mask at 854x480): {n} frames in {s:.2f} s, {n / s:.0f} frames/s")


if __name__ == "__main__":
    main()
