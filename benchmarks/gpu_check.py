"""Every figure that needs a GPU, in one time-boxed run: prints one table, writes it as JSON.

    python benchmarks/gpu_check.py --out gpu_check.json            # CUDA machine, <= 8 minutes
    python benchmarks/gpu_check.py --cpu-smoke --out smoke.json    # this script on a CPU, tiny sizes

Parts, each in its own process with its own time limit (a hung or slow part is killed and
cannot starve the others; the rows it finished are still reported, the rest say why not):
  machine   GPU name and memory, driver, torch / CUDA / cuDNN versions, CPU cores, host memory.
  raft      trackprep's RaftEstimator, RAFT-large with random weights (same compute as the
            pretrained model), 24 iterations at 320x576 on real DAVIS-2016 frames: frame pairs
            per second (forward + backward flow) at batch sizes 1, 4, 16, 32 in fp32, bf16,
            fp16, peak GPU memory, and the end-point difference of bf16/fp16 against fp32
            (random weights: this measures numerical stability, not accuracy).
  annotate  the `trackprep annotate` pipeline on a DAVIS-2016 clip (blackswan, 24 frames) with
            RAFT on the GPU: seconds per stage, the flow share, peak GPU and host memory.
  svd       SVD-xt's UNet, VAE and CLIP image encoder at their real sizes (random weights;
            bench_train.SVD_XT_UNET_CONFIG, svd_xt_architecture.json): one Track4Gen training step at
            1 x 24 x 320x576 with the trainer's default recipe (s/step, peak GPU memory), and
            zero-shot tracking feature extraction of a 24-frame clip where the build has it.
Nothing is installed or downloaded. Exit code 0 when every part finished, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DAVIS = REPO.parent / "shared" / "data" / "davis2016"

# Seconds per part (process start and imports included) and in all: the device machine allows
# 10 minutes per command; 8 minutes leaves room for its start and the copy back.
GPU_LIMITS = {"machine": 30, "raft": 150, "annotate": 110, "svd": 170}
GPU_TOTAL = 480
SMOKE_LIMITS = {"machine": 10, "raft": 30, "annotate": 30, "svd": 45}
SMOKE_TOTAL = 115


def specs(*, smoke: bool, data: Path, device: str) -> dict[str, dict]:
    """What each part measures: the real sizes, or tiny ones for --cpu-smoke."""
    if smoke:
        return {
            "machine": {},
            "raft": {"device": "cpu", "data": str(data), "sequence": "blackswan", "frames": 3, "size": [64, 96],
                     "iters": 2, "batch_sizes": [1, 4], "reference_batch_size": 4, "repeat": 1},
            "annotate": {"device": "cpu", "data": str(data), "sequence": "blackswan", "frames": 3, "size": [64, 96],
                         "iters": 2},
            "svd": {"device": "cpu", "model": "tiny", "frames": 8, "size": [64, 96], "repeat": 1},
        }
    return {
        "machine": {},
        # 33 frames: 32 frame pairs = 64 flows, whole batches at every batch size.
        "raft": {"device": device, "data": str(data), "sequence": "blackswan", "frames": 33, "size": [320, 576],
                 "iters": 24, "batch_sizes": [1, 4, 16, 32], "reference_batch_size": 16, "repeat": 3},
        # Its first 24 frames (a training segment's length), as the CPU figure in the README; with
        # random RAFT weights tracking is a worst case that grows with the square of the length.
        "annotate": {"device": device, "data": str(data), "sequence": "blackswan", "frames": 24, "size": [320, 576],
                     "iters": 24},
        "svd": {"device": device, "model": "svd-xt", "frames": 24, "size": [320, 576], "repeat": 2},
    }


def read_records(path: Path) -> tuple[list[dict], list[dict]]:
    """(planned rows, measured rows) from a part's JSON-lines file; a cut last line is ignored."""
    plan, rows = [], []
    if not path.exists():
        return plan, rows
    for line in path.read_text().splitlines():
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue
        plan += obj.get("plan", [])
        if "row" in obj:
            rows.append(obj["row"])
    return plan, rows


def run_part(name: str, spec: dict, *, limit: float, work: Path) -> dict:
    """Run one part in a child process (its own session, so a timeout kills all it started)."""
    records = work / f"{name}.jsonl"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--part", name, "--spec", json.dumps(spec),
           "--records", str(records)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=limit)
        status = "ok" if proc.returncode == 0 else "failed"
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        status = "timed out"
    seconds = time.perf_counter() - t0
    plan, rows = read_records(records)
    error = ""
    if status == "failed":
        lines = [line for line in (output or "").splitlines() if line.strip()]
        error = lines[-1] if lines else f"exit code {proc.returncode}"
    why = {"ok": "not measured", "failed": f"not measured: the part failed ({error})",
           "timed out": f"not measured: the part hit its {limit:.0f} s limit"}[status]
    return {"status": status, "seconds": round(seconds, 1), "limit_s": round(limit, 1), "error": error,
            "rows": complete_rows(plan, rows, why=why), "log_tail": (output or "")[-4000:]}


