"""Finding and loading torchvision RAFT weights, online or offline.

Resolution order (the first that applies wins):
  1. an explicit path (``--raft-weights PATH``);
  2. the environment variable ``TRACKPREP_RAFT_WEIGHTS``;
  3. torchvision's own cache, ``<torch hub dir>/checkpoints/<file>``, where an earlier
     online run (ours or any torchvision user's) left the file;
  4. a download by torchvision into that cache, unless ``TRACKPREP_OFFLINE`` is set or
     download.pytorch.org does not answer within a few seconds.
With none, `RaftWeightsError` names the file, its URL and both remedies. All of this runs
before any video is read, so a batch job fails in its first second, not after an hour of
decoding.
"""

from __future__ import annotations

import contextlib
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn
from torchvision.models.optical_flow import Raft_Large_Weights, Raft_Small_Weights, raft_large, raft_small

ENV_WEIGHTS = "TRACKPREP_RAFT_WEIGHTS"
ENV_OFFLINE = "TRACKPREP_OFFLINE"

# The weights DINO-Tracker's preprocessing uses (Raft_Large_Weights.DEFAULT is C_T_SKHT_V2:
# FlyingChairs -> FlyingThings -> Sintel+KITTI+HD1K+Things, torchvision's best Sintel model).
# raft_small was only released trained on Chairs -> Things; C_T_V2 is its best.
RAFT_WEIGHTS = {"large": Raft_Large_Weights.C_T_SKHT_V2, "small": Raft_Small_Weights.C_T_V2}
_BUILDERS = {"large": raft_large, "small": raft_small}

# How long the reachability probe waits, and how long a stalled download read may block.
PROBE_TIMEOUT_S = 3.0
DOWNLOAD_TIMEOUT_S = 30.0


class RaftWeightsError(RuntimeError):
    """RAFT weights are missing, unreadable, or do not fit the chosen model."""


@dataclass(frozen=True)
class ResolvedWeights:
    path: Path
    source: str  # "explicit", "env", "cache" or "download"


def _check_model(model: str) -> None:
    if model not in RAFT_WEIGHTS:
        raise ValueError(f"RAFT model: expected one of {sorted(RAFT_WEIGHTS)}, got {model!r}")


def weights_url(model: str) -> str:
    _check_model(model)
    return RAFT_WEIGHTS[model].url


def weights_filename(model: str) -> str:
    """The file name torchvision gives the pretrained weights, e.g. raft_large_C_T_SKHT_V2-ff5fadd5.pth."""
    return Path(urlparse(weights_url(model)).path).name


def cache_path(model: str) -> Path:
    """Where torchvision's download puts (and looks for) the file; honours TORCH_HOME."""
    return Path(torch.hub.get_dir()) / "checkpoints" / weights_filename(model)


