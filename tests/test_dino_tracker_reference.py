"""The DINO-Tracker reference (benchmarks/dino_tracker_reference.py) on exact motion: a texture
translated by (2, 1) px per frame, where every trajectory is known by hand.

Under a translation, every pixel of frame 0 starts a trajectory, and each later frame s seeds
only the strip that enters the view (x < 2 or y < 1): those pixels fail the consistency test
with frame s-1 (their flow leads out of frame s-1), every other pixel is passed through by an
earlier trajectory. A trajectory seeded at (x, y) in frame s is (x + 2k, y + k) until it leaves
the frame or the video ends, and is kept when it spans >= 2 frames.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from trackprep.core.chaining import chain_tracks
from trackprep.core.types import FlowPair

from conftest import REPO

_spec = importlib.util.spec_from_file_location("dino_tracker_reference", REPO / "benchmarks" / "dino_tracker_reference.py")
ref = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ref)

T, H, W = 5, 12, 16
SHIFT = np.array([2.0, 1.0], dtype=np.float32)  # (dx, dy) per frame


def translation_flows(frames: np.ndarray, pairs: list) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact flow of the translation for any pairs (a, b): (b - a) * SHIFT everywhere."""
    h, w = frames.shape[1:3]
    steps = torch.tensor([float(b - a) for a, b in pairs])[:, None, None, None]
    forward = steps * torch.from_numpy(SHIFT)[None, :, None, None].expand(1, 2, h, w)
    return forward.contiguous(), (-forward).contiguous()


def expected_trajectories() -> np.ndarray:
    """float32 [N, T, 2] by the rule in the module docstring, in the reference's order (start
    frame, then row-major seed pixel)."""
    rows = []
    for s in range(T - 1):
        for y in range(H):
            for x in range(W):
                if s > 0 and x >= SHIFT[0] and y >= SHIFT[1]:
                    continue  # passed through by an earlier trajectory
                length = min(T - s, (W - 1 - x) // 2 + 1, (H - 1 - y) + 1)
                if length < 2:
                    continue
                row = np.full((T, 2), np.nan, dtype=np.float32)
                k = np.arange(length)
                row[s : s + length, 0] = x + SHIFT[0] * k
                row[s : s + length, 1] = y + SHIFT[1] * k
                rows.append(row)
    return np.stack(rows)


def write_clip(folder: Path) -> None:
    """A translated random texture (frames) and masks that mark the left half (x < 8)."""
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 256, size=(H + T, W + 2 * T, 3), dtype=np.uint8)
    (folder / "video").mkdir(parents=True)
    (folder / "masks").mkdir()
    for t in range(T):
        Image.fromarray(texture[T - t : T - t + H, 2 * T - 2 * t : 2 * T - 2 * t + W].copy()).save(folder / "video" / f"{t:05d}.png")
        mask = np.zeros((H, W), dtype=np.uint8)
        mask[:, : W // 2] = 255
        Image.fromarray(mask).save(folder / "masks" / f"{t:05d}.png")


def assert_same_trajectories(got: torch.Tensor, want: np.ndarray) -> None:
    got = got.numpy()
    assert got.shape == want.shape
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got[~np.isnan(got)], want[~np.isnan(want)], atol=1e-3)


def test_masks_mark_the_entering_strip() -> None:
    frames = np.zeros((T, H, W, 3), dtype=np.uint8)
    masks, flows = ref.flows_with_masks(translation_flows, frames, threshold=ref.THRESHOLD)
    assert masks.shape == (T + 1, H, W, 1) and flows.shape == (2, T - 1, 2, H, W)
    strip = np.zeros((H, W), dtype=bool)
    strip[:, :2] = strip[:1, :] = True
    assert not masks[0].any()
    for t in range(1, T):
        np.testing.assert_array_equal(masks[t, ..., 0].numpy(), ~strip)


@pytest.mark.parametrize("direct", [False, True])
def test_chaining_gives_the_translation(direct: bool) -> None:
    frames = np.zeros((T, H, W, 3), dtype=np.uint8)
    masks, flows = ref.flows_with_masks(translation_flows, frames, threshold=ref.THRESHOLD)
    direct_fn = ref.direct_flows(translation_flows, lambda s: frames[s:], threshold=ref.THRESHOLD) if direct else None
    got = ref.chain_trajectories(masks, flows, threshold=ref.THRESHOLD, min_trajectory_length=2,
                                 direct=direct_fn, direct_flow_threshold=ref.DIRECT_FLOW_THRESHOLD)
    assert_same_trajectories(got, expected_trajectories())


