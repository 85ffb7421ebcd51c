"""DINO-Tracker's optical-flow trajectory preprocessing, re-implemented to time it beside trackprep.

DINO-Tracker (Tumanyan et al., ECCV 2024; github.com/AssafSinger94/dino-tracker: preprocessing/ and config/ at
commit c29dc4b, data/data_utils.py at 23792f7, utils.py at d98a98b)
builds its training trajectories in two scripts that `preprocessing/main_preprocessing.py` runs
one after the other as child processes (its steps 1 and 4):

1. `preprocessing/extract_trajectories.py` (`save_trajectories`): read the frames, estimate the
   flow of every consecutive pair in both directions and a per-frame consistency mask
   (`get_flows_with_masks`), then for every start frame chain *all* pixels of the frame through
   the rest of the video with a forward-backward test (threshold 1.5 px), optionally checked
   against the direct flow from the start frame to every later frame
   (`compute_direct_flows_for_start_frame`, threshold 2.5 px; on in its `config/preprocessing.yaml`),
   keep the start pixels that no earlier trajectory passes through (or that are inconsistent
   with the previous frame), drop trajectories shorter than `min_trajectory_length` (2), and save
   one dense float32 tensor [N, T, 2] (NaN where undefined) with `torch.save`.
2. `preprocessing/split_trajectories_to_fg_bg.py`: load that tensor and the masks, label each
   trajectory by the mask at its first point, and save the foreground and background tensors.

What this module leaves out: everything of DINO-Tracker's preprocessing that is not trajectories
(DINO embeddings, DINO best buddies, masks predicted from DINO features), which trackprep does
not do either.

What it changes, and why:
- Flow: trackprep's estimator (`trackprep.flow.dis.DisEstimator`, OpenCV DIS medium) in place of
  torchvision's RAFT-large, called with the same pairs in the same loop (one consecutive pair per
  call; direct flows in batches of 16), so both programs spend the same on flow. RAFT's input
  normalisation and padding to a multiple of 8 become the uint8 RGB frames DIS takes (the padding
  is a no-op at 320x576).
- Device: DINO-Tracker runs on CUDA (one line of its filtering calls `.cuda()` unconditionally);
  here every tensor stays on the CPU, as trackprep's chaining does on this machine.
- Mask size: `split_trajectories_to_fg_bg.py` resizes the masks to its default 476x854 whatever the
  video size; here they are resized to the video's working size (what it does at its own size).

Everything else follows the original's structure and data handling: the frames are decoded and
Lanczos-resized through PIL (and decoded again for each start frame's direct flow), the whole
[2, T-1, 2, H, W] flow is kept, every start frame propagates the full H x W grid with
`grid_sample`, results accumulate by concatenation, and both scripts go through files.

Command line (the two scripts, then both in order as main_preprocessing.py runs them):
  python benchmarks/dino_tracker_reference.py extract --frames-path DIR --output-path FILE.pt
      [--infer-res-size H W] [--threshold 1.5] [--min-trajectory-length 2]
      [--filter-using-direct-flow --direct-flow-threshold 2.5] [--timings-json FILE]
  python benchmarks/dino_tracker_reference.py split --traj-path FILE.pt --fg-masks-path DIR
      --fg-traj-path FILE.pt --bg-traj-path FILE.pt [--size H W]
  python benchmarks/dino_tracker_reference.py preprocess --data-path DIR (video/, masks/)
      [--size H W] [--no-direct-flow] [--timings-json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

# config/preprocessing.yaml of DINO-Tracker.
THRESHOLD = 1.5  # threshold: forward-backward error limit, px
MIN_TRAJECTORY_LENGTH = 2  # min_trajectory_length, frames
DIRECT_FLOW_THRESHOLD = 2.5  # direct_flow_threshold, px
DIRECT_FLOW_BATCH = 16  # compute_direct_flows_for_start_frame: max_batch_size
DIRECT_MASK_RELIABLE = 0.2  # save_trajectories: direct flow trusted where its mask > 0.2
FG_BG_BATCH = 1_000_000  # split_trajectories_to_fg_bg.mask_filter_trajectories: batch_size

# flows(frames uint8 [n, H, W, 3], pairs) -> (forward [P, 2, H, W], backward [P, 2, H, W])
FlowFn = Callable[[np.ndarray, list], tuple[torch.Tensor, torch.Tensor]]


def trackprep_dis() -> FlowFn:
    """trackprep's DIS backend (the flow both sides of the benchmark use)."""
    from trackprep.flow.dis import DisEstimator

    estimator = DisEstimator(preset="medium")

    def flows(frames: np.ndarray, pairs: list) -> tuple[torch.Tensor, torch.Tensor]:
        pair = estimator.estimate_pairs(frames, pairs)
        return pair.forward, pair.backward

    return flows


