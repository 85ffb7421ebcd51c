"""Track4Gen's tracking head: a refiner on one decoder feature map plus a zero convolution (Sec. 3.3).

The head hooks the output h of `unet.up_blocks[2].upsamplers[0]` (the upsampler of the third
decoder block; 640 channels in SVD). The correspondence loss reads the refined features R(h);
the UNet carries on with h + zero_conv(stop_gradient(R(h))). Because of the stop-gradient the
diffusion loss reaches the zero conv but never the refiner, and the correspondence loss
reaches the refiner and, through h, the UNet blocks before the hook.

Without a refiner (the "w/o refiner" ablation of Table 1 / Fig. 10 bottom) the head is a tap:
it records h for the correspondence loss and leaves the UNet's computation untouched.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn

REFINER_LAYERS = 8  # Sec. 3.3: 8 conv layers, kernel 3, stride 1, padding 1
HOOK_POINT = "up_blocks.2.upsamplers.0"


def hook_module(unet: nn.Module) -> nn.Module:
    """The module whose output the head refines: `up_blocks[2].upsamplers[0]`."""
    blocks = getattr(unet, "up_blocks", None)
    if blocks is None or len(blocks) < 3 or getattr(blocks[2], "upsamplers", None) is None:
        n = len(blocks) if blocks is not None else 0
        raise ValueError(
            f"Track4Gen hooks unet.{HOOK_POINT}; this UNet has {n} up blocks "
            "and needs at least 3 with an upsampler on the third (4 levels, as SVD)"
        )
    return blocks[2].upsamplers[0]


def hooked_channels(unet: nn.Module) -> int:
    """Channel count of the hooked feature map (640 for SVD)."""
    return int(hook_module(unet).out_channels)


def _mean_over_processes(t: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        t = t.clone()
        dist.all_reduce(t)
        t /= dist.get_world_size()
    return t


class Refiner(nn.Sequential):
    """8 convs at constant width: 7 x (Conv -> BatchNorm -> ReLU), then Conv -> ReLU.

    Convolutions start as Dirac kernels with zero bias. `initialize_from(h)` then sets each
    BatchNorm's affine (and running statistics) from the first batch, so that BatchNorm
    in train mode maps that batch to itself and R(h) = ReLU(h) at the first step, in train
    and in eval mode alike. Exact identity R(h) = h is impossible: the stack ends in a ReLU,
    so R(h) >= 0 while h is about half negative; ReLU(h) is the closest start there is.
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

    @torch.no_grad()
    def initialize_from(self, h: torch.Tensor) -> None:
        """Data-dependent init of every BatchNorm: gamma = sqrt(var + eps), beta = mean of its input.

        Layer by layer, because each BatchNorm sees the previous layers' output. Under
        data parallelism the statistics are averaged over processes, so every process starts
        from the same parameters (then R(h) = ReLU(h) holds for the pooled batch).
        """
        x = h.detach().float()
        with torch.autocast(device_type=x.device.type, enabled=False):
            for m in self:
                if isinstance(m, nn.BatchNorm2d):
                    mean = _mean_over_processes(x.mean(dim=(0, 2, 3)))
                    second = _mean_over_processes(x.square().mean(dim=(0, 2, 3)))
                    var = (second - mean.square()).clamp(min=0)
                    m.weight.copy_((var + m.eps).sqrt())
                    m.bias.copy_(mean)
                    m.running_mean.copy_(mean)
                    # The biased variance (the one train mode normalises with), so that eval
                    # mode also maps this batch to itself; later updates blend in PyTorch's
                    # unbiased estimates, a difference of 1 / (B F h w).
                    m.running_var.copy_(var)
                    # x is unchanged: BN(x) = x by construction.
                else:
                    x = m(x)


class TrackingHead(nn.Module):
    """Refiner + zero conv (or, with refine=False, a tap). While hooked, `features` holds the
    last R(h) (or h), [B*F, C, h, w], for the correspondence loss."""

    def __init__(self, channels: int, *, num_layers: int = REFINER_LAYERS, refine: bool = True):
        super().__init__()
        self.channels, self.num_layers, self.refine = int(channels), int(num_layers), bool(refine)
        if refine:
            self.refiner = Refiner(channels, num_layers=num_layers)
            # 1x1 zero conv as in ControlNet: the pretrained UNet's output is unchanged at step 0.
            self.zero_conv = nn.Conv2d(channels, channels, kernel_size=1)
            nn.init.zeros_(self.zero_conv.weight)
            nn.init.zeros_(self.zero_conv.bias)
            # Saved with the weights, so that resumed or loaded heads are never re-initialised.
            self.register_buffer("initialized", torch.tensor(False))
        else:
            self.refiner = None
            self.zero_conv = None
        self.features: torch.Tensor | None = None

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Heads saved before the `initialized` flag existed had been trained: never re-initialise them.
        if self.refiner is not None and prefix + "initialized" not in state_dict:
            state_dict[prefix + "initialized"] = torch.tensor(True)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def config_dict(self) -> dict[str, Any]:
        return {"channels": self.channels, "num_layers": self.num_layers, "refine": self.refine,
                "hook": HOOK_POINT}

    @classmethod
    def from_config_dict(cls, config: dict[str, Any]) -> "TrackingHead":
        try:
            return cls(int(config["channels"]), num_layers=int(config.get("num_layers", REFINER_LAYERS)),
                       refine=bool(config.get("refine", True)))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"tracking head config: expected {{'channels': int, 'num_layers': int, "
                             f"'refine': bool}}, got {config!r}") from exc

    def inject(self, h: torch.Tensor) -> torch.Tensor | None:
        if self.refiner is None:
            self.features = h
            return None  # a forward hook returning None leaves the output as it is
        if self.training and not bool(self.initialized):
            self.refiner.initialize_from(h)
            self.initialized.fill_(True)
        refined = self.refiner(h)
        self.features = refined
        return h + self.zero_conv(refined.detach())

    def pop_features(self) -> torch.Tensor:
        """The features of the last forward pass; cleared so a stale map is never reused."""
        if self.features is None:
            raise RuntimeError("TrackingHead: no features; run the UNet forward with the head attached first")
        f, self.features = self.features, None
        return f


class HeadHook:
    """The forward hook on the hooked module: hands its output to the head (a plain object, so
    that deep copies and pickles of the UNet carry it along with the head it points to)."""

    def __init__(self, head: TrackingHead) -> None:
        self.head = head

    def __call__(self, _module, _inputs, output):
        return self.head.inject(output)


def attach_head(unet: nn.Module, head: TrackingHead) -> torch.utils.hooks.RemovableHandle:
    """Register `head` on the UNet's hook point; returns the handle (call .remove() to detach).

    This only hooks; `track4gen.model.add_tracking_head` also makes the UNet own the head.
    """
    got = head.channels
    channels = hooked_channels(unet)
    if got != channels:
        raise ValueError(f"TrackingHead has {got} channels but unet.{HOOK_POINT} outputs {channels}")
    return hook_module(unet).register_forward_hook(HeadHook(head))
