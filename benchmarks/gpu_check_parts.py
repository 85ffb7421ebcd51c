"""The measurements of benchmarks/gpu_check.py, one function per part.

Each part runs in its own process (started by gpu_check.py with a time limit) and reports
through a `Recorder`: first the plan (every row it means to measure), then each row as soon
as it is measured, one JSON line each, flushed, so that a part that is killed at its time
limit still leaves what it finished. A row is {"part", "name", "value", "unit", "note"}; a
value of None means not measured, and the note says why.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
ARCHITECTURE = Path(__file__).with_name("svd_xt_architecture.json")
HALF_ONLY_ON_CUDA = "not measured: RaftEstimator runs fp16/bf16 on CUDA only"
NO_GPU = "not measured: no GPU"
QUANTILES = ("mean", "99th percentile", "max")
SLOW_RUN_S = 5.0  # a setting whose warm-up run takes longer is timed once, not `repeat` times


class Recorder:
    def __init__(self, part: str, path: Path) -> None:
        self.part, self.path = part, Path(path)

    def _write(self, obj: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(obj) + "\n")
            f.flush()

    def plan(self, names: list[tuple[str, str]]) -> None:
        """(name, unit) of every row this part will report, in table order."""
        self._write({"plan": [{"part": self.part, "name": n, "unit": u} for n, u in names]})

    def row(self, name: str, value: Any, unit: str = "", note: str = "") -> None:
        if isinstance(value, float):
            value = float(f"{value:.6g}")  # six significant digits: enough, and small differences survive
        self._write({"row": {"part": self.part, "name": name, "value": value, "unit": unit, "note": note}})


def _mib(n_bytes: float) -> float:
    return n_bytes / 2**20


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gpu_mib(device) -> float | None:
    import torch

    return _mib(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _timed(fn: Callable[[], Any], device, repeat: int) -> tuple[float, Any]:
    """Median wall seconds of `repeat` calls (after the caller's warm-up) and the last result."""
    times, result = [], None
    for _ in range(repeat):
        _sync(device)
        t0 = time.perf_counter()
        result = fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def davis_clip(data: Path, sequence: str, *, frames: int, size: tuple[int, int]):
    """The first `frames` frames of a DAVIS-2016 sequence at `size`, through the project's reader."""
    from trackprep.core.types import Clip
    from trackprep.io.datasets import open_dataset, read_clip

    clip = read_clip(open_dataset("davis2016", data).video(sequence), size=size)
    if clip.num_frames < frames:
        raise SystemExit(f"{data}/JPEGImages/480p/{sequence}: {clip.num_frames} frames, need {frames}")
    return Clip(clip.name, clip.frames[:frames], clip.masks[:frames], clip.has_mask[:frames])


def random_raft_large(work: Path) -> Path:
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_annotate import random_raft_weights  # one way to make the random .pth file

    return random_raft_weights(work / "raft_large_random.pth")


# ------------------------------------------------------------------------------ (4) machine

def part_machine(spec: dict, rec: Recorder) -> None:
    import torch

    names = [("GPU", ""), ("GPU memory", "GiB"), ("GPU count", ""), ("driver", ""), ("torch", ""),
             ("CUDA (torch build)", ""), ("cuDNN", ""), ("python", ""), ("CPU cores", ""), ("host memory", "GiB")]
    rec.plan(names)
    cuda = torch.cuda.is_available()
    if cuda:
        props = torch.cuda.get_device_properties(0)
        rec.row("GPU", props.name)
        rec.row("GPU memory", props.total_memory / 2**30, "GiB")
        rec.row("GPU count", torch.cuda.device_count())
    else:
        for name, unit in names[:3]:
            rec.row(name, None, unit, NO_GPU)
    driver, note = None, ""
    if shutil.which("nvidia-smi"):
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        driver = out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
        note = "" if driver else f"nvidia-smi failed: {out.stderr.strip()[:80]}"
    else:
        note = "nvidia-smi not found"
    rec.row("driver", driver, "", note)
    rec.row("torch", torch.__version__)
    rec.row("CUDA (torch build)", torch.version.cuda, "", "" if torch.version.cuda else "CPU-only torch build")
    rec.row("cuDNN", torch.backends.cudnn.version() if cuda else None, "", "" if cuda else NO_GPU)
    rec.row("python", platform.python_version())
    rec.row("CPU cores", os.cpu_count())
    rec.row("host memory", os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, "GiB")


# ------------------------------------------------------------------------------ (1) RAFT

def part_raft(spec: dict, rec: Recorder) -> None:
    """RaftEstimator (trackprep/flow/raft.py) with random RAFT-large weights on real DAVIS frames."""
    import numpy as np
    import torch

    from trackprep.flow import select_device
    from trackprep.flow.raft import RaftEstimator

    device = select_device(spec["device"])
    sizes, dtypes, ref_bs = spec["batch_sizes"], ("fp32", "bf16", "fp16"), spec["reference_batch_size"]
    plan = []
    for dtype in dtypes:
        for bs in sizes:
            plan += [(f"{dtype} batch {bs}: throughput", "pairs/s"), (f"{dtype} batch {bs}: peak GPU memory", "MiB")]
    for dtype in dtypes[1:]:
        plan += [(f"{dtype} vs fp32 end-point difference: {q}", "px") for q in QUANTILES]
    plan.append(("fp32 mean flow magnitude (scale of the above)", "px"))
    rec.plan(plan)

    height, width = spec["size"]
    data = Path(spec["data"])
    if (data / "JPEGImages" / "480p" / spec["sequence"]).is_dir():
        clip = davis_clip(data, spec["sequence"], frames=spec["frames"], size=(height, width))
    else:  # the same computation on a synthetic scene, so that the speed figures still come
        from trackprep.core.synthetic import make_scene

        clip = make_scene(seed=0, num_frames=spec["frames"], height=height, width=width).to_clip(
            f"synthetic (no DAVIS-2016 at {data})")
    pairs = clip.num_frames - 1
    weights = random_raft_large(Path(spec["work"]))
    where = f"{clip.name}, {pairs} frame pairs at {height}x{width}, {spec['iters']} iterations"
    ref = None  # fp32 flow at the reference batch size
    for dtype in dtypes:
        for bs in sizes:
            names = (f"{dtype} batch {bs}: throughput", f"{dtype} batch {bs}: peak GPU memory")
            if dtype != "fp32" and device.type != "cuda":
                rec.row(names[0], None, "pairs/s", HALF_ONLY_ON_CUDA)
                rec.row(names[1], None, "MiB", HALF_ONLY_ON_CUDA)
                continue
            try:
                est = RaftEstimator(model="large", weights=weights, iters=spec["iters"], batch_size=bs,
                                    device=str(device), half=False if dtype == "fp32" else dtype)
                est.check_ready()
                warm, _ = _timed(lambda: est.estimate(clip), device, 1)  # cuDNN algorithm search, allocator growth
                _reset_peak(device)
                repeat = spec["repeat"] if warm < SLOW_RUN_S else 1  # keep a slow setting inside the part's limit
                seconds, flow = _timed(lambda: est.estimate(clip), device, repeat)
            except torch.cuda.OutOfMemoryError:
                rec.row(names[0], None, "pairs/s", "out of GPU memory")
                rec.row(names[1], None, "MiB", "out of GPU memory")
                continue
            finally:
                est = None
            peak = _peak_gpu_mib(device)
            rec.row(names[0], pairs / seconds, "pairs/s",
                    f"forward + backward flow per frame pair; median of {repeat}; {where}")
            rec.row(names[1], peak, "MiB", "torch max_memory_allocated" if peak is not None else NO_GPU)
            if bs != ref_bs:
                continue
            both = torch.cat([flow.forward, flow.backward])
            if dtype == "fp32":
                ref = both
                rec.row(plan[-1][0], float(torch.linalg.vector_norm(ref, dim=1).mean()), "px", "random weights")
            elif ref is not None:  # reported at once, so that a later timeout cannot lose it
                epe = torch.linalg.vector_norm(both - ref, dim=1).numpy().ravel()
                note = f"{clip.name}, batch {ref_bs}, every pixel of both directions; random weights: stability only"
                for q, v in zip(QUANTILES, (epe.mean(), np.percentile(epe, 99), epe.max())):
                    rec.row(f"{dtype} vs fp32 end-point difference: {q}", float(v), "px", note)
    if device.type != "cuda":
        for dtype in dtypes[1:]:
            for q in QUANTILES:
                rec.row(f"{dtype} vs fp32 end-point difference: {q}", None, "px", HALF_ONLY_ON_CUDA)


# ------------------------------------------------------------------------------ (2) annotate

def part_annotate(spec: dict, rec: Recorder) -> None:
    """The annotate pipeline of `trackprep annotate` on one DAVIS-2016 sequence, RAFT on the device."""
    import torch

    from trackprep.config import resolve_config
    from trackprep.flow import select_device
    from trackprep.pipeline.annotate import TIMED_PARTS, annotate

    stages = list(TIMED_PARTS)
    rec.plan([(f"{s} stage", "s") for s in stages] + [("total of the stages", "s"), ("flow share", "%"),
             ("peak GPU memory", "MiB"), ("peak host memory (RSS)", "MiB"), ("tracks", "")])
    device = select_device(spec["device"])
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_annotate import subset  # a DAVIS-layout folder of one sequence (symbolic links)

    work = Path(spec["work"])
    root = subset(Path(spec["data"]), work / "davis", [spec["sequence"]], spec["frames"])
    weights = random_raft_large(work)
    height, width = spec["size"]
    config = resolve_config(overrides={"size": f"{height}x{width}", "flow": {
        "name": "raft", "raft_weights": str(weights), "device": str(device), "iters": spec["iters"]}})
    _reset_peak(device)
    summary = annotate(datasets=[("davis2016", root)], out=work / "annotations.zarr", config=config,
                       scheduler="local", overwrite=True)
    if summary.failed:
        raise SystemExit("; ".join(summary.lines()))
    result = summary.results[0]
    total = sum(result.timings.values())
    what = f"{result.key}, {result.num_frames} frames at {height}x{width}"
    for s in stages:
        rec.row(f"{s} stage", result.timings[s], "s", what if s == "read" else "")
    rec.row("total of the stages", total, "s", "")
    rec.row("flow share", 100 * result.timings["flow"] / total, "%",
            "random RAFT weights: the flow fails the cycle test almost everywhere, so tracking is a worst case")
    peak = _peak_gpu_mib(device)
    rec.row("peak GPU memory", peak, "MiB", "torch max_memory_allocated" if peak is not None else NO_GPU)
    rec.row("peak host memory (RSS)", _peak_rss_mib(), "MiB", "this process, torch and CUDA runtime included")
    rec.row("tracks", result.num_tracks, "", "")


# ------------------------------------------------------------------------------ (3) SVD

def svd_xt_components(device):
    """SVD-xt's UNet, VAE and CLIP image encoder at their real sizes with random weights,
    built on `device` (initialising 2.3 billion parameters on a CPU alone takes minutes)."""
    import torch
    from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    from track4gen.model import SVDComponents

    sys.path.insert(0, str(Path(__file__).parent))
    from bench_train import SVD_XT_UNET_CONFIG

    arch = json.loads(ARCHITECTURE.read_text())
    torch.manual_seed(0)
    with device:
        unet = UNetSpatioTemporalConditionModel(**SVD_XT_UNET_CONFIG)
        vae = AutoencoderKLTemporalDecoder(**arch["vae"])
        image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(**arch["image_encoder"]))
    return SVDComponents(unet=unet, vae=vae, image_encoder=image_encoder,
                         feature_extractor=CLIPImageProcessor(**arch["feature_extractor"]))