def host_reachable(host: str, port: int = 443, *, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """A TCP connect with a short timeout: an offline machine answers in seconds instead of
    hanging in urllib's default (no timeout)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def _socket_timeout(seconds: float):
    # torch.hub's downloader calls urlopen without a timeout, so it inherits the global default.
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


def _offline_env() -> bool:
    return os.environ.get(ENV_OFFLINE, "").strip().lower() not in ("", "0", "false", "no")


def _missing_error(model: str, *, why_no_download: str) -> RaftWeightsError:
    name, url, cached = weights_filename(model), weights_url(model), cache_path(model)
    env = os.environ.get(ENV_WEIGHTS)
    return RaftWeightsError(
        f"RAFT weights for raft_{model} not found: expected the file {name}.\n"
        f"  looked at: ${ENV_WEIGHTS} ({'unset' if env is None else repr(env)}); torchvision cache {cached}\n"
        f"  download: {why_no_download}\n"
        f"Remedies (either one):\n"
        f"  1. with a network: run once online and torchvision downloads it into its cache, or fetch\n"
        f"     {url}\n"
        f"     and copy it to {cached}\n"
        f"  2. offline: pass --raft-weights PATH (or set {ENV_WEIGHTS}=PATH) naming a local copy of {name}.\n"
        f"(--flow dis runs without weights, at lower accuracy; it is never substituted for RAFT silently.)"
    )


def resolve_raft_weights(
    model: str = "large", *, explicit: str | Path | None = None, allow_download: bool | None = None
) -> ResolvedWeights:
    """Find the weights file for raft_<model>; download it into torchvision's cache if allowed.

    allow_download None means: allowed unless TRACKPREP_OFFLINE is set.
    """
    _check_model(model)
    # A file the user named (flag first, then environment) must exist: never fall back past it.
    named = ((explicit, "explicit", "--raft-weights"), (os.environ.get(ENV_WEIGHTS) or None, "env", f"${ENV_WEIGHTS}"))
    for value, source, where in named:
        if value is None:
            continue
        path = Path(value).expanduser()
        if not path.is_file():
            raise RaftWeightsError(
                f"RAFT weights file {str(path)!r} (from {where}) does not exist or is not a file; "
                f"expected a torchvision state dict such as {weights_filename(model)} from {weights_url(model)}"
            )
        return ResolvedWeights(path, source)
    cached = cache_path(model)
    if cached.is_file():
        return ResolvedWeights(cached, "cache")

    if allow_download is None:
        allow_download = not _offline_env()
    if not allow_download:
        raise _missing_error(model, why_no_download=f"not attempted (offline: ${ENV_OFFLINE} is set or downloads are disabled)")
    host = urlparse(weights_url(model)).hostname or ""
    if not host_reachable(host):
        raise _missing_error(model, why_no_download=f"{host} is unreachable (no network?)")
    try:
        with _socket_timeout(DOWNLOAD_TIMEOUT_S):
            # torchvision's own path: downloads into the hub cache and checks the hash in the name.
            RAFT_WEIGHTS[model].get_state_dict(progress=True, check_hash=True)
    except Exception as exc:  # network errors come in many types (URLError, timeout, hash mismatch)
        raise _missing_error(model, why_no_download=f"failed: {type(exc).__name__}: {exc}") from exc
    return ResolvedWeights(cached, "download")


def _describe_mismatch(expected: dict[str, torch.Tensor], got: dict[str, torch.Tensor]) -> tuple[int, str]:
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    shape = [
        f"{k}: file {list(got[k].shape)} vs model {list(expected[k].shape)}"
        for k in expected
        if k in got and tuple(got[k].shape) != tuple(expected[k].shape)
    ]
    parts = []
    if missing:
        parts.append(f"{len(missing)} parameters missing (e.g. {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
    if shape:
        parts.append(f"{len(shape)} with another shape (e.g. {shape[0]})")
    return len(missing) + len(unexpected) + len(shape), "; ".join(parts)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise RaftWeightsError(
            f"RAFT weights file {str(path)!r} could not be read as a PyTorch state dict "
            f"({type(exc).__name__}: {exc}); expected a .pth such as {weights_filename('large')}"
        ) from exc
    # Training checkpoints often wrap the weights; DataParallel prefixes every name with "module.".
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise RaftWeightsError(
            f"RAFT weights file {str(path)!r} holds a {type(obj).__name__}, not a state dict "
            f"(a mapping of parameter names to tensors) of a torchvision RAFT model"
        )
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def load_raft(model: str, path: str | Path) -> nn.Module:
    """torchvision raft_<model> with the weights in `path`, in eval mode on the CPU.

    A file for the other RAFT variant, or for something else, is refused with a message
    saying what it is and what was expected.
    """
    _check_model(model)
    path = Path(path)
    state = _read_state_dict(path)
    net = _BUILDERS[model](weights=None, progress=False)
    expected = net.state_dict()
    problems, detail = _describe_mismatch(expected, state)
    if problems:
        hint = ""
        for other in RAFT_WEIGHTS:
            if other != model and _describe_mismatch(_BUILDERS[other](weights=None).state_dict(), state)[0] == 0:
                hint = f" It holds raft_{other} weights: choose raft_model={other!r} (--raft-model {other}) or give a raft_{model} file."
        raise RaftWeightsError(
            f"RAFT weights file {str(path)!r} does not fit raft_{model}: {detail}.{hint} "
            f"Expected torchvision raft_{model} weights such as {weights_filename(model)} ({weights_url(model)})."
        )
    net.load_state_dict(state, strict=True)
    return net.eval()
