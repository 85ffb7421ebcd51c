"""Training checkpoints: safetensors files in `<out>/checkpoints/step-XXXXXXXX/`, rotated, resumable.

A checkpoint holds what a resumed run needs to continue exactly where the last one stopped:

    weights.safetensors     trainable UNet parameters (by UNet name) + the whole head (incl. BN stats)
    optimizer.safetensors   optimizer state tensors; param groups and scalars in its metadata
    rng-<rank>.safetensors  each process's torch RNG state and its training generator's state
    state.json              step, epoch, batches done in the epoch, LR scheduler state, run config
    manifest.json           written last: every file above with its size and SHA-256

It is written to a temporary folder, flushed to disk (files, then the folder) and renamed into
place only when complete, so a crash while saving never leaves a checkpoint folder behind. On
resume a checkpoint is verified against its manifest first: a file that is missing, truncated or
altered since (disk errors, copies, hand edits) makes `--resume latest` fall back to the previous
checkpoint, saying which one it skipped and why, and makes an explicit `--resume DIR` a one-line
error naming the file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

logger = logging.getLogger("track4gen.checkpoint")

CHECKPOINTS = "checkpoints"
_NAME = re.compile(r"^step-(\d{8})$")
WEIGHTS = "weights.safetensors"
OPTIMIZER = "optimizer.safetensors"
STATE = "state.json"
MANIFEST = "manifest.json"
STATE_KEYS = ("step", "epoch", "batches_done", "scheduler")


class CheckpointError(ValueError):
    """A checkpoint that is incomplete or unreadable; the message names the file."""


def checkpoint_dir(out: Path, step: int) -> Path:
    return Path(out) / CHECKPOINTS / f"step-{step:08d}"


def rng_name(rank: int) -> str:
    return f"rng-{rank}.safetensors"


def list_checkpoints(out: str | os.PathLike) -> list[Path]:
    """Published checkpoint folders under `out` (intact or not), oldest first."""
    root = Path(out) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _NAME.match(p.name)]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 24):
            digest.update(block)
    return digest.hexdigest()


def _file_record(path: Path) -> dict[str, Any]:
    return {"bytes": path.stat().st_size, "sha256": _sha256(path)}


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from None


def _check_safetensors(path: Path) -> None:
    # The header lists every tensor's byte range: a truncated or cut file fails here.
    try:
        with safe_open(str(path), framework="pt"):
            pass
    except SafetensorError as exc:
        raise CheckpointError(f"{path}: unreadable safetensors file ({exc})") from None


def checkpoint_files(num_processes: int) -> list[str]:
    """The files of a checkpoint written by `num_processes` processes (the manifest aside)."""
    return [WEIGHTS, OPTIMIZER, STATE] + [rng_name(r) for r in range(num_processes)]


def _read_manifest(path: Path) -> dict[str, dict[str, Any]]:
    data = _read_json(path)
    files = data.get("files") if isinstance(data, dict) else None
    ok = isinstance(files, dict) and all(
        isinstance(r, dict) and isinstance(r.get("bytes"), int) and isinstance(r.get("sha256"), str)
        for r in files.values())
    if not ok:
        raise CheckpointError(f"{path}: expected {{'files': {{name: {{'bytes': int, 'sha256': str}}}}}}")
    return files


def verify_checkpoint(ckpt: str | os.PathLike) -> dict[str, Any]:
    """Check that `ckpt` is complete and intact; its state. Raises CheckpointError naming the file.

    The files the trainer needs must be there, and every file the manifest lists must match the
    size and SHA-256 recorded in it. A checkpoint without a manifest (written before manifests
    existed) is checked by parsing each needed file instead.
    """
    ckpt = Path(ckpt)
    state_file, manifest_file = ckpt / STATE, ckpt / MANIFEST
    if not state_file.is_file():
        raise CheckpointError(f"{state_file}: missing (the checkpoint is incomplete)")
    manifest = _read_manifest(manifest_file) if manifest_file.is_file() else None
    state = _read_json(state_file)
    missing_keys = [k for k in STATE_KEYS if not isinstance(state, dict) or k not in state]
    if missing_keys:
        raise CheckpointError(f"{state_file}: expected the keys {list(STATE_KEYS)}, missing {missing_keys}")
    processes = state.get("num_processes", 1)
    if not isinstance(processes, int) or processes < 1:
        raise CheckpointError(f"{state_file}: num_processes must be a positive integer, got {processes!r}")
    required = checkpoint_files(processes)
    for name in required + sorted(set(manifest or ()) - set(required)):
        path = ckpt / name
        if not path.is_file():
            raise CheckpointError(f"{path}: missing (the checkpoint is incomplete)")
        if manifest is None:
            if name.endswith(".safetensors"):
                _check_safetensors(path)
            continue
        if name not in manifest:
            raise CheckpointError(f"{manifest_file}: does not list {name}")
        expected, size = manifest[name], path.stat().st_size
        if size != expected["bytes"]:
            raise CheckpointError(f"{path}: {size} bytes, expected {expected['bytes']} (truncated or replaced)")
        try:
            digest = _sha256(path)
        except OSError as exc:  # e.g. an I/O error on a failing disk
            raise CheckpointError(f"{path}: unreadable ({exc.strerror or exc})") from None
        if digest != expected["sha256"]:
            raise CheckpointError(f"{path}: checksum differs from {MANIFEST} (the file is damaged)")
    if manifest is None:
        logger.info("%s has no %s (older format): checked that its files parse", ckpt, MANIFEST)
    return state


def latest_checkpoint(out: str | os.PathLike) -> Path:
    """The newest checkpoint under `out` that verifies; each newer one skipped is logged with its reason."""
    found = list_checkpoints(out)
    if not found:
        raise FileNotFoundError(f"--resume latest: no checkpoint under {Path(out) / CHECKPOINTS}")
    reasons = []
    for candidate in reversed(found):
        try:
            verify_checkpoint(candidate)
        except CheckpointError as exc:
            logger.warning("skipping checkpoint %s: %s", candidate.name, exc)
            reasons.append(f"{candidate.name}: {exc}")
            continue
        return candidate
    raise CheckpointError(f"--resume latest: no intact checkpoint under {Path(out) / CHECKPOINTS} "
                          f"({'; '.join(reasons)})")


def resolve_checkpoint(out: str | os.PathLike, resume: str) -> Path:
    """`resume` is "latest" (newest intact checkpoint under `out`) or a checkpoint folder, verified."""
    if resume == "latest":
        return latest_checkpoint(out)
    p = Path(resume)
    if not p.is_dir():
        raise FileNotFoundError(f"--resume {resume}: no such checkpoint folder")
    try:
        verify_checkpoint(p)
    except CheckpointError as exc:
        raise CheckpointError(f"--resume {resume}: {exc}") from None
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


def _fsync(path: Path) -> None:
    """Flush a file's (or, on POSIX, a folder's entries') data to disk."""
    flags = os.O_RDONLY
    if path.is_dir():
        if not hasattr(os, "O_DIRECTORY"):
            return  # Windows cannot open a folder; NTFS journals its renames
        flags |= os.O_DIRECTORY
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_process_rng(out: Path, step: int, rank: int, generator: torch.Generator) -> None:
    """Every process writes its own RNG state into the staging folder."""
    stage = staging_dir(out, step)
    stage.mkdir(parents=True, exist_ok=True)
    save_file(rng_state(generator), str(stage / rng_name(rank)))


