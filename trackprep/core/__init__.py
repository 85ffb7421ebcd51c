"""Pure array computation: no paths, no Zarr, no Dask, no Typer.

Everything here takes arrays (numpy or torch) and returns arrays, so it can be
tested against exact answers and scheduled by whatever runs it.
"""

from trackprep.core.types import Clip, FlowPair, TrackSet, check_frames, check_masks

__all__ = ["Clip", "FlowPair", "TrackSet", "check_frames", "check_masks"]
