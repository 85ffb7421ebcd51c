"""RAFT optical flow (torchvision `raft_large` / `raft_small`), forward and backward, batched.

Why 24 refinement iterations by default: DINO-Tracker's preprocessing
(`preprocessing/extract_trajectories.py`), which Track4Gen's trajectory data follows, calls
torchvision's raft_large with `num_flow_updates=24`; torchvision's own default is 12, and
the RAFT paper evaluates with 24 (KITTI) to 32 (Sintel) updates. Chained tracks add up the
error of every step and the 1.5 px cycle test rejects pixels where the forward and backward
estimates disagree, so a converged per-pair flow matters more here than in single-pair use:
under-converged flow both shortens tracks and biases them.

How this differs from calling `model(image1, image2)` once per pair (as DINO-Tracker does),
while computing the same numbers (a test compares both to 1e-4):
- Forward (t, t+1) and backward (t+1, t) pairs of the whole clip run in batches of up to
  `batch_size` pairs, ordered so a batch covers consecutive frames; the feature and context
  encoders (per-image: instance/batch norm in eval mode) then run once per distinct frame of
  the batch instead of twice per pair and direction (up to 4x fewer feature-encoder passes).
- Only the last iteration's flow is upsampled to full resolution; torchvision's forward
  upsamples and keeps every iteration's flow (24 full-size flows per pair), which training
  needs and inference does not.
- Frames go to the device one batch at a time and results come back as CPU float32, so device
  memory depends on the batch size, never on the clip length.
"""

from __future__ import annotations

import contextlib
import math
import threading
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# torchvision's own grid and convex-upsampling helpers, so the result matches RAFT.forward exactly.
from torchvision.models.optical_flow._utils import make_coords_grid, upsample_flow

from trackprep.core.types import FlowPair
from trackprep.flow.base import DEFAULT_ITERS, FlowEstimator, FlowSetupError, check_pairs, select_device
from trackprep.io.weights import RAFT_WEIGHTS, RaftWeightsError, load_raft, resolve_raft_weights

# Image pairs (one direction each) per batch when none is given. A batch of B pairs encodes
# B/2 + 1 frames; on a 2-core CPU at 320x576 (benchmarks/bench_flow.py) batch size 4 was the
# fastest (raft_large 3.4 s per frame pair against 4.3 s for torchvision's per-pair calls),
# 8 gained nothing more and costs memory (~45 MB of correlation pyramid per pair). GPUs need
# larger batches to fill the device; those defaults are not yet measured.
DEFAULT_BATCH_SIZE = {"cuda": 16, "mps": 8, "cpu": 4}
_HALF_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def pad_amounts(height: int, width: int, *, multiple: int = 8, minimum: int = 0) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) replicate-padding that makes both sides a multiple of 8 (RAFT
    works at 1/8 resolution) and at least `minimum`, split evenly between the two sides as
    RAFT's reference InputPadder does for Sintel-style input."""
    ph = max(-height % multiple, minimum - height + (-minimum % multiple))
    pw = max(-width % multiple, minimum - width + (-minimum % multiple))
    return pw // 2, pw - pw // 2, ph // 2, ph - ph // 2


def min_input_size(net: nn.Module) -> int:
    """Smallest padded side RAFT accepts: the correlation pyramid halves the 1/8-resolution
    feature map num_levels - 1 times and needs 2 cells left (torchvision CorrBlock.build_pyramid)."""
    return 8 * 2 * 2 ** (net.corr_block.num_levels - 1)


def frames_to_raft_input(frames: np.ndarray, *, device: torch.device) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> float32 [N, 3, H, W] in [-1, 1] (torchvision's RAFT transforms:
    convert to [0, 1], then normalise with mean 0.5, std 0.5)."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).to(device, non_blocking=True)
    x = x.permute(0, 3, 1, 2).float() / 255.0
    return (x - 0.5) / 0.5


def pair_jobs(pairs: Sequence[tuple[int, int]]) -> list[tuple[int, int, int, int]]:
    """(image1, image2, direction, i) for the i-th pair (a, b): direction 0 is a -> b, 1 is b -> a.
    Interleaved per pair so that a batch spans nearby frames (consecutive ones for consecutive pairs)."""
    jobs = []
    for i, (a, b) in enumerate(pairs):
        jobs.append((a, b, 0, i))
        jobs.append((b, a, 1, i))
    return jobs


def raft_flow_from_maps(
    net: nn.Module,
    fmap1: torch.Tensor,
    fmap2: torch.Tensor,
    context_out: torch.Tensor,
    *,
    iters: int,
) -> torch.Tensor:
    """The recurrent part of torchvision's RAFT.forward for precomputed encoder outputs,
    returning only the final full-resolution flow [B, 2, H, W]."""
    batch, _, h8, w8 = fmap1.shape
    net.corr_block.build_pyramid(fmap1, fmap2)
    hidden_size = net.update_block.hidden_state_size
    hidden, context = torch.split(context_out, [hidden_size, context_out.shape[1] - hidden_size], dim=1)
    hidden = torch.tanh(hidden)
    context = F.relu(context)
    coords0 = make_coords_grid(batch, h8, w8).to(fmap1.device)
    coords1 = coords0.clone()
    for _ in range(iters):
        corr = net.corr_block.index_pyramid(centroids_coords=coords1)
        hidden, delta = net.update_block(hidden, context, corr, coords1 - coords0)
        coords1 = coords1 + delta
    up_mask = None if net.mask_predictor is None else net.mask_predictor(hidden)
    return upsample_flow(flow=coords1 - coords0, up_mask=up_mask)


