"""Zero-shot tracking apart from any model: matching, the occlusion rule, long-video segments.

The "features" here are exact functions of each point's texture coordinates on a synthetic
scene (trackprep.core.synthetic), so the exact ground truth says where every match must land.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from track4gen.losses import radius_cells
from track4gen.tracking.features import video_features, video_segments
from track4gen.tracking.matching import OCCLUSION_THRESHOLD, locate, match_queries
from trackprep.core.synthetic import Scene, make_scene
from trackprep.core.tapvid_metrics import TAPVID_SIZE, rescale_points, tapvid_metrics


def _cell_centres(scene: Scene, stride: int) -> tuple[np.ndarray, int, int]:
    h, w = scene.height // stride, scene.width // stride
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    return (np.stack([xs, ys], -1).reshape(-1, 2) + 0.5) * stride - 0.5, h, w


def fourier_features(scene: Scene, *, bandwidth: float, dim: int = 128, seed: int = 0) -> torch.Tensor:
    """[T, 2 dim, H, W]: random Fourier features of each pixel's texture coordinates, one
    frequency set per layer, so cosine similarity ~ exp(-d^2 / 2 bandwidth^2) within a layer
    (d: texture-coordinate distance) and ~0 across layers."""
    rng = np.random.default_rng(seed)
    pix, h, w = _cell_centres(scene, 1)
    freqs = rng.normal(0.0, 1.0 / bandwidth, (len(scene.layers), dim, 2))
    phase = rng.uniform(0.0, 2 * np.pi, (len(scene.layers), dim))
    out = np.empty((scene.num_frames, 2 * dim, h * w), np.float32)
    for t in range(scene.num_frames):
        top = scene.top_layer(t, pix)
        for k in range(len(scene.layers)):
            sel = top == k
            arg = scene._to_layer(k, t, pix[sel]) @ freqs[k].T + phase[k]
            out[t][:, sel] = (np.concatenate([np.cos(arg), np.sin(arg)], 1) / np.sqrt(dim)).T
    return torch.from_numpy(out.reshape(scene.num_frames, 2 * dim, h, w))


def lattice_features(scene: Scene, *, stride: int, spacing: float, reach: int = 2) -> torch.Tensor:
    """[T, C, h, w] on a map `stride` times coarser than the frame: Gaussian bumps (sigma =
    spacing / 2) on a lattice of texture coordinates, one channel per lattice point and layer,
    so features of points farther apart than the bumps' reach are exactly orthogonal."""
    pix, h, w = _cell_centres(scene, stride)
    sigma = spacing / 2
    per_frame = []
    for t in range(scene.num_frames):
        top = scene.top_layer(t, pix)
        per_frame.append((top, {k: scene._to_layer(k, t, pix[top == k]) for k in range(len(scene.layers))}))
    lattices, channels = {}, 0
    for k in range(len(scene.layers)):
        ij = np.concatenate([np.floor(f[1][k] / spacing) for f in per_frame]).astype(np.int64)
        lo, hi = ij.min(0) - reach, ij.max(0) + reach + 1
        lattices[k] = (channels, lo, hi - lo)
        channels += int(np.prod(hi - lo))
    out = np.zeros((scene.num_frames, channels, h * w), np.float32)
    offsets = [(di, dj) for di in range(-reach, reach + 1) for dj in range(-reach, reach + 1)]
    for t, (top, coords) in enumerate(per_frame):
        for k, (first, lo, size) in lattices.items():
            cells, q = np.flatnonzero(top == k), coords[k]
            base = np.floor(q / spacing).astype(np.int64)
            for di, dj in offsets:
                node = base + (di, dj)
                weight = np.exp(-np.square(q - node * spacing).sum(1) / (2 * sigma**2))
                channel = first + (node[:, 1] - lo[1]) * size[0] + (node[:, 0] - lo[0])
                out[t, channel, cells] = weight
    return torch.from_numpy(out.reshape(scene.num_frames, channels, h, w))


def score(scene: Scene, features: torch.Tensor, *, n: int, seed: int = 0, **options) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    queries = np.stack([rng.integers(0, scene.num_frames, n), rng.uniform(0, scene.width - 1, n),
                        rng.uniform(0, scene.height - 1, n)], axis=1)
    gt, visible = scene.ground_truth(queries)
    size = (scene.height, scene.width)
    m = match_queries(features, torch.from_numpy(queries).float(), image_size=size, **options)
    return tapvid_metrics(
        query_frames=queries[:, 0].astype(np.int64),
        gt_tracks=rescale_points(gt, from_size=size, to_size=TAPVID_SIZE), gt_occluded=~visible,
        pred_tracks=rescale_points(m.tracks.numpy(), from_size=size, to_size=TAPVID_SIZE),
        pred_occluded=~m.visible.numpy(), mode="strided",
    )


@pytest.mark.parametrize("seed", [3, 4])
def test_exact_texture_features_track_synthetic_video(seed):
    # Features at the frame's resolution, the soft-argmax window of the paper (35 px at 576 px
    # wide) scaled to this frame, and the loss's softmax weighting: the matching alone must
    # recover the exact ground truth, visibility included.
    scene = make_scene(seed=seed, num_frames=8, height=128, width=192, num_objects=3)
    feats = fourier_features(scene, bandwidth=1.5).half()  # stored as video_features stores them
    m = score(scene, feats, n=300, radius_px=35 * 192 / 576, weighting="softmax")
    assert m["position_accuracy"] >= 0.99, m
    assert m["occlusion_accuracy"] >= 0.95, m


