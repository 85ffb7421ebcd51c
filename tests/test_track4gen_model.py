"""The tracking head on the tiny SVD UNet: refiner layout and ReLU start, zero-conv identity, gradient
routing, the UNet owning the head (to, save/load, copies), loading base models."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from track4gen.losses import correspondence_loss, diffusion_loss
from track4gen.model import (
    SUBFOLDERS,
    Track4GenModel,
    add_tracking_head,
    load_components,
    make_head,
    remove_tracking_head,
    select_trainable,
    tracking_head,
)
from track4gen.refiner import Refiner, TrackingHead, hook_module
from track4gen.tiny_model import build_tiny_pipeline, make_tiny_model
from train_fixtures import one_thread  # noqa: F401 (autouse fixture)

B, F, H, W = 1, 4, 64, 96  # latents 8 x 12




@pytest.fixture(scope="module")
def pipe():
    return build_tiny_pipeline(seed=0)


def unet_inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, F, 8, H // 8, W // 8, generator=g), torch.tensor([0.25]),
            torch.randn(B, 1, 32, generator=g), torch.tensor([[6.0, 127.0, 0.02]]))


def test_refiner_layout_and_dirac_init():
    r = Refiner(16)
    convs = [m for m in r if isinstance(m, nn.Conv2d)]
    assert len(convs) == 8 and all(c.kernel_size == (3, 3) and c.stride == (1, 1) and c.padding == (1, 1) for c in convs)
    kinds = [type(m).__name__ for m in r]
    assert kinds == ["Conv2d", "BatchNorm2d", "ReLU"] * 7 + ["Conv2d", "ReLU"]
    # Dirac kernels: in eval mode with fresh BN statistics the stack is ReLU(x) up to BN's epsilon.
    r.eval()
    x = torch.randn(2, 16, 5, 7)
    assert torch.allclose(r(x), torch.relu(x) / (1 + 1e-5) ** 3.5, atol=1e-5)


def hooked_output(unet, x, t, emb, ids) -> torch.Tensor:
    """The raw map h at the hook point for these inputs (read with a throwaway hook)."""
    seen = []
    handle = hook_module(unet).register_forward_hook(lambda _m, _i, out: seen.append(out.detach().clone()))
    try:
        with torch.no_grad():
            unet(x, t, encoder_hidden_states=emb, added_time_ids=ids)
    finally:
        handle.remove()
    return seen[0]


def test_head_hooks_the_third_decoder_upsampler_with_its_channel_count(pipe):
    assert hook_module(pipe.unet) is pipe.unet.up_blocks[2].upsamplers[0]
    model = Track4GenModel(pipe.unet, make_head(pipe.unet, variant="track4gen"))
    try:
        assert model.head.zero_conv.in_channels == pipe.unet.up_blocks[2].upsamplers[0].out_channels == 64
        assert tracking_head(pipe.unet) is model.head and pipe.unet.tracking_head is model.head
        assert pipe.unet.config["track4gen_head"] == {"channels": 64, "num_layers": 8, "refine": True,
                                                      "hook": "up_blocks.2.upsamplers.0"}
        with pytest.raises(ValueError, match="already owns"):
            add_tracking_head(pipe.unet, TrackingHead(64))
    finally:
        remove_tracking_head(pipe.unet)
    assert tracking_head(pipe.unet) is None and not pipe.unet.up_blocks[2].upsamplers[0]._forward_hooks
    assert make_head(pipe.unet, variant="finetune") is None
    tap = make_head(pipe.unet, variant="no-refiner")
    assert tap.refiner is None and tap.zero_conv is None and not list(tap.parameters())


def test_refiner_starts_as_relu_of_real_hooked_features_in_train_mode(pipe):
    # Sec. 3.3: the refiner starts as an identity; with BatchNorm in train mode and a final ReLU
    # the closest is ReLU(h), reached by initialising each BatchNorm from the first batch.
    unet = pipe.unet
    x, t, emb, ids = unet_inputs(3)
    h = hooked_output(unet, x, t, emb, ids)
    assert 0.2 < (h < 0).float().mean().item() < 0.8  # real features: many negatives to drop
    with torch.no_grad():
        plain = unet(x, t, encoder_hidden_states=emb, added_time_ids=ids).sample
    model = Track4GenModel(unet, TrackingHead(64))
    try:
        model.train()
        out, feats = model(x, t, emb, ids)  # the first training forward: BatchNorm initialised here
        refined = feats.reshape(h.shape).detach()
        rel = ((refined - h.relu()).norm() / h.relu().norm()).item()
        assert rel < 1e-4, rel
        assert torch.equal(out.detach(), plain)  # and the zero conv leaves the UNet's output as it was
        assert bool(model.head.initialized)
        # Eval mode starts at ReLU(h) too (running statistics set from the same batch) ...
        model.eval()
        with torch.no_grad():
            _, feats_eval = model(x, t, emb, ids)
        assert ((feats_eval.reshape(h.shape) - h.relu()).norm() / h.relu().norm()).item() < 1e-3
        # ... while without the data-dependent init BatchNorm standardises every channel.
        remove_tracking_head(unet)
        head = TrackingHead(64)
        head.initialized.fill_(True)
        fresh = Track4GenModel(unet, head).train()
        _, raw = fresh(x, t, emb, ids)
        assert ((raw.reshape(h.shape).detach() - h.relu()).norm() / h.relu().norm()).item() > 0.5
    finally:
        remove_tracking_head(unet)
        unet.train(False)


def test_zero_conv_at_zero_leaves_the_unet_output_unchanged(pipe):
    unet = pipe.unet
    x, t, emb, ids = unet_inputs()
    with torch.no_grad():
        plain = unet(x, t, encoder_hidden_states=emb, added_time_ids=ids).sample
        model = Track4GenModel(unet, TrackingHead(64))
        try:
            hooked, feats = model(x, t, emb, ids)
            assert torch.equal(hooked, plain)
            assert feats.shape == (B, F, 64, H // 8, W // 8)
            model.head.zero_conv.weight.normal_(std=0.1)
            changed, _ = model(x, t, emb, ids)
            assert (changed - plain).abs().max().item() > 1e-3
        finally:
            remove_tracking_head(unet)


def test_the_unet_owns_the_head_through_to_copies_and_save_load(pipe, tmp_path):
    import copy

    from diffusers import UNetSpatioTemporalConditionModel

    from track4gen.unet import Track4GenUNet

    unet = copy.deepcopy(pipe.unet)
    head = TrackingHead(64)
    add_tracking_head(unet, head)
    with torch.no_grad():
        head.zero_conv.weight.normal_(std=0.1)
        head.refiner[0].bias.normal_(std=0.1)
    unet.eval()
    x, t, emb, ids = unet_inputs(4)
    with torch.no_grad():
        want = unet(x, t, encoder_hidden_states=emb, added_time_ids=ids).sample
        # A deep copy's hook drives the copy's own head.
        twin = copy.deepcopy(unet)
        twin.tracking_head.zero_conv.weight.zero_()
        assert torch.equal(unet(x, t, encoder_hidden_states=emb, added_time_ids=ids).sample, want)
        assert not torch.equal(twin(x, t, encoder_hidden_states=emb, added_time_ids=ids).sample, want)
        # .to() moves and casts the head with the UNet.
        unet.to(torch.float64)
        assert head.zero_conv.weight.dtype == torch.float64
        got64 = unet(x.double(), t.double(), encoder_hidden_states=emb.double(), added_time_ids=ids.double()).sample
        assert torch.allclose(got64.float(), want, atol=1e-5)
        unet.to(torch.float32)
    # save_pretrained / from_pretrained keep it; plain diffusers loads the UNet without it.
    unet.save_pretrained(tmp_path / "unet")
    again = Track4GenUNet.from_pretrained(tmp_path / "unet")
    assert tracking_head(again) is not None and not again.training
    plain = UNetSpatioTemporalConditionModel.from_pretrained(tmp_path / "unet")
    with torch.no_grad():
        assert torch.equal(again(x, t, encoder_hidden_states=emb, added_time_ids=ids).sample, want)
        without = plain(x, t, encoder_hidden_states=emb, added_time_ids=ids).sample
    assert not torch.equal(without, want)


def test_gradients_reach_the_zero_conv_from_the_diffusion_loss_and_the_refiner_from_the_correspondence_loss(pipe):
    unet = pipe.unet
    select_trainable(unet, which="temporal")
    model = Track4GenModel(unet, TrackingHead(64))
    try:
        x, t, emb, ids = unet_inputs(1)
        out, feats = model(x, t, emb, ids)
        sigma = torch.tensor([1.0])
        clean = torch.randn_like(out)
        diffusion_loss(out, x[:, :, :4], clean, sigma).backward(retain_graph=True)
        assert model.head.zero_conv.weight.grad.abs().sum().item() > 0
        assert all(p.grad is None for p in model.head.refiner.parameters())

        model.zero_grad(set_to_none=True)
        k = 16
        g = torch.Generator().manual_seed(2)
        xy = torch.rand(B, k, 2, generator=g) * torch.tensor([W - 1.0, H - 1.0])
        l_corr = correspondence_loss(
            feats, query_frame=torch.zeros(B, k, dtype=torch.long), query_xy=xy,
            target_frame=torch.ones(B, k, dtype=torch.long), target_xy=xy + 3.0,
            valid=torch.ones(B, k, dtype=torch.bool), image_size=(H, W),
        )
        l_corr.backward()
        refiner_grad = sum(p.grad.abs().sum().item() for p in model.head.refiner.parameters() if p.grad is not None)
        assert refiner_grad > 0
        assert model.head.zero_conv.weight.grad is None
        # The correspondence loss also reaches the UNet's temporal blocks before the hook.
        before = [p for n, p in unet.named_parameters() if p.requires_grad and n.startswith("down_blocks")]
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in before)
    finally:
        remove_tracking_head(unet)
        unet.requires_grad_(True)
        unet.zero_grad(set_to_none=True)


def test_trainable_selection(pipe):
    unet = pipe.unet
    try:
        temporal = select_trainable(unet, which="temporal")
        assert temporal and all("temporal_transformer_blocks" in n for n in temporal)
        both = select_trainable(unet, which="spatial-temporal")
        assert set(temporal) < set(both) and any(".transformer_blocks." in n for n in both)
        frozen = [n for n, p in unet.named_parameters() if not p.requires_grad]
        assert any("conv_in" in n for n in frozen)
        with pytest.raises(ValueError, match="temporal"):
            select_trainable(unet, which="everything")
    finally:
        unet.requires_grad_(True)


def test_loads_a_saved_tiny_model_and_its_fp16_variant(tmp_path, pipe):
    make_tiny_model(tmp_path / "plain")
    parts = load_components(tmp_path / "plain")
    sd = dict(pipe.unet.state_dict())
    assert all(torch.equal(v, sd[k]) for k, v in parts.unet.state_dict().items())
    assert parts.image_encoder.config.image_size == 224 and len(parts.unet.up_blocks) == 4

    pipe_fp16 = build_tiny_pipeline(seed=0)
    pipe_fp16.to(torch.float16)
    pipe_fp16.save_pretrained(tmp_path / "half", variant="fp16")
    half = load_components(tmp_path / "half")  # fp16-only files are picked up without being asked for
    assert next(half.unet.parameters()).dtype == torch.float32


def test_missing_model_folder_names_what_is_expected(tmp_path):
    (tmp_path / "unet").mkdir()
    with pytest.raises(FileNotFoundError, match="missing vae/, image_encoder/, feature_extractor/"):
        load_components(tmp_path)
    with pytest.raises(FileNotFoundError, match="nope: no such model folder"):
        load_components(tmp_path / "nope")
    assert SUBFOLDERS == ("unet", "vae", "image_encoder", "feature_extractor")


def test_head_refuses_a_wrong_channel_count(pipe):
    from track4gen.refiner import attach_head

    with pytest.raises(ValueError, match="64"):
        attach_head(pipe.unet, TrackingHead(32))


def test_a_head_saved_before_the_init_flag_loads_as_initialised():
    old = TrackingHead(16).state_dict()
    del old["initialized"]  # checkpoints written before the data-dependent init existed
    head = TrackingHead(16)
    head.load_state_dict(old, strict=True)
    assert bool(head.initialized)  # trained weights are never overwritten by a re-initialisation
    fresh = TrackingHead(16)
    assert not bool(fresh.initialized)
