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
    """Random ragged tracks: each lives on one run of frames, points inside the frame."""
    rng = np.random.default_rng(seed)
    start = rng.integers(0, t, n).astype(np.int32)
    lengths = np.minimum(rng.integers(1, t + 1, n), t - start)
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    points = np.stack([rng.uniform(0, w - 1, offsets[-1]), rng.uniform(0, h - 1, offsets[-1])], 1).astype(np.float32)
    tracks = TrackSet(num_frames=t, start=start, offsets=offsets, points=points, labels=np.zeros(n, np.uint8))
    clip = make_clip(t, h, w)
    return label_tracks(tracks, clip.masks, clip.has_mask)  # labels by the contract's rule, as annotate writes them


@pytest.fixture
def store(tmp_path):
    return S.create_store(tmp_path / "a.zarr", config=resolve_config(), fingerprint={"k": 1})


def test_write_read_roundtrip_in_row_chunks(store, monkeypatch):
    clip, tracks = make_clip(), make_tracks(1000, 6)
    # Force chunks of 256 rows and record every dense() call: never more rows than a chunk.
    monkeypatch.setattr(S, "_TRACK_CHUNK_BYTES", 256 * 6 * 2 * 4)
    sizes = []
    dense = TrackSet.dense

    def spy(self, rows=None):
        out = dense(self, rows)
        sizes.append(out[0].shape[0])
        return out

    monkeypatch.setattr(TrackSet, "dense", spy)
    S.write_video(store, S.video_key("ds", "v"), clip, tracks)
    assert max(sizes) == 256 and sum(sizes) == 1000
    monkeypatch.undo()

    v = S.read_video(store, "ds/v")
    want_tracks, want_visible = tracks.dense()
    np.testing.assert_array_equal(v.tracks[:], want_tracks)  # NaN == NaN for assert_array_equal
    np.testing.assert_array_equal(v.visible[:], want_visible)
    np.testing.assert_array_equal(v.labels[:], tracks.labels)
    np.testing.assert_array_equal(v.frames[:], clip.frames)
    np.testing.assert_array_equal(v.masks[:], clip.masks)
    np.testing.assert_array_equal(v.has_mask[:], clip.has_mask)
    assert v.tracks.chunks == (256, 6, 2) and v.frames.chunks == (1, 12, 16, 3) and v.masks.chunks == (1, 12, 16)
    assert S.video_status(store, "ds/v") == "complete" and S.complete_videos(store) == ["ds/v"]
    assert validate_annotation_store(store.store_path.store.root) == []


def test_frames_are_stored_losslessly_compressed(store):
    clip = make_clip(4, 64, 96)
    clip = Clip("flat", np.full_like(clip.frames, 7), clip.masks, clip.has_mask)
    S.write_video(store, "ds/flat", clip, make_tracks(10, 4, h=64, w=96))
    arr = store["ds/flat/frames"]
    assert arr.nbytes_stored() < arr.nbytes / 20  # a constant image compresses to almost nothing
    assert "blosc" in json.dumps(arr.metadata.to_dict()).lower()


def test_interrupted_write_is_not_complete_and_is_redone(store, monkeypatch):
    clip, tracks = make_clip(), make_tracks(600, 6)
    monkeypatch.setattr(S, "_TRACK_CHUNK_BYTES", 256 * 6 * 2 * 4)
    calls = {"n": 0}
    dense = TrackSet.dense

    def dies_on_second_chunk(self, rows=None):
        calls["n"] += 1
        if calls["n"] == 2:
            raise MemoryError("simulated crash mid-write")
        return dense(self, rows)

    monkeypatch.setattr(TrackSet, "dense", dies_on_second_chunk)
    with pytest.raises(MemoryError):
        S.write_video(store, "ds/v", clip, tracks)
    monkeypatch.setattr(TrackSet, "dense", dense)
    assert S.video_status(store, "ds/v") == S.STATUS_WRITING
    assert S.complete_videos(store) == []
    problems = validate_annotation_store(store.store_path.store.root)
    assert len(problems) == 1 and "ds/v: status 'writing'" in problems[0]
    with pytest.raises(S.StoreError, match="status 'writing'"):
        S.read_video(store, "ds/v")
    S.write_video(store, "ds/v", clip, tracks)  # redo replaces the partial group
    np.testing.assert_array_equal(S.read_video(store, "ds/v").tracks[:], tracks.dense()[0])


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
    assert attrs[schema.ATTR_FORMAT_VERSION] == schema.FORMAT_VERSION
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
    for k, ts in sets.items():
        np.testing.assert_array_equal(S.read_video(root, k).tracks[:], ts.dense()[0])
    assert root.attrs[schema.ATTR_FORMAT] == schema.ANNOTATION_FORMAT  # root metadata intact


