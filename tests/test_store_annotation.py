"""The annotation store (io/annotation_store.py), its validator (io/validate.py) and the
pipeline configuration (config.py): known answers, no Dask, no flow."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
import zarr

import trackprep
from trackprep.config import DEFAULTS, ConfigError, annotation_fingerprint, load_yaml, resolve_config
from trackprep.core.labels import label_tracks
from trackprep.core.types import Clip, TrackSet
from trackprep.io import annotation_store as S
from trackprep.io import schema
from trackprep.io.validate import validate_annotation_store, validate_store

REPO = Path(__file__).resolve().parents[1]


def make_clip(t: int = 6, h: int = 12, w: int = 16, *, seed: int = 0) -> Clip:
    rng = np.random.default_rng(seed)
    masks = np.zeros((t, h, w), np.uint8)
    masks[:, 2:6, 3:9] = 1
    masks[:, 8:11, 10:15] = 2
    masks[:, 0, 0] = 255
    return Clip("c", rng.integers(0, 256, (t, h, w, 3), dtype=np.uint8), masks, np.ones(t, bool))


def make_tracks(n: int, t: int, *, h: int = 12, w: int = 16, seed: int = 0) -> TrackSet:
    """Random ragged tracks: each lives on one run of >= 2 frames (the default min_track_length),
    points inside the frame."""
    rng = np.random.default_rng(seed)
    start = rng.integers(0, t - 1, n).astype(np.int32)
    lengths = np.minimum(rng.integers(2, t + 1, n), t - start)
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    points = np.stack([rng.uniform(0, w - 1, offsets[-1]), rng.uniform(0, h - 1, offsets[-1])], 1).astype(np.float32)
    tracks = TrackSet(num_frames=t, start=start, offsets=offsets, points=points, labels=np.zeros(n, np.uint8))
    clip = make_clip(t, h, w)
    return label_tracks(tracks, clip.masks, clip.has_mask)  # labels by the contract's rule, as annotate writes them


@pytest.fixture
def store(tmp_path):
    return S.create_store(tmp_path / "a.zarr", config=resolve_config(), fingerprint={"k": 1})


def quantised(points: np.ndarray) -> np.ndarray:
    """What the store keeps of float32 points: the nearest multiple of 1/64 px (round half to even)."""
    return (np.rint(points * S.POINT_SCALE) / S.POINT_SCALE).astype(np.float32)


def hand_dense(tracks: TrackSet, rows: np.ndarray, f0: int, f1: int) -> tuple[np.ndarray, np.ndarray]:
    """Dense [n, f1 - f0, 2] / [n, f1 - f0] by a plain loop over tracks and frames."""
    out = np.full((len(rows), f1 - f0, 2), np.nan, np.float32)
    vis = np.zeros((len(rows), f1 - f0), bool)
    for k, r in enumerate(rows):
        pts = quantised(tracks.points[tracks.offsets[r] : tracks.offsets[r + 1]])
        for j, p in enumerate(pts):
            f = int(tracks.start[r]) + j
            if f0 <= f < f1:
                out[k, f - f0], vis[k, f - f0] = p, True
    return out, vis


def write_in_parts(root, key, clip, tracks, *, parts: int = 5) -> None:
    """Write as the streaming annotator does: frames in batches, tracks in several batches."""
    w = S.VideoWriter(root, key, num_frames=clip.num_frames, height=clip.size[0], width=clip.size[1])
    for a in range(0, clip.num_frames, 4):
        w.write_frames(a, clip.frames[a : a + 4], clip.masks[a : a + 4], clip.has_mask[a : a + 4])
    for rows in np.array_split(np.arange(len(tracks)), parts):
        w.add_tracks(tracks.select(rows))
    w.finish()


def test_write_read_roundtrip_appends_whole_chunks(store, monkeypatch):
    clip, tracks = make_clip(), make_tracks(1000, 6)
    monkeypatch.setattr(S, "POINTS_PER_CHUNK", 256)
    monkeypatch.setattr(S, "TRACKS_PER_CHUNK", 128)
    writes = []
    real_write = S._Appender._write
    monkeypatch.setattr(S._Appender, "_write", lambda self, count: (writes.append((self.written, count)), real_write(self, count)))
    write_in_parts(store, S.video_key("ds", "v"), clip, tracks, parts=7)
    # every write but each array's last starts and ends on a chunk boundary: no chunk written twice
    assert all(start % 128 == 0 for start, _ in writes) and len(writes) > 7

    v = trackprep.open_annotations(store.store_path.store.root)["ds/v"]
    assert (v.num_tracks, v.num_points, v.num_frames, v.size) == (1000, int(tracks.offsets[-1]), 6, (12, 16))
    np.testing.assert_array_equal(v.start, tracks.start)
    np.testing.assert_array_equal(v.length, tracks.lengths)
    np.testing.assert_array_equal(v.labels, tracks.labels)
    np.testing.assert_array_equal(v.points[:], quantised(tracks.points))
    np.testing.assert_array_equal(v.frames[:], clip.frames)
    np.testing.assert_array_equal(v.masks[:], clip.masks)
    np.testing.assert_array_equal(v.has_mask[:], clip.has_mask)
    assert v.points.chunks == (256, 1) and v.frames.chunks == (1, 12, 16, 3) and v.masks.chunks == (1, 12, 16)
    assert S.video_status(store, "ds/v") == "complete" and S.complete_videos(store) == ["ds/v"]
    assert validate_annotation_store(store.store_path.store.root) == []


def test_reader_dense_equals_a_hand_built_dense_array_for_random_rows_and_frames(store):
    clip, tracks = make_clip(t=12), make_tracks(400, 12, seed=3)
    S.write_video(store, "ds/v", clip, tracks)
    v = trackprep.open_annotations(store.store_path.store.root)["ds/v"]
    rng = np.random.default_rng(0)
    for _ in range(20):
        f0 = int(rng.integers(0, 12))
        f1 = int(rng.integers(f0, 13))
        rows = np.sort(rng.choice(400, size=int(rng.integers(0, 60)), replace=False))
        want = hand_dense(tracks, rows, f0, f1)
        got = v.dense(rows, frames=(f0, f1))
        np.testing.assert_array_equal(got[0], want[0])  # NaN == NaN for assert_array_equal
        np.testing.assert_array_equal(got[1], want[1])
        np.testing.assert_array_equal(v.dense(slice(5, 9), frames=slice(f0, f1))[0], hand_dense(tracks, np.arange(5, 9), f0, f1)[0])
        # the tracks overlapping the window are exactly the rows with some visible frame there
        all_vis = hand_dense(tracks, np.arange(400), f0, f1)[1]
        np.testing.assert_array_equal(v.overlapping(frames=(f0, f1)), np.flatnonzero(all_vis.any(1)))
        np.testing.assert_array_equal(v.visible(rows, frames=(f0, f1)), want[1])
    full = v.dense()
    np.testing.assert_array_equal(full[0], hand_dense(tracks, np.arange(400), 0, 12)[0])
    np.testing.assert_array_equal(v.first_points(), quantised(tracks.first_points()))


def test_points_are_quantised_within_the_recorded_bound(store):
    clip = make_clip()
    tracks = make_tracks(300, 6, seed=5)
    S.write_video(store, "ds/v", clip, tracks)
    points = store["ds/v/points"]
    encoding = points.attrs[S.ATTR_POINTS_ENCODING]
    assert encoding["quantization_step_px"] == 1 / 64 and encoding["max_error_px"] == 1 / 128 <= 1 / 64
    assert "bench_long_video.py" in encoding["source"] and "delta" in encoding["codecs"]
    err = np.abs(points[:] - tracks.points)
    assert 0 < err.max() <= encoding["max_error_px"]
    # exact on the 1/64 px grid: seeds (integer pixels) and sub-pixel multiples come back unchanged
    grid_points = (np.round(tracks.points * 64) / 64).astype(np.float32)
    S.write_video(store, "ds/g", clip, TrackSet(num_frames=6, start=tracks.start, offsets=tracks.offsets,
                                                points=grid_points, labels=tracks.labels))
    np.testing.assert_array_equal(store["ds/g/points"][:], grid_points)
    codecs = json.dumps(points.metadata.to_dict()["codecs"])
    assert "fixedscaleoffset" in codecs and "numcodecs.delta" in codecs and "zstd" in codecs


def test_frames_are_stored_losslessly_compressed(store):
    clip = make_clip(4, 64, 96)
    clip = Clip("flat", np.full_like(clip.frames, 7), clip.masks, clip.has_mask)
    S.write_video(store, "ds/flat", clip, make_tracks(10, 4, h=64, w=96))
    arr = store["ds/flat/frames"]
    assert arr.nbytes_stored() < arr.nbytes / 20  # a constant image compresses to almost nothing
    assert "blosc" in json.dumps(arr.metadata.to_dict()).lower()


def test_interrupted_write_is_not_complete_and_is_redone(store):
    clip, tracks = make_clip(), make_tracks(600, 6)
    w = S.VideoWriter(store, "ds/v", num_frames=6, height=12, width=16)
    w.write_frames(0, clip.frames, clip.masks, clip.has_mask)
    w.add_tracks(tracks.select(np.arange(300)))  # ... and the process dies before finish()
    assert S.video_status(store, "ds/v") == S.STATUS_WRITING
    assert S.complete_videos(store) == []
    problems = validate_annotation_store(store.store_path.store.root)
    assert len(problems) == 1 and "ds/v: status 'writing'" in problems[0]
    with pytest.raises(S.StoreError, match="status 'writing'"):
        trackprep.open_annotations(store.store_path.store.root)["ds/v"]
    S.write_video(store, "ds/v", clip, tracks)  # redo replaces the partial group
    np.testing.assert_array_equal(trackprep.open_annotations(store.store_path.store.root)["ds/v"].length, tracks.lengths)


def test_a_writer_missing_frames_does_not_finish(store):
    clip = make_clip()
    w = S.VideoWriter(store, "ds/v", num_frames=6, height=12, width=16)
    w.write_frames(0, clip.frames[:4], clip.masks[:4], clip.has_mask[:4])
    with pytest.raises(ValueError, match="2 frame\\(s\\) never written \\(first: 4\\)"):
        w.finish()
    assert S.video_status(store, "ds/v") == S.STATUS_WRITING


def test_a_version_1_store_gets_a_one_line_error_saying_how_to_rebuild_it(tmp_path):
    path = tmp_path / "old.zarr"
    zarr.open_group(str(path), mode="w", zarr_format=3, attributes={
        schema.ATTR_FORMAT: schema.ANNOTATION_FORMAT, schema.ATTR_FORMAT_VERSION: 1})
    with pytest.raises(S.StoreError) as err:
        trackprep.open_annotations(path)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and "format version 1 (dense tracks" in msg
    assert "--overwrite" in msg and "trackprep annotate" in msg
    assert validate_store(path) == [msg]


def test_record_failure_replaces_partial_group(store):
    S.write_video(store, "ds/a", make_clip(), make_tracks(20, 6))
    S.record_failure(store, "ds/a", "read: /x/00003.jpg: cannot decode image")
    assert S.failed_videos(store) == {"ds/a": "read: /x/00003.jpg: cannot decode image"}
    assert list(store["ds/a"].array_keys()) == []
    assert S.complete_videos(store) == []
    assert S.video_status(store, "ds/nope") is None


def test_config_change_refused_unless_overwrite(tmp_path):
    path = tmp_path / "a.zarr"
    cfg = resolve_config()
    root = S.create_store(path, config=cfg, fingerprint=annotation_fingerprint(cfg))
    S.write_video(root, "ds/v", make_clip(), make_tracks(5, 6))
    # Same result-affecting settings (device differs): reopened, videos kept, attributes untouched.
    cfg_gpu = resolve_config(overrides={"flow": {"device": "cuda"}})
    again = S.create_store(path, config=cfg_gpu, fingerprint=annotation_fingerprint(cfg_gpu))
    assert S.complete_videos(again) == ["ds/v"] and again.attrs[schema.ATTR_CONFIG]["flow"]["device"] == "auto"
    changed = resolve_config(overrides={"tracks": {"cycle_threshold": 3.0}})
    with pytest.raises(S.StoreError, match=r"a\.zarr: existing store was built with another configuration.*--overwrite"):
        S.create_store(path, config=changed, fingerprint=annotation_fingerprint(changed))
    fresh = S.create_store(path, config=changed, fingerprint=annotation_fingerprint(changed), overwrite=True)
    assert S.complete_videos(fresh) == [] and fresh.attrs[schema.ATTR_CONFIG]["tracks"]["cycle_threshold"] == 3.0


def test_root_attributes(store):
    attrs = dict(store.attrs)
    assert attrs[schema.ATTR_FORMAT] == schema.ANNOTATION_FORMAT
    assert attrs[schema.ATTR_FORMAT_VERSION] == schema.ANNOTATION_FORMAT_VERSION == 2
    assert attrs[schema.ATTR_PACKAGE_VERSION] == trackprep.__version__
    assert attrs[schema.ATTR_CONFIG] == resolve_config()


def test_open_store_errors_name_the_path(tmp_path):
    with pytest.raises(S.StoreError, match=f"{tmp_path / 'missing.zarr'}: annotation store does not exist"):
        S.open_store(tmp_path / "missing.zarr")
    (tmp_path / "plain").mkdir()
    with pytest.raises(S.StoreError, match="plain: annotation store has no zarr.json"):
        S.open_store(tmp_path / "plain")
    zarr.open_group(str(tmp_path / "other.zarr"), mode="w").attrs["format"] = "something.else"
    with pytest.raises(S.StoreError, match="other.zarr: not an annotation store .*'something.else'"):
        S.open_store(tmp_path / "other.zarr")
    assert validate_store(tmp_path / "missing.zarr") == [f"{tmp_path / 'missing.zarr'}: does not exist; expected a trackprep store"]


def test_video_key_rejects_bad_names():
    assert S.video_key("davis", "bear") == "davis/bear"
    for bad in [("", "x"), ("a/b", "x"), ("d", ".hidden"), ("d", "")]:
        with pytest.raises(ValueError, match="expected a non-empty name"):
            S.video_key(*bad)


def test_concurrent_writers_of_different_videos(store):
    clip = make_clip()
    sets = {f"ds{i % 2}/v{i}": make_tracks(300, 6, seed=i) for i in range(6)}
    threads = [threading.Thread(target=S.write_video, args=(store, k, clip, ts)) for k, ts in sets.items()]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    root = S.open_store(store.store_path.store.root)
    assert S.complete_videos(root) == sorted(sets)
    ann = trackprep.open_annotations(store.store_path.store.root)
    for k, ts in sets.items():
        np.testing.assert_array_equal(ann[k].dense()[0], hand_dense(ts, np.arange(len(ts)), 0, 6)[0])
    assert root.attrs[schema.ATTR_FORMAT] == schema.ANNOTATION_FORMAT  # root metadata intact


def _corrupt_copy(store, tmp_path, edit, *, config_tracks=None):
    S.write_video(store, "ds/v", make_clip(), make_tracks(50, 6))
    if config_tracks is not None:
        store.attrs[schema.ATTR_CONFIG] = {**store.attrs[schema.ATTR_CONFIG], "tracks": config_tracks}
    edit(store["ds/v"])
    return validate_annotation_store(store.store_path.store.root)


def _set(name, index, value):
    def edit(g):
        a = g[name][:]
        a[index] = value
        g[name][:] = a
    return edit


@pytest.mark.parametrize(
    "edit, expected",
    [
        (_set("labels", 0, 7), "labels: values [7] do not occur in the annotated masks"),
        (_set("points", (0, 0), 500.0), "point(s) outside the 16x12 frame"),
        # (a store written by other code: the writer refuses NaN, and the quantised array cannot hold it)
        (lambda g: g.create_array("points", data=np.where(np.arange(g["points"].shape[0])[:, None] == 3, np.nan,
                                                          g["points"][:]).astype(np.float32), overwrite=True),
         "points: 1 NaN or infinite point(s) (first at row 3); expected finite"),
        (lambda g: g.attrs.pop(schema.ATTR_STATUS), "status None; expected 'complete' or 'failed'"),
        (lambda g: g.create_array("labels", shape=(3,), dtype="uint8", overwrite=True), "labels: shape [3]; expected [50]"),
        (lambda g: g.create_array("start", shape=(50,), dtype="int64", overwrite=True), "start: dtype int64; expected int32"),
        (lambda g: g.create_array("length", shape=(50,), dtype="int32", overwrite=True), "length: sums to 0; expected the"),
        (lambda g: _set("start", 0, 7 - int(g["length"][0]))(g), "track(s) beyond the last frame (first: track 0"),
        (lambda g: g.create_array("points", shape=(4, 3), dtype="float32", overwrite=True), "points: shape [4, 3]; expected ['?', 2]"),
    ],
)
def test_validate_finds_each_violation(store, tmp_path, edit, expected):
    problems = _corrupt_copy(store, tmp_path, edit)
    assert problems, "the corruption went unnoticed"
    assert any(expected in p for p in problems), problems
    assert all("/ds/v" in p for p in problems)


def test_validate_checks_min_track_length_from_the_store_configuration(store, tmp_path):
    lengths = make_tracks(50, 6).lengths
    problems = _corrupt_copy(store, tmp_path, lambda g: None, config_tracks={"min_track_length": 3})
    assert problems == [f"{store.store_path.store.root}/ds/v/length: {int((lengths < 3).sum())} track(s) shorter than "
                        f"min_track_length 3 (first: track {int(np.flatnonzero(lengths < 3)[0])}, length "
                        f"{lengths[lengths < 3][0]}); expected >= 3"]


def test_a_label_other_than_the_mask_under_the_first_annotated_point_is_a_violation(store, tmp_path):
    def edit(g):
        labels = g["labels"][:]
        r = int(np.flatnonzero(labels == 0)[0])
        labels[r] = 1  # an id the masks hold, but not the one under this track
        g["labels"][:] = labels

    problems = _corrupt_copy(store, tmp_path, edit)
    assert len(problems) == 1 and "1 track(s) labelled other than the mask under their first annotated point" in problems[0]
    assert "label 1, mask 0 at frame" in problems[0]


def test_labels_within_the_quantisation_error_of_a_pixel_boundary_are_accepted(store):
    """A track labelled at x = 2.499 (pixel 2) is stored at 2.5, which rounds to pixel 2 or 3:
    both pixels within the stated error are accepted, any other is not."""
    clip = make_clip(2, 12, 16)
    masks = np.zeros_like(clip.masks)
    masks[:, :, 3:] = 1  # pixel columns >= 3 are object 1
    clip = Clip("c", clip.frames, masks, clip.has_mask)
    pts = np.array([[2.499, 5.0], [2.499, 5.0], [9.0, 5.0], [9.0, 5.0]], np.float32)
    ts = TrackSet(num_frames=2, start=np.zeros(2, np.int32), offsets=np.array([0, 2, 4]), points=pts,
                  labels=np.zeros(2, np.uint8))
    ts = label_tracks(ts, clip.masks, clip.has_mask)
    assert ts.labels.tolist() == [0, 1]
    S.write_video(store, "ds/v", clip, ts)
    assert store["ds/v/points"][0, 0] == 2.5
    assert validate_annotation_store(store.store_path.store.root) == []
    S.write_video(store, "ds/v", clip, TrackSet(num_frames=2, start=ts.start, offsets=ts.offsets, points=pts,
                                                labels=np.array([0, 0], np.uint8)))
    assert any("1 track(s) labelled other than the mask" in p for p in validate_annotation_store(store.store_path.store.root))


def test_labels_follow_the_first_annotated_frame_on_sparse_masks(store):
    clip, tracks = make_clip(), make_tracks(200, 6)
    sparse = Clip("c", clip.frames, clip.masks, np.array([False, False, True, False, False, True]))
    S.write_video(store, "ds/v", sparse, label_tracks(tracks, sparse.masks, sparse.has_mask))
    assert validate_annotation_store(store.store_path.store.root) == []
    S.write_video(store, "ds/v", sparse, tracks)  # labelled as if every frame had a mask: wrong here
    problems = validate_annotation_store(store.store_path.store.root)
    assert any("labelled other than the mask" in p for p in problems), problems


def test_store_summary(store):
    S.write_video(store, "ds/a", make_clip(), make_tracks(40, 6))
    S.record_failure(store, "ds/b", "boom")
    s = trackprep.open_annotations(store.store_path.store.root).summary()
    labels = make_tracks(40, 6).labels
    assert (s["videos_complete"], s["videos_failed"], s["frames"], s["tracks"]) == (1, 1, 6, 40)
    assert s["points"] == int(make_tracks(40, 6).offsets[-1]) == s["per_video"][0]["points"]
    assert s["per_video"][0]["track_bytes"] > 0
    assert s["foreground_share"] == pytest.approx(np.mean((labels > 0) & (labels < 255)))
    assert s["failures"] == {"ds/b": "boom"}


# ---------------------------------------------------------------- configuration


def test_pipeline_yaml_holds_the_paper_defaults():
    path = REPO / "pipelines" / "track4gen.yaml"
    assert resolve_config(path=path) == resolve_config() == {**DEFAULTS, "size": [320, 576]}
    raw = load_yaml(path)
    assert raw["size"] == [320, 576] and raw["flow"]["name"] == "raft" and raw["flow"]["raft_model"] == "large"
    assert raw["flow"]["iters"] == 24
    assert raw["tracks"] == {"cycle_threshold": 1.5, "seed_stride": 1, "min_track_length": 2, "tracker": "chain"}
    assert raw["shard"] == {"segment_length": 24, "tracks_per_segment": 8192, "fg_share": 0.5, "seed": 0}


def test_yaml_then_flags_override(tmp_path):
    p = tmp_path / "mine.yaml"
    p.write_text("size: 64x96\nflow:\n  name: dis\n  iters: 12\n")
    cfg = resolve_config(path=p, overrides={"flow": {"iters": 6, "name": None}, "tracks": {"seed_stride": 2}})
    assert cfg["size"] == [64, 96] and cfg["flow"]["name"] == "dis" and cfg["flow"]["iters"] == 6
    assert cfg["tracks"]["seed_stride"] == 2 and cfg["tracks"]["cycle_threshold"] == 1.5


@pytest.mark.parametrize(
    "text, message",
    [
        ("flow:\n  nme: raft\n", "unknown key 'flow.nme'"),
        ("size: 320\n", "size 320: expected two positive integers"),
        ("size: 0x576\n", "expected two positive integers"),
        ("tracks:\n  cycle_threshold: -1\n", "tracks.cycle_threshold = -1, expected a positive number"),
        ("flow:\n  name: farneback\n", "flow.name = 'farneback', expected one of"),
        ("- a\n- b\n", "expected a mapping of settings at the top level"),
        ("flow: [1\n", "not valid YAML"),
    ],
)
def test_bad_config_files_name_the_file(tmp_path, text, message):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match="bad.yaml") as err:
        resolve_config(path=p)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match=f"{tmp_path / 'nope.yaml'}: cannot read configuration file"):
        resolve_config(path=tmp_path / "nope.yaml")


def test_fingerprint_ignores_speed_only_settings():
    base = annotation_fingerprint(resolve_config())
    assert annotation_fingerprint(resolve_config(overrides={"flow": {"device": "cpu", "batch_size": 2}})) == base
    assert annotation_fingerprint(resolve_config(overrides={"flow": {"iters": 12}})) != base
    assert annotation_fingerprint(resolve_config(overrides={"size": "160x288"})) != base


def test_overwrite_never_deletes_a_folder_that_is_not_an_annotation_store(tmp_path):
    data = tmp_path / "DAVIS"
    (data / "JPEGImages").mkdir(parents=True)
    (data / "JPEGImages" / "00000.jpg").write_bytes(b"x")
    with pytest.raises(S.StoreError, match="DAVIS: exists and is not an annotation store; refusing to delete it"):
        S.create_store(data, config=resolve_config(), overwrite=True)
    assert (data / "JPEGImages" / "00000.jpg").is_file()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert S.create_store(empty, config=resolve_config()).attrs[schema.ATTR_FORMAT] == schema.ANNOTATION_FORMAT


def test_refusal_names_the_settings_that_differ(tmp_path):
    path = tmp_path / "a.zarr"
    cfg = resolve_config(overrides={"flow": {"name": "dis"}})
    S.create_store(path, config=cfg, fingerprint=annotation_fingerprint(cfg))
    # RAFT-only options do not change a DIS store's results: not refused.
    other = resolve_config(overrides={"flow": {"name": "dis", "raft_model": "small", "iters": 4}})
    S.create_store(path, config=other, fingerprint=annotation_fingerprint(other))
    changed = resolve_config(overrides={"flow": {"name": "dis", "dis_preset": "fast"}, "tracks": {"seed_stride": 2}})
    with pytest.raises(S.StoreError) as err:
        S.create_store(path, config=changed, fingerprint=annotation_fingerprint(changed))
    msg = str(err.value)
    assert "flow.dis_preset: stored 'medium', now 'fast'" in msg and "tracks.seed_stride: stored 1, now 2" in msg
    assert "cycle_threshold" not in msg and "\n" not in msg


def test_two_runs_creating_one_store_at_once_keep_each_others_videos(tmp_path):
    path = tmp_path / "a.zarr"
    cfg = resolve_config()
    barrier, roots = threading.Barrier(4), []

    def run(i):
        barrier.wait()
        root = S.create_store(path, config=cfg, fingerprint=annotation_fingerprint(cfg))
        S.require_dataset_group(root, "ds")  # as plan_annotation does, in every run
        S.write_video(root, f"ds/v{i}", make_clip(), make_tracks(20, 6, seed=i))
        roots.append(root)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(roots) == 4 and S.complete_videos(S.open_store(path)) == [f"ds/v{i}" for i in range(4)]


def test_a_writer_whose_video_was_taken_over_does_not_mark_it_complete(tmp_path, monkeypatch):
    """Two writers of one video: the one whose group was replaced mid-write must not set status complete."""
    import numpy as np

    from trackprep.core.chaining import chain_tracks
    from trackprep.core.labels import label_tracks
    from trackprep.core.synthetic import make_scene
    from trackprep.io import annotation_store as store

    scene = make_scene(seed=0, num_frames=3, height=32, width=48)
    clip = scene.to_clip("v")
    tracks = label_tracks(chain_tracks(scene.flow()), clip.masks, clip.has_mask)
    root = store.create_store(tmp_path / "a.zarr", config={"x": 1})
    key = store.video_key("synthetic", "v")

    real_add = store.VideoWriter.add_tracks
    taken_over = []

    def add_then_intrude(self, tracks):
        if not taken_over:  # while the first writer is mid-way, a second one takes the group over
            taken_over.append(True)
            root.create_group(key, overwrite=True).attrs.update({store.ATTR_WRITER: "other"})
        return real_add(self, tracks)

    monkeypatch.setattr(store.VideoWriter, "add_tracks", add_then_intrude)
    with pytest.raises(store.StoreError, match="another task took over"):
        store.write_video(root, key, clip, tracks)
    assert store.video_status(root, key) != "complete"
    monkeypatch.setattr(store.VideoWriter, "add_tracks", real_add)
    store.write_video(root, key, clip, tracks)  # an uncontested writer completes
    assert store.video_status(root, key) == "complete"
    assert np.array_equal(trackprep.open_annotations(tmp_path / "a.zarr")[key].labels, tracks.labels)
