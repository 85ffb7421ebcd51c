"""`trackprep shard`: annotation store -> segment store (issue 6)."""

from collections import Counter

import numpy as np
import pytest
import zarr
from zarr.storage import LocalStore, WrapperStore

import trackprep
from trackprep.core.chaining import chain_tracks
from trackprep.core.labels import label_tracks
from trackprep.core.segments import segment_seed, select_segment_tracks
from trackprep.core.synthetic import make_scene
from trackprep.io import annotation_store as astore
from trackprep.io import schema
from trackprep.io import segment_store as sstore
from trackprep.pipeline.shard import shard

H, W = 64, 96
VIDEOS = {"a": 38, "b": 20, "c": 30}  # b is shorter than L = 24: skipped


def _annotate(root, name, num_frames, seed):
    scene = make_scene(seed=seed, num_frames=num_frames, height=H, width=W, num_objects=2, max_speed=2.5)
    clip = scene.to_clip(name)
    tracks = label_tracks(chain_tracks(scene.flow(), seed_stride=2), clip.masks, clip.has_mask)
    astore.write_video(root, astore.video_key("synth", name), clip, tracks)


@pytest.fixture(scope="module")
def annotations(tmp_path_factory):
    path = tmp_path_factory.mktemp("ann") / "A.zarr"
    root = astore.create_store(path, config={"test": "shard"})
    for i, (name, t) in enumerate(VIDEOS.items()):
        _annotate(root, name, t, seed=10 + i)
    return path


@pytest.fixture(scope="module")
def segments(annotations, tmp_path_factory):
    out = tmp_path_factory.mktemp("seg") / "S.zarr"
    result = shard(annotations, out, length=24, tracks=300, seed=7, segments_per_shard=2, scheduler="serial")
    return out, result


def test_tail_rule_and_skipped_videos(segments):
    out, result = segments
    reader = sstore.SegmentReader(out)
    got = [(reader.read(i)["video"], reader.read(i)["start"]) for i in range(len(reader))]
    # a: 38 frames -> starts 0 and 14 (App. A.4); c: 30 frames -> 0 and 6; b (20 < 24) skipped
    assert got == [("synth/a", 0), ("synth/a", 14), ("synth/c", 0), ("synth/c", 6)]
    assert result.skipped_videos == [("synth/b", 20)]
    assert reader.attrs[schema.ATTR_CONFIG]["skipped_videos"] == [["synth/b", 20]]
    assert (reader.length, reader.height, reader.width, reader.max_tracks) == (24, H, W, 300)


def test_segment_arrays_equal_annotation_slices_rebased(annotations, segments):
    """The segments equal what the dense layout (format version 1: tracks [N, T, 2], visible
    [N, T]) gives for the same tracks: its slices, and the rows the rule draws over all N rows."""
    out, _ = segments
    reader = sstore.SegmentReader(out)
    source = trackprep.open_annotations(annotations)
    for i in range(len(reader)):
        seg = reader.read(i)
        v = source[seg["video"]]
        dense_tracks, dense_visible = v.dense()  # the version-1 arrays
        s, n = seg["start"], seg["num_tracks"]
        window = slice(s, s + 24)
        np.testing.assert_array_equal(seg["frames"], v.frames[window])
        np.testing.assert_array_equal(seg["masks"], v.masks[window])
        np.testing.assert_array_equal(seg["has_mask"], v.has_mask[window])
        rows = seg["track_ids"][:n]
        assert rows.min() >= 0 and np.all(np.diff(rows) > 0)
        # frame k of the segment is frame s + k of the video (re-based time, same pixel coordinates)
        np.testing.assert_array_equal(seg["tracks"][:n], dense_tracks[rows, window])
        np.testing.assert_array_equal(seg["visible"][:n], dense_visible[rows, window])
        np.testing.assert_array_equal(seg["labels"][:n], v.labels[rows])
        # and they are the rows the documented rule draws for this (seed, video, start)
        expected = select_segment_tracks(dense_visible[:, window], v.labels, n=300, fg_share=0.5,
                                         seed=segment_seed(7, seg["video"], s))
        np.testing.assert_array_equal(rows, expected)


