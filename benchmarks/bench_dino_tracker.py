"""trackprep against DINO-Tracker's trajectory preprocessing, side by side on the same clips and flow.

For each DAVIS-2016 clip (the first 24 frames, worked at 320x576) this times, in alternating
runs (the order rotates every round), three whole programs, each a fresh child process with the
same environment (OMP_NUM_THREADS=--threads; OpenCV's own default threads on both sides):

- trackprep: `trackprep annotate --flow dis --scheduler serial`: read and resize frames and
  masks, DIS flow, chaining with the 1.5 px cycle test and seeding, fg/bg labels, tracks of >= 2
  frames written with the frames and masks into a Zarr store.
- DINO-Tracker: its steps 1 and 4 (main_preprocessing.py runs extract_trajectories.py, then
  split_trajectories_to_fg_bg.py, as child processes) as re-implemented in
  benchmarks/dino_tracker_reference.py: read and Lanczos-resize frames, DIS flow (trackprep's own
  estimator: the same backend and settings), chaining of every start frame's full pixel grid with
  the same 1.5 px test, trajectories of >= 2 frames saved as a dense [N, T, 2] tensor, then split
  into fg/bg files by the masks. Twice: with the direct-flow filter (DINO-Tracker's configuration,
  config/preprocessing.yaml: flow from each start frame to every later frame, 276 more pairs for
  24 frames) and without it (extract_trajectories.py's own default).

Not compared: DINO embeddings and best buddies (DINO-Tracker's other preprocessing steps; trackprep
has no equivalent). Both sides' frames come from the same JPEGs but are resized differently (PIL
Lanczos there, antialiased bilinear in trackprep), so their flows differ slightly; the agreement
check therefore re-runs the reference's chaining in this process on trackprep's own stored frames,
with flow from the same estimator (identical flow on both sides), and compares the tracks seeded
at frame 0 pixel by pixel.

Printed per clip: median wall and CPU seconds of the whole process, the flow seconds each program
measured itself, tracks and points kept, and the ratios DINO-Tracker / trackprep for the whole
process and for everything but flow; the load average before and after.

Run: PYTHONPATH=. python benchmarks/bench_dino_tracker.py [--data ../shared/data/davis2016]
     [--videos blackswan,car-shadow,cows] [--runs 3] [--threads 1] [--no-check]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import dino_tracker_reference as ref  # benchmarks/ is on sys.path when a script there runs
from bench_annotate import subset
from bench_startup import command

import trackprep

REPO = Path(__file__).resolve().parents[1]
FRAMES = 24
SIZE = (320, 576)
PROGRAMS = ("trackprep", "dino-tracker (direct-flow filter)", "dino-tracker (no direct-flow filter)")


def dino_layout(davis: Path, name: str, dst: Path) -> Path:
    """DINO-Tracker's folder for one video (video/, masks/), linking the clip's frames and masks."""
    for kind, sub in (("JPEGImages", "video"), ("Annotations", "masks")):
        (dst / sub).mkdir(parents=True, exist_ok=True)
        for p in sorted((davis / kind / "480p" / name).iterdir()):
            (dst / sub / p.name).symlink_to(p.resolve())
    return dst


def timed_child(args: list[str], *, threads: int) -> tuple[float, float]:
    """Wall and CPU (user + system, its children included) seconds of one child process."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(threads)}
    r0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    out = subprocess.run(args, env=env, capture_output=True, text=True, cwd=tempfile.gettempdir())
    wall, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(args)} exited {out.returncode}:\n{out.stderr[-3000:]}")
    return wall, r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime


def run_trackprep(root: Path, out: Path, name: str, *, threads: int) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    wall, cpu = timed_child([*command("trackprep"), "annotate", "--dataset", "davis2016", "--root", str(root),
                             "--videos", name, "--out", str(out), "--flow", "dis", "--scheduler", "serial", "--quiet"], threads=threads)
    meta = json.loads((out / "davis2016" / name / "zarr.json").read_text())["attributes"]
    store = trackprep.open_annotations(out)
    if list(store) != [f"davis2016/{name}"]:
        raise SystemExit(f"{out}: expected the one video davis2016/{name}, got {list(store)}")
    video = store[f"davis2016/{name}"]
    return {"wall": wall, "cpu": cpu, "flow": meta["timings_s"]["flow"], "tracks": video.num_tracks,
            "points": video.num_points}