def tiny_components(num_frames: int):
    from track4gen.model import SVDComponents
    from track4gen.tiny_model import build_tiny_pipeline

    pipe = build_tiny_pipeline(num_frames=num_frames)
    return SVDComponents(unet=pipe.unet, vae=pipe.vae, image_encoder=pipe.image_encoder,
                         feature_extractor=pipe.feature_extractor)


def part_svd(spec: dict, rec: Recorder) -> None:
    """One optimiser step of the Track4Gen trainer on a segment of 1 x F x H x W, through the
    trainer's own functions (build_model, make_optimizer, compute_losses) and its default recipe;
    then zero-shot tracking features of an F-frame clip (track4gen.tracking.features)."""
    import torch
    from accelerate import Accelerator
    from torch.utils.data import DataLoader

    from track4gen import train as trainer
    from track4gen.data import SegmentStream
    from track4gen.model import tracking_head
    from track4gen.tracking.features import DEFAULT_BLOCK, DiffusionFeatures, FeatureModel, video_features
    from trackprep.flow import select_device

    frames, (height, width) = spec["frames"], spec["size"]
    shape = f"1 x {frames} x {height}x{width}"
    features_name = f"zero-shot tracking features, {frames}-frame clip"
    rec.plan([("model", ""), ("UNet parameters", "M"), ("trainable parameters", "M"), ("mixed precision", ""),
              ("gradient checkpointing", ""), (f"training step {shape}", "s/step"),
              ("training step: peak GPU memory", "MiB"), (features_name, "s"), ("features: peak GPU memory", "MiB")])
    device = select_device(spec["device"])
    sys.path.insert(0, str(REPO / "tests"))
    from train_fixtures import make_segment_store  # the pipeline's own stages on a synthetic scene

    work = Path(spec["work"])
    store = make_segment_store(work / "segments.zarr", num_segments=1, length=frames, height=height, width=width,
                               max_tracks=2048)
    cfg = trainer.TrainConfig(store=str(store), pretrained="(built in memory)", out=str(work / "run"), num_workers=0,
                              cpu=device.type == "cpu")
    trainer.validate(cfg)
    full = spec["model"] == "svd-xt"
    parts = svd_xt_components(device) if full else tiny_components(frames)
    rec.row("model", spec["model"], "", f"{ARCHITECTURE.name if full else 'track4gen.tiny_model'}, random weights")
    rec.row("UNet parameters", sum(p.numel() for p in parts.unet.parameters()) / 1e6, "M")

    accelerator = Accelerator(cpu=cfg.cpu, mixed_precision=cfg.resolved_mixed_precision)
    model, names = trainer.build_model(parts, cfg=cfg)
    # As the trainer's step 3: the VAE encodes in fp32, the frozen CLIP encoder is cast.
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision, torch.float32)
    parts.vae.to(accelerator.device)
    parts.image_encoder.to(accelerator.device, dtype=weight_dtype)
    optimizer = trainer.make_optimizer(model, cfg=cfg)
    model, optimizer = accelerator.prepare(model, optimizer)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    rec.row("trainable parameters", trainable / 1e6, "M",
            f"--variant {cfg.variant}, --trainable {cfg.trainable}: {len(names)} UNet tensors + head")
    default = "the trainer's default on this device"
    rec.row("mixed precision", accelerator.mixed_precision, "", default)
    rec.row("gradient checkpointing", "on" if cfg.resolved_gradient_checkpointing else "off", "", default)

    loader = DataLoader(SegmentStream(store, num_pairs=cfg.num_pairs, fg_share=cfg.fg_share, scale_frames=False,
                                      rank=0, world_size=1), batch_size=1)
    batch = {k: v.to(accelerator.device) for k, v in next(iter(loader)).items()}
    generator = torch.Generator().manual_seed(0)

    def step() -> float:
        terms = trainer.compute_losses(model, parts, batch, cfg=cfg, generator=generator)
        accelerator.backward(terms["total"])
        if cfg.max_grad_norm > 0:
            accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(terms["total"].detach())

    model.train()
    try:
        step()  # warm-up: kernels, allocator, optimiser state
        _reset_peak(device)
        seconds, loss = _timed(step, device, spec["repeat"])
    except torch.cuda.OutOfMemoryError:
        rec.row(f"training step {shape}", None, "s/step", "out of GPU memory")
        rec.row("training step: peak GPU memory", None, "MiB", "out of GPU memory")
    else:
        rec.row(f"training step {shape}", seconds, "s/step",
                f"median of {spec['repeat']} after one warm-up: VAE + CLIP encoding, UNet forward/backward, AdamW, "
                f"{cfg.num_pairs} correspondence pairs; loss {loss:.3g}")
        peak = _peak_gpu_mib(device)
        rec.row("training step: peak GPU memory", peak, "MiB",
                "torch max_memory_allocated, weights and optimiser state included" if peak is not None else NO_GPU)

    # Zero-shot tracking features of the same clip from the trained model (its head's refined map).
    accelerator.free_memory()  # drops its references to the optimiser (state and gradients go)
    del optimizer, model
    extract = DiffusionFeatures(FeatureModel(unet=parts.unet, vae=parts.vae, image_encoder=parts.image_encoder,
                                             feature_extractor=parts.feature_extractor,
                                             head=tracking_head(parts.unet), source=spec["model"]), device=device)
    clip = batch["frames"][0].cpu().numpy()  # uint8 [F, H, W, 3]
    try:
        video_features(clip, extract, length=frames)  # warm-up
        _reset_peak(device)
        seconds, feats = _timed(lambda: video_features(clip, extract, length=frames), device, spec["repeat"])
    except torch.cuda.OutOfMemoryError:
        rec.row(features_name, None, "s", "out of GPU memory")
        rec.row("features: peak GPU memory", None, "MiB", "out of GPU memory")
        return
    rec.row(features_name, seconds, "s",
            f"one UNet pass at sigma {extract.sigma} in {str(extract.dtype).replace('torch.', '')}, "
            f"{DEFAULT_BLOCK} -> {tuple(feats.shape[1:])} per frame; median of {spec['repeat']}")
    peak = _peak_gpu_mib(device)
    rec.row("features: peak GPU memory", peak, "MiB", "torch max_memory_allocated" if peak is not None else NO_GPU)


PARTS: dict[str, Callable[[dict, Recorder], None]] = {
    "machine": part_machine,
    "raft": part_raft,
    "annotate": part_annotate,
    "svd": part_svd,
}


def run_part(name: str, spec: dict, records: Path) -> None:
    """Entry point of a part's process (gpu_check.py --part NAME)."""
    with tempfile.TemporaryDirectory(prefix=f"gpu_check_{name}_") as tmp:
        PARTS[name]({**spec, "work": tmp}, Recorder(name, records))