def _corrupt_copy(store, tmp_path, edit):
    S.write_video(store, "ds/v", make_clip(), make_tracks(50, 6))
    edit(store["ds/v"])
    return validate_annotation_store(store.store_path.store.root)


@pytest.mark.parametrize(
    "edit, expected",
    [
        (lambda g: g["labels"].__setitem__(0, 7), "labels: values [7] do not occur in the annotated masks"),
        (lambda g: g["tracks"].__setitem__((0, slice(None), 0), 500.0), "visible point(s) outside the 16x12 frame"),
        (lambda g: g.attrs.pop(schema.ATTR_STATUS), "status None; expected 'complete' or 'failed'"),
        (lambda g: g.create_array("labels", shape=(3,), dtype="uint8", overwrite=True), "labels: shape [3]; expected [50]"),
        (lambda g: g.create_array("visible", shape=(50, 6), dtype="uint8", overwrite=True), "visible: dtype uint8; expected bool"),
    ],
)
def test_validate_finds_each_violation(store, tmp_path, edit, expected):
    problems = _corrupt_copy(store, tmp_path, edit)
    assert problems, "the corruption went unnoticed"
    assert any(expected in p for p in problems), problems
    assert all("/ds/v" in p for p in problems)


def test_nan_where_visible_is_a_violation(store, tmp_path):
    def edit(g):
        vis = g["visible"][:]
        r, c = np.argwhere(vis)[0]
        tr = g["tracks"][:]
        tr[r, c] = np.nan
        g["tracks"][:] = tr

    problems = _corrupt_copy(store, tmp_path, edit)
    assert len(problems) == 1 and "NaN does not match visible" in problems[0]


def test_a_label_other_than_the_mask_under_the_first_annotated_point_is_a_violation(store, tmp_path):
    def edit(g):
        labels, vis = g["labels"][:], g["visible"][:]
        r = int(np.flatnonzero((labels == 0) & vis.any(1))[0])
        labels[r] = 1  # an id the masks hold, but not the one under this track
        g["labels"][:] = labels

    problems = _corrupt_copy(store, tmp_path, edit)
    assert len(problems) == 1 and "1 track(s) labelled other than the mask under their first annotated point" in problems[0]
    assert "label 1, mask 0 at frame" in problems[0]


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
    s = S.store_summary(store)
    labels = make_tracks(40, 6).labels
    assert (s["videos_complete"], s["videos_failed"], s["frames"], s["tracks"]) == (1, 1, 6, 40)
    assert s["foreground_share"] == pytest.approx(np.mean((labels > 0) & (labels < 255)))
    assert s["failures"] == {"ds/b": "boom"}


# ---------------------------------------------------------------- configuration


def test_pipeline_yaml_holds_the_paper_defaults():
    path = REPO / "pipelines" / "track4gen.yaml"
    assert resolve_config(path=path) == resolve_config() == {**DEFAULTS, "size": [320, 576]}
    raw = load_yaml(path)
    assert raw["size"] == [320, 576] and raw["flow"]["name"] == "raft" and raw["flow"]["raft_model"] == "large"
    assert raw["flow"]["iters"] == 24 and raw["tracks"] == {"cycle_threshold": 1.5, "seed_stride": 1}
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

    real_dense = type(tracks).dense
    taken_over = []

    def dense_then_intrude(self, rows=None):
        if not taken_over:  # while the first writer is mid-way, a second one takes the group over
            taken_over.append(True)
            root.create_group(key, overwrite=True).attrs.update({store.ATTR_WRITER: "other"})
        return real_dense(self, rows)

    monkeypatch.setattr(type(tracks), "dense", dense_then_intrude)
    with pytest.raises(store.StoreError, match="another task took over"):
        store.write_video(root, key, clip, tracks)
    assert store.video_status(root, key) != "complete"
    monkeypatch.setattr(type(tracks), "dense", real_dense)
    store.write_video(root, key, clip, tracks)  # an uncontested writer completes
    assert store.video_status(root, key) == "complete"
    assert np.array_equal(store.read_video(root, key).labels[:], tracks.labels)