def test_direct_flow_filter_removes_drifting_trajectories() -> None:
    """Direct flow that disagrees with the chained flow by 3 px (> 2.5) from frame 2 on ends
    every trajectory of frame 0 after frame 1; where the direct flow is unreliable
    (inconsistent) it is ignored."""
    frames = np.zeros((T, H, W, 3), dtype=np.uint8)
    masks, flows = ref.flows_with_masks(translation_flows, frames, threshold=ref.THRESHOLD)

    def drifting(frames_: np.ndarray, pairs: list) -> tuple[torch.Tensor, torch.Tensor]:
        forward, backward = translation_flows(frames_, pairs)
        far = torch.tensor([b - a >= 2 for a, b in pairs])
        forward[far, 1] += 3.0  # still consistent: the backward flow moves back by as much
        backward[far, 1] -= 3.0
        return forward, backward

    got = ref.chain_trajectories(masks, flows, threshold=ref.THRESHOLD, min_trajectory_length=2,
                                 direct=ref.direct_flows(drifting, lambda s: frames[s:], threshold=ref.THRESHOLD),
                                 direct_flow_threshold=ref.DIRECT_FLOW_THRESHOLD).numpy()
    starts = np.argmax(~np.isnan(got[..., 0]), axis=1)
    lengths = (~np.isnan(got[..., 0])).sum(axis=1)
    # Frame 0's trajectories whose direct target at frame 2 lies inside (y + 2 + 3 <= H-1) end at frame 1.
    first = got[starts == 0]
    target_inside = first[:, 0, 1] + 5 <= H - 1
    assert target_inside.any() and (~target_inside).any()
    assert (lengths[starts == 0][target_inside] == 2).all()
    assert (lengths[starts == 0][~target_inside] >= 2).all()
    # Look-behind: frame 2 is consistent with frame 1 everywhere but the entering strip, yet
    # the ended trajectories no longer pass through it, so it seeds far more than the strip.
    strip = W * H - (W - 2) * (H - 1)
    assert (starts == 2).sum() > 2 * strip


def test_extract_and_split_end_to_end(tmp_path: Path) -> None:
    write_clip(tmp_path)
    paths = ref.data_paths(tmp_path)
    ref.save_trajectories(frames_path=paths["video"], output_path=paths["trajectories"], infer_res_size=(H, W),
                          filter_using_direct_flow=True, flows=translation_flows)
    want = expected_trajectories()
    assert_same_trajectories(torch.load(paths["trajectories"]), want)
    fg, bg = ref.split_trajectories_to_fg_bg(traj_path=paths["trajectories"], fg_masks_path=paths["masks"],
                                            fg_traj_path=paths["fg"], bg_traj_path=paths["bg"], size=(H, W))
    first_x = want[np.arange(len(want)), np.argmax(~np.isnan(want[..., 0]), axis=1), 0]
    assert (fg, bg) == (int((first_x < W // 2).sum()), int((first_x >= W // 2).sum()))
    assert_same_trajectories(torch.load(paths["fg"]), want[first_x < W // 2])
    assert_same_trajectories(torch.load(paths["bg"]), want[first_x >= W // 2])


def test_trackprep_keeps_the_same_trajectories() -> None:
    """On exact motion trackprep's chaining (min length 2) finds the same trajectories, in its own order."""
    forward, backward = translation_flows(np.zeros((1, H, W, 3)), [(t, t + 1) for t in range(T - 1)])
    tracks = chain_tracks(FlowPair(forward=forward, backward=backward), seed_stride=1, min_length=2)
    dense = np.full((len(tracks), T, 2), np.nan, dtype=np.float32)
    for i in range(len(tracks)):
        s, e = tracks.offsets[i], tracks.offsets[i + 1]
        dense[i, tracks.start[i] : tracks.start[i] + e - s] = tracks.points[s:e]

    def key(rows: np.ndarray) -> list:
        return sorted(tuple(np.nan_to_num(r, nan=-1).round(3).ravel()) for r in rows)

    assert key(dense) == key(expected_trajectories())