def write_main(
    out: Path,
    step: int,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
) -> None:
    """The main process writes weights, optimizer, state and, last, the manifest into the staging
    folder, once every process has written its RNG file. The manifest lists every file staged by
    then (e.g. an EMA copy of the weights too) and each is flushed to disk before it is written."""
    stage = staging_dir(out, step)
    stage.mkdir(parents=True, exist_ok=True)
    save_file(trainable_state(model), str(stage / WEIGHTS))
    save_optimizer(optimizer, stage / OPTIMIZER)
    (stage / STATE).write_text(json.dumps(state, indent=2, default=str))
    files = sorted(p for p in stage.iterdir() if p.is_file() and p.name != MANIFEST)
    for path in files:
        _fsync(path)
    manifest = {"step": step, "files": {path.name: _file_record(path) for path in files}}
    (stage / MANIFEST).write_text(json.dumps(manifest, indent=2))
    _fsync(stage / MANIFEST)


def publish(out: Path, step: int, *, keep: int) -> Path:
    """Move the staged checkpoint into place and delete all but the newest `keep` (main process)."""
    final = checkpoint_dir(out, step)
    stage = staging_dir(out, step)
    _fsync(stage)
    if final.exists():  # a damaged checkpoint of this step, skipped on resume: replaced
        shutil.rmtree(final)
    stage.rename(final)
    _fsync(final.parent)  # the rename itself is durable only once the parent folder is flushed
    if keep > 0:
        for old in list_checkpoints(out)[:-keep]:
            shutil.rmtree(old)
    return final


def read_state(ckpt: Path) -> dict[str, Any]:
    return json.loads((ckpt / STATE).read_text())
