"""The trajectory core against known answers (issue 2)."""

import numpy as np
import pytest
import torch
from scipy import ndimage

from trackprep.core.chaining import TrackChainer, chain_tracks, covered_cells, cycle_step, seed_grid
from trackprep.core.labels import label_tracks
from trackprep.core.sampling import sample_bilinear
from trackprep.core.synthetic import make_scene
from trackprep.core.types import FlowPair, TrackSet


def constant_flow(t, h, w, dx, dy):
    fwd = torch.empty(t - 1, 2, h, w)
    fwd[:, 0], fwd[:, 1] = dx, dy
    return FlowPair(forward=fwd, backward=-fwd)


def test_sample_bilinear_is_exact_on_affine_fields_and_flags_outside_points():
    h, w = 7, 11
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    field = torch.stack([2 * xs + 3 * ys + 1, -xs + 0.5 * ys])  # affine, so bilinear interpolation is exact
    pts = torch.tensor([[0.0, 0.0], [10.0, 6.0], [3.25, 4.75], [-0.01, 2.0], [5.0, 6.01], [float("nan"), 1.0]])
    values, inside = sample_bilinear(field, pts)
    assert inside.tolist() == [True, True, True, False, False, False]
    x, y = pts[:3, 0], pts[:3, 1]
    expected = torch.stack([2 * x + 3 * y + 1, -x + 0.5 * y], dim=1)
    torch.testing.assert_close(values[:3], expected, atol=1e-5, rtol=0)


def test_sample_bilinear_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"\[C, H, W\]"):
        sample_bilinear(torch.zeros(2, 4), torch.zeros(3, 2))
    with pytest.raises(ValueError, match=r"\[\.\.\., 2\]"):
        sample_bilinear(torch.zeros(2, 4, 4), torch.zeros(3, 3))


def test_constant_translation_gives_exact_tracks():
    t, h, w, dx, dy = 6, 40, 60, 1.25, -0.75
    tracks = chain_tracks(constant_flow(t, h, w, dx, dy))
    dense, visible = tracks.dense()
    first = tracks.first_points()
    frames = np.arange(t)[None, :]
    expect_x = first[:, :1] + dx * (frames - tracks.start[:, None])
    expect_y = first[:, 1:] + dy * (frames - tracks.start[:, None])
    err = np.hypot(dense[..., 0] - expect_x, dense[..., 1] - expect_y)[visible]
    assert err.max() < 1e-4
    # a track ends exactly when its next point would leave the frame, or at the last frame
    last = first + np.array([dx, dy], dtype=np.float32) * (tracks.lengths - 1)[:, None]
    nxt = last + np.array([dx, dy], dtype=np.float32)
    leaves = (nxt[:, 0] > w - 1) | (nxt[:, 1] < 0)
    ends_at_last_frame = tracks.start + tracks.lengths == t
    assert np.array_equal(leaves | ends_at_last_frame, np.ones(len(tracks), dtype=bool))
    assert leaves.sum() > 0 and (tracks.start > 0).sum() > 0
    # seeding refills what left: at every frame each pixel is the nearest grid point of a live track
    for f in range(t):
        cells = np.floor(dense[visible[:, f], f] + 0.5).astype(np.int64)
        assert np.unique(cells[:, 1] * w + cells[:, 0]).size == h * w, f


def test_flow_and_its_exact_inverse_give_zero_cycle_error():
    h, w = 32, 48
    fl = constant_flow(2, h, w, 2.5, 1.0)
    pts = seed_grid(h, w, stride=1)
    _, keep, error = cycle_step(fl.forward[0], fl.backward[0], pts, cycle_threshold=1.5)
    inside = (pts[:, 0] + 2.5 <= w - 1) & (pts[:, 1] + 1.0 <= h - 1)
    assert error[inside].abs().max().item() == 0.0
    assert torch.equal(keep, inside)


def test_cycle_threshold_is_inclusive_and_configurable():
    h, w = 20, 20
    fwd = torch.zeros(1, 2, h, w)
    bwd = torch.zeros(1, 2, h, w)
    bwd[:, 0] = 1.5  # coming back 1.5 px off
    fl = FlowPair(forward=fwd, backward=bwd)
    assert len(chain_tracks(fl, cycle_threshold=1.5).start) == h * w  # all kept: nothing to reseed
    strict = chain_tracks(fl, cycle_threshold=1.4)
    assert (strict.lengths == 1).all() and (strict.start == 1).sum() == h * w  # all ended, all reseeded


@pytest.fixture(scope="module")
def scene_run():
    # objects move 4-8 px/frame relative to each other, so most newly occluded points lie more
    # than the excluded 2 px inside their occluder
    scene = make_scene(seed=3, num_frames=24, max_speed=8.0, min_relative_speed=4.0)
    frames, masks = scene.render()
    tracks = label_tracks(chain_tracks(scene.flow()), masks, np.ones(24, dtype=bool))
    return scene, masks, tracks


