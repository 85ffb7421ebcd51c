"""Labels, balanced subsampling, the ragged TrackSet, resizing, the synthetic scene, and core isolation."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from trackprep.core.balance import balanced_subsample, class_counts
from trackprep.core.labels import label_tracks, next_annotated_frame
from trackprep.core.resize import resize_frames, resize_masks
from trackprep.core.synthetic import Scene, make_scene
from trackprep.core.types import VOID, Clip, FlowPair, TrackSet


def ragged(num_frames, rows):
    """TrackSet from [(start, [(x, y), ...]), ...]."""
    start = np.array([r[0] for r in rows], dtype=np.int32)
    lengths = [len(r[1]) for r in rows]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    points = np.array([p for r in rows for p in r[1]], dtype=np.float32).reshape(-1, 2)
    return TrackSet(num_frames=num_frames, start=start, offsets=offsets, points=points,
                    labels=np.full(len(rows), VOID, dtype=np.uint8))


def test_dense_and_select_roundtrip():
    ts = ragged(4, [(0, [(1, 1), (2, 1)]), (1, [(3, 3), (3, 4), (3, 5)]), (3, [(0, 0)])])
    tracks, visible = ts.dense()
    assert visible.tolist() == [[1, 1, 0, 0], [0, 1, 1, 1], [0, 0, 0, 1]]
    assert np.isnan(tracks[~visible]).all()
    assert tracks[1, 3].tolist() == [3, 5]
    sub = ts.select(np.array([2, 0]))
    t2, v2 = sub.dense()
    np.testing.assert_array_equal(v2, visible[[2, 0]])
    np.testing.assert_array_equal(t2[v2], tracks[[2, 0]][visible[[2, 0]]])


def test_trackset_validates_shapes():
    with pytest.raises(ValueError, match="offsets"):
        TrackSet(num_frames=2, start=np.zeros(1, np.int32), offsets=np.array([0, 3], np.int64),
                 points=np.zeros((2, 2), np.float32), labels=np.zeros(1, np.uint8))
    with pytest.raises(ValueError, match="within the clip"):
        TrackSet(num_frames=2, start=np.array([1], np.int32), offsets=np.array([0, 2], np.int64),
                 points=np.zeros((2, 2), np.float32), labels=np.zeros(1, np.uint8))


def test_clip_and_flowpair_check_shapes():
    frames = np.zeros((3, 4, 5, 3), np.uint8)
    with pytest.raises(ValueError, match=r"masks: expected uint8 array \[3, 4, 5\]"):
        Clip(name="v", frames=frames, masks=np.zeros((3, 4, 6), np.uint8), has_mask=np.ones(3, bool))
    with pytest.raises(ValueError, match="differ"):
        FlowPair(forward=torch.zeros(2, 2, 4, 5), backward=torch.zeros(1, 2, 4, 5))


def test_labels_come_from_the_first_annotated_frame_of_each_track():
    masks = np.zeros((4, 6, 6), np.uint8)
    masks[0, 1, 1] = 2
    masks[2, 3, 3] = 1
    masks[2, 5, 5] = VOID
    has_mask = np.array([True, False, True, False])
    ts = ragged(4, [
        (0, [(1, 1), (2, 2)]),            # first point on object 2 at annotated frame 0
        (1, [(0, 0), (3.2, 2.9)]),        # frame 1 unannotated -> label from frame 2 at (3, 3): object 1
        (1, [(0, 0)]),                    # never meets an annotated frame -> unknown
        (2, [(5, 5)]),                    # lands on void
        (3, [(1, 1)]),                    # no annotated frame at or after 3
    ])
    assert label_tracks(ts, masks, has_mask).labels.tolist() == [2, 1, VOID, VOID, VOID]
    assert next_annotated_frame(has_mask).tolist() == [0, 2, 2, 4]


def test_balanced_subsampling_hits_the_share_exactly():
    labels = np.array([0] * 500 + [1] * 300 + [3] * 200 + [VOID] * 50, dtype=np.uint8)
    idx = balanced_subsample(labels, n=400, fg_share=0.5, seed=7)
    assert idx.size == 400 and np.all(np.diff(idx) > 0)
    assert (labels[idx] == 0).sum() == 200 and ((labels[idx] > 0) & (labels[idx] != VOID)).sum() == 200
    np.testing.assert_array_equal(idx, balanced_subsample(labels, n=400, fg_share=0.5, seed=7))
    assert not np.array_equal(idx, balanced_subsample(labels, n=400, fg_share=0.5, seed=8))
    idx = balanced_subsample(labels, n=100, fg_share=0.3, seed=(1, 2, 3))
    assert ((labels[idx] > 0) & (labels[idx] != VOID)).sum() == 30


def test_balanced_subsampling_fills_from_the_other_class():
    labels = np.array([0] * 10 + [1] * 100, dtype=np.uint8)
    idx = balanced_subsample(labels, n=50, seed=0)
    assert idx.size == 50 and (labels[idx] == 0).sum() == 10
    assert balanced_subsample(labels, n=1000, seed=0).size == 110
    assert class_counts(7, num_fg=0, num_bg=3, fg_share=0.5) == (0, 3)
    with pytest.raises(ValueError, match="fg_share"):
        balanced_subsample(labels, n=5, fg_share=1.5, seed=0)


def test_resize_keeps_object_ids_and_values():
    masks = np.zeros((1, 480, 854), np.uint8)
    masks[0, 100:300, 200:500] = 3
    masks[0, 0:10, 0:10] = VOID
    small = resize_masks(masks, size=(320, 576))
    assert small.shape == (1, 320, 576) and set(np.unique(small)) == {0, 3, VOID}
    frames = np.full((2, 480, 854, 3), 77, np.uint8)
    out = resize_frames(frames, size=(320, 576))
    assert out.shape == (2, 320, 576, 3) and (out == 77).all()


def test_scene_is_deterministic_serialisable_and_consistent_with_its_flow():
    a, b = make_scene(seed=5, num_frames=4, height=48, width=80), make_scene(seed=5, num_frames=4, height=48, width=80)
    fa, ma = a.render()
    fb, mb = b.render()
    assert np.array_equal(fa, fb) and np.array_equal(ma, mb)
    c = Scene.from_dict(json.loads(json.dumps(a.to_dict())))
    assert np.array_equal(c.render()[0], fa)
    # a pixel's forward flow lands where ground truth says the point goes
    ys, xs = np.mgrid[0:48:5, 0:80:7]
    q = np.stack([np.zeros(xs.size), xs.ravel(), ys.ravel()], 1)
    gt, _ = a.ground_truth(q)
    flow = a.flow().forward[0].numpy()
    np.testing.assert_allclose(gt[:, 1], q[:, 1:] + flow[:, ys.ravel(), xs.ravel()].T, atol=1e-4)


def test_rescaled_scene_matches_its_native_geometry():
    scene = make_scene(seed=1, num_frames=3, height=40, width=60)
    big = scene.rescaled(height=80, width=120)
    q = np.array([[0, 10.0, 12.0], [1, 30.0, 20.0]])
    small_tracks, small_vis = scene.ground_truth(q)
    q_big = np.concatenate([q[:, :1], (q[:, 1:] + 0.5) * 2 - 0.5], 1)
    big_tracks, big_vis = big.ground_truth(q_big)
    np.testing.assert_allclose(big_tracks, (small_tracks + 0.5) * 2 - 0.5, atol=1e-4)


def test_core_imports_without_zarr_dask_typer_or_the_layers_above():
    code = (
        "import sys\n"
        "for name in ('zarr', 'dask', 'typer', 'distributed'):\n"
        "    sys.modules[name] = None  # makes `import name` raise ImportError\n"
        "import trackprep.core, trackprep.core.chaining, trackprep.core.labels, trackprep.core.balance\n"
        "import trackprep.core.synthetic, trackprep.core.resize, trackprep.core.sampling\n"
        "import pkgutil, importlib\n"
        "for m in pkgutil.iter_modules(trackprep.core.__path__):\n"
        "    importlib.import_module('trackprep.core.' + m.name)\n"
        "# layering: core imports nothing of the layers above it\n"
        "above = sorted(m for m in sys.modules if m.split('.')[:2] in (['trackprep', 'io'], ['trackprep', 'pipeline'],\n"
        "               ['trackprep', 'cli'], ['trackprep', 'flow']) or m.startswith('track4gen'))\n"
        "print(above or 'ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