def complete_rows(plan: list[dict], rows: list[dict], *, why: str) -> list[dict]:
    """The measured rows plus, for each planned row that was not measured, an empty one saying why,
    in the plan's order."""
    done = {r["name"] for r in rows}
    rows = rows + [{**p, "value": None, "note": why} for p in plan if p["name"] not in done]
    order = {p["name"]: i for i, p in enumerate(plan)}
    return sorted(rows, key=lambda r: order.get(r["name"], len(order)))


def fmt(value) -> str:
    """How the table prints a value (the test compares the table against the JSON with it)."""
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, float):
        return str(value)
    if not math.isfinite(value):
        return str(value)
    return f"{value:.4g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.3e}"


def table_lines(report: dict) -> list[str]:
    rows = [r for part in report["parts"].values() for r in part["rows"]]
    head = ("part", "measurement", "value", "unit", "note")
    cells = [(r["part"], r["name"], fmt(r["value"]), r["unit"], r["note"]) for r in rows]
    widths = [max(len(c[i]) for c in [head, *cells]) for i in range(4)]

    def line(c: tuple[str, ...]) -> str:
        return "  ".join(c[i].rjust(widths[i]) if i == 2 else c[i].ljust(widths[i]) for i in range(4)) + "  " + c[4]

    out = [line(head), line(tuple("-" * w for w in widths) + ("-" * 4,)), *map(line, cells)]
    out.append("")
    for name, part in report["parts"].items():
        extra = f": {part['error']}" if part["error"] else ""
        out.append(f"{name}: {part['status']} in {part['seconds']:.1f} s (limit {part['limit_s']:.0f} s){extra}")
    return out


def main() -> int:
    t0 = time.perf_counter()  # the total limit counts from here
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, help="where to write the JSON report")
    ap.add_argument("--cpu-smoke", action="store_true", help="the same parts on the CPU at tiny sizes (< 2 minutes)")
    ap.add_argument("--data", type=Path, default=DAVIS, help="DAVIS-2016 folder (default ../shared/data/davis2016)")
    ap.add_argument("--device", default="cuda", help="device for the GPU run (default cuda)")
    ap.add_argument("--parts", default=",".join(GPU_LIMITS), help="comma list of parts to run, in order")
    ap.add_argument("--part", help=argparse.SUPPRESS)
    ap.add_argument("--spec", help=argparse.SUPPRESS)
    ap.add_argument("--records", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.part:  # inside a part's own process
        sys.path.insert(0, str(HERE))
        from gpu_check_parts import run_part as run_child

        run_child(args.part, json.loads(args.spec), args.records)
        return 0
    if args.out is None:
        ap.error("--out PATH is required (the JSON report)")
    if not args.cpu_smoke:
        import torch  # only to refuse early; the parts initialise CUDA in their own processes

        if not torch.cuda.is_available():
            ap.error("no CUDA device here; run with --cpu-smoke for the CPU check")
    limits, total = (SMOKE_LIMITS, SMOKE_TOTAL) if args.cpu_smoke else (GPU_LIMITS, GPU_TOTAL)
    wanted = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(wanted) - set(limits))
    if unknown:
        ap.error(f"--parts: unknown {unknown}; expected some of {list(limits)}")
    plan = specs(smoke=args.cpu_smoke, data=args.data, device=args.device)
    report = {"mode": "cpu-smoke" if args.cpu_smoke else "gpu",
              "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "total_limit_s": total, "parts": {}}
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        for name in wanted:
            left = total - (time.perf_counter() - t0)
            needs_davis = name == "annotate" and not (args.data / "JPEGImages" / "480p").is_dir()
            if needs_davis or left < 5:
                why = f"DAVIS-2016 not found at {args.data}" if needs_davis else "no time left in the total limit"
                report["parts"][name] = {"status": "skipped", "seconds": 0.0, "limit_s": 0.0, "error": why,
                                         "rows": [], "log_tail": ""}
                continue
            report["parts"][name] = run_part(name, plan[name], limit=min(limits[name], left), work=Path(tmp))
            print(f"[{name}: {report['parts'][name]['status']} in {report['parts'][name]['seconds']:.1f} s]",
                  file=sys.stderr, flush=True)
    report["seconds"] = round(time.perf_counter() - t0, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print("\n".join(table_lines(report)))
    print(f"\nwrote {args.out} ({report['seconds']:.0f} s)")
    return 0 if all(p["status"] == "ok" for p in report["parts"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
