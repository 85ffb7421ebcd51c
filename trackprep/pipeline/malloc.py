"""glibc malloc settings for long annotation runs: give large freed arrays back to the OS.

Chaining allocates and frees arrays of a few MiB every frame (temporaries over the live
tracks) while a window's records stay alive. glibc's mmap threshold is dynamic: after such an
array is unmapped it rises (up to 32 MiB) and later arrays come from the heap, whose freed
holes it keeps, so the process's RSS creeps up with the run time while its live memory does
not (benchmarks/bench_long_video.py, cows 100 -> 800 frames: 1.04 -> 1.42 GB). A fixed
threshold of 4 MiB (arrays at least that large are mapped and unmapped: numpy's large
temporaries, not the many small objects) and 2 arenas keep the RSS with the live memory
(1.02 -> 1.25 GB). Dask does the like for its workers (distributed.yaml,
nanny.pre-spawn-environ: MALLOC_TRIM_THRESHOLD_, "automatically trim memory").

Only the `trackprep annotate` command applies this to its own process; library callers keep
their process's settings. A MALLOC_* variable (or a glibc.malloc tunable) set in the environment wins (glibc reads them
at start-up and they are the user's choice).
"""

from __future__ import annotations

import ctypes
import os
import sys

MMAP_THRESHOLD_BYTES = 4 << 20
ARENAS = 2
# mallopt(3) parameter numbers (glibc's malloc.h).
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8


def return_large_frees_to_os(*, mmap_threshold: int = MMAP_THRESHOLD_BYTES, arenas: int = ARENAS) -> bool:
    """Set glibc's mmap threshold and arena count for this process; False where not applied
    (not glibc, or the environment chose malloc settings)."""
    chosen = any(k.startswith("MALLOC_") for k in os.environ) or "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", "")
    if not sys.platform.startswith("linux") or chosen:
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others: no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt(_M_MMAP_THRESHOLD, mmap_threshold) == 1 and mallopt(_M_ARENA_MAX, arenas) == 1