def test_independent_check_every_kept_track_is_a_source_window(annotations, segments):
    # Without trusting track_ids: each kept track equals some source track's window, byte for byte.
    out, _ = segments
    reader = sstore.SegmentReader(out)
    seg = reader.read(1)  # synth/a from frame 14
    v = trackprep.open_annotations(annotations)[seg["video"]]
    windows = {np.ascontiguousarray(r).tobytes() for r in v.dense(frames=(14, 38))[0]}
    n = seg["num_tracks"]
    assert all(np.ascontiguousarray(t).tobytes() in windows for t in seg["tracks"][:n])


def test_class_shares_exact_and_two_visible_frames(segments):
    out, _ = segments
    reader = sstore.SegmentReader(out)
    for i in range(len(reader)):
        seg = reader.read(i)
        n = seg["num_tracks"]
        assert n == 300  # enough tracks of both classes exist in these scenes
        labels = seg["labels"][:n]
        assert (labels == 0).sum() == 150 and ((labels > 0) & (labels != 255)).sum() == 150
        assert seg["visible"][:n].sum(axis=1).min() >= 2
        assert np.array_equal(np.isnan(seg["tracks"][:n, :, 0]), ~seg["visible"][:n])


def test_padding_rows_when_fewer_tracks_than_n(annotations, tmp_path):
    out = tmp_path / "S.zarr"
    result = shard(annotations, out, length=24, tracks=100_000, scheduler="serial")
    reader = sstore.SegmentReader(out)
    seg = reader.read(0)
    n = seg["num_tracks"]
    assert 0 < n < 100_000 and result.tracks_per_segment[0] == n
    assert np.isnan(seg["tracks"][n:]).all() and not seg["visible"][n:].any()
    assert (seg["labels"][n:] == 255).all() and (seg["track_ids"][n:] == -1).all()
    assert seg["tracks"].shape == (100_000, 24, 2)


@pytest.mark.parametrize("scheduler,workers", [("local", 2), pytest.param("processes", 1, marks=pytest.mark.slow)])
def test_dask_equals_serial(annotations, segments, tmp_path, scheduler, workers):
    serial, _ = segments
    parallel = tmp_path / "S.zarr"
    shard(annotations, parallel, length=24, tracks=300, seed=7, segments_per_shard=2, scheduler=scheduler,
          workers=workers)
    a, b = sstore.SegmentReader(serial), sstore.SegmentReader(parallel)
    assert len(a) == len(b) == 4
    for i in range(len(a)):
        x, y = a.read(i), b.read(i)
        for k in x:
            np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def test_scheduler_names_are_those_of_annotate(annotations, tmp_path):
    with pytest.raises(ValueError, match="--scheduler 'thread': expected one of serial, local, processes"):
        shard(annotations, tmp_path / "S.zarr", length=24, tracks=10, scheduler="thread")
    assert not (tmp_path / "S.zarr").exists()  # refused before anything is written
    assert shard(annotations, tmp_path / "S.zarr", length=24, tracks=10, scheduler="threads").num_segments == 4


def test_resume_redoes_only_unfinished_shards(annotations, segments, tmp_path):
    ref, _ = segments
    out = tmp_path / "S.zarr"
    shard(annotations, out, length=24, tracks=300, seed=7, segments_per_shard=2, scheduler="serial")
    # Simulate a crash in the middle of shard 1 (segments 2, 3): its data half written, not flagged done.
    g = zarr.open_group(str(out), mode="r+")
    g["segments/frames"][2:4] = 0
    g["segments/done"][2:4] = False
    g.attrs["status"] = "writing"
    with pytest.raises(sstore.SegmentStoreError, match="2 of 4 segments written"):
        sstore.SegmentReader(out)
    result = shard(annotations, out, length=24, tracks=300, seed=7, segments_per_shard=2, scheduler="serial")
    assert result.written == 2
    a, b = sstore.SegmentReader(ref), sstore.SegmentReader(out)
    for i in range(4):
        for k, x in a.read(i).items():
            np.testing.assert_array_equal(x, b.read(i)[k], err_msg=k)
    # a complete store: nothing to do
    assert shard(annotations, out, length=24, tracks=300, seed=7, segments_per_shard=2, scheduler="serial").written == 0


