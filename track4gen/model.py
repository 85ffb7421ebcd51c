"""Loading Stable Video Diffusion from a local diffusers folder, and the Track4Gen model around its UNet.

Expected layout (stable-video-diffusion-img2vid-xt): unet/, vae/, image_encoder/,
feature_extractor/ (scheduler/ and model_index.json too, for sampling). Weights may be the
plain files or only the fp16 variant (`*.fp16.safetensors`), which is then picked up.
The Hub is never contacted unless `allow_hub` is set.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from track4gen.refiner import TrackingHead, attach_head, hooked_channels

SUBFOLDERS = ("unet", "vae", "image_encoder", "feature_extractor")


@dataclass
class SVDComponents:
    unet: nn.Module  # UNetSpatioTemporalConditionModel
    vae: nn.Module  # AutoencoderKLTemporalDecoder
    image_encoder: nn.Module  # CLIPVisionModelWithProjection
    feature_extractor: object  # CLIPImageProcessor


def _fp16_only(folder: Path) -> bool:
    """True when `folder` (unet/, vae/, image_encoder/) holds only fp16-variant weights."""
    files = [p.name for p in folder.glob("*") if p.suffix in (".safetensors", ".bin")]
    return bool(files) and all(".fp16." in name for name in files)


def check_layout(path: Path) -> None:
    missing = [s for s in SUBFOLDERS if not (path / s).is_dir()]
    if missing:
        raise FileNotFoundError(
            f"{path}: not a Stable Video Diffusion folder; missing {', '.join(s + '/' for s in missing)} "
            f"(expected the stable-video-diffusion-img2vid-xt layout: {', '.join(s + '/' for s in SUBFOLDERS)})"
        )


def resolve_variant(path: str | os.PathLike, *, variant: str | None = None) -> str | None:
    """The weight variant to load: `variant` if given, "fp16" when only fp16 files exist, else None."""
    if variant is not None:
        return variant
    p = Path(path)
    return "fp16" if p.is_dir() and _fp16_only(p / "unet") else None


def load_components(
    pretrained: str | os.PathLike,
    *,
    variant: str | None = None,
    allow_hub: bool = False,
    dtype: torch.dtype = torch.float32,
) -> SVDComponents:
    """UNet, VAE, CLIP image encoder and image processor from `pretrained`, in `dtype`."""
    from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    path = Path(pretrained)
    if path.is_dir():
        check_layout(path)
        source = str(path)
    elif allow_hub:
        source = str(pretrained)  # a Hub repo id
    else:
        raise FileNotFoundError(
            f"{path}: no such model folder (give a local stable-video-diffusion-img2vid-xt folder, "
            "or pass --allow-hub to download a Hub repo id)"
        )
    variant = resolve_variant(path, variant=variant)
    local = not allow_hub
    common = {"local_files_only": local, "variant": variant, "torch_dtype": dtype}
    return SVDComponents(
        unet=UNetSpatioTemporalConditionModel.from_pretrained(source, subfolder="unet", **common),
        vae=AutoencoderKLTemporalDecoder.from_pretrained(source, subfolder="vae", **common),
        image_encoder=CLIPVisionModelWithProjection.from_pretrained(source, subfolder="image_encoder", **common),
        feature_extractor=CLIPImageProcessor.from_pretrained(
            source, subfolder="feature_extractor", local_files_only=local
        ),
    )


class Track4GenUNet(nn.Module):
    """The SVD UNet with the tracking head attached; one module so DDP and checkpoints see both.

    forward returns (UNet output [B, F, 4, h, w], refined features [B, F, C, h', w']).
    """

    def __init__(self, unet: nn.Module, head: TrackingHead | None = None) -> None:
        super().__init__()
        self.unet = unet
        self.head = head if head is not None else TrackingHead(hooked_channels(unet))
        self._handle = attach_head(self.unet, self.head)

    def detach_head(self) -> None:
        """Remove the hook: the UNet runs as the plain pretrained model again."""
        self._handle.remove()

    def forward(self, sample, timestep, encoder_hidden_states, added_time_ids):
        out = self.unet(sample, timestep, encoder_hidden_states=encoder_hidden_states,
                        added_time_ids=added_time_ids, return_dict=False)[0]
        feats = self.head.pop_features()
        b, f = sample.shape[:2]
        return out, feats.reshape(b, f, *feats.shape[1:])


TRAINABLE_CHOICES = ("temporal", "spatial-temporal", "all")


def select_trainable(unet: nn.Module, *, which: str = "temporal") -> list[str]:
    """Freeze the UNet except the chosen part; returns the names of the trainable parameters.

    "temporal": the temporal transformer blocks only (Track4Gen's default, Sec. 4.1);
    "spatial-temporal": spatial and temporal transformer blocks (the ablation);
    "all": every UNet parameter.
    """
    if which not in TRAINABLE_CHOICES:
        raise ValueError(f"trainable: expected one of {TRAINABLE_CHOICES}, got {which!r}")
    names = []
    for name, p in unet.named_parameters():
        if which == "temporal":
            on = "temporal_transformer_blocks" in name
        elif which == "spatial-temporal":
            on = "transformer_blocks" in name  # matches transformer_blocks and temporal_transformer_blocks
        else:
            on = True
        p.requires_grad_(on)
        if on:
            names.append(name)
    if not names:
        raise ValueError(f"trainable={which!r} selects no UNet parameter; is this an SVD UNet?")
    return names