def run_dino(data_path: Path, *, direct: bool, threads: int) -> dict:
    shutil.rmtree(data_path / "of_trajectories", ignore_errors=True)
    timings = data_path / "timings.json"
    args = [sys.executable, str(Path(ref.__file__).resolve()), "preprocess", "--data-path", str(data_path),
            "--size", *map(str, SIZE), "--timings-json", str(timings)]
    wall, cpu = timed_child(args + ([] if direct else ["--no-direct-flow"]), threads=threads)
    saved = torch.load(ref.data_paths(data_path)["trajectories"])
    return {"wall": wall, "cpu": cpu, "flow": json.loads(timings.read_text())["flow"], "tracks": int(saved.shape[0]),
            "points": int((~saved.isnan().any(dim=-1)).sum())}


def agreement(store: Path, name: str, *, direct: bool) -> dict:
    """The reference chained on trackprep's stored frames with the same DIS flow, against
    trackprep's tracks: of the pixels of frame 0, the share whose track both keep, both drop,
    or keep with a different length; position difference on the tracks both keep (same length)."""
    video = trackprep.open_annotations(store)[f"davis2016/{name}"]
    frames = np.asarray(video.frames[:])
    height, width = frames.shape[1:3]
    flows = ref.trackprep_dis()
    masks, all_flows = ref.flows_with_masks(flows, frames, threshold=ref.THRESHOLD)
    direct_fn = ref.direct_flows(flows, lambda s: frames[s:], threshold=ref.THRESHOLD) if direct else None
    dino = ref.chain_trajectories(masks, all_flows, threshold=ref.THRESHOLD, min_trajectory_length=ref.MIN_TRAJECTORY_LENGTH,
                                  direct=direct_fn, direct_flow_threshold=ref.DIRECT_FLOW_THRESHOLD).numpy()

    def by_seed(tracks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Tracks [n, T, 2] that start at frame 0 -> (length per pixel of frame 0, track row per pixel)."""
        seed = np.rint(tracks[:, 0]).astype(np.int64)
        index = seed[:, 1] * width + seed[:, 0]
        length = np.zeros(height * width, dtype=np.int64)
        row = np.full(height * width, -1, dtype=np.int64)
        length[index] = (~np.isnan(tracks[..., 0])).sum(axis=1)
        row[index] = np.arange(len(tracks))
        return length, row

    first = dino[~np.isnan(dino[:, 0, 0])]
    ours, _ = video.dense(np.flatnonzero(video.start == 0))
    len_d, row_d = by_seed(first)
    len_t, row_t = by_seed(ours)
    same = (len_d == len_t) & (len_d > 0)
    diff = np.abs(first[row_d[same]] - ours[row_t[same]])
    diff = diff[~np.isnan(diff)]
    return {
        "tracks": (int(video.num_tracks), int(dino.shape[0])),
        "points": (int(video.num_points), int((~np.isnan(dino[..., 0])).sum())),
        "from frame 0": (int((len_t > 0).sum()), int((len_d > 0).sum())),
        "same length": float(same.sum() / max(((len_d > 0) | (len_t > 0)).sum(), 1)),
        "dino longer": float(((len_d > len_t) & (len_t > 0)).sum() / height / width),
        "dino shorter or dropped": float((len_d < len_t).sum() / height / width),
        "max diff px": float(diff.max()) if diff.size else 0.0,
        "p99 diff px": float(np.percentile(diff, 99)) if diff.size else 0.0,
    }


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "davis2016")
    ap.add_argument("--videos", default="blackswan,car-shadow,cows")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of every child (torch's threads)")
    ap.add_argument("--no-check", action="store_true", help="skip the agreement check")
    ns = ap.parse_args()
    if not ns.data.is_dir():
        raise SystemExit(f"{ns.data}: DAVIS-2016 not found (expected JPEGImages/480p and Annotations/480p)")
    names = ns.videos.split(",")
    print(f"{os.cpu_count()} CPU cores, load average {load()} (1, 5, 15 min); OMP_NUM_THREADS={ns.threads}; "
          f"{FRAMES} frames at {SIZE[0]}x{SIZE[1]}, DIS medium; median of {ns.runs} alternating runs per program")
    tmp = Path(tempfile.mkdtemp(prefix="bench_dino_tracker_"))
    results: dict[str, dict[str, list[dict]]] = {}
    try:
        root = subset(ns.data.resolve(), tmp / "davis", names, FRAMES)
        for name in names:
            data_path = dino_layout(root, name, tmp / "dino" / name)
            for p in data_path.rglob("*.*"):
                p.read_bytes()  # warm the file cache for both sides
            store = tmp / f"{name}.zarr"
            runs = results[name] = {p: [] for p in PROGRAMS}
            for r in range(ns.runs):
                for program in PROGRAMS[r % 3 :] + PROGRAMS[: r % 3]:
                    if program == "trackprep":
                        runs[program].append(run_trackprep(root, store, name, threads=ns.threads))
                    else:
                        runs[program].append(run_dino(data_path, direct="no direct" not in program, threads=ns.threads))
            print(f"\n{name}: load average after its runs {load()}")
            print("| program | wall s | CPU s | flow s | wall - flow s | tracks | points | wall / trackprep | (wall - flow) / trackprep |")
            print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
            base = {k: statistics.median(x[k] for x in runs["trackprep"]) for k in ("wall", "flow")}
            for program in PROGRAMS:
                med = {k: statistics.median(x[k] for x in runs[program]) for k in ("wall", "cpu", "flow")}
                rest = statistics.median(x["wall"] - x["flow"] for x in runs[program])
                base_rest = statistics.median(x["wall"] - x["flow"] for x in runs["trackprep"])
                last = runs[program][-1]
                print(f"| {program} | {med['wall']:.2f} | {med['cpu']:.2f} | {med['flow']:.2f} | {rest:.2f} | "
                      f"{last['tracks']:,} | {last['points']:,} | {med['wall'] / base['wall']:.2f}x | {rest / base_rest:.2f}x |")
            print("  walls: " + "; ".join(f"{p}: {', '.join(format(x['wall'], '.2f') for x in runs[p])}" for p in PROGRAMS))
            if not ns.no_check:
                for direct in (False, True):
                    a = agreement(store, name, direct=direct)
                    print(f"  agreement, same frames and flow, {'with' if direct else 'without'} direct-flow filter "
                          f"(trackprep, dino): tracks {a['tracks'][0]:,} / {a['tracks'][1]:,}, points {a['points'][0]:,} / "
                          f"{a['points'][1]:,}, tracks from frame 0 {a['from frame 0'][0]:,} / {a['from frame 0'][1]:,}; "
                          f"frame-0 pixels with the same track length {100 * a['same length']:.2f}% of those either keeps, "
                          f"dino longer {100 * a['dino longer']:.2f}%, shorter or dropped {100 * a['dino shorter or dropped']:.2f}% "
                          f"of all; same-length tracks differ by max {a['max diff px']:.4f} px (99th pct {a['p99 diff px']:.4f})")
        print(f"\nload average at the end {load()}")
        print("| clip | trackprep s (CPU s) | dino-tracker, direct-flow filter: s (CPU s), ratio wall (CPU) | "
              "no direct-flow filter: s (CPU s), ratio wall (CPU) |")
        print("|---|---:|---:|---:|")
        for name, runs in results.items():
            med = {p: {k: statistics.median(x[k] for x in runs[p]) for k in ("wall", "cpu")} for p in PROGRAMS}
            base = med["trackprep"]
            cells = [f"{med[p]['wall']:.2f} ({med[p]['cpu']:.2f}), {med[p]['wall'] / base['wall']:.2f}x "
                     f"({med[p]['cpu'] / base['cpu']:.2f}x)" for p in PROGRAMS[1:]]
            print(f"| {name} | {base['wall']:.2f} ({base['cpu']:.2f}) | {' | '.join(cells)} |")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