# --- frames (data/data_utils.py: load_image, resize_tensor_frames_lanczos) ---------------------

def frame_files(folder: str | os.PathLike) -> list[Path]:
    """*.jpg then *.png of the folder, sorted (as every DINO-Tracker script lists its frames)."""
    folder = Path(folder)
    return sorted([*folder.glob("*.jpg"), *folder.glob("*.png")])


def read_video(files: list[Path], size: tuple[int, int] | None) -> torch.Tensor:
    """float32 [T, 3, h, w] in [0, 1]: each file decoded at full size as a 0..255 float tensor
    (load_image), all stacked, divided by 255, then resized frame by frame with PIL's Lanczos
    (through ToPILImage, which truncates x * 255 to uint8, and back through ToTensor)."""
    from torchvision.transforms import functional as TF

    video = torch.cat([torch.from_numpy(np.array(Image.open(f), dtype=np.uint8)).permute(2, 0, 1).float()[None]
                       for f in files]) / 255
    if size is None:
        return video
    h, w = size
    return torch.stack([TF.to_tensor(TF.to_pil_image(frame).resize((w, h), resample=Image.LANCZOS)) for frame in video])


def flow_input(video: torch.Tensor) -> np.ndarray:
    """uint8 [T, H, W, 3] for DIS from the [0, 1] video (RAFT would take it normalised to [-1, 1])."""
    return (video * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


# --- sampling (data/data_utils.py: coords_grid, bilinear_sampler; utils.py: bilinear_interpolate_video)

def pixel_grid(height: int, width: int) -> torch.Tensor:
    """float32 [1, H, W, 2]: (x, y) of every pixel."""
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    return torch.stack([xs, ys], dim=-1).float()[None]


def sample(field: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """field [B, C, H, W] at pixel coords [B, h, w, 2] -> [B, h, w, C]: grid_sample, bilinear,
    align_corners=True, zeros outside (bilinear_sampler)."""
    height, width = field.shape[-2:]
    grid = torch.cat([2 * coords[..., :1] / (width - 1) - 1, 2 * coords[..., 1:] / (height - 1) - 1], dim=-1)
    return F.grid_sample(field, grid, mode="bilinear", align_corners=True).permute(0, 2, 3, 1)


def sample_video(volume: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """volume [C, T, H, W] at points [B, 3] (x, y, t) -> [B, C]: trilinear grid_sample with
    align_corners=True and border padding, every axis normalised (bilinear_interpolate_video)."""
    _, t, height, width = volume.shape
    scale = torch.tensor([width - 1, height - 1, max(t - 1, 1)], dtype=points.dtype)
    grid = (points / scale * 2 - 1)[None, None, :, None]  # [1, 1, B, 1, 3]
    out = F.grid_sample(volume[None], grid, align_corners=True, padding_mode="border")  # [1, C, 1, B, 1]
    return out[0, :, 0, :, 0].T


# --- extract_trajectories.py ------------------------------------------------------------------

def pair_consistency(flow12: torch.Tensor, flow21: torch.Tensor, grid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For frame t+1 of a pair (flows [1, 2, H, W]): (forward-backward error [H, W] of going back
    to t and forward again, bool [H, W] pixels no rounded forward warp from t lands on); the
    body of get_flows_with_masks' loop."""
    height, width = grid.shape[1:3]
    coords1 = grid + flow21.permute(0, 2, 3, 1)
    coords2 = coords1 + sample(flow12, coords1)
    err = (grid - coords2).norm(dim=3)[0]
    hit = (grid + flow12.permute(0, 2, 3, 1)).round().long().reshape(-1, 2)
    hit = hit[((hit >= 0) & (hit <= torch.tensor([width - 1, height - 1]))).all(dim=-1)]
    missing = torch.ones((height, width), dtype=torch.bool)
    missing[hit[:, 1], hit[:, 0]] = False
    return err, missing


def flows_with_masks(flows: FlowFn, frames: np.ndarray, *, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(masks bool [T + 1, H, W, 1], flows float32 [2, T - 1, 2, H, W]) as get_flows_with_masks:
    one flow call per consecutive pair (both directions), a frame's mask is True where it is
    consistent with the previous frame and reached by its forward warp; frame 0's is False."""
    t, height, width = frames.shape[:3]
    grid = pixel_grid(height, width)
    all_flows = torch.zeros((2, t - 1, 2, height, width))
    err = torch.zeros((t + 1, height, width))
    missing = torch.ones((t + 1, height, width), dtype=torch.bool)
    for idx in range(t - 1):
        flow12, flow21 = flows(frames[idx : idx + 2], [(0, 1)])
        all_flows[0, idx], all_flows[1, idx] = flow12[0], flow21[0]
        err[idx + 1], missing[idx + 1] = pair_consistency(flow12, flow21, grid)
    masks = (err < threshold) & ~missing
    masks[0] = False  # the first frame is consistent with nothing
    return masks[..., None], all_flows


def direct_flow_mask(forward: torch.Tensor, backward: torch.Tensor, *, threshold: float) -> torch.Tensor:
    """float32 [K, H, W]: 1 where the direct flow start -> start+k+1 (forward [K, 2, H, W]) is
    forward-backward consistent and lands inside the frame (compute_direct_flows_for_start_frame)."""
    k, _, height, width = forward.shape
    grid = pixel_grid(height, width).expand(k, -1, -1, -1)
    coords1 = grid + forward.permute(0, 2, 3, 1)  # [K, H, W, 2]
    frame = torch.arange(k, dtype=coords1.dtype)[:, None, None, None].expand(k, height, width, 1)
    back = sample_video(backward.permute(1, 0, 2, 3), torch.cat([coords1, frame], dim=-1).reshape(-1, 3))
    err = (grid - (coords1 + back.reshape(k, height, width, 2))).norm(dim=-1)
    inside = ((coords1 >= 0) & (coords1 <= torch.tensor([width - 1, height - 1]))).all(dim=-1)
    return ((err < threshold) & inside).float()


def direct_flows(
    flows: FlowFn, frames_from: Callable[[int], np.ndarray], *, threshold: float
) -> Callable[[int], tuple[torch.Tensor, torch.Tensor]]:
    """start -> (direct flow [K, H, W, 2] from frame `start` to each later frame, its mask
    [K, H, W]), as compute_direct_flows_for_start_frame: `frames_from(start)` gives the frames from
    `start` on (the original decodes and resizes them again from the folder on every call), the
    flows are computed in batches of 16 pairs."""

    def direct(start: int) -> tuple[torch.Tensor, torch.Tensor]:
        frames = frames_from(start)
        pairs = [(0, k) for k in range(1, frames.shape[0])]
        forward, backward = [], []
        for i in range(0, len(pairs), DIRECT_FLOW_BATCH):
            fwd, bwd = flows(frames, pairs[i : i + DIRECT_FLOW_BATCH])
            forward.append(fwd)
            backward.append(bwd)
        forward, backward = torch.cat(forward), torch.cat(backward)
        return forward.permute(0, 2, 3, 1), direct_flow_mask(forward, backward, threshold=threshold)

    return direct


def chain_trajectories(
    masks: torch.Tensor, all_flows: torch.Tensor, *, threshold: float, min_trajectory_length: int,
    direct: Callable[[int], tuple[torch.Tensor, torch.Tensor]] | None = None, direct_flow_threshold: float | None = None,
) -> torch.Tensor:
    """float32 [N, T, 2] (x, y), NaN where undefined: save_trajectories' loop over start frames.

    Each start frame s seeds the pixels that are inconsistent with frame s-1 or that no kept
    trajectory passes through (rounded); all H x W points are then advanced to the last frame,
    a point's trajectory ending at its first failed forward-backward test, exit from the frame
    or (with `direct`) disagreement with the direct flow from s. Trajectories of fewer than
    `min_trajectory_length` frames are dropped, the rest appended in row-major seed order."""
    _, t1, _, height, width = all_flows.shape
    t = t1 + 1
    fflow, bflow = all_flows[0:1], all_flows[1:2]
    upper = torch.tensor([width - 1, height - 1], dtype=torch.float32)
    lower = torch.zeros(2)
    kept = torch.full((0, t, 2), float("nan"))
    for start in range(t - (min_trajectory_length - 1)):
        trajectories = torch.zeros((t - start, height, width, 2))
        coords = pixel_grid(height, width)
        origin = pixel_grid(height, width)
        mask = ~masks[start]  # [H, W, 1]
        # Look behind: seed where no earlier trajectory passes through frame `start`.
        passed = kept[:, start]
        passed = passed[~passed.isnan().any(dim=-1)].round().long()
        passed = passed[((passed >= 0) & (passed <= upper)).all(dim=-1)]
        not_passed = torch.ones_like(mask)
        not_passed[passed[:, 1], passed[:, 0]] = False
        mask = mask | not_passed
        trajectories[0] = torch.where(mask, coords.double(), float("nan"))[0]
        if direct is not None:
            dflows, dmasks = direct(start)
        for idx in range(t - 1 - start):
            flow12 = fflow[:, start + idx]
            flow21 = bflow[:, start + idx]
            step = sample(flow12, coords)
            coords1 = coords + step
            coords2 = coords1 + sample(flow21, coords1)
            err = (coords - coords2).norm(dim=3)
            # [1, H, W, 2]: the bounds test is per coordinate, merged below by the any-NaN rule
            mask = mask & (err[..., None] < threshold) & (coords1 <= upper) & (coords1 >= lower)
            coords = coords + step
            if direct is not None:
                err_direct = (coords - (origin + dflows[idx][None])).norm(dim=3) * (dmasks[idx] > DIRECT_MASK_RELIABLE).float()
                mask = mask & (err_direct[..., None] < direct_flow_threshold)
            trajectories[idx + 1] = torch.where(mask, coords.double(), float("nan"))[0]
        padded = torch.full((height * width, t, 2), float("nan"))
        padded[:, start:] = trajectories.permute(1, 2, 0, 3).reshape(height * width, t - start, 2)
        padded[padded.isnan().any(dim=-1)] = float("nan")
        defined = (~padded.isnan().any(dim=-1)).sum(dim=-1)
        kept = torch.cat([kept, padded[defined >= min_trajectory_length]])
    return kept


@torch.no_grad()  # as the original's functions (a decorator, so no global state is left behind)
def save_trajectories(
    *, frames_path: str | os.PathLike, output_path: str | os.PathLike, infer_res_size: tuple[int, int] | None,
    threshold: float = THRESHOLD, min_trajectory_length: int = MIN_TRAJECTORY_LENGTH,
    filter_using_direct_flow: bool = True, direct_flow_threshold: float = DIRECT_FLOW_THRESHOLD,
    flows: FlowFn | None = None,
) -> dict[str, float]:
    """extract_trajectories.py end to end. Returns seconds per part: load (decoding and resizing,
    the direct flow's re-reading included), flow (every flow call, direct flows included), save,
    and chain (the rest: masks, chaining, direct-flow masks)."""
    flows = flows or trackprep_dis()
    seconds = {"load": 0.0, "flow": 0.0}

    def timed(part: str, fn: Callable) -> Callable:
        def call(*args):
            t0 = time.perf_counter()
            out = fn(*args)
            seconds[part] += time.perf_counter() - t0
            return out

        return call

    files = frame_files(frames_path)
    load = timed("load", lambda start: flow_input(read_video(files[start:], infer_res_size)))
    timed_flows = timed("flow", flows)
    t0 = time.perf_counter()
    masks, all_flows = flows_with_masks(timed_flows, load(0), threshold=threshold)
    direct = None
    if filter_using_direct_flow:
        # The direct flow's own consistency test uses `threshold`, as the original passes it.
        direct = direct_flows(timed_flows, load, threshold=threshold)
    trajectories = chain_trajectories(masks, all_flows, threshold=threshold, min_trajectory_length=min_trajectory_length,
                                      direct=direct, direct_flow_threshold=direct_flow_threshold)
    seconds["chain"] = time.perf_counter() - t0 - seconds["load"] - seconds["flow"]
    t0 = time.perf_counter()
    Path(output_path).parent.mkdir(parents=True, exist_ok=True)
    torch.save(trajectories, output_path)
    seconds["save"] = time.perf_counter() - t0
    return seconds


# --- split_trajectories_to_fg_bg.py -----------------------------------------------------------

def start_end(trajectories: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(int64 [N, 3] (row, first frame, last frame), bool [N, T] first-frame mask) (generate_start_end)."""
    undefined = trajectories.isnan().any(dim=-1)
    before = undefined.roll(1, dims=1)
    before[:, 0] = True
    first = ~undefined & before
    after = undefined.roll(-1, dims=1)
    after[:, -1] = True
    last = ~undefined & after
    rows_first = first.nonzero()
    return torch.stack([rows_first[:, 0], rows_first[:, 1], last.nonzero()[:, 1]], dim=1), first


def load_masks(masks_path: str | os.PathLike, size: tuple[int, int] | None) -> np.ndarray:
    """uint8 [T, h, w]: grey masks resized by nearest neighbour (load_masks)."""
    masks = np.stack([np.asarray(Image.open(p).convert("L")) for p in frame_files(masks_path)])
    h, w = size if size is not None else masks.shape[1:3]
    return F.interpolate(torch.from_numpy(masks)[:, None], size=(h, w), mode="nearest")[:, 0].numpy()


def mask_filter_trajectories(
    traj_path: str | os.PathLike, masks_path: str | os.PathLike, out_path: str | os.PathLike, *,
    size: tuple[int, int] | None, filter_bg: bool,
) -> int:
    """Save the trajectories whose first point lies on the mask (background: off it); returns their number."""
    trajectories = torch.load(traj_path, map_location="cpu")
    masks = torch.from_numpy(load_masks(masks_path, size))
    valid = []
    for i in range(0, trajectories.shape[0], FG_BG_BATCH):
        batch = trajectories[i : i + FG_BG_BATCH].clone()
        _, first = start_end(batch)
        first_index = first.int().argmax(dim=1)
        first_point = batch[torch.arange(batch.shape[0]), first_index].round().int()
        on_mask = masks[first_index, first_point[:, 1], first_point[:, 0]]
        valid.append(on_mask == 0 if filter_bg else on_mask > 0)
    selected = trajectories[torch.cat(valid)] if valid else trajectories
    torch.save(selected, out_path)
    return int(selected.shape[0])


def split_trajectories_to_fg_bg(
    *, traj_path: str | os.PathLike, fg_masks_path: str | os.PathLike, fg_traj_path: str | os.PathLike,
    bg_traj_path: str | os.PathLike, size: tuple[int, int] | None,
) -> tuple[int, int]:
    """Foreground, then background: each pass loads the trajectories and masks again, as the original."""
    fg = mask_filter_trajectories(traj_path, fg_masks_path, fg_traj_path, size=size, filter_bg=False)
    bg = mask_filter_trajectories(traj_path, fg_masks_path, bg_traj_path, size=size, filter_bg=True)
    return fg, bg


# --- main_preprocessing.py (steps 1 and 4) and the command line ---------------------------------

def data_paths(data_path: str | os.PathLike) -> dict[str, Path]:
    """The files the two steps use inside a video's folder (utils.add_config_paths)."""
    root = Path(data_path)
    out = root / "of_trajectories"
    return {"video": root / "video", "masks": root / "masks", "trajectories": out / "trajectories.pt",
            "fg": out / "fg_trajectories.pt", "bg": out / "bg_trajectories.pt"}


def preprocess(*, data_path: str | os.PathLike, size: tuple[int, int], direct_flow: bool, timings_json: Path | None) -> None:
    """Run `extract` then `split` as child processes of this interpreter, as main_preprocessing.py does."""
    paths = data_paths(data_path)
    h, w = (str(v) for v in size)
    me = [sys.executable, str(Path(__file__).resolve())]
    extract = [*me, "extract", "--frames-path", str(paths["video"]), "--output-path", str(paths["trajectories"]),
               "--min-trajectory-length", str(MIN_TRAJECTORY_LENGTH), "--threshold", str(THRESHOLD),
               "--infer-res-size", h, w]
    if direct_flow:
        extract += ["--filter-using-direct-flow", "--direct-flow-threshold", str(DIRECT_FLOW_THRESHOLD)]
    if timings_json is not None:
        extract += ["--timings-json", str(timings_json)]
    split = [*me, "split", "--traj-path", str(paths["trajectories"]), "--fg-masks-path", str(paths["masks"]),
             "--fg-traj-path", str(paths["fg"]), "--bg-traj-path", str(paths["bg"]), "--size", h, w]
    for args in (extract, split):
        subprocess.run(args, check=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("extract", help="extract_trajectories.py")
    ex.add_argument("--frames-path", required=True)
    ex.add_argument("--output-path", required=True)
    ex.add_argument("--infer-res-size", type=int, nargs=2, default=None, metavar=("H", "W"))
    ex.add_argument("--threshold", type=float, default=THRESHOLD)
    ex.add_argument("--min-trajectory-length", type=int, default=MIN_TRAJECTORY_LENGTH)
    ex.add_argument("--filter-using-direct-flow", action="store_true")
    ex.add_argument("--direct-flow-threshold", type=float, default=DIRECT_FLOW_THRESHOLD)
    ex.add_argument("--timings-json", type=Path, default=None, help="write the seconds per part here")
    sp = sub.add_parser("split", help="split_trajectories_to_fg_bg.py")
    sp.add_argument("--traj-path", required=True)
    sp.add_argument("--fg-masks-path", required=True)
    sp.add_argument("--fg-traj-path", required=True)
    sp.add_argument("--bg-traj-path", required=True)
    sp.add_argument("--size", type=int, nargs=2, default=None, metavar=("H", "W"))
    pp = sub.add_parser("preprocess", help="main_preprocessing.py, steps 1 and 4")
    pp.add_argument("--data-path", required=True, help="a folder with video/ and masks/")
    pp.add_argument("--size", type=int, nargs=2, default=(476, 854), metavar=("H", "W"))
    pp.add_argument("--no-direct-flow", action="store_true", help="filter_using_direct_flow: false")
    pp.add_argument("--timings-json", type=Path, default=None)
    ns = ap.parse_args(argv)
    if ns.command == "extract":
        timings = save_trajectories(
            frames_path=ns.frames_path, output_path=ns.output_path,
            infer_res_size=tuple(ns.infer_res_size) if ns.infer_res_size else None, threshold=ns.threshold,
            min_trajectory_length=ns.min_trajectory_length, filter_using_direct_flow=ns.filter_using_direct_flow,
            direct_flow_threshold=ns.direct_flow_threshold,
        )
        if ns.timings_json is not None:
            ns.timings_json.write_text(json.dumps(timings))
    elif ns.command == "split":
        split_trajectories_to_fg_bg(traj_path=ns.traj_path, fg_masks_path=ns.fg_masks_path, fg_traj_path=ns.fg_traj_path,
                                    bg_traj_path=ns.bg_traj_path, size=tuple(ns.size) if ns.size else None)
    else:
        preprocess(data_path=ns.data_path, size=tuple(ns.size), direct_flow=not ns.no_direct_flow, timings_json=ns.timings_json)


if __name__ == "__main__":
    main()
