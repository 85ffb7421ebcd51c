"""`track4gen track` / `eval-tracking` and feature extraction on the tiny SVD-shaped model (CPU)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from track4gen.cli import app
from track4gen.tracking.evaluate import format_tracking_table, score_tracker, synthetic_groundtruth
from track4gen.tracking.features import DEFAULT_BLOCK, DiffusionFeatures, block_names, canonical_block
from track4gen.tracking.models import load_feature_model
from trackprep.core.synthetic import make_scene
from trackprep.eval.groundtruth import read_npz, write_npz
from train_fixtures import one_thread  # noqa: F401 (autouse fixture)

runner = CliRunner()
FRAMES, SIZE = 8, (64, 96)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    from track4gen.tiny_model import make_tiny_model

    work = tmp_path_factory.mktemp("tracking")
    make_tiny_model(work / "tiny-svd", num_frames=FRAMES)
    scene = make_scene(seed=7, num_frames=12, height=SIZE[0], width=SIZE[1], num_objects=2)
    frames, _ = scene.render()
    (work / "video").mkdir()
    for i, f in enumerate(frames):
        Image.fromarray(f).save(work / "video" / f"{i:05d}.png")
    np.savetxt(work / "queries.txt", [[0, 10, 12], [5, 50.5, 30], [11, 90, 60]], header="t x y")
    gt = [synthetic_groundtruth(make_scene(seed=s, num_frames=FRAMES, height=SIZE[0], width=SIZE[1], num_objects=2),
                                name=f"synthetic/v{s}", points=50, seed=s) for s in (1, 2)]
    write_npz(work / "gt.npz", gt)
    return work


@pytest.fixture(scope="module")
def tiny(work):
    return load_feature_model(str(work / "tiny-svd"))


def test_features_of_the_default_and_other_blocks(tiny, work):
    frames = np.asarray(synthetic_groundtruth(make_scene(seed=3, num_frames=FRAMES, height=SIZE[0], width=SIZE[1]),
                                              name="x", points=1).frames)
    default = DiffusionFeatures(tiny, device="cpu")
    f = default(frames)
    # up_blocks[2].upsamplers[0]: 64 channels at 1/8 of the frame in the tiny model (SVD: 640)
    assert f.shape == (FRAMES, 64, SIZE[0] // 8, SIZE[1] // 8) and f.dtype == torch.float32
    torch.testing.assert_close(default(frames), f)  # seeded: a rerun gives the same features
    coarse = DiffusionFeatures(tiny, block="up_blocks[1].upsamplers[0]", device="cpu")(frames)
    assert coarse.shape == (FRAMES, 64, SIZE[0] // 16, SIZE[1] // 16)
    down = DiffusionFeatures(tiny, block="down_blocks.0", device="cpu")(frames)  # a (map, skips) output
    assert down.shape[0] == FRAMES and down.ndim == 4
    assert default.label == f"{DEFAULT_BLOCK} (raw)"  # base SVD has no head: the SVD* row
    noisier = DiffusionFeatures(tiny, sigma=2.0, device="cpu")(frames)
    assert not torch.allclose(noisier, f)


def test_block_names(tiny):
    names = block_names(tiny.unet)
    assert DEFAULT_BLOCK in names and "mid_block" in names and "up_blocks.3.attentions.1" in names
    assert canonical_block("up_blocks[2].upsamplers[0]") == DEFAULT_BLOCK
    with pytest.raises(ValueError, match=r"'up_blocks\.7'.*valid: down_blocks\.0, "):
        DiffusionFeatures(tiny, block="up_blocks[7]", device="cpu")


def test_24_frame_protocol_tracks_and_scores_the_first_24_frames_only():
    scene = make_scene(seed=5, num_frames=30, height=32, width=48, num_objects=1)
    gt = synthetic_groundtruth(scene, name="long", points=60, seed=0)
    seen = []

    def constant(frames):
        seen.append(frames.shape[0])
        return torch.ones(frames.shape[0], 2, 4, 6)

    report = score_tracker([gt], extract=constant, protocol="24", size=(32, 48))
    assert seen == [24]
    assert report.videos[0].num_queries == int((gt.queries[:, 0] < 23.5).sum())
    with pytest.raises(ValueError, match="has 30 frames; the 'all' protocol needs at least 40"):
        score_tracker([gt], extract=constant, protocol="all", size=(32, 48), segment_length=40)


def test_track_command_writes_tracks_and_a_picture(work):
    out, picture = work / "tracks.npz", work / "matches.png"
    result = runner.invoke(app, ["track", "--model", str(work / "tiny-svd"), "--video", str(work / "video"),
                                 "--queries", str(work / "queries.txt"), "--out", str(out), "--picture", str(picture),
                                 "--size", "64x96", "--segment-length", "8"])
    assert result.exit_code == 0, result.output
    assert "3 queries x 12 frames" in result.output
    (video,) = read_npz(out)
    assert video.name == "video" and video.tracks.shape == (3, 12, 2) and video.size == SIZE
    np.testing.assert_allclose(video.tracks[[0, 1, 2], [0, 5, 11]], [[10, 12], [50.5, 30], [90, 60]], atol=1e-4)
    assert not video.occluded[[0, 1, 2], [0, 5, 11]].any()
    image = np.asarray(Image.open(picture))
    assert image.shape[0] > SIZE[0] and image.shape[1] > SIZE[1]  # a grid of frames


def test_videos_are_read_from_frame_folders_and_files(work, tmp_path):
    from track4gen.tracking.files import read_video
    from trackprep.viz import write_gif

    frames = read_video(work / "video")
    assert frames.shape == (12, *SIZE, 3) and frames.dtype == np.uint8
    write_gif(frames, tmp_path / "clip.gif", fps=8)
    again = read_video(tmp_path / "clip.gif")
    assert again.shape == frames.shape
    assert np.abs(again.astype(int) - frames).mean() < 12  # GIF's 256-colour palette
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    with pytest.raises(ValueError, match="broken.mp4: cannot decode"):
        read_video(tmp_path / "broken.mp4")


@pytest.mark.parametrize("change, message", [
    ({"--model": "nowhere/at/all"}, "--model nowhere/at/all: expected a Stable Video Diffusion"),
    ({"--model": "video"}, "video: expected a Stable Video Diffusion or exported Track4Gen folder"),
    ({"--video": "queries.txt"}, "queries.txt: expected a folder of frames or a video file"),
    ({"--queries": "bad.txt"}, "bad.txt: expected [Q, 3] rows (t, x, y)"),
    ({"--queries": "late.txt"}, "row 0 is [12.0, 1.0, 1.0]; expected t an integer in [0, 11]"),
    ({"--block": "mid_blocks"}, "--block 'mid_blocks': not a feature block of this UNet; valid:"),
    ({"--segment-length": "16"}, "video has 12 frames; tracking needs at least one 16-frame segment"),
    ({"--soft-argmax": "median"}, "--soft-argmax: expected one of ['cosine', 'softmax'], got 'median'"),
])
def test_track_command_errors_are_one_line(work, change, message):
    (work / "bad.txt").write_text("0 1\n2 3\n")
    (work / "late.txt").write_text("12 1 1\n")
    args = {"--model": str(work / "tiny-svd"), "--video": str(work / "video"), "--queries": str(work / "queries.txt"),
            "--out": str(work / "x.npz"), "--size": "64x96", "--segment-length": "8"}
    for key, value in change.items():
        args[key] = str(work / value) if key in ("--queries", "--video") or value == "video" else value
    result = runner.invoke(app, ["track", *[v for kv in args.items() for v in kv]])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert len([line for line in result.output.splitlines() if line.startswith("error:")]) == 1


def test_eval_tracking_prints_table_2_rows_and_writes_pictures(work):
    js, pictures = work / "scores.json", work / "pictures"
    result = runner.invoke(app, ["eval-tracking", "--model", str(work / "tiny-svd"), "--gt", str(work / "gt.npz"),
                                 "--frames", "all", "--block", "up_blocks[2].upsamplers[0]", "--block", "up_blocks.1",
                                 "--size", "64x96", "--segment-length", "8", "--json", str(js),
                                 "--pictures", str(pictures)])
    assert result.exit_code == 0, result.output
    out = result.output[result.output.index("zero-shot tracking"):]  # after the loaders' progress bars
    lines = out.strip().splitlines()
    assert "whole videos" in lines[0] and "mean over 2 videos" in lines[0]
    assert lines[1].startswith("| model | features | pos. acc.") and len(lines) == 5
    assert f"{DEFAULT_BLOCK} (raw)" in lines[3] and "up_blocks.1 (raw)" in lines[4]
    data = json.loads(js.read_text())
    assert [len(row["videos"]) for row in data] == [2, 2]
    assert 0.0 <= data[0]["mean"]["position_accuracy"] <= 1.0 and data[0]["mean"]["pck_segmentation"] is not None
    assert sorted(p.name for p in (pictures / "tiny-svd" / "up_blocks.1").iterdir()) == ["synthetic_v1.png", "synthetic_v2.png"]


def test_eval_tracking_errors(work):
    no_frames = work / "no-frames.npz"
    (v,) = read_npz(work / "gt.npz")[:1]
    from dataclasses import replace

    write_npz(no_frames, [replace(v, frames=None)])
    cases = [
        (["--gt", str(no_frames)], "have no frames; tracking needs them"),
        (["--gt", str(work / "gt.npz"), "--frames", "24"], "has 8 frames; the '24' protocol needs at least 24"),
        (["--gt", str(work / "gt.npz"), "--frames", "12"], "--frames: expected one of ['24', 'all'], got '12'"),
        (["--gt", str(work / "missing.pkl")], "missing.pkl: ground-truth file does not exist"),
    ]
    for args, message in cases:
        result = runner.invoke(app, ["eval-tracking", "--model", str(work / "tiny-svd"), *args])
        assert result.exit_code == 2, result.output
        assert message in result.output, result.output


def test_table_layout():
    from trackprep.eval.evaluate import EvalReport
    from track4gen.tracking.evaluate import TrackingRow

    mean = {"position_accuracy": 0.424, "occlusion_accuracy": 0.8, "average_jaccard": 0.3, "pck_segmentation": float("nan"),
            "pck_3px": 0.5}
    rows = [TrackingRow(model="svd", features=f"{DEFAULT_BLOCK} (raw)", report=EvalReport(mode="first", videos=[], mean=mean))]
    text = format_tracking_table(rows, protocol="24", mode="first")
    assert text.splitlines()[-1] == f"| svd | {DEFAULT_BLOCK} (raw) | 42.4 | 80.0 | 30.0 | – | 50.0 |"


def test_eval_tracking_reads_a_tapvid_pickle_with_its_frames(work):
    import pickle

    gt = synthetic_groundtruth(make_scene(seed=4, num_frames=FRAMES, height=48, width=80, num_objects=1),
                               name="bear", points=30, seed=0)
    h, w = gt.size
    entry = {"video": gt.frames, "points": (gt.tracks + 0.5) / np.array([w, h], np.float32), "occluded": gt.occluded}
    path = work / "tapvid_small.pkl"
    path.write_bytes(pickle.dumps({"bear": entry}))
    result = runner.invoke(app, ["eval-tracking", "--model", str(work / "tiny-svd"), "--gt", str(path), "--frames", "all",
                                 "--size", "64x96", "--segment-length", "8", "--mode", "strided"])
    assert result.exit_code == 0, result.output
    row = result.output.strip().splitlines()[-1]
    assert row.startswith(f"| {work / 'tiny-svd'} | {DEFAULT_BLOCK} (raw) |")
    assert row.split("|")[6].strip() == "–"  # a TAP-Vid pickle has no masks: no segmentation PCK
