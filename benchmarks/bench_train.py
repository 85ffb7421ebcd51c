"""Track4Gen trainer figures: data loading rate and the correspondence loss's share of a step.

Targets (issue 7):
- the streaming dataset sustains >= 20 segments/s per process from a local segment store at
  24 x 320 x 576 with 8192 tracks (frames decoded, 512 pairs sampled; the trainer scales
  frames to [-1, 1] on the GPU, the float-in-worker mode is timed too);
- the correspondence loss adds < 10% to the tiny model's training step time.

Frames are real DAVIS-2016 frames when ../shared/data is there (natural images barely
compress, so reads are honest), otherwise synthetic scenes.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_train.py [--segments 24] [--steps 10]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import numpy as np
import torch
from torch.utils.data import DataLoader

from trackprep.core.resize import resize_frames
from trackprep.io.segment_store import create_segment_store, mark_complete, write_segment
from track4gen import train as train_mod
from track4gen.data import SegmentStream
from track4gen.losses import correspondence_loss

L, H, W, N = 24, 320, 576, 8192
DAVIS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "davis2016" / "JPEGImages" / "480p"


def clip_frames(i: int) -> np.ndarray:
    seqs = sorted(DAVIS.glob("*")) if DAVIS.is_dir() else []
    if seqs:
        from PIL import Image

        files = sorted(seqs[i % len(seqs)].glob("*.jpg"))[:L]
        return resize_frames(np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files]), size=(H, W))
    from trackprep.core.synthetic import make_scene

    return make_scene(seed=i, num_frames=L, height=H, width=W).render()[0]


def random_tracks(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Smooth random walks, each defined on one random run of >= 2 frames, half foreground."""
    start = rng.uniform([0, 0], [W - 1, H - 1], (N, 1, 2))
    tracks = (start + np.cumsum(rng.normal(0, 1.5, (N, L, 2)), axis=1)).clip(0, [W - 1, H - 1]).astype(np.float32)
    first = rng.integers(0, L - 1, N)
    last = np.minimum(L, first + rng.integers(2, L + 1, N))
    frames = np.arange(L)
    visible = (frames >= first[:, None]) & (frames < last[:, None])
    tracks[~visible] = np.nan
    labels = (np.arange(N) % 2).astype(np.uint8)
    return tracks, visible, labels


def build_store(path: Path, segments: int) -> None:
    root = create_segment_store(path, num_segments=segments, length=L, height=H, width=W, max_tracks=N,
                                config={"benchmark": "bench_train"})
    rng = np.random.default_rng(0)
    clips = {}
    for s in range(segments):
        frames = clips.setdefault(s % 8, clip_frames(s % 8))
        tracks, visible, labels = random_tracks(rng)
        write_segment(root, s, frames=frames, masks=np.zeros((L, H, W), np.uint8), has_mask=np.ones(L, bool),
                      tracks=tracks, visible=visible, labels=labels, video=f"bench/{s % 8}", start=0)
    mark_complete(root)


def bench_loading(store: Path, *, workers: int, scale_frames: bool, epochs: int = 2) -> float:
    ds = SegmentStream(store, num_pairs=512, scale_frames=scale_frames, rank=0, world_size=1)
    loader = DataLoader(ds, batch_size=1, num_workers=workers)
    ds.set_epoch(0)
    next(iter(loader))  # warm up (worker start, file cache) outside the timing
    count, t0 = 0, time.perf_counter()
    for e in range(epochs):
        ds.set_epoch(e + 1)
        for batch in loader:
            count += batch["frames"].shape[0]
    return count / (time.perf_counter() - t0)


def bench_step(work: Path, *, steps: int, height: int, width: int, frames: int) -> dict[str, float]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from train_fixtures import make_segment_store
    from track4gen.tiny_model import make_tiny_model

    store = make_segment_store(work / f"s{height}.zarr", num_segments=1, length=frames, height=height, width=width)
    model_dir = make_tiny_model(work / "tiny", num_frames=frames)
    cfg = train_mod.TrainConfig(store=str(store), pretrained=str(model_dir), out=str(work / "run"), num_pairs=512)
    parts = train_mod.load_components(cfg.pretrained)
    model, _ = train_mod.build_model(parts, cfg=cfg)
    optimizer = train_mod.make_optimizer(model, cfg=cfg)
    batch = next(iter(DataLoader(SegmentStream(store, num_pairs=512, rank=0, world_size=1), batch_size=1)))
    gen = torch.Generator().manual_seed(0)

    def step() -> None:
        terms = train_mod.compute_losses(model, parts, batch, cfg=cfg, generator=gen)
        terms["total"].backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def once() -> float:
        t0 = time.perf_counter()
        step()
        return time.perf_counter() - t0

    def no_corr(features, **kw):  # the same step without the correspondence term (no loss, no refiner backward)
        return features.sum() * 0.0

    step()  # warm-up
    full, without = [], []
    for _ in range(steps):  # interleaved, medians: a shared machine's load drifts between runs
        full.append(once())
        with mock.patch.object(train_mod, "correspondence_loss", no_corr):
            without.append(once())
    full, without = float(np.median(full)), float(np.median(without))
    # The loss op alone (cost volume, soft-argmax, Huber; forward + backward) on features of the same shape.
    with torch.no_grad():
        _, feats = model(torch.zeros(1, frames, 8, height // 8, width // 8), torch.zeros(1),
                         torch.zeros(1, 1, 32), torch.tensor([[6.0, 127.0, 0.02]]))
    feats.requires_grad_(True)
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = correspondence_loss(feats, query_frame=batch["query_frame"], query_xy=batch["query_xy"],
                                   target_frame=batch["target_frame"], target_xy=batch["target_xy"],
                                   valid=batch["valid"], image_size=(height, width))
        loss.backward()
    op = (time.perf_counter() - t0) / steps
    return {"full": full, "without": without, "op": op}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--segments", type=int, default=24)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1, help="torch threads for the step timing")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        build_store(work / "bench.zarr", args.segments)
        print(f"store: {args.segments} segments of {L}x{H}x{W}, {N} tracks, built in {time.perf_counter() - t0:.1f} s"
              f" ({'DAVIS' if DAVIS.is_dir() else 'synthetic'} frames)")
        for scale in (False, True):
            for workers in (0, 2):
                rate = bench_loading(work / "bench.zarr", workers=workers, scale_frames=scale)
                what = "float [-1, 1] frames in the workers" if scale else "uint8 frames (the trainer's mode)"
                print(f"data loading, {what}, {workers} workers: {rate:.1f} segments/s per process (target >= 20)")

        torch.set_num_threads(args.threads)
        for h, w, f in ((64, 96, 8), (128, 192, 8)):
            r = bench_step(work, steps=args.steps, height=h, width=w, frames=f)
            print(f"tiny model step at {f}x{h}x{w}, 512 pairs: {r['full'] * 1e3:.0f} ms; without L_corr "
                  f"{r['without'] * 1e3:.0f} ms -> L_corr adds {100 * (r['full'] / r['without'] - 1):.1f}% "
                  f"(target < 10%); the loss op alone {r['op'] * 1e3:.1f} ms = {100 * r['op'] / r['full']:.1f}% of the step")


if __name__ == "__main__":
    main()
