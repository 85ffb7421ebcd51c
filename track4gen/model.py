"""Stable Video Diffusion for Track4Gen: finding and loading the base model, the UNet that owns
the tracking head, the training wrapper, and which parameters train.

Expected layout (stable-video-diffusion-img2vid-xt): unet/, vae/, image_encoder/,
feature_extractor/ (scheduler/ and model_index.json too, for sampling). Weights may be the
plain files or only the fp16 variant (`*.fp16.safetensors`), which is then picked up.
`--pretrained` is a local folder or a Hub repo id, resolved through the Hugging Face cache
(downloaded when online, as diffusers' from_pretrained does).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from track4gen.refiner import HeadHook, TrackingHead, attach_head, hook_module, hooked_channels

DEFAULT_PRETRAINED = "stabilityai/stable-video-diffusion-img2vid-xt"
# Table 1's models: Track4Gen; "w/o refiner" (L_corr on the raw hooked features, no zero conv,
# Fig. 10 bottom); "finetuned SVD" (lambda = 0, no head: plain fine-tuning on the same data).
VARIANTS = ("track4gen", "no-refiner", "finetune")
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


def _hub_error(repo: str, why: str) -> FileNotFoundError:
    from huggingface_hub import constants

    return FileNotFoundError(
        f"--pretrained {repo}: {why} (Hugging Face cache: {constants.HF_HUB_CACHE}). The model is gated: "
        f"accept its licence at https://huggingface.co/{repo}, run `hf auth login` (or set HF_TOKEN), then "
        f"`hf download {repo}` on a machine with network; or pass --pretrained DIR with a local copy"
    )


def _hub_patterns(variant: str | None) -> list[str]:
    """The files a diffusers load of SVD reads (not the repo's original .safetensors checkpoints)."""
    weights = ["*/*.fp16.safetensors"] if variant == "fp16" else [
        "unet/diffusion_pytorch_model*.safetensors", "vae/diffusion_pytorch_model*.safetensors",
        "image_encoder/model*.safetensors"]
    return ["model_index.json", "*/*.json", "*/*.txt", *weights]


def looks_like_repo_id(text: str) -> bool:
    """True for a Hub repo id ("owner/name"), False for what can only be a local path."""
    return text.count("/") == 1 and not text.startswith((".", "/", "~")) and not Path(text).suffix


def resolve_pretrained(pretrained: str | os.PathLike, *, variant: str | None = None) -> Path:
    """A local model folder for `pretrained`: the folder itself, or a Hub repo id's snapshot.

    Hub ids go through huggingface_hub's cache (HF_HOME, HF_HUB_OFFLINE and HF_TOKEN apply),
    downloading what is missing when online. Failures are one line that says what to do.
    """
    path = Path(pretrained).expanduser()
    if path.is_dir():
        check_layout(path)
        return path
    text = str(pretrained)
    if not looks_like_repo_id(text):
        raise FileNotFoundError(
            f"--pretrained {text}: no such model folder (give a local stable-video-diffusion-img2vid-xt "
            f"folder or a Hub repo id such as {DEFAULT_PRETRAINED})"
        )
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        local = Path(snapshot_download(text, allow_patterns=_hub_patterns(variant)))
    except GatedRepoError as exc:
        raise _hub_error(text, "access to this gated repo is not granted to your token") from exc
    except RepositoryNotFoundError as exc:
        raise _hub_error(text, "no such Hub repo, or it is gated and you are not logged in") from exc
    except LocalEntryNotFoundError as exc:
        why = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else "the Hub cannot be reached"
        raise _hub_error(text, f"not in the Hugging Face cache and {why}") from exc
    except OSError as exc:  # connection errors, partial downloads
        raise _hub_error(text, f"download failed ({type(exc).__name__})") from exc
    check_layout(local)
    return local


def load_components(
    pretrained: str | os.PathLike,
    *,
    variant: str | None = None,
    dtype: torch.dtype = torch.float32,
) -> SVDComponents:
    """UNet (a `Track4GenUNet`, with its head if the folder has one), VAE, CLIP image encoder
    and image processor from `pretrained` (a folder or Hub id, see `resolve_pretrained`), in `dtype`."""
    from diffusers import AutoencoderKLTemporalDecoder
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    from track4gen.unet import Track4GenUNet

    path = resolve_pretrained(pretrained, variant=variant)
    source = str(path)
    variant = resolve_variant(path, variant=variant)
    common = {"local_files_only": True, "variant": variant}
    # Cast after loading rather than through from_pretrained's dtype argument, whose name
    # changed across diffusers versions (torch_dtype -> dtype).
    return SVDComponents(
        unet=Track4GenUNet.from_pretrained(source, subfolder="unet", **common).to(dtype),
        vae=AutoencoderKLTemporalDecoder.from_pretrained(source, subfolder="vae", **common).to(dtype),
        image_encoder=CLIPVisionModelWithProjection.from_pretrained(source, subfolder="image_encoder", **common).to(dtype),
        feature_extractor=CLIPImageProcessor.from_pretrained(source, subfolder="feature_extractor", local_files_only=True),
    )


def tracking_head(unet: nn.Module) -> TrackingHead | None:
    """The tracking head a UNet owns (`unet.tracking_head`), or None."""
    head = getattr(unet, "tracking_head", None)
    return head if isinstance(head, TrackingHead) else None


def add_tracking_head(unet: nn.Module, head: TrackingHead):
    """Make `unet` own `head`: a registered submodule, hooked, recorded in its config; returns the UNet.

    A plain UNetSpatioTemporalConditionModel becomes a `Track4GenUNet` in place (its class is
    swapped; no weights are copied), so that `save_pretrained`/`from_pretrained` keep the head.
    """
    from track4gen.unet import HEAD_CONFIG_KEY, Track4GenUNet

    if tracking_head(unet) is not None:
        raise ValueError("this UNet already owns a tracking head; remove_tracking_head(unet) first")
    if not isinstance(unet, Track4GenUNet):
        from diffusers import UNetSpatioTemporalConditionModel

        if type(unet) is not UNetSpatioTemporalConditionModel:
            raise TypeError(f"add_tracking_head: expected a UNetSpatioTemporalConditionModel, got {type(unet).__name__}")
        unet.__class__ = Track4GenUNet
    attach_head(unet, head)
    unet.add_module("tracking_head", head)
    unet.register_to_config(**{HEAD_CONFIG_KEY: head.config_dict()})
    return unet


def remove_tracking_head(unet: nn.Module) -> TrackingHead | None:
    """Undo `add_tracking_head` (the UNet runs as the plain model again); returns the head."""
    from track4gen.unet import HEAD_CONFIG_KEY

    head = tracking_head(unet)
    if head is None:
        return None
    hooks = hook_module(unet)._forward_hooks
    for key in [k for k, h in hooks.items() if isinstance(h, HeadHook)]:
        del hooks[key]
    del unet.tracking_head
    unet.register_to_config(**{HEAD_CONFIG_KEY: None})
    return head


def make_head(unet: nn.Module, *, variant: str) -> TrackingHead | None:
    """The head a training variant needs on this UNet (None for "finetune")."""
    if variant not in VARIANTS:
        raise ValueError(f"variant: expected one of {VARIANTS}, got {variant!r}")
    if variant == "finetune":
        return None
    return TrackingHead(hooked_channels(unet), refine=variant == "track4gen")


class Track4GenModel(nn.Module):
    """The training view of a head-owning UNet: forward returns (UNet output [B, F, 4, h, w],
    hooked features [B, F, C, h', w'] or None when the UNet has no head).

    `unet` and `head` are attributes (checkpoints read them); the head is also `unet.tracking_head`.
    """

    def __init__(self, unet: nn.Module, head: TrackingHead | None = None) -> None:
        super().__init__()
        if head is not None:
            add_tracking_head(unet, head)
        self.unet = unet

    @property
    def head(self) -> TrackingHead | None:
        """unet.tracking_head (a property, so the head is registered once: in the UNet)."""
        return tracking_head(self.unet)

    def forward(self, sample, timestep, encoder_hidden_states, added_time_ids):
        out = self.unet(sample, timestep, encoder_hidden_states=encoder_hidden_states,
                        added_time_ids=added_time_ids, return_dict=False)[0]
        if self.head is None:
            return out, None
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
        if name.startswith("tracking_head."):
            continue  # the head trains whenever it exists; see make_head
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
