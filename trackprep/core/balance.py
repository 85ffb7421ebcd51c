"""Balanced foreground/background subsampling of tracks.

DINO-Tracker samples foreground and background points in equal numbers for each training
step; Track4Gen's correspondence loss uses the same split. Void/unknown labels (255) are
never chosen.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from trackprep.core.labels import is_foreground


def class_counts(n: int, *, num_fg: int, num_bg: int, fg_share: float) -> tuple[int, int]:
    """(foreground, background) counts for up to `n` picks, filling from the other class when one is short."""
    if not 0.0 <= fg_share <= 1.0:
        raise ValueError(f"fg_share must be in [0, 1], got {fg_share}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    n = min(n, num_fg + num_bg)
    want_fg = int(round(n * fg_share))
    take_fg = min(want_fg, num_fg)
    take_bg = min(n - take_fg, num_bg)
    take_fg = min(n - take_bg, num_fg)
    return take_fg, take_bg


def balanced_subsample(
    labels: np.ndarray, *, n: int, fg_share: float = 0.5, seed: int | Sequence[int]
) -> np.ndarray:
    """Sorted int64 indices of up to `n` tracks, round(n * fg_share) of them foreground when enough exist.

    Reproducible from `seed` (an int or a sequence of ints, e.g. (seed, video hash, start)).
    """
    fg = np.flatnonzero(is_foreground(labels))
    bg = np.flatnonzero(labels == 0)
    take_fg, take_bg = class_counts(n, num_fg=fg.size, num_bg=bg.size, fg_share=fg_share)
    rng = np.random.default_rng(seed)
    picked = np.concatenate([rng.choice(fg, take_fg, replace=False), rng.choice(bg, take_bg, replace=False)])
    return np.sort(picked).astype(np.int64)
