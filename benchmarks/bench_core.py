"""Time of the trajectory core (chaining, cycle test, seeding) for a 24-frame 320x576 clip.

Target (issue 2): under 2 s in total on a 2-core CPU. Run: python benchmarks/bench_core.py [--repeat 3]
"""

import argparse
import time

import numpy as np
import torch

from trackprep.core.chaining import chain_tracks
from trackprep.core.synthetic import make_scene


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--stride", type=int, default=1)
    args = ap.parse_args()
    scene = make_scene(seed=0, num_frames=args.frames)
    flow = scene.flow()
    times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        tracks = chain_tracks(flow, seed_stride=args.stride)
        times.append(time.perf_counter() - t0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"chain+cycle+seed, {args.frames} frames at 320x576, stride {args.stride}: "
          f"best {min(times):.3f} s, median {np.median(times):.3f} s over {args.repeat} runs; "
          f"{len(tracks)} tracks, {tracks.points.shape[0]} points")


if __name__ == "__main__":
    main()
