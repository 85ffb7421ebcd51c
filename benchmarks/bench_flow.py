"""Optical-flow throughput at 320x576: one pair at a time against the batched estimator.

For raft_large and raft_small it times
  per-pair    torchvision's RAFT.forward called once per direction (forward t->t+1, then
              backward t+1->t), as DINO-Tracker's preprocessing does;
  batched bs  trackprep's RaftEstimator with batch size bs (pairs of the whole clip batched,
              encoders run once per frame, only the last iteration upsampled);
and OpenCV DIS (MEDIUM) per pair. Throughput is in frame pairs per second, where a frame pair
means both flows (forward and backward) that the pipeline needs per consecutive frame pair.
Each measurement is the fastest of --repeat runs. Peak memory: the process's peak RSS on CPU (each measurement runs in its own process),
torch.cuda.max_memory_allocated on CUDA.

RAFT runs with random weights unless --raft-large-weights / --raft-small-weights (or
TRACKPREP_RAFT_WEIGHTS / torchvision's cache) provide real ones: the weights do not change the
amount of computation, so the timings hold for the pretrained models too.

    python benchmarks/bench_flow.py                       # short default: 2 RAFT pairs, 10 DIS pairs
    python benchmarks/bench_flow.py --pairs 8 --batch-sizes 2,8,16 --device cuda --half
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from trackprep.core.synthetic import make_scene  # noqa: E402
from trackprep.core.types import Clip  # noqa: E402
from trackprep.flow import RaftEstimator, make_estimator, select_device  # noqa: E402
from trackprep.flow.raft import DEFAULT_BATCH_SIZE, frames_to_raft_input, min_input_size, pad_amounts  # noqa: E402
from trackprep.io import weights as W  # noqa: E402


def make_clip(pairs: int, height: int, width: int) -> Clip:
    scene = make_scene(seed=0, num_frames=pairs + 1, height=height, width=width)
    frames, masks = scene.render()
    return Clip("bench", frames, masks, np.ones(pairs + 1, bool))


def weights_for(model: str, explicit: str | None, tmp: Path) -> tuple[str, str]:
    """(path, note): real weights when available offline, else a randomly initialised file."""
    try:
        resolved = W.resolve_raft_weights(model, explicit=explicit, allow_download=False)
        return str(resolved.path), f"weights from {resolved.source}"
    except W.RaftWeightsError:
        torch.manual_seed(0)
        path = tmp / f"raft_{model}_random.pth"
        if not path.exists():
            build = W._BUILDERS[model]
            torch.save(build(weights=None).state_dict(), path)
        return str(path), "random weights (same compute as pretrained)"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeat: int) -> tuple[float, float]:
    """(best wall seconds, process CPU seconds of that run) over `repeat` runs. The best run is
    the one least disturbed by other work on a shared machine."""
    best = (float("inf"), 0.0)
    for _ in range(repeat):
        sync(device)
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        sync(device)
        best = min(best, (time.perf_counter() - w0, time.process_time() - c0))
    return best


def run_one(spec: dict) -> dict:
    """One measurement, in a fresh process so that peak RSS belongs to it alone."""
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    device = select_device(spec["device"])
    clip = make_clip(spec["pairs"], spec["height"], spec["width"])
    warm = make_clip(1, spec["height"], spec["width"]) if device.type == "cuda" else make_clip(1, 128, 128)
    backend, mode = spec["backend"], spec["mode"]
    extra: dict = {}
    if backend == "dis":
        est = make_estimator("dis", dis_preset="medium")
        est.estimate(warm)
        elapsed, cpu = timed(lambda: est.estimate(clip), device, spec["repeat"])
    elif mode == "per-pair":
        net = W.load_raft(backend, spec["weights"]).to(device)
        h, w = clip.size
        left, right, top, bottom = pad_amounts(h, w, minimum=min_input_size(net))

        def per_pair(c: Clip) -> None:
            with torch.inference_mode():
                for t in range(c.num_frames - 1):
                    x = frames_to_raft_input(c.frames[t : t + 2], device=device)
                    x = F.pad(x, (left, right, top, bottom), mode="replicate")
                    for a, b in ((0, 1), (1, 0)):  # forward, then backward
                        net(x[a : a + 1], x[b : b + 1], num_flow_updates=spec["iters"])[-1].cpu()

        if device.type == "cuda":
            per_pair(warm)
            torch.cuda.reset_peak_memory_stats(device)
        elapsed, cpu = timed(lambda: per_pair(clip), device, spec["repeat"])
    else:
        est = RaftEstimator(model=backend, weights=spec["weights"], iters=spec["iters"], batch_size=spec["batch_size"],
                            device=spec["device"], half=spec.get("half", False))
        est.check_ready()
        est.estimate(warm)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        elapsed, cpu = timed(lambda: est.estimate(clip), device, spec["repeat"])
        if spec.get("half"):
            flow = est.estimate(clip)
            ref = RaftEstimator(model=backend, weights=spec["weights"], iters=spec["iters"],
                                batch_size=spec["batch_size"], device=spec["device"]).estimate(clip)
            diff = torch.linalg.vector_norm(flow.forward - ref.forward, dim=1)
            extra["half_vs_fp32_epe"] = float(diff.mean())
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
        peak_kind = "cuda alloc"
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        peak_kind = "RSS"
    return {"elapsed": elapsed, "cpu": cpu, "peak_mib": peak, "peak_kind": peak_kind, "device": str(device), **extra}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=2, help="frame pairs timed for RAFT (default 2: a 2-core CPU is slow)")
    ap.add_argument("--dis-pairs", type=int, default=10)
    ap.add_argument("--height", type=int, default=320)
    ap.add_argument("--width", type=int, default=576)
    ap.add_argument("--iters", type=int, default=24)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--repeat", type=int, default=2, help="runs per measurement; the fastest is reported")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--models", default="large,small,dis", help="comma list of large, small, dis")
    ap.add_argument("--batch-sizes", default=None, help="comma list of RaftEstimator batch sizes (default: the device default)")
    ap.add_argument("--raft-large-weights", default=None)
    ap.add_argument("--raft-small-weights", default=None)
    ap.add_argument("--half", action="store_true", help="CUDA only: also time fp16 and bf16 autocast and report their error")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(json.loads(args.one))))
        return

    device = select_device(args.device)
    default_bs = DEFAULT_BATCH_SIZE.get(device.type, 4)
    sizes = [int(s) for s in args.batch_sizes.split(",")] if args.batch_sizes else [default_bs]
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / "trackprep_bench_flow"
    tmp.mkdir(exist_ok=True)
    print(f"device {device}, torch {torch.__version__}, {args.threads or torch.get_num_threads()} CPU threads, "
          f"{args.height}x{args.width}, RAFT iters {args.iters}, {args.pairs} RAFT pairs, {args.dis_pairs} DIS pairs")
    print(f"{'backend':<11} {'mode':<16} {'pairs/s':>8} {'s/pair':>8} {'cpu-s/pair':>10} {'peak MiB':>9}  notes")
    base = {"device": args.device, "height": args.height, "width": args.width, "iters": args.iters, "repeat": args.repeat,
            "threads": args.threads}
    for model in args.models.split(","):
        specs: list[tuple[str, dict]] = []
        note = ""
        if model == "dis":
            specs.append(("per-pair", {**base, "backend": "dis", "mode": "per-pair", "pairs": args.dis_pairs}))
        else:
            path, note = weights_for(model, getattr(args, f"raft_{model}_weights"), tmp)
            common = {**base, "backend": model, "weights": path, "pairs": args.pairs}
            specs.append(("per-pair", {**common, "mode": "per-pair"}))
            for bs in sizes:
                specs.append((f"batched bs={bs}", {**common, "mode": "batched", "batch_size": bs}))
            if args.half and device.type == "cuda":
                for half in ("fp16", "bf16"):
                    specs.append((f"{half} bs={sizes[-1]}", {**common, "mode": "batched", "batch_size": sizes[-1], "half": half}))
        for label, spec in specs:
            proc = subprocess.run([sys.executable, __file__, "--one", json.dumps(spec)], capture_output=True, text=True)
            if proc.returncode != 0:
                print(f"{model:<11} {label:<16} failed: {proc.stderr.strip().splitlines()[-1:]}")
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            rate = spec["pairs"] / r["elapsed"]
            extra = f"; half vs fp32 mean EPE {r['half_vs_fp32_epe']:.4f} px" if "half_vs_fp32_epe" in r else ""
            name = model if model == "dis" else f"raft_{model}"
            print(f"{name:<11} {label:<16} {rate:>8.3f} {1 / rate:>8.2f} {r['cpu'] / spec['pairs']:>10.2f} {r['peak_mib']:>9.0f}  "
                  f"{r['peak_kind']}; {note}{extra}", flush=True)
    print("pairs/s: consecutive frame pairs (forward + backward flow) per second, best of --repeat runs; "
          "cpu-s/pair: process CPU time per pair (less sensitive to other load on a shared machine)")


if __name__ == "__main__":
    main()