def test_rerun_with_other_settings_is_refused_unless_overwrite(annotations, tmp_path):
    out = tmp_path / "S.zarr"
    shard(annotations, out, length=24, tracks=50, scheduler="serial")
    with pytest.raises(ValueError, match="another configuration.*--overwrite"):
        shard(annotations, out, length=24, tracks=60, scheduler="serial")
    result = shard(annotations, out, length=24, tracks=60, scheduler="serial", overwrite=True)
    assert result.written == 4 and sstore.SegmentReader(out).max_tracks == 60


def test_overwrite_never_deletes_a_non_segment_store(annotations):
    with pytest.raises(FileExistsError, match="not a segment store; refusing to overwrite"):
        shard(annotations, annotations, length=24, tracks=10, scheduler="serial", overwrite=True)
    assert astore.complete_videos(astore.open_store(annotations)) == ["synth/a", "synth/b", "synth/c"]


def test_float16_tracks_are_upcast_on_read(annotations, segments, tmp_path):
    ref, _ = segments
    out = tmp_path / "S16.zarr"
    shard(annotations, out, length=24, tracks=300, seed=7, segments_per_shard=2, tracks_dtype="float16",
          scheduler="serial")
    a, b = sstore.SegmentReader(ref).read(3), sstore.SegmentReader(out).read(3)
    assert b["tracks"].dtype == np.float32
    # float16 has 11 significant bits: < 0.05 px error below 128 px
    np.testing.assert_allclose(b["tracks"], a["tracks"], atol=0.05, equal_nan=True)
    assert sstore.store_bytes(out) < sstore.store_bytes(ref)


class CountingStore(WrapperStore):
    """Counts (key, byte range) of every get, to see what one segment read touches."""

    def __init__(self, store):
        super().__init__(store)
        self.gets = []

    def _with_store(self, store):
        return self  # keep one log, whatever zarr derives from us

    async def get(self, key, prototype, byte_range=None):
        self.gets.append((key, byte_range))
        return await self._store.get(key, prototype, byte_range)


def test_reading_one_segment_reads_each_chunk_once(segments):
    out, _ = segments
    store = CountingStore(LocalStore(str(out), read_only=True))
    reader = sstore.SegmentReader(store)
    store.gets.clear()
    seg = reader.read(1)  # segment 1 lives in shard 0 (segments_per_shard = 2), inner chunk 1
    assert seg["start"] == 14
    ndim = {"frames": 5, "masks": 4, "has_mask": 2, "tracks": 4, "visible": 3, "labels": 2, "track_ids": 2}
    per_key = Counter(key for key, _ in store.gets)
    # one shard file per array (shard 0 along every axis), and nothing else: the index arrays
    # were loaded when the reader opened
    assert set(per_key) == {f"segments/{a}/c/" + "/".join("0" * d) for a, d in ndim.items()}
    for key, count in per_key.items():
        ranges = [r for k, r in store.gets if k == key]
        data = [r for r in ranges if isinstance(r, zarr.abc.store.RangeByteRequest)]
        index = [r for r in ranges if isinstance(r, zarr.abc.store.SuffixByteRequest)]
        # the shard's chunk index (a suffix), then exactly one byte range: this segment's chunk
        assert count == 2 and len(index) == 1 and len(data) == 1, (key, ranges)
    # reading it again costs the same: no hidden whole-shard reads
    store.gets.clear()
    reader.read(1)
    assert len(store.gets) == 2 * len(ndim)


