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
  the frame and lies within cycle_threshold px of the one-frame step's position (the tolerance
  the cycle test itself grants one point): after DINO-Tracker's optional filter of chained flow
  against direct long-range flow (2.5 px there), used the other way round, so that a long-gap
  match that is consistent but wrong (a repeated texture, a patch of background beside a thin
  object) cannot move a point; drift is still corrected, a little each frame. Its uncertainty
  is its forward-backward error in px;
- a track ends exactly where the chain mode ends the track of the same seed: each live point
  also carries its chain-mode position (plain one-frame chaining from its seed), and the track
  ends at that position's first failed cycle test. Occlusions and track lengths are those of
  the chain mode's track from the same seed; only positions change (a point none of whose
  candidates passes takes its chain-mode position). Ending a track where the step from its
  corrected position fails instead kept tracks alive along object edges that the chain mode
  ends, and the evaluation's 2-px blend of
  neighbouring tracks mixed their motion into queries on the adjacent surface: with oracle flow
  on the synthetic scenes, 0.1 lower PCK at 3 px than the chain mode although each track was
  more exact (benchmarks/eval_synthetic.py).

Seeding, labels, records and the order tracks are handed out in are those of `TrackChainer`,
which this extends (a frame's seeds fill the cells no track's chosen position covers, so seeds
after frame 0 can differ from the chain mode's). With exact flow, candidates are exact away from
motion boundaries (where bilinear sampling mixes two surfaces' flow), so tracks are at least as
exact as chaining's. Memory: the live points' positions and costs at the last max(gaps) frames,
and their chain-mode positions.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch

from trackprep.core.chaining import DEFAULT_CYCLE_THRESHOLD, HistoryCodec, TrackChainer, cycle_step

# MFT's gaps are 1, 2, 4, ..., 32 and infinity (flow from the template frame itself). Four
# gaps keep the extra flow at most 3x the chain mode's (4x the pairs in all).
DEFAULT_GAPS = (1, 2, 4, 8)


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
        # Per live point, where the chain mode would have it (plain one-frame chaining from its
        # seed) and that chain's accumulated cycle error: its cycle test ends the track.
        self._chain_pos = torch.empty((0, 2), dtype=torch.float32, device=self.device)
        self._chain_cost = torch.empty(0, dtype=torch.float32, device=self.device)
        # frame -> (ids, positions, costs) of the points live there, for the frames a gap reaches.
        self._past: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def add_frame(self, *, mask=None) -> None:
        live = self.num_live
        super().add_frame(mask=mask)
        seeds, zeros = self._pos[live:], torch.zeros(self.num_live - live, dtype=torch.float32, device=self.device)
        self._cost = torch.cat([self._cost, zeros])
        self._chain_pos, self._chain_cost = torch.cat([self._chain_pos, seeds]), torch.cat([self._chain_cost, zeros])
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
        for source, _ in needed:  # gap 1 first: the other candidates must agree with its step
            forward, backward = flows[(source, target)]
            self._check_flow(forward=forward, backward=backward, what=f"pair ({source}, {target})")
            forward, backward = forward.to(self.device).float(), backward.to(self.device).float()
            if source == self.frame:
                step, ok, error = cycle_step(forward, backward, self._pos, cycle_threshold=self.cycle_threshold)
                best, cost = step, torch.where(ok, self._cost + error, torch.inf)
                # The chain mode's step decides which tracks end.
                chain_next, keep, chain_error = cycle_step(forward, backward, self._chain_pos,
                                                           cycle_threshold=self.cycle_threshold)
                continue
            ids, pos, past_cost = self._past[source]
            # Live ids are ascending (seeding order, filtered), so a sorted search finds each point.
            row = torch.searchsorted(ids, self._id).clamp(max=max(ids.shape[0] - 1, 0))
            there = ids[row] == self._id if ids.shape[0] else torch.zeros_like(keep)
            cand, ok, error = cycle_step(forward, backward, pos[row], cycle_threshold=self.cycle_threshold)
            cand_cost = past_cost[row] + error
            better = there & ok & (cand_cost < cost)
            # After DINO-Tracker's direct-flow filter (Tumanyan et al., ECCV 2024: 2.5 px). Without
            # it, DIS on DAVIS cows put 1.2% fewer foreground points inside the mask than the chain
            # mode; at 2.5 px rather than the cycle threshold, oracle flow on the synthetic scenes
            # scored 0.06 lower PCK at 3 px (benchmarks/bench_longrange.py, eval_synthetic.py).
            better &= torch.linalg.vector_norm(cand - step, dim=1) <= self.cycle_threshold
            best = torch.where(better.unsqueeze(1), cand, best)
            cost = torch.where(better, cand_cost, cost)
        # A live track none of whose candidates passes goes where the chain mode has it.
        chain_cost = self._chain_cost + chain_error
        lost = torch.isinf(cost)
        best = torch.where(lost.unsqueeze(1), chain_next, best)
        cost = torch.where(lost, chain_cost, cost)
        self._cost, self._chain_pos, self._chain_cost = cost[keep], chain_next[keep], chain_cost[keep]
        self._move(best, keep)
