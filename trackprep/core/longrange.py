"""Long-range tracking: each point picks, frame by frame, the most consistent of several flow
chains through frame gaps 1, 2, 4, 8 (after MFT: Neoral, Šerých and Matas, "MFT: Long-Term
Tracking of Every Pixel", WACV 2024).

Plain chaining (trackprep.core.chaining) adds one flow's error per frame. MFT instead keeps, for
every point, candidate positions in frame t reached from its positions in frames t - d for
d in {1, 2, 4, 8, ...}: x_t^d = x_{t-d} + f_{t-d -> t}(x_{t-d}), and picks the candidate whose
chain has the lowest accumulated uncertainty (cost(t-d) + uncertainty of the flow t-d -> t at
x_{t-d}). A chain through long gaps takes few steps, so it accumulates less error than the
one-frame chain. MFT learns an uncertainty and an occlusion score per flow; here both come from
the forward-backward test the chain mode already applies (the same `cycle_step`):

- a candidate counts only if it passes the cycle test (<= cycle_threshold px), lands inside
  the frame and lies within AGREEMENT_PX of the one-frame step's position: DINO-Tracker's
  optional filter of chained flow against direct long-range flow (2.5 px), used the other way
  round, so that a long-gap match that is consistent but wrong (a repeated texture, a patch of
  background beside a thin object) cannot move a point; drift is still corrected, a little each
  frame. Its uncertainty is its forward-backward error in px;
- a track ends exactly where the chain mode's test ends it: at the first frame whose one-frame
  step (from the track's chosen position) fails. Occlusions are detected as before; only the
  positions of surviving points change.

Seeding, labels, records and the order tracks are handed out in are those of `TrackChainer`,
which this extends. With exact flow every candidate is exact, so the tracks are as exact as
chaining's. Memory: the live points' positions and costs at the last max(gaps) frames.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch

from trackprep.core.chaining import DEFAULT_CYCLE_THRESHOLD, HistoryCodec, TrackChainer, cycle_step

# MFT's gaps are 1, 2, 4, ..., 32 and infinity (flow from the template frame itself). Four
# gaps keep the extra flow at most 3x the chain mode's (4x the pairs in all).
DEFAULT_GAPS = (1, 2, 4, 8)
# DINO-Tracker (Tumanyan et al., ECCV 2024), preprocessing's direct-flow filter: chained and direct
# long-range flow must agree within 2.5 px. Without it, DIS on DAVIS cows put 1.2% fewer
# foreground points inside the mask than the chain mode (benchmarks/bench_longrange.py).
AGREEMENT_PX = 2.5


def check_gaps(gaps: Sequence[int]) -> tuple[int, ...]:
    """`gaps` as a sorted tuple; ValueError unless they are distinct positive integers that include 1."""
    out = tuple(sorted(gaps))
    if not out or any(isinstance(g, bool) or not isinstance(g, int) or g < 1 for g in out) \
            or len(set(out)) != len(out) or out[0] != 1:
        raise ValueError(f"gaps: expected distinct positive integers including 1 (frame distances), got {list(gaps)}")
    return out


def gap_pairs(target: int, *, gaps: Sequence[int]) -> list[tuple[int, int]]:
    """The flow pairs (source, target) the step into frame `target` uses: one per gap that
    reaches back to frame 0 or later, smallest gap first."""
    return [(target - d, target) for d in gaps if target - d >= 0]


class LongRangeChainer(TrackChainer):
    """`TrackChainer` whose step into frame t chooses among the chains through `gaps`.

    Use as TrackChainer, with `advance_gaps(flows)` instead of `advance`: `flows` maps each
    pair of `gap_pairs(self.frame + 1, gaps=self.gaps)` to its (forward, backward) flow
    [2, H, W] each (source -> target and target -> source).
    """

    def __init__(
        self, *, height: int, width: int, gaps: Sequence[int] = DEFAULT_GAPS,
        cycle_threshold: float = DEFAULT_CYCLE_THRESHOLD, seed_stride: int = 1, min_length: int = 1,
        device: torch.device | str = "cpu", history_codec: HistoryCodec | None = None,
    ) -> None:
        super().__init__(height=height, width=width, cycle_threshold=cycle_threshold, seed_stride=seed_stride,
                         min_length=min_length, device=device, history_codec=history_codec)
        self.gaps = check_gaps(gaps)
        self._cost = torch.empty(0, dtype=torch.float32, device=self.device)  # per live point, px
        # frame -> (ids, positions, costs) of the points live there, for the frames a gap reaches.
        self._past: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def add_frame(self, *, mask=None) -> None:
        super().add_frame(mask=mask)
        seeded = self.num_live - int(self._cost.shape[0])
        self._cost = torch.cat([self._cost, torch.zeros(seeded, dtype=torch.float32, device=self.device)])
        self._past[self.frame] = (self._id, self._pos, self._cost)
        # The next step reaches back to frame + 1 - max(gaps) at the earliest.
        for frame in [f for f in self._past if f <= self.frame - self.gaps[-1]]:
            del self._past[frame]

    def advance(self, forward: torch.Tensor, backward: torch.Tensor) -> None:
        raise TypeError("LongRangeChainer.advance: use advance_gaps(flows) with the flow of every gap_pairs() pair")

    def advance_gaps(self, flows: Mapping[tuple[int, int], tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Step the live points into the next frame, each to its lowest-cost passing candidate."""
        if not self._at_frame:
            raise RuntimeError(f"advance_gaps: expected add_frame() for frame {self.frame + 1} first")
        target = self.frame + 1
        needed = gap_pairs(target, gaps=self.gaps)
        missing = [p for p in needed if p not in flows]
        if missing:
            raise ValueError(f"advance_gaps: no flow for pairs {missing} into frame {target}; expected {needed}")
        best = cost = keep = None
        for source, _ in needed:  # gap 1 first: its test decides which tracks end
            forward, backward = flows[(source, target)]
            self._check_flow(forward=forward, backward=backward, what=f"pair ({source}, {target})")
            forward, backward = forward.to(self.device).float(), backward.to(self.device).float()
            if source == self.frame:
                step, keep, error = cycle_step(forward, backward, self._pos, cycle_threshold=self.cycle_threshold)
                best, cost = step, torch.where(keep, self._cost + error, torch.inf)
                continue
            ids, pos, past_cost = self._past[source]
            # Live ids are ascending (seeding order, filtered), so a sorted search finds each point.
            row = torch.searchsorted(ids, self._id).clamp(max=max(ids.shape[0] - 1, 0))
            there = ids[row] == self._id if ids.shape[0] else torch.zeros_like(keep)
            cand, ok, error = cycle_step(forward, backward, pos[row], cycle_threshold=self.cycle_threshold)
            cand_cost = past_cost[row] + error
            better = there & ok & (cand_cost < cost)
            better &= torch.linalg.vector_norm(cand - step, dim=1) <= AGREEMENT_PX
            best = torch.where(better.unsqueeze(1), cand, best)
            cost = torch.where(better, cand_cost, cost)
        self._cost = cost[keep]
        self._move(best, keep)
