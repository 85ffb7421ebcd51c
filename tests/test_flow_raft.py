"""RAFT backend with randomly initialised weights (no pretrained weights can be downloaded in
CI): loading through --raft-weights, shapes, padding, batching, and pair directions, each
checked against torchvision's own RAFT.forward."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision.models.optical_flow import raft_large, raft_small

from trackprep.core.types import Clip
from trackprep.flow import FlowSetupError, RaftEstimator, make_estimator
from trackprep.flow.raft import frames_to_raft_input, min_input_size, pad_amounts

ITERS = 2  # few refinement steps keep the CPU tests fast; the code path is the same as 24


@pytest.fixture(scope="module")
def small_weights(tmp_path_factory):
    torch.manual_seed(0)
    net = raft_small(weights=None).eval()
    path = tmp_path_factory.mktemp("raft") / "raft_small_random.pth"
    torch.save(net.state_dict(), path)
    return path, net


def textured_clip(num_frames: int, height: int, width: int, *, shift: tuple[int, int] = (2, 1), seed: int = 0) -> Clip:
    """A smooth random texture translated by `shift` (dx, dy) pixels per frame."""
    rng = np.random.default_rng(seed)
    dx, dy = shift
    big = rng.random((height + abs(dy) * num_frames + 8, width + abs(dx) * num_frames + 8, 3))
    big = F.avg_pool2d(torch.from_numpy(big).permute(2, 0, 1)[None], 5, stride=1, padding=2)[0].permute(1, 2, 0).numpy()
    big = (255 * (big - big.min()) / (big.max() - big.min())).astype(np.uint8)
    frames = np.stack([big[4 + t * dy : 4 + t * dy + height, 4 + t * dx : 4 + t * dx + width] for t in range(num_frames)])
    # content moves by +shift: frame t+1 at x shows what frame t showed at x + shift, so flip the crop direction
    frames = frames[::-1].copy()
    t = num_frames
    return Clip("tex", frames, np.zeros((t, height, width), np.uint8), np.zeros(t, bool))


def reference_flow(net, clip: Clip, a: int, b: int, *, iters: int) -> torch.Tensor:
    """torchvision's RAFT.forward on one pair, padded and cropped by hand: [2, H, W]."""
    h, w = clip.size
    left, right, top, bottom = pad_amounts(h, w, minimum=min_input_size(net))
    x = frames_to_raft_input(clip.frames[[a, b]], device=torch.device("cpu"))
    x = F.pad(x, (left, right, top, bottom), mode="replicate")
    with torch.inference_mode():
        out = net(x[:1], x[1:], num_flow_updates=iters)[-1]
    return out[0, :, top : top + h, left : left + w]


@pytest.mark.parametrize("size", [(321, 577), (320, 577), (321, 576), (320, 576), (64, 96)])
def test_pad_amounts_make_both_sides_divisible_and_split_evenly(size):
    h, w = size
    left, right, top, bottom = pad_amounts(h, w, minimum=128)
    assert (h + top + bottom) % 8 == 0 and (w + left + right) % 8 == 0
    assert h + top + bottom >= 128 and w + left + right >= 128
    assert 0 <= right - left <= 1 and 0 <= bottom - top <= 1
    # no more padding than needed, on either side (torchvision's own check only tests the height)
    assert top + bottom < 8 or h < 128
    assert left + right < 8 or w < 128


def test_shapes_and_padding_round_trip_at_321x577_match_torchvision(small_weights):
    path, net = small_weights
    clip = textured_clip(2, 321, 577)
    est = make_estimator("raft", raft_model="small", raft_weights=path, iters=ITERS, device="cpu")
    flow = est.estimate(clip)
    assert flow.forward.shape == (1, 2, 321, 577) and flow.backward.shape == (1, 2, 321, 577)
    assert flow.forward.dtype == torch.float32 and flow.forward.device.type == "cpu"
    assert torch.isfinite(flow.forward).all() and torch.isfinite(flow.backward).all()
    # the padded-then-cropped output is torchvision's forward on the same pair, pixel for pixel
    torch.testing.assert_close(flow.forward[0], reference_flow(net, clip, 0, 1, iters=ITERS), rtol=0, atol=1e-4)
    torch.testing.assert_close(flow.backward[0], reference_flow(net, clip, 1, 0, iters=ITERS), rtol=0, atol=1e-4)