class RaftEstimator(FlowEstimator):
    name = "raft"

    def __init__(
        self,
        *,
        model: str = "large",
        weights: str | Path | None = None,
        iters: int = DEFAULT_ITERS,
        batch_size: int | None = None,
        device: str = "auto",
        half: bool | str = False,
    ) -> None:
        if model not in RAFT_WEIGHTS:
            raise FlowSetupError(f"raft_model: expected one of {sorted(RAFT_WEIGHTS)}, got {model!r}")
        if not isinstance(iters, int) or iters < 1:
            raise FlowSetupError(f"iters: expected a positive integer (RAFT refinement iterations), got {iters!r}")
        if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
            raise FlowSetupError(f"batch_size: expected a positive integer number of image pairs or None, got {batch_size!r}")
        if half is True:
            half = "fp16"
        if half is not False and half not in _HALF_DTYPES:
            raise FlowSetupError(f"half: expected False, True, 'fp16' or 'bf16', got {half!r}")
        self.model = model
        self.weights = weights
        self.iters = iters
        self.requested_batch_size = batch_size
        self.requested_device = device
        self.half = half
        self._net: nn.Module | None = None
        self._device: torch.device | None = None
        self.weights_path: Path | None = None
        self.weights_source: str | None = None
        # corr_block keeps the current correlation pyramid as state: one clip at a time per estimator.
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:
        # Picklable for process-based schedulers: the lock and the loaded model stay behind;
        # the receiving process reloads the weights on its first `check_ready`/`estimate`.
        state = self.__dict__.copy()
        state.update(_lock=None, _net=None, _device=None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @property
    def device(self) -> torch.device:
        if self._device is None:
            self._device = select_device(self.requested_device)
        return self._device

    @property
    def batch_size(self) -> int:
        return self.requested_batch_size or DEFAULT_BATCH_SIZE.get(self.device.type, 4)

    def config(self) -> dict:
        return {
            "name": self.name,
            "raft_model": self.model,
            "raft_weights": str(self.weights_path) if self.weights_path else None,
            "raft_weights_source": self.weights_source,
            "iters": self.iters,
            "batch_size": self.batch_size,
            "device": str(self.device),
            "half": self.half,
        }

    def check_ready(self) -> None:
        """Resolve the device and the weights and load the model (downloading only when allowed)."""
        if self._net is not None:
            return
        device = self.device
        if self.half and device.type != "cuda":
            raise FlowSetupError(f"half={self.half!r}: reduced precision is supported on CUDA only, the device is {device}")
        try:
            resolved = resolve_raft_weights(self.model, explicit=self.weights)
            net = load_raft(self.model, resolved.path)
        except RaftWeightsError as exc:
            raise FlowSetupError(str(exc)) from exc
        self.weights_path, self.weights_source = resolved.path, resolved.source
        self._net = net.to(device)

    def _autocast(self):
        if not self.half:
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda", dtype=_HALF_DTYPES[self.half])

    @property
    def window_multiple(self) -> int:  # type: ignore[override]
        # A batch holds batch_size single-direction pairs; windows of lcm(batch_size, 2) / 2 frame
        # pairs start every batch where the whole clip's batching starts one: the same batches.
        return self.batch_size // math.gcd(self.batch_size, 2)

    def estimate_pairs(
        self, frames: np.ndarray, pairs: Sequence[tuple[int, int]], *, first: int = 0, scene: object = None
    ) -> FlowPair:
        check_pairs(pairs, frames.shape[0])
        self.check_ready()
        net, device = self._net, self.device
        height, width = frames.shape[1:3]
        # Frames smaller than the pyramid allows (128 px) are padded up to it, not refused.
        left, right, top, bottom = pad_amounts(height, width, minimum=min_input_size(net))
        forward = torch.empty((len(pairs), 2, height, width), dtype=torch.float32)
        backward = torch.empty_like(forward)
        jobs = pair_jobs(pairs)
        with self._lock, torch.inference_mode(), self._autocast():
            for start in range(0, len(jobs), self.batch_size):
                batch = jobs[start : start + self.batch_size]
                frame_ids = sorted({j[0] for j in batch} | {j[1] for j in batch})
                slot = {f: i for i, f in enumerate(frame_ids)}
                images = frames_to_raft_input(frames[frame_ids], device=device)
                images = F.pad(images, (left, right, top, bottom), mode="replicate")
                fmaps = net.feature_encoder(images)
                first = sorted({j[0] for j in batch})
                ctx_slot = {f: i for i, f in enumerate(first)}
                ctx = net.context_encoder(images[[slot[f] for f in first]])
                a = torch.tensor([slot[j[0]] for j in batch], device=device)
                b = torch.tensor([slot[j[1]] for j in batch], device=device)
                c = torch.tensor([ctx_slot[j[0]] for j in batch], device=device)
                flow = raft_flow_from_maps(net, fmaps[a], fmaps[b], ctx[c], iters=self.iters)
                flow = flow[:, :, top : top + height, left : left + width].float().cpu()
                for k, (_, _, direction, t) in enumerate(batch):
                    (forward if direction == 0 else backward)[t] = flow[k]
        return FlowPair(forward=forward, backward=backward)