def test_reader_errors_name_the_path(tmp_path, annotations):
    with pytest.raises(FileNotFoundError, match="nope.zarr: no such segment store"):
        sstore.SegmentReader(tmp_path / "nope.zarr")
    with pytest.raises(sstore.SegmentStoreError, match=r"A.zarr: expected a segment store.*got format 'trackprep.annotations'"):
        sstore.SegmentReader(annotations)


def test_shard_rejects_a_path_that_is_not_an_annotation_store(tmp_path):
    with pytest.raises(astore.StoreError, match="missing.zarr: annotation store does not exist"):
        shard(tmp_path / "missing.zarr", tmp_path / "S.zarr", scheduler="serial")


def test_write_segment_validates_shapes_with_the_values(tmp_path):
    root = sstore.create_segment_store(tmp_path / "S.zarr", num_segments=2, length=4, height=8, width=12,
                                       max_tracks=5, config={})
    ok = dict(frames=np.zeros((4, 8, 12, 3), np.uint8), masks=np.zeros((4, 8, 12), np.uint8),
              has_mask=np.ones(4, bool), tracks=np.zeros((3, 4, 2), np.float32), visible=np.ones((3, 4), bool),
              labels=np.zeros(3, np.uint8), video="d/v", start=0)
    with pytest.raises(sstore.SegmentStoreError, match=r"segment 1 frames: expected uint8 \[4, 8, 12, 3\], got uint8 \[4, 8, 10, 3\]"):
        sstore.write_segment(root, 1, **{**ok, "frames": np.zeros((4, 8, 10, 3), np.uint8)})
    with pytest.raises(sstore.SegmentStoreError, match="6 rows, but the store holds at most max_tracks=5"):
        sstore.write_segment(root, 0, **{**ok, "tracks": np.zeros((6, 4, 2), np.float32),
                                         "visible": np.ones((6, 4), bool), "labels": np.zeros(6, np.uint8)})
    with pytest.raises(IndexError, match="the store holds 2 segments"):
        sstore.write_segment(root, 2, **ok)
    sstore.write_segment(root, 1, **ok)
    assert sstore.done_flags(root).tolist() == [False, True]
    with pytest.raises(sstore.SegmentStoreError, match="1 segments not written yet"):
        sstore.mark_complete(root)


def test_validate_accepts_a_shard_and_names_each_broken_rule(annotations, tmp_path):
    from trackprep.io.validate import validate_store

    out = tmp_path / "S.zarr"
    shard(annotations, out, length=24, tracks=40, scheduler="serial")
    assert validate_store(out) == []
    g = zarr.open_group(str(out), mode="r+")["segments"]
    vis = g["visible"][2]
    row = int(np.flatnonzero(vis.sum(1) >= 2)[0])
    keep = int(np.flatnonzero(vis[row])[0])
    vis[row] = False
    vis[row, keep] = True  # a kept track seen in one frame only
    g["visible"][2] = vis
    tr = g["tracks"][2]
    tr[row] = np.nan
    tr[row, keep] = 5.0
    g["tracks"][2] = tr
    g["labels"][3, 39] = 255  # a void label on a kept row
    problems = validate_store(out)
    assert len(problems) == 2, problems
    assert "segment 2 (synth/c from frame 0): 1 kept track(s) visible in fewer than 2 frames" in problems[0]
    assert "segment 3 (synth/c from frame 6): 1 kept track(s) labelled 255" in problems[1]


