"""Track4Gen losses against known answers: EDM constants, soft-argmax peaks, exact correspondences."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from track4gen.losses import (
    correspondence_loss,
    cost_volume,
    diffusion_loss,
    edm_scalings,
    image_to_feature,
    sample_sigmas,
    SOFTMAX_TEMPERATURE,
    scaled_radius,
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


def test_radius_is_35_on_the_paper_map_and_scales():
    assert scaled_radius(44, 81) == pytest.approx(35.0)
    assert scaled_radius(22, 40.5) == pytest.approx(17.5)


def test_image_to_feature_maps_pixel_grid_edges_and_centres():
    pts = torch.tensor([[-0.5, -0.5], [575.5, 319.5], [3.5, 3.5]])  # edges, and the centre of the first 8x8 block
    f = image_to_feature(pts, image_size=(320, 576), feature_size=(40, 72))
    assert torch.allclose(f, torch.tensor([[-0.5, -0.5], [71.5, 39.5], [0.0, 0.0]]))


def test_soft_argmax_finds_a_sharp_subpixel_peak():
    cost = peak(30, 40, 17.3, 11.6).unsqueeze(0)
    xy = soft_argmax(cost, radius=6.0)
    assert torch.allclose(xy[0], torch.tensor([17.3, 11.6]), atol=1e-3)


def test_soft_argmax_ignores_a_second_peak_outside_the_radius():
    cost = torch.maximum(peak(30, 40, 8.4, 10.2), peak(30, 40, 32.0, 20.0, height=0.97)).unsqueeze(0)
    xy = soft_argmax(cost, radius=6.0)
    assert torch.allclose(xy[0], torch.tensor([8.4, 10.2]), atol=1e-3)
    # Without the window the second mode drags the estimate towards the middle of the two.
    unwindowed = soft_argmax(cost, radius=100.0)
    assert unwindowed[0, 0].item() > 15.0


def test_soft_argmax_rejects_bad_parameters():
    with pytest.raises(ValueError, match="radius"):
        soft_argmax(torch.zeros(1, 4, 4), radius=0.0)


def test_cost_volume_equals_per_query_cosine_similarity():
    g = torch.Generator().manual_seed(1)
    maps = torch.randn(3, 16, 5, 7, generator=g)
    queries = torch.randn(6, 16, generator=g)
    frames = torch.tensor([0, 2, 1, 1, 0, 2])
    got = cost_volume(queries, maps, frames)
    want = torch.stack([F.cosine_similarity(q.view(16, 1, 1), maps[f], dim=0) for q, f in zip(queries, frames)])
    assert torch.allclose(got, want, atol=1e-5)


def shifted_features(dx: int, dy: int, *, h: int = 12, w: int = 16, c: int = 32) -> torch.Tensor:
    """Two frames of random features, frame 1 = frame 0 moved by (dx, dy) cells: exact correspondences."""
    g = torch.Generator().manual_seed(2)
    base = torch.randn(c, h + 2 * abs(dy), w + 2 * abs(dx), generator=g)
    oy, ox = abs(dy), abs(dx)
    f0 = base[:, oy : oy + h, ox : ox + w]
    f1 = base[:, oy - dy : oy - dy + h, ox - dx : ox - dx + w]
    return torch.stack([f0, f1]).unsqueeze(0)  # [1, 2, C, h, w]


def test_correspondence_loss_is_near_zero_for_exact_features_and_large_for_wrong_targets():
    dx, dy = 3, -2
    feats = shifted_features(dx, dy)
    # Pixel centres of feature cells (8 px per cell on the 96x128 image) that stay inside after the shift.
    qx = torch.tensor([3.5, 27.5, 51.5, 75.5, 99.5]) * 1.0
    qy = torch.tensor([27.5, 35.5, 43.5, 51.5, 59.5]) * 1.0 - 8.0
    query = torch.stack([qx, qy], dim=1).unsqueeze(0)
    target = query + torch.tensor([dx * 8.0, dy * 8.0])
    k = query.shape[1]
    common = dict(query_frame=torch.zeros(1, k, dtype=torch.long), target_frame=torch.ones(1, k, dtype=torch.long),
                  valid=torch.ones(1, k, dtype=torch.bool), image_size=(96, 128))
    good = correspondence_loss(feats, query_xy=query, target_xy=target, **common)
    bad = correspondence_loss(feats, query_xy=query, target_xy=target + 24.0, **common)
    assert good.item() < 0.02  # a small pull from the uniform background inside the window
    assert bad.item() > 2.0


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
    feats = shifted_features(0, 0)
    corner = torch.zeros(1, 1, 2)
    loss = correspondence_loss(feats, query_frame=torch.zeros(1, 1, dtype=torch.long), query_xy=corner,
                               target_frame=torch.ones(1, 1, dtype=torch.long), target_xy=corner,
                               valid=torch.ones(1, 1, dtype=torch.bool), image_size=(96, 128))
    assert loss.item() < 0.02
