"""Cost and track quality of the two trackers (`tracks.tracker`: chain, longrange) per 24-frame clip.

Annotates the first 24 frames of DAVIS-2016 sequences at 320x576 through the real pipeline
(serial scheduler) once per tracker and flow backend, and prints per clip: flow pairs estimated
(counted at the estimator), median seconds over --repeats runs (total, flow, track), tracks,
tracks visible in >= 12 of the 24 frames, and the share of foreground track points inside the
mask dilated by 5 px. RAFT (--flows raft) runs with random weights unless --raft-weights names
a file: its flow time is real, its tracks are not.

Run: PYTHONPATH=. python benchmarks/bench_longrange.py [--data ../shared/data/davis2016]
     [--videos blackswan,car-shadow,cows] [--flows dis] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

import trackprep
from trackprep.config import resolve_config
from trackprep.pipeline import annotate as annotate_mod

from bench_annotate import subset  # benchmarks/ is on sys.path when a script there runs

REPO = Path(__file__).resolve().parents[1]
FRAMES = 24


def quality(store: Path) -> tuple[int, int, float]:
    """(tracks, tracks of >= 12 frames, share of foreground points inside the 5-px-dilated mask), summed over videos."""
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (11, 11))
    ann = trackprep.open_annotations(store)
    n = long = inside = total = 0
    for key in ann:
        v = ann[key]
        n += v.num_tracks
        long += int((v.length >= FRAMES // 2).sum())
        tracks, visible = v.dense(np.flatnonzero(v.labels == 1))
        dilated = np.stack([cv2.dilate((m > 0).astype(np.uint8), disk) for m in np.asarray(v.masks[:])])
        n_idx, t_idx = np.nonzero(visible)
        xy = np.rint(tracks[n_idx, t_idx]).astype(int)
        inside += int((dilated[t_idx, xy[:, 1], xy[:, 0]] > 0).sum())
        total += int(n_idx.shape[0])
    return n, long, inside / max(total, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "davis2016")
    ap.add_argument("--videos", default="blackswan,car-shadow,cows")
    ap.add_argument("--flows", default="dis")
    ap.add_argument("--raft-weights", default=None, help="RAFT .pth; default: random raft_large weights written here")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    names = args.videos.split(",")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        root = subset(args.data.resolve(), tmp / "davis", names, FRAMES)
        weights = args.raft_weights
        if "raft" in args.flows.split(",") and weights is None:
            import torch
            from torchvision.models.optical_flow import raft_large

            torch.manual_seed(0)
            weights = str(tmp / "raft_large_random.pth")
            torch.save(raft_large(weights=None).state_dict(), weights)
        print(f"{len(names)} DAVIS-2016 clips ({', '.join(names)}), first {FRAMES} frames at 320x576, serial; "
              f"per clip, median of {args.repeats} runs\n")
        print("| flow | tracker | flow pairs | s / clip | flow s | track s | tracks | >= 12 frames | fg in mask |")
        print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
        for flow in args.flows.split(","):
            for tracker in ("chain", "longrange"):
                cfg = resolve_config(overrides={"flow": {"name": flow, "device": args.device, "raft_weights": weights},
                                                "tracks": {"tracker": tracker}})
                estimator = annotate_mod.estimator_for(cfg["flow"])
                pairs = [0]
                inner = type(estimator).estimate_pairs

                def counting(frames, pair_list, *, first=0, scene=None, _inner=inner, _est=estimator):
                    pairs[0] += len(pair_list)
                    return _inner(_est, frames, pair_list, first=first, scene=scene)

                estimator.estimate_pairs = counting  # the cached estimator the pipeline uses
                totals, flow_s, track_s = [], [], []
                for r in range(args.repeats):
                    pairs[0] = 0
                    out = tmp / f"{flow}-{tracker}-{r}.zarr"
                    t0 = time.perf_counter()
                    summary = annotate_mod.annotate(datasets=[("davis2016", root)], out=out, config=cfg, scheduler="serial")
                    totals.append((time.perf_counter() - t0) / len(names))
                    if summary.failed:
                        raise SystemExit(f"{flow}/{tracker}: {summary.lines()}")
                    flow_s.append(sum(res.timings.get("flow", 0.0) for res in summary.results) / len(names))
                    track_s.append(sum(res.timings.get("track", 0.0) for res in summary.results) / len(names))
                del estimator.estimate_pairs
                n, long, inside = quality(out)
                print(f"| {flow} | {tracker} | {pairs[0] / len(names):.0f} | {statistics.median(totals):.2f} | "
                      f"{statistics.median(flow_s):.2f} | {statistics.median(track_s):.2f} | {n / len(names):.0f} | "
                      f"{long / len(names):.0f} | {100 * inside:.1f}% |")


if __name__ == "__main__":
    main()