def boundary_distance(masks):
    """Distance of every pixel to the nearest change of object id, per frame."""
    edges = np.zeros(masks.shape, dtype=bool)
    edges[:, :, 1:] |= masks[:, :, 1:] != masks[:, :, :-1]
    edges[:, 1:, :] |= masks[:, 1:, :] != masks[:, :-1, :]
    return np.stack([ndimage.distance_transform_edt(~e) for e in edges])


def test_oracle_chaining_reproduces_ground_truth_tracks(scene_run):
    scene, _, tracks = scene_run
    rows = np.random.default_rng(0).choice(len(tracks), 20000, replace=False)
    queries = np.concatenate([tracks.start[rows, None], tracks.first_points()[rows]], axis=1)
    gt, _ = scene.ground_truth(queries)
    dense, visible = tracks.dense(rows)
    err = np.linalg.norm(dense - gt, axis=-1)[visible]
    assert np.median(err) < 0.05
    assert np.percentile(err, 99) < 0.5


def test_cycle_test_catches_occlusion(scene_run):
    scene, masks, tracks = scene_run
    t_all, h, w = masks.shape
    dist = boundary_distance(masks)
    # an unbiased sample of all tracks (objects cross ~100 px in this clip, so a track that starts
    # far from any boundary can still be occluded later, and any track can end spuriously)
    rows = np.sort(np.random.default_rng(1).choice(len(tracks), 60000, replace=False))
    queries = np.concatenate([tracks.start[rows, None], tracks.first_points()[rows]], axis=1)
    gt, gt_visible = scene.ground_truth(queries)
    start, length = tracks.start[rows].astype(np.int64), tracks.lengths[rows]
    truth, predicted = [], []
    for t in range(t_all - 1):
        alive = (start <= t) & (t < start + length) & gt_visible[:, t]  # steps t -> t+1 of live, truly visible points
        nxt = gt[:, t + 1]
        in_frame = (nxt[:, 0] >= 2) & (nxt[:, 0] <= w - 3) & (nxt[:, 1] >= 2) & (nxt[:, 1] <= h - 3)
        xi = np.clip(np.rint(nxt[:, 0]).astype(int), 0, w - 1)
        yi = np.clip(np.rint(nxt[:, 1]).astype(int), 0, h - 1)
        cur = gt[:, t]
        xc = np.clip(np.rint(cur[:, 0]).astype(int), 0, w - 1)
        yc = np.clip(np.rint(cur[:, 1]).astype(int), 0, h - 1)
        # points within 2 px of an occlusion boundary are excluded from both counts
        clear = (dist[t + 1, yi, xi] > 2) & (dist[t, yc, xc] > 2)
        use = alive & in_frame & clear
        truth.append(~gt_visible[use, t + 1])
        predicted.append((start + length - 1 == t)[use])  # the track ended at this step
    truth, predicted = np.concatenate(truth), np.concatenate(predicted)
    assert truth.sum() > 200, "the scene must contain occlusions for this test to mean anything"
    recall = (truth & predicted).sum() / truth.sum()
    precision = (truth & predicted).sum() / predicted.sum()
    print(f"occlusion recall {recall:.3f} precision {precision:.3f} over {truth.sum()} occlusion events")
    assert recall >= 0.95, recall
    assert precision >= 0.9, precision


def test_seeding_covers_what_appears(scene_run):
    scene, masks, tracks = scene_run
    t_last = scene.num_frames - 1
    at_last = tracks.start + tracks.lengths - 1 == t_last
    pts = tracks.points[tracks.offsets[1:][at_last] - 1]
    h, w = masks.shape[1:]
    hit = np.zeros((h, w), dtype=bool)
    hit[np.clip(np.rint(pts[:, 1]).astype(int), 0, h - 1), np.clip(np.rint(pts[:, 0]).astype(int), 0, w - 1)] = True
    within_1px = ndimage.distance_transform_edt(~hit) <= 1.0
    assert within_1px.mean() >= 0.95
    assert (tracks.start > 0).sum() > 1000, "disocclusions and borders must have gained tracks"


def test_seed_stride_seeds_every_kth_pixel():
    tracks = chain_tracks(constant_flow(3, 16, 24, 0.0, 0.0), seed_stride=4)
    assert len(tracks) == 4 * 6  # static scene: no reseeding
    assert set(np.unique(tracks.first_points()[:, 0])) == {0, 4, 8, 12, 16, 20}


