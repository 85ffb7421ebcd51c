"""Start-up time of the commands as users type them (issue 15), as whole processes.

1. `trackprep --help` and `track4gen --help`: the time before anything is asked.
2. What `annotate` imports before it starts work (the command line, the pipeline, its
   executors and the DIS backend).
3. `trackprep annotate` of one 24-frame DAVIS-2016 clip at 320x576 with DIS, the whole process
   (interpreter start, imports, work, exit), beside the work alone as the run reports it (the
   sum of the per-stage times the run records in the store).
4. Which heavy libraries `trackprep --help` imports (torch, dask, zarr, diffusers, scipy, cv2).

Wall and CPU seconds: on a shared machine the CPU time is the steadier figure.
Each figure is the median of --runs runs (the first run of each command is a warm-up and not
counted, so every figure is with a warm file cache).

Run: PYTHONPATH=. python benchmarks/bench_startup.py [--data ../shared/data/davis2016] [--runs 5]
     [--scheduler local|serial] [--repo DIR]   (--repo: time another checkout, e.g. the code before a change)
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

from bench_annotate import subset  # a DAVIS-layout folder of the first frames of a sequence (links)

REPO = Path(__file__).resolve().parents[1]  # the code timed; --repo changes it
CODE = REPO
HEAVY = ("torch", "dask", "zarr", "diffusers", "scipy", "cv2")


def command(name: str) -> list[str]:
    """The installed entry point beside this interpreter, else `python -c` calling the same main()."""
    script = Path(sys.executable).with_name(name)
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", f"from {name}.cli import main; main()"]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(CODE), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}


def timed(args: list[str], *, runs: int, before=None) -> tuple[list[float], list[float]]:
    """Wall and CPU (user + system) seconds of `runs` runs of `args` after one warm-up; `before`
    runs first each time, untimed. CPU time is the steadier figure on a shared machine."""
    walls, cpus = [], []
    for i in range(runs + 1):
        if before:
            before()
        r0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
        out = subprocess.run(args, env=env(), capture_output=True, text=True, cwd=tempfile.gettempdir())
        elapsed, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_CHILDREN)
        if out.returncode != 0:
            raise SystemExit(f"{' '.join(args)} exited {out.returncode}:\n{out.stderr[-2000:]}")
        if i:
            walls.append(elapsed)
            cpus.append(r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime)
    return walls, cpus


def heavy_imports(args: list[str]) -> list[str]:
    """The HEAVY top-level modules imported by the command `args` (run via runpy in a child)."""
    code = ("import runpy, sys; sys.argv = " + repr(args) + "\n"
            "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
            "except SystemExit:\n    pass\n"
            f"print('MODULES', sorted(m for m in {HEAVY!r} if m in sys.modules))")
    # From a neutral folder: `python -c` puts the working directory first on sys.path.
    out = subprocess.run([sys.executable, "-c", code], env=env(), capture_output=True, text=True,
                         cwd=tempfile.gettempdir())
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("MODULES")]
    return eval(line[-1][len("MODULES "):]) if line else ["?"]


def line(label: str, times: tuple[list[float], list[float]]) -> None:
    walls, cpus = times
    print(f"{label:52s} median {statistics.median(walls):5.2f} s wall, {statistics.median(cpus):5.2f} s CPU  "
          f"(wall: {', '.join(f'{t:.2f}' for t in walls)})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "davis2016")
    ap.add_argument("--sequence", default="blackswan")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--scheduler", default="local", help="annotate's --scheduler (default: its own default)")
    ap.add_argument("--repo", type=Path, default=REPO, help="checkout whose code is timed")
    ns = ap.parse_args()
    global CODE
    CODE = ns.repo.resolve()

    print(f"code: {CODE}")
    print(f"CPU cores: {os.cpu_count()}, load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    trackprep, track4gen = command("trackprep"), command("track4gen")
    line("trackprep --help", timed([*trackprep, "--help"], runs=ns.runs))
    line("track4gen --help", timed([*track4gen, "--help"], runs=ns.runs))
    if Path(trackprep[0]).is_file():
        print(f"{'modules trackprep --help imports of ' + ', '.join(HEAVY):52s} "
              f"{', '.join(heavy_imports([trackprep[0], '--help'])) or 'none'}")

    # What annotate imports before any work: the command line, the pipeline, its executors, DIS.
    line("imports of annotate (cli, pipeline, executors, DIS)",
         timed([sys.executable, "-c", "import trackprep.cli, trackprep.pipeline.annotate, "
                "trackprep.pipeline.executors, trackprep.flow.dis"], runs=ns.runs))

    if not ns.data.is_dir():
        print(f"annotate: skipped, {ns.data} not found (DAVIS-2016 beside the checkout)")
        return
    tmp = Path(tempfile.mkdtemp(prefix="bench_startup_"))
    try:
        root = subset(ns.data, tmp / "davis", [ns.sequence], 24)
        out = tmp / "a.zarr"
        args = [*trackprep, "annotate", "--dataset", "davis2016", "--root", str(root), "--out", str(out),
                "--flow", "dis", "--scheduler", ns.scheduler, "--quiet"]
        stage_sums: list[float] = []

        def fresh() -> None:
            # The per-stage times the previous run recorded in its video group (read, flow, track,
            # label; not write), then a fresh store for the next run.
            meta = out / "davis2016" / ns.sequence / "zarr.json"
            if meta.is_file():
                stage_sums.append(sum(json.loads(meta.read_text()).get("attributes", {}).get("timings_s", {}).values()))
            shutil.rmtree(out, ignore_errors=True)

        walls, cpus = timed(args, runs=ns.runs, before=fresh)
        fresh()
        stage_sums = stage_sums[1:]  # the warm-up run's
        line(f"annotate {ns.sequence} (24 frames, DIS, {ns.scheduler}), whole process", (walls, cpus))
        print(f"{'  of which its stages (read+flow+track+label)':52s} median {statistics.median(stage_sums):5.2f} s; "
              f"the rest (start-up, write, exit) median {statistics.median(w - t for w, t in zip(walls, stage_sums)):5.2f} s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
