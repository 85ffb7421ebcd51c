"""Training teaches tracking, in miniature (Track4Gen Table 2 in small).

A tiny SVD-shaped model is trained by the trainer itself (`track4gen.train.train`: its data
stream, compute_losses and optimiser step) on synthetic 4-frame segments, once with the
correspondence loss (variant "track4gen") and once without (variant "finetune", lambda = 0),
for the same steps. Zero-shot tracking on held-out synthetic videos with exact ground truth
then scores the untrained model and both runs. Measured (60 steps, lr 3e-3, 3 held-out videos,
200 queries each, sigma 0.05): position accuracy 16.0 (track4gen) vs 1.7 (untrained) and 2.1
(finetune); the test asserts a margin of 8 points over both. `benchmarks/sweep_sigma.py` runs the longer
version (300 steps) and the noise-level sweep.
"""

from __future__ import annotations

import pytest
import torch

from track4gen.tracking.evaluate import score_tracker, synthetic_groundtruth
from track4gen.tracking.features import DiffusionFeatures
from track4gen.tracking.models import load_feature_model
from track4gen.train import TrainConfig, train
from trackprep.core.synthetic import make_scene
from train_fixtures import make_segment_store, one_thread  # noqa: F401 (autouse fixture)

FRAMES, STEPS, MARGIN = 4, 60, 0.08


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from track4gen.tiny_model import make_tiny_model

    work = tmp_path_factory.mktemp("teach")
    store = make_segment_store(work / "segments.zarr", num_segments=6, length=FRAMES)
    model = make_tiny_model(work / "tiny-svd", num_frames=FRAMES)
    runs = {}
    for variant in ("track4gen", "finetune"):
        runs[variant] = work / variant
        train(TrainConfig(store=str(store), pretrained=str(model), out=str(runs[variant]), variant=variant,
                          max_steps=STEPS, learning_rate=3e-3, num_workers=0, num_pairs=256,
                          checkpoint_every=STEPS, export=False, seed=0))
    return model, runs


def position_accuracy(spec) -> float:
    # Held out: other scene seeds than the training store's (0..5).
    videos = [synthetic_groundtruth(make_scene(seed=100 + i, num_frames=FRAMES, height=64, width=96, num_objects=2,
                                               max_speed=3.0, min_relative_speed=1.5), name=f"held-out-{i}",
                                    points=200, seed=i) for i in range(3)]
    model = load_feature_model(str(spec))
    report = score_tracker(videos, extract=DiffusionFeatures(model, device="cpu"), mode="first", protocol="all",
                           size=(64, 96), segment_length=FRAMES, soft_argmax=model.soft_argmax)
    return report.mean["position_accuracy"]


def test_correspondence_loss_teaches_the_features_to_track(setup):
    model, runs = setup
    untrained = position_accuracy(model)
    trained = position_accuracy(runs["track4gen"])
    finetuned = position_accuracy(runs["finetune"])
    assert trained >= untrained + MARGIN, (trained, untrained, finetuned)
    assert trained >= finetuned + MARGIN, (trained, untrained, finetuned)


def test_exported_and_run_folders_give_the_same_refined_features(setup, tmp_path):
    from track4gen.export import export_model

    _, runs = setup
    exported = export_model(runs["track4gen"], tmp_path / "exported")
    frames = synthetic_groundtruth(make_scene(seed=9, num_frames=FRAMES, height=64, width=96), name="x", points=1).frames
    feats = []
    for spec in (runs["track4gen"], exported):
        model = load_feature_model(str(spec))
        extract = DiffusionFeatures(model, device="cpu")
        assert model.head is not None and extract.refined and extract.label.endswith("(refined)")
        assert model.soft_argmax["weighting"] == "cosine"
        feats.append(extract(frames))
    assert (feats[0] >= 0).all()  # the refiner ends in a ReLU
    torch.testing.assert_close(feats[0], feats[1])
    plain = load_feature_model(str(setup[0]))
    assert plain.head is None