def test_batched_equals_per_pair(small_weights):
    path, _ = small_weights
    clip = textured_clip(4, 128, 136)
    one = RaftEstimator(model="small", weights=path, iters=ITERS, batch_size=1, device="cpu").estimate(clip)
    for bs in (3,):  # an odd size splits a forward/backward couple across batches
        many = RaftEstimator(model="small", weights=path, iters=ITERS, batch_size=bs, device="cpu").estimate(clip)
        torch.testing.assert_close(many.forward, one.forward, rtol=0, atol=1e-4)
        torch.testing.assert_close(many.backward, one.backward, rtol=0, atol=1e-4)
    assert one.forward.abs().mean() > 0.1  # random RAFT still moves pixels: the comparison is not 0 == 0


def test_forward_and_backward_are_not_swapped(small_weights):
    path, net = small_weights
    clip = textured_clip(2, 128, 136, shift=(3, 0))
    swapped = Clip("swapped", clip.frames[::-1].copy(), clip.masks, clip.has_mask)
    est = RaftEstimator(model="small", weights=path, iters=ITERS, device="cpu")
    a, b = est.estimate(clip), est.estimate(swapped)
    # backward of (A, B) is forward of (B, A) and vice versa, and forward is RAFT(A -> B)
    torch.testing.assert_close(a.backward, b.forward, rtol=0, atol=1e-4)
    torch.testing.assert_close(a.forward, b.backward, rtol=0, atol=1e-4)
    torch.testing.assert_close(a.forward[0], reference_flow(net, clip, 0, 1, iters=ITERS), rtol=0, atol=1e-4)
    assert not torch.allclose(a.forward, a.backward, atol=1e-3)


def test_raft_large_weights_load_and_run(tmp_path):
    torch.manual_seed(1)
    net = raft_large(weights=None).eval()
    path = tmp_path / "raft_large_random.pth"
    torch.save(net.state_dict(), path)
    est = make_estimator("raft", raft_weights=path, iters=1, device="cpu")
    est.check_ready()
    assert est.weights_source == "explicit" and est.config()["raft_model"] == "large"
    clip = textured_clip(2, 128, 128)
    flow = est.estimate(clip)
    torch.testing.assert_close(flow.forward[0], reference_flow(net, clip, 0, 1, iters=1), rtol=0, atol=1e-4)


def test_small_frames_are_padded_up_to_the_pyramid_minimum(small_weights):
    path, _ = small_weights
    flow = RaftEstimator(model="small", weights=path, iters=1, device="cpu").estimate(textured_clip(2, 64, 96))
    assert flow.forward.shape == (1, 2, 64, 96) and torch.isfinite(flow.forward).all()


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"raft_model": "medium"}, "raft_model"),
        ({"iters": 0}, "iters"),
        ({"batch_size": 0}, "batch_size"),
        ({"half": "fp8"}, "half"),
    ],
)
def test_bad_options_are_refused_with_the_value(kwargs, fragment):
    with pytest.raises(FlowSetupError, match=fragment):
        make_estimator("raft", **kwargs)


def test_half_precision_off_cuda_is_refused_at_check_ready(small_weights):
    est = make_estimator("raft", raft_model="small", raft_weights=small_weights[0], device="cpu", half=True)
    with pytest.raises(FlowSetupError, match="CUDA"):
        est.check_ready()


def test_unknown_backend_and_unavailable_device():
    with pytest.raises(FlowSetupError, match="'farneback'"):
        make_estimator("farneback")
    for bad in ("gpu", "cuda:x", "meta"):
        with pytest.raises(FlowSetupError, match=rf"device: expected 'auto', 'cpu', .* got '{bad}'"):
            make_estimator("raft", device=bad).check_ready()
    if not torch.cuda.is_available():
        with pytest.raises(FlowSetupError, match="CUDA is not available"):
            make_estimator("raft", device="cuda").check_ready()


def test_estimator_pickles_without_its_model_and_reloads(small_weights):
    import pickle

    path, _ = small_weights
    est = RaftEstimator(model="small", weights=path, iters=1, device="cpu")
    clip = textured_clip(2, 128, 128)
    before = est.estimate(clip)
    copy = pickle.loads(pickle.dumps(est))
    assert copy._net is None
    torch.testing.assert_close(copy.estimate(clip).forward, before.forward, rtol=0, atol=1e-5)