def test_chain_rejects_bad_options():
    fl = constant_flow(2, 8, 8, 0.0, 0.0)
    with pytest.raises(ValueError, match="cycle_threshold"):
        chain_tracks(fl, cycle_threshold=0)
    with pytest.raises(ValueError, match="seed_stride"):
        chain_tracks(fl, seed_stride=0)


def dense_reference_chain(flow: FlowPair, *, cycle_threshold: float = 1.5) -> tuple[np.ndarray, np.ndarray]:
    """The whole-video algorithm written out plainly (the code before streaming, issue 13): the
    live points of each frame kept as one growing list per seeded track. Returns (start [N],
    tracks as a list of float32 [len, 2]) in seeding order."""
    t_all, _, h, w = flow.forward.shape[0] + 1, *flow.forward.shape[1:]
    grid = seed_grid(h, w, stride=1)
    pos, ids = grid.clone(), list(range(grid.shape[0]))
    history = [[p] for p in grid.numpy()]
    starts = [0] * grid.shape[0]
    for t in range(t_all):
        if t > 0:
            new = grid[~covered_cells(pos, height=h, width=w, stride=1)]
            ids += range(len(history), len(history) + new.shape[0])
            history += [[p] for p in new.numpy()]
            starts += [t] * new.shape[0]
            pos = torch.cat([pos, new])
        if t == t_all - 1:
            break
        nxt, keep, _ = cycle_step(flow.forward[t], flow.backward[t], pos, cycle_threshold=cycle_threshold)
        pos, ids = nxt[keep], [i for i, k in zip(ids, keep.tolist()) if k]
        for i, p in zip(ids, pos.numpy()):
            history[i].append(p)
    return np.array(starts), [np.array(h_, np.float32) for h_ in history]


@pytest.mark.parametrize("collect", ["at the end", "often"])
@pytest.mark.parametrize("every", [1, 3, 8, 100])
def test_streamed_chaining_equals_the_whole_video_algorithm_bit_for_bit(every, collect, monkeypatch):
    """TrackChainer fed the flow frame by frame, handing out ended tracks every `every` frames,
    gives exactly the tracks of the plain whole-video algorithm (as a set), collection by
    collection in seeding order, with labels as label_tracks gives them; the collections (so
    the output and its order) do not depend on `every`."""
    from trackprep.core import chaining

    if collect == "often":  # the 2x rule from 500 points on, and every 4 frames
        monkeypatch.setattr(chaining, "MIN_COLLECT_POINTS", 500)
        monkeypatch.setattr(chaining, "COLLECT_FRAMES", 4)
    scene = make_scene(seed=5, num_frames=15, height=40, width=56)
    flow, (_, masks) = scene.flow(), scene.render()
    starts, ref = dense_reference_chain(flow)
    chainer = TrackChainer(height=40, width=56)
    parts = []
    for t in range(14):
        chainer.add_frame(mask=masks[t])
        chainer.advance(flow.forward[t], flow.backward[t])
        if t % every == every - 1:
            parts.extend(chainer.finished())
    chainer.add_frame(mask=masks[14])
    parts.extend(chainer.close())
    got = TrackSet.concat(parts)
    ends = np.array([s + len(r) - 1 for s, r in zip(starts, ref)])
    collections = np.array(chainer.collections)
    assert collections[-1] == 14 and (len(collections) >= 4 if collect == "often" else len(collections) == 1)
    order = np.lexsort((np.arange(len(ref)), np.searchsorted(collections, ends)))
    assert len(got) == len(ref) > 40 * 56
    np.testing.assert_array_equal(got.start, starts[order])
    np.testing.assert_array_equal(got.points, np.concatenate([ref[i] for i in order]))
    whole = label_tracks(chain_tracks(flow), masks, np.ones(15, bool))
    np.testing.assert_array_equal(got.labels, whole.labels)
    np.testing.assert_array_equal(got.offsets, whole.offsets)
    assert got.num_frames == 15 and all(p.num_frames <= 15 for p in parts)


