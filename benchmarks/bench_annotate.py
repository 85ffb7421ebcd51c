"""Benchmark of `trackprep annotate` (issue 5) on real DAVIS-2016 frames at 320x576, on the CPU.

1. Per-stage time (read+resize, flow, track, label, write) of a 24-frame clip with RAFT-large
   and with DIS, serial executor. RAFT runs with randomly initialised weights (no download
   here): the flow time is RAFT's real cost, but random flow fails the cycle test almost
   everywhere, so its tracking time is that of a worst case (a new seed at nearly every pixel
   of every frame). Target: everything except flow under 5% of the RAFT total.
2. Peak RSS of one process annotating the first 25, 50 and 100 frames of a sequence with DIS
   (target: < 3 GB at 100 frames, growing no faster than linearly with length).
3. Wall time of the schedulers (serial; local = Dask threads; processes = Dask LocalCluster of processes) on
   several short clips, to choose the default.

Run: PYTHONPATH=. python benchmarks/bench_annotate.py [--data ../shared/data/davis2016] [--skip-raft]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def subset(src: Path, dst: Path, names: list[str], frames: int) -> Path:
    """A DAVIS-layout folder holding the first `frames` frames of `names` (symbolic links)."""
    for name in names:
        for kind, ext in (("JPEGImages", "jpg"), ("Annotations", "png")):
            folder = dst / kind / "480p" / name
            folder.mkdir(parents=True, exist_ok=True)
            available = sorted((src / kind / "480p" / name).glob(f"*.{ext}"))
            if len(available) < frames:
                raise SystemExit(f"{src / kind / '480p' / name}: {len(available)} frames, need {frames}")
            for p in available[:frames]:
                (folder / p.name).symlink_to(p)
    return dst


def store_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def run_child(args: list[str]) -> dict:
    """Run this script in a child process (fresh memory accounting); returns its JSON line."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, __file__, *args], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"child {args} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def child_annotate(ns: argparse.Namespace) -> None:
    """One annotate run; prints timings, tracks, store size and this process's peak RSS as JSON."""
    import resource

    import torch

    from trackprep.config import resolve_config
    from trackprep.pipeline.annotate import annotate

    if ns.threads:
        torch.set_num_threads(ns.threads)

    overrides = {"flow": {"name": ns.flow, "raft_weights": ns.raft_weights, "device": "cpu"}}
    config = resolve_config(overrides=overrides)
    t0 = time.perf_counter()
    summary = annotate(datasets=[("davis2016", ns.root)], out=ns.out, config=config, scheduler=ns.scheduler,
                       overwrite=True)
    wall = time.perf_counter() - t0
    if summary.failed:
        raise SystemExit("; ".join(summary.lines()))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    print(json.dumps({
        "wall_s": wall,
        "peak_rss_bytes": peak,
        "videos": [{"key": r.key, "frames": r.num_frames, "tracks": r.num_tracks, "timings": r.timings}
                   for r in summary.results],
        "store_bytes": store_bytes(Path(ns.out)),
    }))


def random_raft_weights(path: Path) -> Path:
    import torch
    from torchvision.models.optical_flow import raft_large

    torch.manual_seed(0)
    torch.save(raft_large(weights=None, progress=False).state_dict(), path)
    return path


def stage_table(label: str, r: dict) -> None:
    v = r["videos"][0]
    t = v["timings"]
    total = sum(t.values())
    other = total - t["flow"]
    print(f"\n{label}: {v['key']}, {v['frames']} frames at 320x576, {v['tracks']} tracks, store {r['store_bytes'] / 2**20:.0f} MiB")
    for stage, seconds in t.items():
        print(f"  {stage:6s} {seconds:8.2f} s  {100 * seconds / total:5.1f}%")
    print(f"  total  {total:8.2f} s; everything except flow: {other:.2f} s = {100 * other / total:.1f}% of the total")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "davis2016")
    ap.add_argument("--sequence", default="blackswan", help="clip for the per-stage times")
    ap.add_argument("--long", default="cows", help="sequence for the memory figures (>= 100 frames)")
    ap.add_argument("--skip-raft", action="store_true")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--skip-schedulers", action="store_true")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch threads in each run (default: torch's own; 1 is steadier on a shared machine)")
    # child mode
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--root", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--flow", default="dis", help=argparse.SUPPRESS)
    ap.add_argument("--raft-weights", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--scheduler", default="serial", help=argparse.SUPPRESS)
    ns = ap.parse_args()
    if ns.child:
        return child_annotate(ns)
    if not ns.data.is_dir():
        raise SystemExit(f"{ns.data}: DAVIS-2016 not found (expected ../shared/data/davis2016 beside the checkout)")

    import torch

    threads = ns.threads or torch.get_num_threads()
    print(f"CPU cores: {os.cpu_count()}, torch threads: {threads}, torch {torch.__version__}")
    tmp = Path(tempfile.mkdtemp(prefix="bench_annotate_"))
    try:
        clip = subset(ns.data, tmp / "clip24", [ns.sequence], 24)
        for flow in ("dis",) + (() if ns.skip_raft else ("raft",)):
            args = ["--child", "--root", str(clip), "--out", str(tmp / f"{flow}.zarr"), "--flow", flow,
                    "--threads", str(ns.threads)]
            if flow == "raft":
                args += ["--raft-weights", str(random_raft_weights(tmp / "raft_large_random.pth"))]
            label = "DIS (OpenCV, preset medium)" if flow == "dis" else "RAFT-large (random weights, 24 iterations)"
            stage_table(label, run_child(args))

        if not ns.skip_memory:
            print(f"\nPeak RSS, one process annotating {ns.long} with DIS at 320x576 (serial executor):")
            rows = []
            for frames in (25, 50, 100):
                root = subset(ns.data, tmp / f"long{frames}", [ns.long], frames)
                r = run_child(["--child", "--root", str(root), "--out", str(tmp / f"long{frames}.zarr"), "--flow", "dis",
                               "--threads", str(ns.threads)])
                rows.append((frames, r))
                v = r["videos"][0]
                print(f"  {frames:4d} frames: peak RSS {r['peak_rss_bytes'] / 2**30:.2f} GiB, {v['tracks']} tracks, "
                      f"wall {r['wall_s']:.1f} s, store {r['store_bytes'] / 2**20:.0f} MiB")
                shutil.rmtree(tmp / f"long{frames}.zarr", ignore_errors=True)
            (f0, r0), (f1, r1) = rows[0], rows[-1]
            print(f"  growth 25 -> 100 frames: x{r1['peak_rss_bytes'] / r0['peak_rss_bytes']:.2f} RSS for x{f1 / f0:.0f} frames")

        if not ns.skip_schedulers:
            names = ["blackswan", "car-shadow", "dog", "libby"]
            root = subset(ns.data, tmp / "multi", names, 12)
            print(f"\nSchedulers: {len(names)} clips of 12 frames at 320x576, DIS flow:")
            for scheduler in ("serial", "local", "processes"):
                r = run_child(["--child", "--root", str(root), "--out", str(tmp / f"{scheduler}.zarr"), "--flow", "dis",
                               "--scheduler", scheduler])
                print(f"  {scheduler:8s} wall {r['wall_s']:6.1f} s (start-up included), "
                      f"driver peak RSS {r['peak_rss_bytes'] / 2**30:.2f} GiB")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
