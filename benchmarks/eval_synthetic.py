"""README table: TAP-Vid scores of the built-in synthetic videos annotated with oracle and DIS flow.

Writes the synthetic dataset `trackprep demo` uses (io/datasets/synthetic.py), annotates it
through the real pipeline (`trackprep.pipeline.annotate`, serial scheduler) once per flow
backend, builds exact ground truth from each video's scene (random points at random frames,
followed by Scene.ground_truth, stored in the npz format of trackprep.eval.groundtruth) and
scores the stores with `evaluate_store` (query mode "first" by default, as TAP-Vid DAVIS-first).
Prints a markdown table: mean over videos of position accuracy, occlusion accuracy, AJ, PCK.

Run: PYTHONPATH=. python benchmarks/eval_synthetic.py [--videos 4] [--frames 24] [--size 320x576]
     [--trackers chain,longrange]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from trackprep.config import parse_size, resolve_config
from trackprep.core.synthetic import Scene
from trackprep.eval.evaluate import TABLE_COLUMNS, evaluate_store
from trackprep.eval.groundtruth import GroundTruthVideo, write_npz
from trackprep.io.datasets.synthetic import SCENE_FILE, write_synthetic_dataset
from trackprep.pipeline.annotate import annotate


def ground_truth(dataset: Path, names: list[str], *, points: int, seed: int) -> list[GroundTruthVideo]:
    """Exact tracks of `points` random (t, x, y) per video, with masks for the PCK threshold."""
    rng = np.random.default_rng(seed)
    videos = []
    for name in names:
        scene = Scene.from_dict(json.loads((dataset / name / SCENE_FILE).read_text()))
        queries = np.stack([
            rng.integers(0, scene.num_frames, points),
            rng.uniform(0, scene.width - 1, points),
            rng.uniform(0, scene.height - 1, points),
        ], axis=1).astype(np.float64)
        tracks, visible = scene.ground_truth(queries)
        _, masks = scene.render()
        # No stored queries: the query mode samples them from the tracks, as TAP-Vid does.
        videos.append(GroundTruthVideo(name=name, size=(scene.height, scene.width), tracks=tracks,
                                       occluded=~visible, masks=masks))
    return videos


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=4)
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--size", default="320x576", help="HxW the videos are rendered and annotated at")
    ap.add_argument("--points", type=int, default=1000, help="ground-truth tracks per video")
    ap.add_argument("--mode", default="first", choices=["first", "strided"])
    ap.add_argument("--flows", default="oracle,dis")
    ap.add_argument("--trackers", default="chain", help="comma-separated: chain, longrange")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    height, width = parse_size(args.size)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        dataset = tmp / "synthetic"
        names = write_synthetic_dataset(dataset, num_videos=args.videos, seed=args.seed, num_frames=args.frames,
                                        height=height, width=width)
        gt_path = tmp / "gt.npz"
        write_npz(gt_path, ground_truth(dataset, names, points=args.points, seed=args.seed))
        rows = []
        for flow in args.flows.split(","):
            for tracker in args.trackers.split(","):
                name = flow if tracker == "chain" else f"{flow}, {tracker}"
                config = resolve_config(overrides={"size": [height, width], "flow": {"name": flow, "device": "cpu"},
                                                   "tracks": {"tracker": tracker}})
                store = tmp / f"{flow}-{tracker}.zarr"
                t0 = time.perf_counter()
                summary = annotate(datasets=[("synthetic", dataset)], out=store, config=config,
                                   scheduler="serial", overwrite=True)
                if summary.failed:
                    raise SystemExit(f"annotation with {name} failed: {[r.error for r in summary.failed]}")
                t_annotate = time.perf_counter() - t0
                t0 = time.perf_counter()
                report = evaluate_store(store, gt_path, mode=args.mode)
                t_eval = time.perf_counter() - t0
                rows.append((name, report, t_annotate, t_eval))

    print(f"{args.videos} synthetic videos (make_scene seeds {args.seed}..{args.seed + args.videos - 1}, "
          f"3 objects), {args.frames} frames at {height}x{width}, {args.points} ground-truth tracks each; "
          f"query mode {args.mode}; mean over videos, x100\n")
    header = ["flow", *(title for _, title in TABLE_COLUMNS)]
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|")
    for flow, report, _, _ in rows:
        print("| " + " | ".join([flow, *(f"{100 * report.mean[k]:.1f}" for k, _ in TABLE_COLUMNS)]) + " |")
    print()
    for flow, report, t_annotate, t_eval in rows:
        queries = sum(v.num_queries for v in report.videos)
        print(f"{flow}: annotate {t_annotate:.1f} s, evaluate {t_eval:.1f} s ({queries} queries)")


if __name__ == "__main__":
    main()