def test_history_spilled_to_disk_gives_the_same_tracks_and_leaves_no_file(tmp_path, monkeypatch):
    """The store's history codec (1/64 px, spilled to files) changes nothing the store keeps:
    the tracks equal the uncompressed chaining's rounded to 1/64 px; released parts' files are
    deleted as collections go, and close() removes the rest."""
    from trackprep.core import chaining, track_history
    from trackprep.io.annotation_store import POINT_SCALE, HistoryCodec

    monkeypatch.setattr(chaining, "MIN_COLLECT_POINTS", 500)
    monkeypatch.setattr(chaining, "COLLECT_FRAMES", 3)
    monkeypatch.setattr(track_history, "PART_POINTS", 1000)  # many parts per block
    monkeypatch.setattr(HistoryCodec, "FILE_BYTES", 4000)  # many files
    scene = make_scene(seed=3, num_frames=12, height=40, width=56)
    flow = scene.flow()
    codec = HistoryCodec(spill_dir=tmp_path)
    chainer = TrackChainer(height=40, width=56, history_codec=codec)
    parts, seen = [], set()
    for t in range(11):
        chainer.add_frame()
        chainer.advance(flow.forward[t], flow.backward[t])
        if t % 2 == 1:
            parts.extend(chainer.finished())
            seen |= {p.name for p in tmp_path.iterdir()}
    chainer.add_frame()
    parts.extend(chainer.close())
    left = {p.name for p in tmp_path.iterdir()}
    whole = chain_tracks(flow)
    got = TrackSet.concat(parts)
    np.testing.assert_array_equal(got.offsets, whole.offsets)
    np.testing.assert_array_equal(got.points, np.rint(whole.points * POINT_SCALE) / POINT_SCALE)
    assert len(seen) > 3 and len(left) < len(seen)  # files come and go
    codec.close()
    assert list(tmp_path.iterdir()) == []


def test_chainer_drops_short_tracks_and_labels_on_the_first_annotated_frame():
    scene = make_scene(seed=2, num_frames=10, height=32, width=48)
    flow, (_, masks) = scene.flow(), scene.render()
    has_mask = np.zeros(10, bool)
    has_mask[[3, 7]] = True  # sparse ground truth, as FBMS-59
    chainer = TrackChainer(height=32, width=48, min_length=3)
    for t in range(9):
        chainer.add_frame(mask=masks[t] if has_mask[t] else None)
        chainer.advance(flow.forward[t], flow.backward[t])
    chainer.add_frame()
    got = TrackSet.concat(list(chainer.close()))
    whole = label_tracks(chain_tracks(flow), masks, has_mask)
    keep = whole.lengths >= 3
    assert 0 < keep.sum() < len(whole) and got.lengths.min() == 3
    np.testing.assert_array_equal(got.start, whole.start[keep])
    np.testing.assert_array_equal(got.labels, whole.labels[keep])
    np.testing.assert_array_equal(got.points, whole.select(np.flatnonzero(keep)).points)
    assert (got.labels == 255).any() and (got.labels == 0).any()  # tracks that met no mask frame stay VOID


def test_chainer_refuses_calls_out_of_order_and_wrong_shapes():
    fl = constant_flow(3, 8, 8, 0.0, 0.0)
    chainer = TrackChainer(height=8, width=8)
    with pytest.raises(RuntimeError, match="expected add_frame\\(\\) for frame 0 first"):
        chainer.advance(fl.forward[0], fl.backward[0])
    chainer.add_frame()
    with pytest.raises(RuntimeError, match="frame 0 has not been advanced from yet"):
        chainer.add_frame()
    with pytest.raises(ValueError, match=r"forward flow of frame 0 has shape \(2, 8, 9\); expected \(2, 8, 8\)"):
        chainer.advance(torch.zeros(2, 8, 9), fl.backward[0])
    with pytest.raises(ValueError, match="min_length must be a positive integer"):
        TrackChainer(height=8, width=8, min_length=0)


def test_finished_tracks_come_in_bounded_batches_with_the_same_content(monkeypatch):
    from trackprep.core import chaining, track_history

    scene = make_scene(seed=5, num_frames=12, height=40, width=56)
    flow = scene.flow()
    whole = chain_tracks(flow)
    monkeypatch.setattr(track_history, "OUT_POINTS", 1000)
    chainer = TrackChainer(height=40, width=56)
    parts = []
    for t in range(11):
        chainer.add_frame()
        chainer.advance(flow.forward[t], flow.backward[t])
        if t == 5:
            parts.extend(chainer.finished())
    chainer.add_frame()
    last = list(chainer.close())
    assert len(last) > 5 and all(p.points.shape[0] <= 1000 + 12 for p in last)  # at most one track over
    got = TrackSet.concat(parts + last)
    np.testing.assert_array_equal(got.points, whole.points)
    np.testing.assert_array_equal(got.offsets, whole.offsets)

    monkeypatch.setattr(chaining, "COLLECT_FRAMES", 1)  # a collection at every frame
    chainer = TrackChainer(height=40, width=56)
    chainer.add_frame()
    chainer.advance(flow.forward[0], flow.backward[0])
    unread = chainer.finished()
    chainer.add_frame()
    chainer.advance(flow.forward[1], flow.backward[1])
    with pytest.raises(RuntimeError, match="previous finished\\(\\)/close\\(\\) were not all read"):
        chainer.finished()
    assert sum(p.points.shape[0] for p in unread) > 0
    list(chainer.finished())  # read: the next call goes on
