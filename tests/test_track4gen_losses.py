"""Track4Gen losses against known answers: EDM constants, soft-argmax peaks, exact correspondences,
and the correspondence loss on DINO-Tracker's scale computed by hand."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from track4gen.losses import (
    HUBER_DELTA,
    PAPER_RADIUS_PX,
    SOFTMAX_TEMPERATURE,
    correspondence_loss,
    cost_volume,
    diffusion_loss,
    edm_scalings,
    feature_to_image,
    image_to_feature,
    normalize_pixels,
    radius_cells,
    sample_sigmas,
    soft_argmax,
)


def peak(h: int, w: int, x: float, y: float, *, height: float = 1.0, sigma: float = 1.0) -> torch.Tensor:
    """A cost volume whose softmax (at the default temperature) is a Gaussian centred at (x, y):
    a sharp peak whose exact centre is known to sub-pixel precision."""
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    return height - SOFTMAX_TEMPERATURE * ((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma**2)


def test_edm_scalings_at_sigma_one():
    sc = edm_scalings(torch.tensor([1.0]))
    assert sc.c_in.item() == pytest.approx(1 / math.sqrt(2))
    assert sc.c_skip.item() == pytest.approx(0.5)
    assert sc.c_out.item() == pytest.approx(-1 / math.sqrt(2))
    assert sc.c_noise.item() == pytest.approx(0.0)
    assert sc.weight.item() == pytest.approx(2.0)


def test_sigmas_are_log_normal_with_svd_parameters():
    s = sample_sigmas(200_000, generator=torch.Generator().manual_seed(0))
    assert s.log().mean().item() == pytest.approx(0.7, abs=0.02)
    assert s.log().std().item() == pytest.approx(1.6, abs=0.02)


def test_diffusion_loss_is_zero_for_the_exact_v_prediction():
    g = torch.Generator().manual_seed(0)
    clean = torch.randn(2, 3, 4, 5, 6, generator=g)
    sigma = torch.tensor([0.3, 5.0])
    noisy = clean + sigma.view(2, 1, 1, 1, 1) * torch.randn(clean.shape, generator=g)
    sc = edm_scalings(sigma)
    # Solve c_skip * noisy + c_out * F = clean for F: the output a perfect model gives.
    perfect = (clean - sc.c_skip.view(2, 1, 1, 1, 1) * noisy) / sc.c_out.view(2, 1, 1, 1, 1)
    assert diffusion_loss(perfect, noisy, clean, sigma).item() == pytest.approx(0.0, abs=1e-8)
    assert diffusion_loss(perfect + 0.1, noisy, clean, sigma).item() > 1e-3


def test_radius_is_35_pixels_of_the_frame_in_cells_of_the_hooked_map():
    assert PAPER_RADIUS_PX == 35.0 and HUBER_DELTA == 1 / 32
    assert radius_cells(feature_size=(40, 72), image_size=(320, 576)) == pytest.approx(4.375)
    # Twice the map resolution, twice the cells; DINO-Tracker's own grid (stride 7) at 320x576.
    assert radius_cells(feature_size=(80, 144), image_size=(320, 576)) == pytest.approx(8.75)
    assert radius_cells(feature_size=(44, 81), image_size=(308, 567), radius_px=14.0) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="radius_px=0"):
        radius_cells(feature_size=(40, 72), image_size=(320, 576), radius_px=0)


def test_pixel_normalisation_and_cell_mapping_round_trip():
    pts = torch.tensor([[0.0, 0.0], [575.0, 319.0], [287.5, 159.5]])
    assert torch.allclose(normalize_pixels(pts, image_size=(320, 576)), torch.tensor([[-1.0, -1.0], [1.0, 1.0], [0.0, 0.0]]))
    grid = {"image_size": (320, 576), "feature_size": (40, 72)}
    assert torch.allclose(feature_to_image(image_to_feature(pts, **grid), **grid), pts, atol=1e-4)


def test_image_to_feature_maps_pixel_grid_edges_and_centres():
    pts = torch.tensor([[-0.5, -0.5], [575.5, 319.5], [3.5, 3.5]])  # edges, and the centre of the first 8x8 block
    f = image_to_feature(pts, image_size=(320, 576), feature_size=(40, 72))
    assert torch.allclose(f, torch.tensor([[-0.5, -0.5], [71.5, 39.5], [0.0, 0.0]]))


def test_softmax_soft_argmax_finds_a_sharp_subpixel_peak():
    cost = peak(30, 40, 17.3, 11.6).unsqueeze(0)
    xy = soft_argmax(cost, radius=6.0, weighting="softmax")
    assert torch.allclose(xy[0], torch.tensor([17.3, 11.6]), atol=1e-3)


def test_soft_argmax_ignores_a_second_peak_outside_the_radius():
    cost = torch.maximum(peak(30, 40, 8.4, 10.2), peak(30, 40, 32.0, 20.0, height=0.97)).unsqueeze(0)
    xy = soft_argmax(cost, radius=6.0, weighting="softmax")
    assert torch.allclose(xy[0], torch.tensor([8.4, 10.2]), atol=1e-3)
    # Without the window the second mode drags the estimate towards the middle of the two.
    unwindowed = soft_argmax(cost, radius=100.0, weighting="softmax")
    assert unwindowed[0, 0].item() > 15.0


def test_cosine_soft_argmax_is_eq3_weighted_by_the_raw_similarities():
    # Eq. 3 by hand: argmax at (5, 4) with S = 0.9; (6, 4) S = 0.6 and (5, 3) S = 0.3 inside a
    # radius of 1.5; (8, 4) S = 0.8 outside it; negative similarities weigh nothing.
    cost = torch.full((1, 10, 12), -0.2)
    cost[0, 4, 5], cost[0, 4, 6], cost[0, 3, 5], cost[0, 4, 8] = 0.9, 0.6, 0.3, 0.8
    xy = soft_argmax(cost, radius=1.5)
    want_x = (0.9 * 5 + 0.6 * 6 + 0.3 * 5) / 1.8
    want_y = (0.9 * 4 + 0.6 * 4 + 0.3 * 3) / 1.8
    assert torch.allclose(xy[0], torch.tensor([want_x, want_y]))
    # The softmax option weighs the same window differently.
    assert not torch.allclose(soft_argmax(cost, radius=1.5, weighting="softmax")[0], xy[0], atol=1e-2)
    # A window of only non-positive similarities falls back to its centre.
    flat = torch.full((1, 5, 5), -0.5)
    flat[0, 2, 3] = -0.1
    assert torch.allclose(soft_argmax(flat, radius=1.0)[0], torch.tensor([3.0, 2.0]))


def test_soft_argmax_rejects_bad_parameters():
    with pytest.raises(ValueError, match="radius"):
        soft_argmax(torch.zeros(1, 4, 4), radius=0.0)
    with pytest.raises(ValueError, match="weighting.*'gauss'"):
        soft_argmax(torch.zeros(1, 4, 4), radius=1.0, weighting="gauss")


def one_hot_frames(h: int, w: int) -> torch.Tensor:
    """[1, 2, h*w, h, w]: every cell its own channel, the same in both frames, so a query's cost
    map is 1 at its own cell and 0 elsewhere and the cosine soft-argmax lands exactly there."""
    eye = torch.eye(h * w).reshape(h * w, h, w)
    return torch.stack([eye, eye]).unsqueeze(0)


@pytest.mark.parametrize("dx_px, dy_px", [(4.0, 0.0), (0.0, 6.0), (20.0, -12.0)])
def test_correspondence_loss_matches_the_huber_value_computed_by_hand(dx_px, dy_px):
    # At 320x576 SVD's hooked map is 40x72 (8 px per cell). The prediction is the query's cell
    # centre; the target is that point moved by (dx, dy) pixels, so the prediction is off by
    # exactly (dx, dy) px: in [-1, 1] coordinates r = (2 dx / 575, 2 dy / 319).
    feats = one_hot_frames(40, 72)
    cells = torch.tensor([[10.0, 7.0], [40.0, 20.0], [61.0, 30.0]])
    query = (cells + 0.5) * 8.0 - 0.5  # pixel coordinates of those cell centres
    target = query + torch.tensor([dx_px, dy_px])
    k = len(cells)
    loss = correspondence_loss(
        feats, query_frame=torch.zeros(1, k, dtype=torch.long), query_xy=query[None],
        target_frame=torch.ones(1, k, dtype=torch.long), target_xy=target[None],
        valid=torch.ones(1, k, dtype=torch.bool), image_size=(320, 576),
    )

    def huber(r: float) -> float:
        d = 1 / 32
        return 0.5 * r * r if abs(r) <= d else d * (abs(r) - 0.5 * d)

    want = (huber(2 * dx_px / 575) + huber(2 * dy_px / 319)) / 2  # mean over x and y (and the 3 equal pairs)
    assert loss.item() == pytest.approx(want, rel=1e-4)


def test_cost_volume_equals_per_query_cosine_similarity():
    g = torch.Generator().manual_seed(1)
    maps = torch.randn(3, 16, 5, 7, generator=g)
    queries = torch.randn(6, 16, generator=g)
    frames = torch.tensor([0, 2, 1, 1, 0, 2])
    got = cost_volume(queries, maps, frames)
    want = torch.stack([F.cosine_similarity(q.view(16, 1, 1), maps[f], dim=0) for q, f in zip(queries, frames)])
    assert torch.allclose(got, want, atol=1e-5)


def shifted_features(dx: int, dy: int, *, h: int = 12, w: int = 16, c: int = 32, one_hot: bool = False) -> torch.Tensor:
    """Two frames of random (or one-hot: a channel per cell) features, frame 1 = frame 0 moved by
    (dx, dy) cells: exact correspondences."""
    g = torch.Generator().manual_seed(2)
    ch, cw = h + 2 * abs(dy), w + 2 * abs(dx)
    base = torch.eye(ch * cw).reshape(ch * cw, ch, cw) if one_hot else torch.randn(c, ch, cw, generator=g)
    oy, ox = abs(dy), abs(dx)
    f0 = base[:, oy : oy + h, ox : ox + w]
    f1 = base[:, oy - dy : oy - dy + h, ox - dx : ox - dx + w]
    return torch.stack([f0, f1]).unsqueeze(0)  # [1, 2, C, h, w]


@pytest.mark.parametrize("weighting, one_hot", [("softmax", False), ("cosine", True)])
def test_correspondence_loss_is_near_zero_for_exact_features_and_large_for_wrong_targets(weighting, one_hot):
    # Eq. 3's raw cosine weights average every cell of the window that is not orthogonal to
    # the query, so it is exact for distinctive features (one-hot), as trained ones become;
    # the sharpened softmax is near-exact for random ones too.
    dx, dy = 3, -2
    feats = shifted_features(dx, dy, one_hot=one_hot)
    # Pixel centres of feature cells (8 px per cell on the 96x128 image) that stay inside after the shift.
    qx = torch.tensor([3.5, 27.5, 51.5, 75.5, 99.5]) * 1.0
    qy = torch.tensor([27.5, 35.5, 43.5, 51.5, 59.5]) * 1.0 - 8.0
    query = torch.stack([qx, qy], dim=1).unsqueeze(0)
    target = query + torch.tensor([dx * 8.0, dy * 8.0])
    k = query.shape[1]
    common = dict(query_frame=torch.zeros(1, k, dtype=torch.long), target_frame=torch.ones(1, k, dtype=torch.long),
                  valid=torch.ones(1, k, dtype=torch.bool), image_size=(96, 128))
    good = correspondence_loss(feats, query_xy=query, target_xy=target, weighting=weighting, **common)
    bad = correspondence_loss(feats, query_xy=query, target_xy=target + 24.0, weighting=weighting, **common)
    assert good.item() < 1e-5
    assert bad.item() > 5e-3  # 24 px off on a 128 x 96 frame: r = 0.38 and 0.50, Huber ~ delta * r


def test_correspondence_loss_without_valid_pairs_is_zero_and_differentiable():
    feats = torch.randn(1, 2, 8, 4, 4, requires_grad=True)
    z = torch.zeros(1, 3, dtype=torch.long)
    loss = correspondence_loss(feats, query_frame=z, query_xy=torch.zeros(1, 3, 2), target_frame=z + 1,
                               target_xy=torch.zeros(1, 3, 2), valid=torch.zeros(1, 3, dtype=torch.bool),
                               image_size=(32, 32))
    loss.backward()
    assert loss.item() == 0.0 and feats.grad is not None


def test_correspondence_loss_at_the_image_corner_is_reachable():
    # Pixel (0, 0) lies 7/16 of a cell outside the first cell centre; the soft-argmax cannot
    # leave the grid, so the target is clamped onto it as the query is, and exact features
    # give (almost) no loss there.
    feats = shifted_features(0, 0, one_hot=True)
    corner = torch.zeros(1, 1, 2)
    loss = correspondence_loss(feats, query_frame=torch.zeros(1, 1, dtype=torch.long), query_xy=corner,
                               target_frame=torch.ones(1, 1, dtype=torch.long), target_xy=corner,
                               valid=torch.ones(1, 1, dtype=torch.bool), image_size=(96, 128))
    assert loss.item() < 1e-5
