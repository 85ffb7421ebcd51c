"""Cost of the reliability checks (issue 14) on a real DAVIS-2016 video at 320x576.

1. Writing one annotated video: share of the write spent reading back its chunk files for
   the CRC-32 record (trackprep.io.integrity.record_chunks).
2. `validate` of that store: full (decodes every chunk, every contract rule) and `--quick`
   (presence + CRC-32 of every file), and the presence check alone (what annotate's resume,
   `info` and `viz` do).
3. Taking and giving back one video lock (trackprep.io.locks).

Each figure is the median of --repeats runs. Run:
    PYTHONPATH=. python benchmarks/bench_integrity.py [--data ../shared/data/davis2016] [--video blackswan]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "davis2016")
    ap.add_argument("--video", default="blackswan")
    ap.add_argument("--repeats", type=int, default=5)
    ns = ap.parse_args()
    if not ns.data.is_dir():
        raise SystemExit(f"{ns.data}: DAVIS-2016 folder not found (see ../shared/data/README.md)")

    from trackprep.core.chaining import chain_tracks
    from trackprep.core.labels import label_tracks
    from trackprep.flow import make_estimator
    from trackprep.io import annotation_store as S
    from trackprep.io import integrity
    from trackprep.io.datasets import open_dataset, read_clip
    from trackprep.io.locks import Locks, lock_dir
    from trackprep.io.validate import validate_store

    clip = read_clip(open_dataset("davis2016", ns.data).video(ns.video), size=(320, 576))
    flow = make_estimator(name="dis", dis_preset="medium").estimate(clip)
    tracks = label_tracks(chain_tracks(flow, seed_stride=1), clip.masks, clip.has_mask)
    print(f"{ns.video}: {clip.num_frames} frames at 320x576, {len(tracks)} tracks")

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "A.zarr"
        root = S.create_store(path, config={"bench": "integrity"})
        key = S.video_key("davis2016", ns.video)
        write = median_time(lambda: S.write_video(root, key, clip, tracks), ns.repeats)
        group = S.open_store(path)[key]
        record = median_time(lambda: integrity.record_chunks(group), ns.repeats)
        files = sum(len(v) for v in group.attrs[integrity.CHUNKS_ATTR].values())
        print(f"write one video: {write:.3f} s, of which the CRC-32 record {record:.3f} s ({100 * record / write:.1f}%), "
              f"{files} chunk files")
        full = median_time(lambda: validate_store(path), ns.repeats)
        quick = median_time(lambda: validate_store(path, quick=True), ns.repeats)
        presence = median_time(lambda: S.damaged_videos(S.open_store(path)), ns.repeats)
        print(f"validate: full {full:.3f} s, --quick {quick:.3f} s, presence only {presence * 1e3:.1f} ms")
        with Locks(lock_dir(path)) as locks:
            def take_and_give_back() -> None:
                locks.try_acquire(key)
                locks.release(key)

            lock = median_time(take_and_give_back, ns.repeats * 20)
        print(f"take + give back one video lock: {lock * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
