"""Track4Gen's tracking head: a refiner on one decoder feature map plus a zero convolution (Sec. 3.3).

The head hooks the output h of `unet.up_blocks[2].upsamplers[0]` (the upsampler of the third
decoder block; 640 channels in SVD). The correspondence loss reads the refined features R(h);
the UNet carries on with h + zero_conv(stop_gradient(R(h))). Because of the stop-gradient the
diffusion loss reaches the zero conv but never the refiner, and the correspondence loss
reaches the refiner and, through h, the UNet blocks before the hook.
"""

from __future__ import annotations

import torch
from torch import nn

REFINER_LAYERS = 8  # Sec. 3.3: 8 conv layers, kernel 3, stride 1, padding 1


def hook_module(unet: nn.Module) -> nn.Module:
    """The module whose output the head refines: `up_blocks[2].upsamplers[0]`."""
    blocks = getattr(unet, "up_blocks", None)
    if blocks is None or len(blocks) < 3 or getattr(blocks[2], "upsamplers", None) is None:
        n = len(blocks) if blocks is not None else 0
        raise ValueError(
            f"Track4Gen hooks unet.up_blocks[2].upsamplers[0]; this UNet has {n} up blocks "
            "and needs at least 3 with an upsampler on the third (4 levels, as SVD)"
        )
    return blocks[2].upsamplers[0]


def hooked_channels(unet: nn.Module) -> int:
    """Channel count of the hooked feature map (640 for SVD)."""
    up = hook_module(unet)
    return int(up.out_channels)


class Refiner(nn.Sequential):
    """8 convs at constant width: 7 x (Conv -> BatchNorm -> ReLU), then Conv -> ReLU.

    Convolutions start as Dirac kernels with zero bias, so the stack starts as close to the
    identity as the ReLUs (and BatchNorm's standardisation) allow.
    """

    def __init__(self, channels: int, *, num_layers: int = REFINER_LAYERS):
        if channels < 1 or num_layers < 1:
            raise ValueError(f"Refiner: channels and num_layers must be >= 1, got {channels}, {num_layers}")
        layers: list[nn.Module] = []
        for i in range(num_layers):
            layers.append(nn.Conv2d(channels, channels, kernel_size=3, stride=1, padding=1))
            if i < num_layers - 1:
                layers.append(nn.BatchNorm2d(channels))
            layers.append(nn.ReLU())
        super().__init__(*layers)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.dirac_(m.weight)
                nn.init.zeros_(m.bias)


class TrackingHead(nn.Module):
    """Refiner + zero conv. While attached, `features` holds the last R(h), [B*F, C, h, w]."""

    def __init__(self, channels: int, *, num_layers: int = REFINER_LAYERS):
        super().__init__()
        self.refiner = Refiner(channels, num_layers=num_layers)
        # 1x1 zero conv as in ControlNet: the pretrained UNet's output is unchanged at step 0.
        self.zero_conv = nn.Conv2d(channels, channels, kernel_size=1)
        nn.init.zeros_(self.zero_conv.weight)
        nn.init.zeros_(self.zero_conv.bias)
        self.features: torch.Tensor | None = None

    def inject(self, h: torch.Tensor) -> torch.Tensor:
        refined = self.refiner(h)
        self.features = refined
        return h + self.zero_conv(refined.detach())

    def pop_features(self) -> torch.Tensor:
        """The refined features of the last forward pass; cleared so a stale map is never reused."""
        if self.features is None:
            raise RuntimeError("TrackingHead: no refined features; run the UNet forward with the head attached first")
        f, self.features = self.features, None
        return f


def attach_head(unet: nn.Module, head: TrackingHead) -> torch.utils.hooks.RemovableHandle:
    """Register `head` on the UNet's hook point; returns the handle (call .remove() to detach)."""
    module = hook_module(unet)
    channels = int(module.out_channels)
    got = head.zero_conv.in_channels
    if got != channels:
        raise ValueError(f"TrackingHead has {got} channels but unet.up_blocks[2].upsamplers[0] outputs {channels}")
    return module.register_forward_hook(lambda _mod, _inp, out: head.inject(out))
