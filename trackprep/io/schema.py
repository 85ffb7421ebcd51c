"""Names, dtypes and shapes of the two Zarr stores (../shared/DESIGN.md, "Store contracts").

The annotation writer, the shard stage, `validate` and the track4gen trainer all
read these definitions, so every array name is spelled in exactly one place.
Dimension letters: T frames, H, W image size, N tracks, S segments, L segment length.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ANNOTATION_FORMAT = "trackprep.annotations"
SEGMENT_FORMAT = "trackprep.segments"
# The segment store's format version (trackprep.io.segment_store).
FORMAT_VERSION = 1
# The annotation store's: 2 keeps tracks as a contiguous ragged array (points, start, length);
# version 1 kept them dense, tracks [N, T, 2] with NaN plus visible [N, T].
ANNOTATION_FORMAT_VERSION = 2

# Root attribute keys shared by both stores.
ATTR_FORMAT = "format"
ATTR_FORMAT_VERSION = "format_version"
ATTR_PACKAGE_VERSION = "package_version"
ATTR_CONFIG = "config"
# Per-video group attributes of the annotation store.
ATTR_STATUS = "status"
STATUS_COMPLETE = "complete"
STATUS_FAILED = "failed"
ATTR_ERROR = "error"

SEGMENTS_GROUP = "segments"


def store_format(path: str | Path) -> str | None:
    """The `format` root attribute of the store at `path` (ANNOTATION_FORMAT, SEGMENT_FORMAT, ...),
    read straight from its zarr.json; None when it is not a readable Zarr v3 group."""
    try:
        meta = json.loads((Path(path) / "zarr.json").read_text())
    except (OSError, ValueError):
        return None
    attrs = meta.get("attributes") if isinstance(meta, dict) else None
    return attrs.get(ATTR_FORMAT) if isinstance(attrs, dict) else None


@dataclass(frozen=True)
class ArraySpec:
    name: str
    dtype: str  # numpy dtype name; "str" for variable-length strings
    dims: tuple[str, ...]
    meaning: str

    def np_dtype(self) -> np.dtype:
        return np.dtype(object) if self.dtype == "str" else np.dtype(self.dtype)


# A.zarr/<dataset>/<video>/
FRAMES = ArraySpec("frames", "uint8", ("T", "H", "W", "C"), "RGB frames at the working resolution")
MASKS = ArraySpec("masks", "uint8", ("T", "H", "W"), "0 background, k object k, 255 void")
HAS_MASK = ArraySpec("has_mask", "bool", ("T",), "True where the frame has a ground-truth mask")
# Tracks as a contiguous ragged array (CF conventions' layout for trajectories): track i is
# defined on frames start[i] .. start[i] + length[i] - 1 at points[o[i] : o[i] + length[i]],
# o = cumsum(length) - length.
POINTS = ArraySpec("points", "float32", ("P", "XY"), "(x, y) in pixels of every track at every frame it is defined, track after track")
START = ArraySpec("start", "int32", ("N",), "first frame of each track")
LENGTH = ArraySpec("length", "int32", ("N",), "frames of each track (>= min_track_length); sums to P")
LABELS = ArraySpec("labels", "uint8", ("N",), "object id at the track's first annotated frame; 255 unknown")

ANNOTATION_ARRAYS = (FRAMES, MASKS, HAS_MASK, POINTS, START, LENGTH, LABELS)
TRACK_ARRAYS = (POINTS, START, LENGTH, LABELS)

# S.zarr/segments/
SEG_FRAMES = ArraySpec("frames", "uint8", ("S", "L", "H", "W", "C"), "RGB frames")
SEG_MASKS = ArraySpec("masks", "uint8", ("S", "L", "H", "W"), "0 background, k object k, 255 void")
SEG_HAS_MASK = ArraySpec("has_mask", "bool", ("S", "L"), "True where the frame has a ground-truth mask")
# Stored float32 by default; `trackprep shard --tracks-dtype float16` halves its size. Readers upcast.
SEG_TRACKS = ArraySpec("tracks", "float32", ("S", "N", "L", "XY"), "(x, y); rows >= num_tracks[s] are padding")
SEG_VISIBLE = ArraySpec("visible", "bool", ("S", "N", "L"), "True where the track is defined")
SEG_LABELS = ArraySpec("labels", "uint8", ("S", "N"), "object id; 0 background")
SEG_NUM_TRACKS = ArraySpec("num_tracks", "int32", ("S",), "number of real (non-padding) track rows")
SEG_VIDEO = ArraySpec("video", "str", ("S",), '"<dataset>/<video>" the segment comes from')
SEG_START = ArraySpec("start", "int32", ("S",), "first frame of the segment in its video")
# Added beyond DESIGN.md: ties each segment row back to its video's annotation-store row.
SEG_TRACK_IDS = ArraySpec(
    "track_ids", "int32", ("S", "N"), "row of the track in its video's annotation-store arrays; -1 for padding"
)

SEGMENT_ARRAYS = (
    SEG_FRAMES, SEG_MASKS, SEG_HAS_MASK, SEG_TRACKS, SEG_VISIBLE, SEG_LABELS, SEG_NUM_TRACKS, SEG_VIDEO, SEG_START, SEG_TRACK_IDS,
)