def test_cli_shard_info_validate(annotations, tmp_path):
    from typer.testing import CliRunner

    from trackprep.cli import app

    runner = CliRunner()
    out = tmp_path / "S.zarr"
    res = runner.invoke(app, ["shard", "--store", str(annotations), "--out", str(out), "--tracks", "64",
                              "--scheduler", "serial", "--segments-per-shard", "3"])
    assert res.exit_code == 0, res.output
    assert "4 segments of 24 frames (4 written now)" in res.output
    assert "skipped synth/b: 20 frames < --length 24" in res.output
    res = runner.invoke(app, ["info", str(out)])
    assert res.exit_code == 0, res.output
    assert "segments: 4 of 24 frames at 64x96, from 2 videos" in res.output
    assert "foreground share 50.0%" in res.output
    res = runner.invoke(app, ["validate", str(out)])
    assert res.exit_code == 0 and "valid" in res.output, res.output
    res = runner.invoke(app, ["shard", "--store", str(tmp_path / "none.zarr"), "--out", str(out)])
    assert res.exit_code == 2 and "none.zarr: annotation store does not exist" in res.output
    zarr.open_group(str(out), mode="r+")["segments"].__delitem__("num_tracks")
    res = runner.invoke(app, ["info", str(out)])  # one line naming the store, not a traceback
    assert res.exit_code == 2 and res.stderr.startswith(f"error: {out}: unreadable segment store"), res.output
    res = runner.invoke(app, ["validate", str(out)])
    assert res.exit_code == 1 and "segments/num_tracks: missing" in res.stdout


def test_all_videos_too_short_gives_an_empty_valid_store(annotations, tmp_path):
    from trackprep.io.validate import validate_store

    out = tmp_path / "S.zarr"
    result = shard(annotations, out, length=64, tracks=10, scheduler="serial")
    assert result.num_segments == 0
    assert result.skipped_videos == [("synth/a", 38), ("synth/b", 20), ("synth/c", 30)]
    reader = sstore.SegmentReader(out)
    assert len(reader) == 0 and (reader.height, reader.width) == (H, W)
    assert validate_store(out) == []


def test_cli_takes_defaults_from_the_pipeline_config_and_flags_override_it(annotations, tmp_path):
    from typer.testing import CliRunner

    from trackprep.cli import app

    cfg = tmp_path / "mine.yaml"
    cfg.write_text("shard:\n  segment_length: 30\n  tracks_per_segment: 20\n  fg_share: 0.25\n")
    out = tmp_path / "S.zarr"
    base = ["shard", "--store", str(annotations), "--out", str(out), "--config", str(cfg), "--scheduler", "serial"]
    res = CliRunner().invoke(app, [*base, "--tracks", "40"])
    assert res.exit_code == 0, res.output
    assert "3 segments of 30 frames" in res.output  # a (38 frames): 0 and 8; c (30): 0; b skipped
    reader = sstore.SegmentReader(out)
    assert reader.max_tracks == 40 and reader.attrs[schema.ATTR_CONFIG]["fg_share"] == 0.25
    labels = reader.read(0)["labels"]
    assert ((labels > 0) & (labels != 255)).sum() == 10  # round(40 * 0.25)
    cfg.write_text("shard:\n  fg_share: 2\n")
    res = CliRunner().invoke(app, [*base, "--overwrite"])
    assert res.exit_code == 2 and "mine.yaml: shard.fg_share = 2, expected a number in [0, 1]" in res.stderr


def test_videos_not_complete_in_the_annotation_store_are_left_out_and_listed(annotations, tmp_path):
    import shutil

    from typer.testing import CliRunner

    from trackprep.cli import app

    partial = tmp_path / "A.zarr"
    shutil.copytree(annotations, partial)
    root = astore.open_store(partial, mode="r+")
    astore.record_failure(root, "synth/c", "read: /x/00003.jpg: frame missing")
    root["synth/a"].attrs["status"] = "writing"  # an interrupted write
    res = CliRunner().invoke(app, ["shard", "--store", str(partial), "--out", str(tmp_path / "S.zarr"),
                                   "--tracks", "10", "--scheduler", "serial"])
    assert res.exit_code == 0, res.output
    assert "0 segments of 24 frames" in res.output and "skipped synth/b: 20 frames" in res.output
    assert "left out synth/a: writing in" in res.output and "left out synth/c: failed in" in res.output
