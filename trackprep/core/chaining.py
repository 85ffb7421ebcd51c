"""Dense tracks from optical flow: forward chaining, the cycle-consistency test and seeding.

Track4Gen (Appendix A.1) builds its training trajectories the way DINO-Tracker's
preprocessing does: chain forward flow, x_{t+1} = x_t + f_{t->t+1}(x_t), and keep the step only
if the backward flow brings the point home, ||x_t - (x_{t+1} + f_{t+1->t}(x_{t+1}))|| <= 1.5 px.
A track ends at its first failed step (an occlusion or a flow error) or when it leaves the frame,
and is never resumed. Every pixel of the first frame (every k-th with `seed_stride`) starts a
track; at each later frame new tracks start on the grid points that no live track covers, so
regions that appear (disocclusions, content entering at the borders) gain tracks too.

All points of a frame are processed at once; the only Python loop is over frames.
"""

from __future__ import annotations

import numpy as np
import torch

from trackprep.core.sampling import sample_bilinear
from trackprep.core.types import VOID, FlowPair, TrackSet

# Track4Gen Appendix A.1 (after DINO-Tracker): forward-backward error threshold in pixels.
DEFAULT_CYCLE_THRESHOLD = 1.5


def seed_grid(height: int, width: int, *, stride: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """float32 [G, 2] (x, y): every `stride`-th pixel, row-major, starting at (0, 0)."""
    ys = torch.arange(0, height, stride, device=device, dtype=torch.float32)
    xs = torch.arange(0, width, stride, device=device, dtype=torch.float32)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1)


def covered_cells(points: torch.Tensor, *, height: int, width: int, stride: int) -> torch.Tensor:
    """bool [G]: grid points (of `seed_grid`) that some point has as its nearest grid point."""
    gh, gw = -(-height // stride), -(-width // stride)
    cx = torch.floor(points[:, 0] / stride + 0.5).long().clamp(0, gw - 1)
    cy = torch.floor(points[:, 1] / stride + 0.5).long().clamp(0, gh - 1)
    covered = torch.zeros(gh * gw, dtype=torch.bool, device=points.device)
    covered[cy * gw + cx] = True
    return covered


def cycle_step(
    forward: torch.Tensor, backward: torch.Tensor, points: torch.Tensor, *, cycle_threshold: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One chaining step for points [M, 2] of frame t.

    forward: [2, H, W] flow t -> t+1; backward: [2, H, W] flow t+1 -> t.
    Returns (next points [M, 2], keep bool [M], cycle error [M]); a point is kept when it lands
    inside frame t+1 and its forward-backward error is at most `cycle_threshold`.
    """
    step, inside0 = sample_bilinear(forward, points)
    nxt = points + step
    back, inside1 = sample_bilinear(backward, nxt)
    error = torch.linalg.vector_norm(nxt + back - points, dim=1)
    keep = inside0 & inside1 & (error <= cycle_threshold)  # NaN error compares False
    return nxt, keep, error


def chain_tracks(
    flow: FlowPair, *, cycle_threshold: float = DEFAULT_CYCLE_THRESHOLD, seed_stride: int = 1
) -> TrackSet:
    """Chain `flow` into dense tracks. Labels are VOID (255) until `label_tracks` sets them."""
    if cycle_threshold <= 0:
        raise ValueError(f"cycle_threshold must be > 0 px, got {cycle_threshold}")
    if seed_stride < 1:
        raise ValueError(f"seed_stride must be a positive integer, got {seed_stride}")
    num_frames = flow.num_frames
    _, _, height, width = flow.forward.shape
    device = flow.forward.device
    grid = seed_grid(height, width, stride=seed_stride, device=device)

    live_pos = grid.clone()
    live_id = torch.arange(grid.shape[0], device=device)
    next_id = grid.shape[0]
    starts = [torch.zeros(grid.shape[0], dtype=torch.int32, device=device)]
    frame_ids: list[torch.Tensor] = []
    frame_pos: list[torch.Tensor] = []
    for t in range(num_frames):
        if t > 0:
            uncovered = ~covered_cells(live_pos, height=height, width=width, stride=seed_stride)
            new = grid[uncovered]
            new_id = torch.arange(next_id, next_id + new.shape[0], device=device)
            next_id += new.shape[0]
            starts.append(torch.full((new.shape[0],), t, dtype=torch.int32, device=device))
            live_pos = torch.cat([live_pos, new])
            live_id = torch.cat([live_id, new_id])
        frame_ids.append(live_id)
        frame_pos.append(live_pos)
        if t == num_frames - 1:
            break
        nxt, keep, _ = cycle_step(
            flow.forward[t].float(), flow.backward[t].float(), live_pos, cycle_threshold=cycle_threshold
        )
        live_pos, live_id = nxt[keep], live_id[keep]

    return _to_trackset(num_frames, torch.cat(starts), frame_ids, frame_pos)


def _to_trackset(
    num_frames: int, start: torch.Tensor, frame_ids: list[torch.Tensor], frame_pos: list[torch.Tensor]
) -> TrackSet:
    """Frame-major records -> track-major ragged arrays, without sorting.

    Track ids are dense (0 .. N-1) and each track's frames are contiguous, so the record of
    track `id` at frame t goes to offsets[id] + (t - start[id]). Two passes over the frames
    (count, then scatter) let each frame's records be freed as soon as they are placed, which
    keeps the peak near one copy of the points on long videos. Empties both lists.
    """
    start = start.cpu()
    n = start.shape[0]
    lengths = torch.zeros(n, dtype=torch.int64)
    for ids in frame_ids:
        lengths[ids.cpu()] += 1  # ids are unique within a frame
    offsets = torch.zeros(n + 1, dtype=torch.int64)
    torch.cumsum(lengths, 0, out=offsets[1:])
    points = torch.empty((int(offsets[-1]), 2), dtype=torch.float32)
    base = offsets[:-1] - start.long()  # points[base[id] + t] is track id's point at frame t
    for t in range(len(frame_ids)):
        ids, pos = frame_ids[t].cpu(), frame_pos[t].cpu()
        frame_ids[t] = frame_pos[t] = None
        points[base[ids] + t] = pos.float()
    frame_ids.clear()
    frame_pos.clear()
    return TrackSet(
        num_frames=num_frames,
        start=start.numpy().astype(np.int32),
        offsets=offsets.numpy(),
        points=points.numpy(),
        labels=np.full(n, VOID, dtype=np.uint8),
    )
