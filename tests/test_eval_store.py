"""End to end: oracle-flow annotations of a synthetic video, written to an annotation store,
scored against exact ground truth through the query path, the readers and the CLI."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from typer.testing import CliRunner

from trackprep.cli import app
from trackprep.cli.eval_cmds import eval_tracks
from trackprep.core.chaining import chain_tracks
from trackprep.core.labels import label_tracks
from trackprep.core.synthetic import Layer, Scene
from trackprep.eval.evaluate import EvaluationError, evaluate_store, format_table, match_videos
from trackprep.eval.groundtruth import GroundTruthError, GroundTruthVideo, read_groundtruth, write_npz
from trackprep.io.annotation_store import create_store, write_video

STORE_SIZE = (128, 224)  # (H, W) the store is annotated at
GT_SIZE = (240, 420)  # the ground truth's own resolution (DAVIS-like), rescaled between the two
NUM_FRAMES = 10


def _scene(height: int, width: int) -> Scene:
    # A panning, zooming background and one rotating, growing object crossing it. The object
    # moves less than its own width, so no point is occluded and then seen again: chained
    # tracks end at an occlusion and cannot be scored after it (Track4Gen Table 2's gap).
    background = Layer(texture_seed=11, tint=(0.4, 0.5, 0.6), c0=(width / 2, height / 2), v=(0.6, -0.3), g=0.002)
    blob = Layer(
        texture_seed=12, tint=(0.9, 0.3, 0.2), c0=(0.4 * width, 0.5 * height), v=(2.5, 0.8), a0=0.3, w=0.02,
        g=0.005, radius=0.3 * height, lobes=3, lobe_amp=0.15,
    )
    return Scene(height=height, width=width, num_frames=NUM_FRAMES, layers=(background, blob))


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """(store path, GT scene at GT_SIZE, GT queries [Q, 3] at GT_SIZE)."""
    tmp = tmp_path_factory.mktemp("eval")
    scene = _scene(*STORE_SIZE)
    clip = scene.to_clip("blob")
    tracks = chain_tracks(scene.flow())  # oracle flow: exact forward and backward
    tracks = label_tracks(tracks, clip.masks, clip.has_mask)
    root = create_store(tmp / "A.zarr", config={"flow": "oracle"})
    write_video(root, "synthetic/blob", clip, tracks)

    gt_scene = scene.rescaled(height=GT_SIZE[0], width=GT_SIZE[1])
    rng = np.random.default_rng(0)
    q = 300
    frames = np.concatenate([np.zeros(q // 2), np.full(q - q // 2, 5)])  # some queries mid-video
    queries = np.stack([frames, rng.uniform(0, GT_SIZE[1] - 1, q), rng.uniform(0, GT_SIZE[0] - 1, q)], axis=1)
    return tmp / "A.zarr", gt_scene, queries


def _write_tapvid_pickle(path, name, scene, queries):
    tracks, visible = scene.ground_truth(queries)
    frames, _ = scene.render()
    h, w = scene.height, scene.width
    points = (tracks + 0.5) / np.array([w, h], np.float32)  # TAP-Vid: [0, 1], corners at 0 and 1
    with open(path, "wb") as f:
        pickle.dump({name: {"video": frames, "points": points.astype(np.float32), "occluded": ~visible}}, f)


def test_tapvid_pickle_round_trip(tmp_path):
    points = np.array([[[0.5, 0.25], [0.0, 1.0]]], np.float32)
    with open(tmp_path / "gt.pkl", "wb") as f:
        pickle.dump({"cows": {"video": np.zeros((2, 40, 100, 3), np.uint8), "points": points,
                              "occluded": np.array([[False, True]])}}, f)
    (video,) = read_groundtruth(tmp_path / "gt.pkl")
    assert video.name == "cows" and video.size == (40, 100) and video.queries is None
    np.testing.assert_allclose(video.tracks[0], [[49.5, 9.5], [-0.5, 39.5]])  # x = u * W - 0.5
    assert video.occluded.tolist() == [[False, True]]


def test_oracle_annotations_score_99_through_tapvid_pickle_and_cli_function(synthetic, tmp_path):
    store, gt_scene, queries = synthetic
    _write_tapvid_pickle(tmp_path / "tapvid.pkl", "blob", gt_scene, queries)
    report = eval_tracks(store, tmp_path / "tapvid.pkl", mode="first", json_out=tmp_path / "r.json")
    assert [v.video for v in report.videos] == ["synthetic/blob"] and report.unmatched == []
    m = report.videos[0].metrics
    assert report.videos[0].num_queries == 300
    assert m["position_accuracy"] >= 0.99, m
    assert m["occlusion_accuracy"] >= 0.97 and m["average_jaccard"] >= 0.97, m
    assert report.mean["position_accuracy"] == m["position_accuracy"]
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["videos"][0]["position_accuracy"] == pytest.approx(m["position_accuracy"])


def test_shifted_ground_truth_scores_low_in_the_256x256_raster(synthetic, tmp_path):
    """Negative control, and a check that distances are measured in TAP-Vid's 256x256 raster (each
    axis scaled on its own): ground truth moved 3 GT px after the query frame is 3 * 256/420 = 1.8 px
    off in x (inside 2 px there, though 3 px at the GT's size) but 3 * 256/240 = 3.2 px off in y."""
    store, gt_scene, queries = synthetic
    tracks, visible = gt_scene.ground_truth(queries)
    scores = []
    for axis in (0, 1):
        moved = tracks.copy()
        moved[:, :, axis] += 3.0 * (np.arange(NUM_FRAMES)[None, :] != queries[:, :1])
        gt = GroundTruthVideo(name="blob", size=GT_SIZE, tracks=moved, occluded=~visible,
                              queries=queries.astype(np.float32))
        write_npz(tmp_path / "moved.npz", [gt])
        scores.append(evaluate_store(store, tmp_path / "moved.npz", mode="first").videos[0].metrics)
    in_x, in_y = scores
    assert in_x["pts_within_1"] < 0.05 and in_x["pts_within_2"] > 0.95 and in_x["position_accuracy"] < 0.85
    assert in_y["pts_within_2"] < 0.05 and in_y["pts_within_4"] > 0.95 and in_y["position_accuracy"] < 0.65


def test_strided_mode_through_the_command_line(synthetic, tmp_path):
    store, gt_scene, queries = synthetic
    _write_tapvid_pickle(tmp_path / "tapvid.pkl", "blob", gt_scene, queries)
    result = CliRunner().invoke(app, ["eval-tracks", "--store", str(store), "--gt", str(tmp_path / "tapvid.pkl"),
                                      "--mode", "strided", "--json", str(tmp_path / "s.json")])
    assert result.exit_code == 0, result.output
    assert "| synthetic/blob |" in result.output and "**mean over 1 video**" in result.output
    saved = json.loads((tmp_path / "s.json").read_text())
    assert saved["mode"] == "strided" and saved["mean"]["position_accuracy"] >= 0.98


def test_npz_with_queries_and_masks_gives_segmentation_pck(synthetic, tmp_path):
    store, gt_scene, queries = synthetic
    tracks, visible = gt_scene.ground_truth(queries)
    _, masks = gt_scene.render()
    gt = GroundTruthVideo(name="synthetic/blob", size=GT_SIZE, tracks=tracks, occluded=~visible,
                          queries=queries.astype(np.float32), masks=masks)
    write_npz(tmp_path / "gt.npz", [gt])
    (back,) = read_groundtruth(tmp_path / "gt.npz")
    np.testing.assert_array_equal(back.tracks, tracks)
    np.testing.assert_array_equal(back.masks, masks)
    report = evaluate_store(store, tmp_path / "gt.npz", format="npz", mode="strided", rows_per_chunk=5000)
    m = report.videos[0].metrics
    assert m["pck_segmentation"] >= 0.99 and m["pck_3px"] >= 0.99, m
    # Blocks of 5000 rows answer exactly as the default block size does.
    whole = evaluate_store(store, tmp_path / "gt.npz", mode="strided").videos[0].metrics
    assert whole == m
    table = format_table(report)
    assert table.splitlines()[0].startswith("| video | queries | pos. acc.")
    assert "| synthetic/blob | 300 |" in table


def test_mismatched_ground_truth_is_refused(synthetic, tmp_path):
    store, gt_scene, queries = synthetic
    tracks, visible = gt_scene.ground_truth(queries)
    other = GroundTruthVideo(name="camel", size=GT_SIZE, tracks=tracks, occluded=~visible)
    write_npz(tmp_path / "other.npz", [other])
    with pytest.raises(EvaluationError, match=r"none of its videos \['camel'\].*synthetic/blob"):
        evaluate_store(store, tmp_path / "other.npz")
    short = GroundTruthVideo(name="blob", size=GT_SIZE, tracks=tracks[:, :6], occluded=~visible[:, :6])
    write_npz(tmp_path / "short.npz", [short])
    with pytest.raises(EvaluationError, match="has 6 frames, the store 10"):
        evaluate_store(store, tmp_path / "short.npz")
    result = CliRunner().invoke(app, ["eval-tracks", "--store", str(store), "--gt", str(tmp_path / "short.npz")])
    assert result.exit_code == 2 and "has 6 frames, the store 10" in result.output
    result = CliRunner().invoke(app, ["eval-tracks", "--store", str(tmp_path / "none.zarr"), "--gt", str(tmp_path / "short.npz")])
    assert result.exit_code == 2 and "none.zarr: annotation store does not exist" in result.output
    late = queries.astype(np.float32)
    late[0, 0] = 10
    bad = GroundTruthVideo(name="blob", size=GT_SIZE, tracks=tracks, occluded=~visible, queries=late)
    write_npz(tmp_path / "late.npz", [bad])
    with pytest.raises(EvaluationError, match=r"'blob': query frames must lie in \[0, 9\], got \[0, 10\]"):
        evaluate_store(store, tmp_path / "late.npz")


def test_video_matching():
    keys = ["davis/cows", "fbms/cows", "davis/dog"]
    assert match_videos(keys, ["dog", "davis/cows", "goat"]) == ({"dog": "davis/dog", "davis/cows": "davis/cows"}, ["goat"])
    with pytest.raises(EvaluationError, match=r"'cows' matches several store videos \['davis/cows', 'fbms/cows'\]"):
        match_videos(keys, ["cows"])


def test_bad_ground_truth_files_are_named(tmp_path):
    with pytest.raises(GroundTruthError, match="gt.txt.*cannot tell the format from the suffix '.txt'"):
        read_groundtruth(tmp_path / "gt.txt")
    with pytest.raises(GroundTruthError, match="missing.npz: ground-truth file does not exist"):
        read_groundtruth(tmp_path / "missing.npz")
    with open(tmp_path / "list.pkl", "wb") as f:
        pickle.dump([1, 2], f)
    with pytest.raises(GroundTruthError, match=r"list.pkl: expected a TAP-Vid pickle.*got list"):
        read_groundtruth(tmp_path / "list.pkl")
    with open(tmp_path / "nopoints.pkl", "wb") as f:
        pickle.dump({"dog": {"video": np.zeros((2, 4, 4, 3), np.uint8), "occluded": np.zeros((1, 2), bool)}}, f)
    with pytest.raises(GroundTruthError, match=r"nopoints.pkl: video 'dog': missing \['points'\]"):
        read_groundtruth(tmp_path / "nopoints.pkl")
    np.savez(tmp_path / "bad.npz", **{"dog/tracks": np.zeros((1, 2, 2), np.float32), "dog/size": np.array([4, 4])})
    with pytest.raises(GroundTruthError, match=r"bad.npz: video 'dog': missing arrays \['dog/visible'\]"):
        read_groundtruth(tmp_path / "bad.npz")
    np.savez(tmp_path / "badmask.npz", **{"dog/tracks": np.zeros((1, 2, 2), np.float32), "dog/size": np.array([4, 4]),
                                          "dog/visible": np.ones((1, 2), bool), "dog/masks": np.zeros((2, 5, 4), np.uint8)})
    with pytest.raises(GroundTruthError, match=r"badmask.npz: .*masks: expected uint8 \[2, 4, 4\]"):
        read_groundtruth(tmp_path / "badmask.npz")
    with pytest.raises(GroundTruthError, match=r"expected one of \['tapvid', 'npz'\], got 'csv'"):
        read_groundtruth(tmp_path / "badmask.npz", format="csv")


def test_max_frames_equals_scoring_a_store_of_the_shortened_video(synthetic, tmp_path):
    """Chaining is causal, so the first 6 frames of the 10-frame store are the 6-frame video's tracks."""
    from dataclasses import replace

    store, gt_scene, queries = synthetic
    tracks, visible = gt_scene.ground_truth(queries)
    gt = GroundTruthVideo(name="blob", size=GT_SIZE, tracks=tracks, occluded=~visible, queries=queries.astype(np.float32))
    write_npz(tmp_path / "gt10.npz", [gt])
    short_gt = replace(gt, tracks=tracks[:, :6].copy(), occluded=~visible[:, :6])
    write_npz(tmp_path / "gt6.npz", [short_gt])

    scene6 = replace(_scene(*STORE_SIZE), num_frames=6, _cache={})
    clip6 = scene6.to_clip("blob")
    root = create_store(tmp_path / "A6.zarr", config={"flow": "oracle"})
    write_video(root, "synthetic/blob", clip6, label_tracks(chain_tracks(scene6.flow()), clip6.masks, clip6.has_mask))

    cut = evaluate_store(store, tmp_path / "gt10.npz", mode="strided", max_frames=6).videos[0]
    # queries at frame 5 survive (t < 6); the GT npz of the short video keeps them too
    assert cut.num_queries == 300
    whole6 = evaluate_store(tmp_path / "A6.zarr", tmp_path / "gt6.npz", mode="strided").videos[0]
    assert cut.metrics == whole6.metrics
    assert cut.metrics != evaluate_store(store, tmp_path / "gt10.npz", mode="strided").videos[0].metrics
    # with 4 frames the 150 queries at frame 5 are dropped
    assert evaluate_store(store, tmp_path / "gt10.npz", mode="first", max_frames=4).videos[0].num_queries == 150
