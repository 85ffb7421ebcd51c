"""Time and memory of answering queries from a long video's annotation store.

Builds one synthetic video (oracle flow, chained at every pixel), writes it to an
annotation store, then answers TAP-Vid-style queries from the store through
`trackprep.core.track_query` reading blocks of track rows. Prints the store's dense
track size, the peak memory numpy allocated while querying (tracemalloc), and the time.
The claim checked: peak memory stays near one block of rows plus Q * k tracks, not
the whole [N, T, 2] array.

Run: PYTHONPATH=. python benchmarks/bench_eval.py [--frames 100] [--size 320x576] [--queries 2000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

from trackprep.config import parse_size
from trackprep.core.chaining import chain_tracks
from trackprep.core.synthetic import make_scene
from trackprep.core.tapvid_metrics import TAPVID_SIZE, rescale_points, tapvid_metrics
from trackprep.core.track_query import DEFAULT_ROWS_PER_CHUNK, query_tracks
from trackprep.io.annotation_reader import open_annotations
from trackprep.io.annotation_store import create_store, write_video


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--size", default="320x576")
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--rows-per-chunk", type=int, default=DEFAULT_ROWS_PER_CHUNK)
    args = ap.parse_args()
    height, width = parse_size(args.size)

    t0 = time.perf_counter()
    scene = make_scene(seed=0, num_frames=args.frames, height=height, width=width)
    clip = scene.to_clip("long")
    tracks = chain_tracks(scene.flow())
    t_build = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        root = create_store(Path(tmp) / "A.zarr", config={"bench": "eval"})
        write_video(root, "synthetic/long", clip, tracks)
        video = open_annotations(Path(tmp) / "A.zarr")["synthetic/long"]
        store_tracks, store_visible = video.dense_rows()

        rng = np.random.default_rng(0)
        q = args.queries
        queries = np.stack([rng.integers(0, args.frames, q), rng.uniform(0, width - 1, q),
                            rng.uniform(0, height - 1, q)], axis=1).astype(np.float64)
        gt, gt_visible = scene.ground_truth(queries)

        tracemalloc.start()
        t0 = time.perf_counter()
        pred, pred_visible = query_tracks(store_tracks, store_visible, queries, rows_per_chunk=args.rows_per_chunk)
        t_query = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()

    m = tapvid_metrics(
        query_frames=queries[:, 0].astype(np.int64),
        gt_tracks=rescale_points(gt, from_size=(height, width), to_size=TAPVID_SIZE), gt_occluded=~gt_visible,
        pred_tracks=rescale_points(pred, from_size=(height, width), to_size=TAPVID_SIZE),
        pred_occluded=~pred_visible, mode="strided",
    )
    n = len(tracks)
    dense_mb = n * args.frames * (2 * 4 + 1) / 2**20
    print(f"video: {args.frames} frames at {height}x{width}, {n} tracks (built in {t_build:.1f} s); "
          f"dense tracks + visible would take {dense_mb:.0f} MiB")
    print(f"query: {q} queries at random frames, blocks of {args.rows_per_chunk} rows: {t_query:.2f} s, "
          f"peak numpy memory {peak / 2**20:.0f} MiB")
    print(f"oracle tracks vs exact ground truth (strided scoring): position accuracy "
          f"{100 * m['position_accuracy']:.1f}, occlusion accuracy {100 * m['occlusion_accuracy']:.1f}, "
          f"AJ {100 * m['average_jaccard']:.1f}")


if __name__ == "__main__":
    main()
