"""Shareable Track4Gen models: a training run -> a self-contained diffusers folder, and one loader
for inference from either.

`track4gen export RUN --out DIR` (and the last step of every run, into RUN/model) writes

    DIR/model_index.json, scheduler/, vae/, image_encoder/, feature_extractor/   as the base SVD
    DIR/unet/       `save_pretrained` of a Track4GenUNet: the trained weights, and the head
                    (refiner + zero conv, tensors `tracking_head.*`) with its config
                    (`track4gen_head` in unet/config.json)
    DIR/track4gen.json   what was exported: variant, step, source run, training config

`load_pipeline(DIR)` returns a StableVideoDiffusionPipeline whose UNet owns the head, so
`.to()`, `save_pretrained`, CPU offload and sampling keep it. With track4gen installed,
diffusers' own `StableVideoDiffusionPipeline.from_pretrained(DIR)` gives the same pipeline
(model_index.json names `track4gen.unet.Track4GenUNet`).

From a training run instead: `unet_from_checkpoint(RUN_OR_CHECKPOINT)` gives the UNet with its
head, and `load_pipeline(RUN_OR_CHECKPOINT)` the pipeline around it (base model from the run).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from track4gen import checkpoint as ckpt
from track4gen.model import (
    Track4GenModel,
    make_head,
    resolve_pretrained,
    resolve_variant,
    tracking_head,
)

MODEL_CARD = "track4gen.json"
EMA_WEIGHTS = "ema.safetensors"  # beside weights.safetensors in a checkpoint, when trained with --use-ema
EXPORT_FORMAT = "track4gen-model"


def is_checkpoint_or_run(path: str | os.PathLike) -> bool:
    """True for a training checkpoint folder (with state.json) or a run folder with checkpoints."""
    p = Path(path)
    return (p / ckpt.STATE).is_file() or bool(ckpt.list_checkpoints(p))


def find_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint folder, or a run folder (its newest checkpoint)."""
    p = Path(path)
    if (p / ckpt.STATE).is_file():
        return p
    if not ckpt.list_checkpoints(p):
        raise FileNotFoundError(f"{p}: neither a checkpoint folder (with {ckpt.STATE}) nor a run folder with checkpoints")
    # The newest checkpoint that verifies, as `--resume latest` picks it (damaged ones are logged and skipped).
    return ckpt.latest_checkpoint(p)


def is_model_folder(path: str | os.PathLike) -> bool:
    return (Path(path) / "model_index.json").is_file()


def _checkpoint_base(where: Path, pretrained: str | None) -> tuple[Path, dict]:
    config = ckpt.read_state(where)["config"]
    base = resolve_pretrained(pretrained or config["pretrained"], variant=config.get("weights_variant"))
    return base, config


def unet_from_checkpoint(path: str | os.PathLike, *, pretrained: str | None = None, ema: bool = True,
                         dtype: torch.dtype = torch.float32):
    """The Track4GenUNet of a training checkpoint (or a run's newest), with its head, in eval mode.

    The base UNet is the run's `--pretrained` (or `pretrained`); the checkpoint's trained
    tensors go over it, the EMA copy when the run kept one and `ema` is set.
    """
    where = find_checkpoint(path)
    base, config = _checkpoint_base(where, pretrained)
    return _unet_from(where, base, config, ema=ema, dtype=dtype)


def _unet_from(where: Path, base: Path, config: dict, *, ema: bool, dtype: torch.dtype):
    """The base UNet of `base` with checkpoint `where`'s trained tensors (and EMA copy) over it."""
    from track4gen.unet import Track4GenUNet

    unet = Track4GenUNet.from_pretrained(
        str(base), subfolder="unet", local_files_only=True,
        variant=resolve_variant(base, variant=config.get("weights_variant")),
    )
    model = Track4GenModel(unet, make_head(unet, variant=config.get("variant", "track4gen")))
    ckpt.load_trainable_state(model, ckpt.load_weights(where))
    if ema and (where / EMA_WEIGHTS).is_file():
        from safetensors.torch import load_file

        ckpt.load_trainable_state(model, load_file(str(where / EMA_WEIGHTS)))
    return unet.to(dtype).eval()  # eval: BatchNorm uses its running statistics


def load_pipeline(path: str | os.PathLike, *, pretrained: str | None = None, ema: bool = True,
                  device: str | None = None, dtype: torch.dtype = torch.float32):
    """StableVideoDiffusionPipeline from an exported model folder, or from a run / checkpoint folder.

    Its UNet owns the head (`track4gen.model.tracking_head(pipe.unet)`; None for a "finetune" run).
    """
    from diffusers import StableVideoDiffusionPipeline

    from track4gen.unet import Track4GenUNet

    p = Path(path)
    if is_model_folder(p):
        base, variant = p, resolve_variant(p)
        unet = Track4GenUNet.from_pretrained(str(p), subfolder="unet", local_files_only=True, variant=variant)
    else:
        where = find_checkpoint(p)  # verified once: hashing a full-size checkpoint takes seconds
        base, config = _checkpoint_base(where, pretrained)
        # The run's --weights-variant for every component, as training loaded them.
        variant = resolve_variant(base, variant=config.get("weights_variant"))
        unet = _unet_from(where, base, config, ema=ema, dtype=dtype)
    pipe = StableVideoDiffusionPipeline.from_pretrained(str(base), unet=unet, local_files_only=True, variant=variant)
    # Cast after loading (from_pretrained's dtype argument changed name across diffusers versions).
    pipe.to(device=device, dtype=dtype)
    return pipe


def export_model(run: str | os.PathLike, out: str | os.PathLike, *, pretrained: str | None = None, ema: bool = True,
                 overwrite: bool = False) -> Path:
    """Write the newest checkpoint of `run` (or the checkpoint folder `run`) as a model folder `out`.

    Written next to `out` and renamed into place when complete, so `out` is never half written.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"--out {out}: already exists (pass --overwrite to replace it)")
    where = find_checkpoint(run)
    state = ckpt.read_state(where)
    pipe = load_pipeline(where, pretrained=pretrained, ema=ema)
    stage = out.with_name(f".{out.name}.tmp")
    if stage.exists():
        shutil.rmtree(stage)
    pipe.save_pretrained(str(stage), safe_serialization=True)
    head = tracking_head(pipe.unet)
    card = {
        "format": EXPORT_FORMAT,
        "variant": state["config"].get("variant", "track4gen"),
        "step": state["step"],
        "checkpoint": str(where.resolve()),
        "ema": bool(ema and (where / EMA_WEIGHTS).is_file()),
        "head": head.config_dict() if head is not None else None,
        "config": state["config"],
    }
    (stage / MODEL_CARD).write_text(json.dumps(card, indent=2, default=str))
    if out.exists():
        shutil.rmtree(out)
    stage.rename(out)
    return out
