"""Benchmark of annotation at any video length (issue 13), on real DAVIS-2016 frames at 320x576.

1. `trackprep annotate --flow dis --scheduler serial` on `cows` played forward and back to
   100, 200, 400 and 800 frames (FBMS-59 has 800-frame videos): peak RSS of the process, store
   size, store bytes and wall time per frame. Targets: peak RSS at 800 frames <= 2.5 GB and
   within 1.3x of 100 frames; store bytes and time per frame at 800 within 1.2x of 100.
2. car-shadow (40 frames) at stride 1: bytes of the stored tracks (points, start, length,
   labels) per frame; target <= 0.5 MB per frame.
3. --codecs: bytes per point of the options for `points`, on car-shadow's tracks (whole-video
   chaining in memory, tracks of >= 2 frames, chunks of 2^18 points per coordinate as stored).
4. --frames: size and PSNR of JPEG frames at several qualities against lossless, car-shadow.

Each annotate run is a fresh child process (its own peak RSS, from the kernel's rusage).
Run: PYTHONPATH=. python benchmarks/bench_long_video.py [--data ../shared/data/davis2016]
     [--lengths 100 200 400 800] [--codecs] [--frames] [--skip-lengths]
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
TRACK_ARRAYS = ("points", "start", "length", "labels")


def ping_pong(src: Path, dst: Path, name: str, frames: int) -> Path:
    """A DAVIS-layout folder whose sequence `name` plays src's frames forward, back, forward...
    to `frames` frames (symbolic links; masks follow their frames)."""
    files = {kind: sorted((src / kind / "480p" / name).glob(f"*.{ext}"))
             for kind, ext in (("JPEGImages", "jpg"), ("Annotations", "png"))}
    n = len(files["JPEGImages"])
    cycle = list(range(n)) + list(range(n - 2, 0, -1))  # 0 .. n-1 .. 1, then 0 again
    order = [cycle[i % len(cycle)] for i in range(frames)]
    for kind, paths in files.items():
        folder = dst / kind / "480p" / name
        folder.mkdir(parents=True, exist_ok=True)
        for t, i in enumerate(order):
            (folder / f"{t:05d}{paths[i].suffix}").symlink_to(paths[i])
    return dst


def tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def annotate_child(root: Path, out: Path, *extra: str) -> dict:
    """`trackprep annotate` in a child process; its wall time, peak RSS and store figures."""
    cmd = [sys.executable, "-m", "trackprep", "annotate", "--dataset", "davis2016", "--root", str(root), "--out",
           str(out), "--flow", "dis", "--scheduler", "serial", "--quiet", "--overwrite", *extra]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    stdout, stderr = proc.stdout.read().decode(), proc.stderr.read().decode()
    if status != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{stdout}\n{stderr}")
    import trackprep

    ann = trackprep.open_annotations(out)
    (key,) = ann.keys()
    v = ann[key]
    return {
        "frames": v.num_frames, "tracks": v.num_tracks, "points": v.num_points, "wall_s": wall,
        "peak_rss": usage.ru_maxrss * 1024,  # Linux reports KiB
        "store_bytes": tree_bytes(out),
        "track_bytes": sum(tree_bytes(out / key / a) for a in TRACK_ARRAYS),
        "timings": dict(v.group.attrs.get("timings_s", {})),
    }


def lengths_table(ns: argparse.Namespace, tmp: Path) -> None:
    print(f"\n1. {ns.long} played forward and back, DIS, serial, 320x576 (fresh process each):")
    print("| frames | peak RSS | store | store per frame | tracks per frame | points per frame | bytes per point | "
          "wall per frame | tracks |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    rows = {}
    for frames in ns.lengths:
        root = ping_pong(ns.data, tmp / f"pp{frames}", ns.long, frames)
        r = annotate_child(root, tmp / f"pp{frames}.zarr")
        rows[frames] = r
        print(f"| {frames} | {r['peak_rss'] / 1e9:.2f} GB | {r['store_bytes'] / 1e6:.0f} MB | "
              f"{r['store_bytes'] / frames / 1e6:.2f} MB | {r['track_bytes'] / frames / 1e6:.2f} MB | "
              f"{r['points'] / frames / 1e3:.0f}k | {r['track_bytes'] / r['points']:.2f} | "
              f"{r['wall_s'] / frames:.3f} s | {r['tracks']} |", flush=True)
        shutil.rmtree(tmp / f"pp{frames}.zarr", ignore_errors=True)
    lo, hi = min(rows), max(rows)
    a, b = rows[lo], rows[hi]
    print(f"{hi} vs {lo} frames: peak RSS x{b['peak_rss'] / a['peak_rss']:.2f}, store per frame "
          f"x{(b['store_bytes'] / hi) / (a['store_bytes'] / lo):.2f}, wall per frame x{(b['wall_s'] / hi) / (a['wall_s'] / lo):.2f}; "
          f"points per frame x{(b['points'] / hi) / (a['points'] / lo):.2f} (live tracks accumulate), "
          f"wall per point x{(b['wall_s'] / b['points']) / (a['wall_s'] / a['points']):.2f}")
    print(f"per-part seconds at {hi} frames: {b['timings']}")


def car_shadow(ns: argparse.Namespace, tmp: Path) -> None:
    root = ping_pong(ns.data, tmp / "cs", "car-shadow", 40)
    r = annotate_child(root, tmp / "cs.zarr")
    print(f"\n2. car-shadow, 40 frames, stride 1, DIS: {r['tracks']} tracks, {r['points']} points; tracks "
          f"{r['track_bytes'] / 1e6:.1f} MB = {r['track_bytes'] / 40 / 1e6:.2f} MB per frame "
          f"({r['track_bytes'] / r['points']:.2f} bytes per point, start/length/labels included); "
          f"store {r['store_bytes'] / 1e6:.1f} MB; wall {r['wall_s']:.1f} s")


def codecs_table(ns: argparse.Namespace) -> None:
    import numpy as np
    from numcodecs import Blosc, Delta, FixedScaleOffset

    from trackprep.core.chaining import chain_tracks
    from trackprep.flow import make_estimator
    from trackprep.io.annotation_store import POINTS_PER_CHUNK
    from trackprep.io.datasets import open_dataset, read_clip

    clip = read_clip(open_dataset("davis2016", ns.data).video("car-shadow"), size=(320, 576))
    tracks = chain_tracks(make_estimator("dis").estimate(clip))
    tracks = tracks.select(np.flatnonzero(tracks.lengths >= 2))
    pts = tracks.points
    p = pts.shape[0]
    print(f"\n3. points codecs, car-shadow: {len(tracks)} tracks of >= 2 frames, {p} points "
          f"(chunks of {POINTS_PER_CHUNK} points, x and y in separate chunks, as stored)")

    def per_point(chain) -> tuple[float, float]:
        t0 = time.perf_counter()
        size = 0
        for coord in (0, 1):
            column = np.ascontiguousarray(pts[:, coord])
            for a in range(0, p, POINTS_PER_CHUNK):
                buf = column[a : a + POINTS_PER_CHUNK]
                for codec in chain:
                    buf = codec.encode(buf)
                size += np.asarray(buf).nbytes
        return size / p, (time.perf_counter() - t0) / p * 1e9

    options = {"float32 raw": []}
    for cname, level in (("lz4", 5), ("zstd", 3), ("zstd", 5)):
        for shuffle, sname in ((Blosc.SHUFFLE, "byte"), (Blosc.BITSHUFFLE, "bit")):
            options[f"float32, blosc {cname} {level} {sname}-shuffle (lossless)"] = [Blosc(cname, level, shuffle)]
    for scale in (32, 64, 128, 256):
        q = FixedScaleOffset(offset=0, scale=scale, dtype="<f4", astype="<i4")
        err = f"1/{scale} px, max error 1/{2 * scale} px"
        options[f"{err}, blosc zstd 5 byte-shuffle"] = [q, Blosc("zstd", 5, Blosc.SHUFFLE)]
        for cname, level in (("lz4", 5), ("zstd", 3), ("zstd", 5), ("zstd", 7)):
            for shuffle, sname in ((Blosc.SHUFFLE, "byte"), (Blosc.BITSHUFFLE, "bit")):
                options[f"{err}, delta, blosc {cname} {level} {sname}-shuffle"] = [
                    q, Delta(dtype="<i4"), Blosc(cname, level, shuffle)]
    print("| option | bytes per point | encode ns per point |")
    print("|---|---:|---:|")
    for name, chain in options.items():
        b, ns_pt = per_point(chain)
        chosen = " (chosen)" if name == "1/64 px, max error 1/128 px, delta, blosc zstd 5 byte-shuffle" else ""
        print(f"| {name}{chosen} | {b:.2f} | {ns_pt:.0f} |", flush=True)


def frames_table(ns: argparse.Namespace) -> None:
    import numpy as np
    import zarr

    from trackprep.io.datasets import open_dataset, read_clip
    from trackprep.io.frame_codecs import frame_codecs

    clip = read_clip(open_dataset("davis2016", ns.data).video("car-shadow"), size=(320, 576))
    raw = clip.frames.nbytes
    print(f"\n4. frames, car-shadow 40 frames at 320x576 ({raw / 1e6:.1f} MB raw), one frame per chunk:")
    print("| codec | MB | bytes per frame | share of raw | PSNR | encode ms per frame |")
    print("|---|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as d:
        group = zarr.open_group(d, mode="w", zarr_format=3)
        for codec, quality in (("lossless", None), ("jpeg", 98), ("jpeg", 95), ("jpeg", 90), ("jpeg", 75)):
            name = codec if quality is None else f"jpeg{quality}"
            arr = group.create_array(name, shape=clip.frames.shape, chunks=(1, *clip.frames.shape[1:]), dtype="uint8",
                                     **frame_codecs(codec, quality=quality or 95))
            t0 = time.perf_counter()
            arr[:] = clip.frames
            ms = (time.perf_counter() - t0) / clip.num_frames * 1e3
            back = zarr.open_group(d, mode="r")[name][:]
            mse = np.mean((back.astype(np.float64) - clip.frames) ** 2)
            psnr = "lossless" if mse == 0 else f"{10 * np.log10(255.0 ** 2 / mse):.1f} dB"
            size = arr.nbytes_stored()
            label = name if quality is None else f"JPEG quality {quality}"
            print(f"| {label} | {size / 1e6:.1f} | {size / clip.num_frames / 1e3:.0f} kB | {size / raw:.3f} | {psnr} | {ms:.1f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "davis2016")
    ap.add_argument("--long", default="cows", help="sequence played forward and back")
    ap.add_argument("--lengths", type=int, nargs="+", default=[100, 200, 400, 800])
    ap.add_argument("--skip-lengths", action="store_true")
    ap.add_argument("--skip-car-shadow", action="store_true")
    ap.add_argument("--codecs", action="store_true", help="bytes per point of the points codecs")
    ap.add_argument("--frames", action="store_true", help="size and PSNR of JPEG frames")
    ns = ap.parse_args()
    if not ns.data.is_dir():
        raise SystemExit(f"{ns.data}: DAVIS-2016 not found (expected ../shared/data/davis2016 beside the checkout)")
    print(f"CPU cores: {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}")
    tmp = Path(tempfile.mkdtemp(prefix="bench_long_video_"))
    try:
        if not ns.skip_lengths:
            lengths_table(ns, tmp)
        if not ns.skip_car_shadow:
            car_shadow(ns, tmp)
        if ns.codecs:
            codecs_table(ns)
        if ns.frames:
            frames_table(ns)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps({"done": True}))


if __name__ == "__main__":
    main()
