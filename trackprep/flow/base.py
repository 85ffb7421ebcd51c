"""The flow-estimator interface: frames in, forward and backward flow for every consecutive
pair out (a `FlowPair`, channel-first, float32 on the CPU); `estimate_pairs` does the same for
any list of frame pairs (the long-range tracker's gaps of 2, 4, 8 frames, batched together
with the consecutive ones).

`estimate_frames` takes any run of consecutive frames, so a long video is estimated one
window at a time (trackprep.pipeline.annotate); windows of `window_multiple` pairs give
exactly the flow of the whole clip (RAFT batches the same pairs together either way)."""

from __future__ import annotations

import abc
from typing import Any, Sequence

import numpy as np
import torch

from trackprep.core.types import Clip, FlowPair

# RAFT refinement iterations: DINO-Tracker's preprocessing setting (see trackprep/flow/raft.py).
DEFAULT_ITERS = 24


class FlowSetupError(RuntimeError):
    """The estimator cannot run (missing weights, unavailable device, bad option).

    Raised by `check_ready()`, which callers run before reading any video."""


class FlowEstimator(abc.ABC):
    name: str

    # Pairs per window that keep the flow of a window bit-identical to that of the whole clip.
    window_multiple: int = 1

    def estimate_frames(self, frames: np.ndarray, *, first: int = 0, scene: Any = None) -> FlowPair:
        """Forward flow t -> t+1 and backward flow t+1 -> t for the consecutive frames uint8
        [n, H, W, 3] (n >= 2), which are frames first .. first + n - 1 of their video. `scene`:
        the synthetic scene a clip carries (Clip.scene), for the oracle backend."""
        return self.estimate_pairs(frames, consecutive_pairs(frames.shape[0]), first=first, scene=scene)

    @abc.abstractmethod
    def estimate_pairs(
        self, frames: np.ndarray, pairs: Sequence[tuple[int, int]], *, first: int = 0, scene: Any = None
    ) -> FlowPair:
        """For each (a, b) of `pairs` (indices into `frames`, which are frames first .. of their
        video): forward[i] the flow a -> b, backward[i] the flow b -> a."""

    def estimate(self, clip: Clip) -> FlowPair:
        """Forward flow t -> t+1 and backward flow t+1 -> t for t = 0 .. T-2."""
        self._check_clip(clip)
        return self.estimate_frames(clip.frames, scene=clip.scene)

    def config(self) -> dict:
        """The settings that determine the output, for a store's provenance attributes."""
        return {"name": self.name}

    def check_ready(self) -> None:
        """Raise FlowSetupError with a clear message if `estimate` could not run. Cheap to repeat."""

    @staticmethod
    def _check_clip(clip: Clip) -> None:
        if clip.num_frames < 2:
            raise ValueError(f"clip {clip.name!r}: flow needs at least 2 frames, got {clip.num_frames}")


def consecutive_pairs(num_frames: int) -> list[tuple[int, int]]:
    """(t, t + 1) for t = 0 .. num_frames - 2: the pairs of `estimate_frames`."""
    return [(t, t + 1) for t in range(num_frames - 1)]


def check_pairs(pairs: Sequence[tuple[int, int]], num_frames: int) -> None:
    """ValueError unless every pair names two different frames among `num_frames`."""
    for a, b in pairs:
        if not (0 <= a < num_frames and 0 <= b < num_frames and a != b):
            raise ValueError(f"flow pair ({a}, {b}): expected two different frame indices in 0..{num_frames - 1}")


def select_device(device: str = "auto") -> torch.device:
    """'auto' picks cuda, then mps, then cpu; anything else must name an available device."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    expected = f"device: expected 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got {device!r}"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise FlowSetupError(expected) from exc
    if dev.type not in ("cpu", "cuda", "mps"):  # torch also knows 'meta', 'xpu', ...: RAFT is not run there
        raise FlowSetupError(expected)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise FlowSetupError(f"device {device!r} requested but CUDA is not available on this machine (use 'auto' or 'cpu')")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise FlowSetupError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) present")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise FlowSetupError(f"device {device!r} requested but MPS is not available on this machine (use 'auto' or 'cpu')")
    return dev
