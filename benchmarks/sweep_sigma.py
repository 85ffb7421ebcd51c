"""Noise level of the zero-shot feature pass: a sweep on the tiny model trained in miniature.

Trains the tiny SVD-shaped model with the trainer (`track4gen.train.train`) on synthetic
segments, as variant "track4gen" (with the correspondence loss) and "finetune" (lambda = 0)
for the same steps, then tracks held-out synthetic videos with exact ground truth
(`score_tracker`, query mode "first") at each sigma, for the untrained model and both runs.
Prints position accuracy / occlusion accuracy / AJ per (model, sigma). This is the longer
version of tests/test_track4gen_tracking_training.py; the sigma it picks is only a stand-in
until the same sweep is run with SVD-xt on TAP-Vid DAVIS (`track4gen eval-tracking --sigma`).

Run: PYTHONPATH=. python benchmarks/sweep_sigma.py [--steps 300] [--sigmas 0.02,0.05,0.1,0.2,0.4,0.7,1.5]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from track4gen.tiny_model import make_tiny_model
from track4gen.tracking.evaluate import score_tracker, synthetic_groundtruth
from track4gen.tracking.features import DiffusionFeatures
from track4gen.tracking.models import load_feature_model
from track4gen.train import TrainConfig, train
from trackprep.core.synthetic import make_scene

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from train_fixtures import make_segment_store  # noqa: E402 (the trainer tests' store: pipeline-made segments)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--segments", type=int, default=8)
    ap.add_argument("--videos", type=int, default=4, help="held-out videos")
    ap.add_argument("--sigmas", default="0.02,0.05,0.1,0.2,0.4,0.7,1.5")
    args = ap.parse_args()
    torch.set_num_threads(1)
    sigmas = [float(s) for s in args.sigmas.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        store = make_segment_store(tmp / "segments.zarr", num_segments=args.segments, length=args.frames)
        base = make_tiny_model(tmp / "tiny-svd", num_frames=args.frames)
        models = {"untrained": base}
        for variant in ("track4gen", "finetune"):
            t0 = time.perf_counter()
            train(TrainConfig(store=str(store), pretrained=str(base), out=str(tmp / variant), variant=variant,
                              max_steps=args.steps, learning_rate=args.lr, num_workers=0, num_pairs=256,
                              checkpoint_every=args.steps, export=False))
            models[variant] = tmp / variant
            print(f"trained {variant}: {args.steps} steps in {time.perf_counter() - t0:.0f} s", flush=True)
        videos = [synthetic_groundtruth(make_scene(seed=100 + i, num_frames=args.frames, height=64, width=96,
                                                   num_objects=2, max_speed=3.0, min_relative_speed=1.5),
                                        name=f"held-out-{i}", points=200, seed=i) for i in range(args.videos)]
        print(f"\n{args.videos} held-out synthetic videos, {args.frames} frames at 64x96, 200 queries each; "
              "position accuracy / occlusion accuracy / AJ, x100\n")
        print("| sigma | " + " | ".join(models) + " |")
        print("|---:|" + "---|" * len(models))
        loaded = {name: load_feature_model(str(path)) for name, path in models.items()}
        for sigma in sigmas:
            cells = []
            for model in loaded.values():
                r = score_tracker(videos, extract=DiffusionFeatures(model, sigma=sigma, device="cpu"), mode="first",
                                  protocol="all", size=(64, 96), segment_length=args.frames, soft_argmax=model.soft_argmax)
                cells.append(" / ".join(f"{100 * r.mean[k]:.1f}" for k in ("position_accuracy", "occlusion_accuracy",
                                                                             "average_jaccard")))
            print(f"| {sigma:g} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
