"""Training checkpoints: safetensors files in `<out>/checkpoints/step-XXXXXXXX/`, rotated, resumable.

A checkpoint holds what a resumed run needs to continue exactly where the last one stopped:

    weights.safetensors     trainable UNet parameters (by UNet name) + the whole head (incl. BN stats)
    optimizer.safetensors   optimizer state tensors; param groups and scalars in its metadata
    rng-<rank>.safetensors  each process's torch RNG state and its training generator's state
    state.json              step, epoch, batches done in the epoch, LR scheduler state, run config

It is written to a temporary folder and renamed into place only when complete, so a crash
while saving never leaves a checkpoint that `--resume latest` would pick.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

CHECKPOINTS = "checkpoints"
_NAME = re.compile(r"^step-(\d{8})$")
WEIGHTS = "weights.safetensors"
OPTIMIZER = "optimizer.safetensors"
STATE = "state.json"


def checkpoint_dir(out: Path, step: int) -> Path:
    return Path(out) / CHECKPOINTS / f"step-{step:08d}"


def list_checkpoints(out: str | os.PathLike) -> list[Path]:
    """Complete checkpoints under `out`, oldest first."""
    root = Path(out) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _NAME.match(p.name) and (p / STATE).is_file()]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))


def resolve_checkpoint(out: str | os.PathLike, resume: str) -> Path:
    """`resume` is "latest" (newest checkpoint under `out`) or a checkpoint folder."""
    if resume == "latest":
        found = list_checkpoints(out)
        if not found:
            raise FileNotFoundError(f"--resume latest: no checkpoint under {Path(out) / CHECKPOINTS}")
        return found[-1]
    p = Path(resume)
    if not (p / STATE).is_file():
        raise FileNotFoundError(f"--resume {resume}: not a checkpoint folder (expected {p / STATE})")
    return p


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Trainable UNet parameters plus every head tensor (parameters and BatchNorm buffers)."""
    # The head is a submodule of the UNet (unet.tracking_head); it is stored once, under "head.".
    state = {f"unet.{n}": p.detach() for n, p in model.unet.named_parameters()
             if p.requires_grad and not n.startswith("tracking_head.")}
    if model.head is not None:
        state.update({f"head.{n}": t.detach() for n, t in model.head.state_dict().items()})
    return {k: v.contiguous().cpu() for k, v in state.items()}


def load_weights(ckpt: Path) -> dict[str, torch.Tensor]:
    return load_file(str(Path(ckpt) / WEIGHTS))


def load_trainable_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    unet_params = dict(model.unet.named_parameters())
    head = {k[len("head."):]: v for k, v in state.items() if k.startswith("head.")}
    if model.head is not None:
        model.head.load_state_dict(head, strict=True)
    elif head:
        raise ValueError("checkpoint has tracking-head tensors but this model has no head (another --variant?)")
    for key, value in state.items():
        if key.startswith("unet."):
            name = key[len("unet."):]
            if name not in unet_params:
                raise KeyError(f"checkpoint parameter {name!r} is not in this UNet")
            with torch.no_grad():
                unet_params[name].copy_(value)


def _optimizer_to_flat(sd: dict) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    tensors, scalars = {}, {}
    for idx, slots in sd["state"].items():
        for key, value in slots.items():
            if torch.is_tensor(value):
                tensors[f"state.{idx}.{key}"] = value.detach().contiguous().cpu()
            else:
                scalars[f"{idx}.{key}"] = value
    meta = {"param_groups": json.dumps(sd["param_groups"]), "scalars": json.dumps(scalars)}
    return tensors, meta


def _optimizer_from_flat(tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        _, idx, key = name.split(".", 2)
        state.setdefault(int(idx), {})[key] = value
    for name, value in json.loads(meta["scalars"]).items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    return {"state": state, "param_groups": json.loads(meta["param_groups"])}


def save_optimizer(optimizer: torch.optim.Optimizer, path: Path) -> None:
    tensors, meta = _optimizer_to_flat(optimizer.state_dict())
    save_file(tensors, str(path), metadata=meta)


def load_optimizer_state(path: Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    return _optimizer_from_flat(tensors, meta)


def rng_state(generator: torch.Generator) -> dict[str, torch.Tensor]:
    state = {"torch": torch.get_rng_state(), "generator": generator.get_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng(path: Path, generator: torch.Generator) -> None:
    state = load_file(str(path))
    torch.set_rng_state(state["torch"])
    generator.set_state(state["generator"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def staging_dir(out: Path, step: int) -> Path:
    return checkpoint_dir(out, step).with_name(f".tmp-step-{step:08d}")


def write_process_rng(out: Path, step: int, rank: int, generator: torch.Generator) -> None:
    """Every process writes its own RNG state into the staging folder."""
    stage = staging_dir(out, step)
    stage.mkdir(parents=True, exist_ok=True)
    save_file(rng_state(generator), str(stage / f"rng-{rank}.safetensors"))


def write_main(
    out: Path,
    step: int,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
) -> None:
    """The main process writes weights, optimizer and state into the staging folder."""
    stage = staging_dir(out, step)
    stage.mkdir(parents=True, exist_ok=True)
    save_file(trainable_state(model), str(stage / WEIGHTS))
    save_optimizer(optimizer, stage / OPTIMIZER)
    (stage / STATE).write_text(json.dumps(state, indent=2, default=str))


def publish(out: Path, step: int, *, keep: int) -> Path:
    """Move the staged checkpoint into place and delete all but the newest `keep` (main process)."""
    final = checkpoint_dir(out, step)
    if final.exists():
        shutil.rmtree(final)
    staging_dir(out, step).rename(final)
    if keep > 0:
        for old in list_checkpoints(out)[:-keep]:
            shutil.rmtree(old)
    return final


def read_state(ckpt: Path) -> dict[str, Any]:
    return json.loads((ckpt / STATE).read_text())