def test_exact_features_at_svd_map_size_with_the_papers_soft_argmax():
    # SVD's geometry: a 40 x 72 map, 4.375-cell window, cosine weighting (Eq. 3). Exactly
    # orthogonal far-apart features leave only the window's truncation at frame borders and
    # occlusion boundaries, which costs ~3 points of position accuracy (within 1 px at 256 px
    # is 0.16 cells here); measured 96.0 / 96.4 on seeds 3 / 4.
    scene = make_scene(seed=3, num_frames=4, height=160, width=288, num_objects=3)
    feats = lattice_features(scene, stride=4, spacing=4.0)
    assert feats.shape[-2:] == (40, 72)
    assert radius_cells(feature_size=(40, 72), image_size=(160, 288), radius_px=17.5) == pytest.approx(4.375)
    m = score(scene, feats, n=200, radius_px=17.5)
    assert m["position_accuracy"] >= 0.95, m
    assert m["occlusion_accuracy"] >= 0.95, m
    assert m["pts_within_4"] >= 0.98, m


def test_positions_map_between_feature_cells_and_pixels():
    # A 9 x 12 map 8x coarser than the frame whose content shifts one cell right per frame:
    # a query at cell (3.25, 4.5) lands at cell (3.25 + t, 4.5) in frame t, i.e. at pixel
    # ((x + 0.5) * 8 - 0.5, (y + 0.5) * 8 - 0.5).
    t_len, h, w = 3, 9, 12
    ys, xs = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    ay, ax = torch.meshgrid(torch.arange(-2, h + 2).float(), torch.arange(-2, w + 2).float(), indexing="ij")
    anchors = torch.stack([ax.flatten(), ay.flatten()], 1)  # one channel per content position

    def frame(t: int) -> torch.Tensor:
        content = torch.stack([xs - t, ys], -1).reshape(-1, 1, 2)  # what each cell shows
        return torch.exp(-(content - anchors).square().sum(-1) / (2 * 0.5**2)).T.reshape(-1, h, w)

    feats = torch.stack([frame(t) for t in range(t_len)])
    m = match_queries(feats, torch.tensor([[0.0, (3.25 + 0.5) * 8 - 0.5, (4.5 + 0.5) * 8 - 0.5]]),
                      image_size=(h * 8, w * 8))
    expected = torch.tensor([[(3.25 + t + 0.5) * 8 - 0.5, (4.5 + 0.5) * 8 - 0.5] for t in range(t_len)])
    torch.testing.assert_close(m.tracks[0], expected, atol=0.15, rtol=0)  # a wrong half-pixel shift is 3.5 px
    assert m.visible.all()


@pytest.mark.parametrize("best, visible", [(OCCLUSION_THRESHOLD + 1e-3, True), (OCCLUSION_THRESHOLD - 1e-3, False)])
def test_occlusion_rule_at_the_threshold(best, visible):
    cost = torch.full((1, 6, 8), 0.1)
    cost[0, 2, 5] = best
    cost[0, 2, 4] = best - 0.05
    xy, sim, vis = locate(cost, radius=2.0)
    assert bool(vis[0]) is visible
    assert float(sim[0]) == pytest.approx(best)
    assert 4.0 < float(xy[0, 0]) < 5.0 and float(xy[0, 1]) == pytest.approx(2.0, abs=0.1)


def test_occlusion_rule_through_matching():
    # Two frames; the query's feature appears in frame 1 only with cosine 0.61 or 0.59.
    q = torch.tensor([1.0, 0.0, 0.0])
    for cos, expect in ((0.61, True), (0.59, False)):
        other = torch.tensor([cos, (1 - cos**2) ** 0.5, 0.0])
        f0 = torch.zeros(3, 4, 4)
        f0[2] = 1.0
        f0[:, 1, 1] = q
        f1 = torch.zeros(3, 4, 4)
        f1[2] = 1.0
        f1[:, 2, 3] = other
        m = match_queries(torch.stack([f0, f1]), torch.tensor([[0.0, 1.0, 1.0]]), image_size=(4, 4), radius_px=1.5)
        assert m.visible.tolist() == [[True, expect]]
        assert float(m.similarity[0, 1]) == pytest.approx(cos, abs=1e-5)


def test_sixty_frames_are_three_segments_with_the_borrowed_frames_dropped():
    assert [(s.start, s.keep_from, s.stop) for s in video_segments(60)] == [(0, 0, 24), (24, 24, 48), (36, 48, 60)]
    frames = np.zeros((60, 4, 6, 3), np.uint8)
    frames[:, 0, 0, 0] = np.arange(60)  # each frame carries its index
    calls = []

    def recording(segment: np.ndarray) -> torch.Tensor:
        idx = segment[:, 0, 0, 0].astype(np.int64)
        calls.append(idx)
        # feature = (frame index, first frame of the segment it was computed in)
        return torch.from_numpy(np.stack([idx, np.full_like(idx, idx[0])], 1).astype(np.float32))[:, :, None, None]

    feats = video_features(frames, recording, length=24)
    assert [c.tolist() for c in calls] == [list(range(0, 24)), list(range(24, 48)), list(range(36, 60))]
    assert feats[:, 0, 0, 0].tolist() == list(range(60))
    owner = feats[:, 1, 0, 0].long()
    assert (owner[:24] == 0).all() and (owner[24:48] == 24).all() and (owner[48:] == 36).all()


def test_a_video_shorter_than_a_segment_is_refused():
    with pytest.raises(ValueError, match="20 frames.*24-frame segment"):
        video_segments(20)
