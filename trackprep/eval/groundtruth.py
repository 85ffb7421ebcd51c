"""Ground-truth point tracks for evaluation, read from two formats.

**TAP-Vid pickle** (`--format tapvid`; tapvid_davis.pkl as released by tapnet): a dict
video name -> {"video": uint8 [T, H, W, 3], "points": float32 [N, T, 2] (x, y) in [0, 1],
"occluded": bool [N, T]}. A normalised u maps to u * W in tapnet's raster, whose pixel
centres sit at +0.5, so in our convention (centres at integers) x = u * W - 0.5.
No queries are stored: they are sampled per query mode ("first", "strided").

**npz** (`--format npz`): one `np.savez` file; every array is named "<video>/<field>":

    <video>/tracks   float32 [N, T, 2]  (x, y) in pixels, pixel centres at integers
    <video>/visible  bool    [N, T]     True where the point is visible
    <video>/size     int     [2]        (H, W) of the image the coordinates refer to
    <video>/queries  float32 [N, 3]     optional (t, x, y): row i queries track i, and
                                        the query mode then only decides which frames
                                        are scored; without it queries are sampled
    <video>/masks    uint8   [T, H, W]  optional foreground masks (0 background, k object
                                        k, 255 void) for BADJA's segmentation PCK
    <video>/frames   uint8   [T, H, W, 3] optional RGB frames (what `track4gen eval-tracking`
                                        tracks; a TAP-Vid pickle always has them)

<video> may itself contain "/" ("davis/blackswan"): the field is after the last one.
`write_npz` writes this format.
"""

from __future__ import annotations

import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

FORMATS = ("tapvid", "npz")
NPZ_FIELDS = ("tracks", "visible", "size", "queries", "masks", "frames")


class GroundTruthError(ValueError):
    """A ground-truth file is missing, of another format, or holds arrays of the wrong shape."""


@dataclass(frozen=True)
class GroundTruthVideo:
    """One video's ground-truth tracks in pixel coordinates of an image of `size`."""

    name: str
    size: tuple[int, int]  # (H, W) the coordinates refer to
    tracks: np.ndarray  # float32 [N, T, 2] (x, y), pixel centres at integers
    occluded: np.ndarray  # bool [N, T]
    queries: np.ndarray | None = None  # float32 [N, 3] (t, x, y), one per track; None: sample by mode
    masks: np.ndarray | None = None  # uint8 [T, H, W] at `size`
    frames: np.ndarray | None = None  # uint8 [T, H, W, 3] at `size`: the video itself, where the file has it

    def __post_init__(self) -> None:
        where = f"ground-truth video {self.name!r}"
        n_t = self.tracks.shape[:2]
        if self.tracks.dtype != np.float32 or self.tracks.ndim != 3 or self.tracks.shape[2] != 2:
            raise GroundTruthError(f"{where}: tracks: expected float32 [N, T, 2], got {self.tracks.dtype} {self.tracks.shape}")
        if self.occluded.dtype != np.bool_ or self.occluded.shape != n_t:
            raise GroundTruthError(f"{where}: occluded: expected bool {list(n_t)}, got {self.occluded.dtype} {self.occluded.shape}")
        if len(self.size) != 2 or min(self.size) < 1:
            raise GroundTruthError(f"{where}: size: expected (H, W) positive, got {self.size}")
        if self.queries is not None and (self.queries.dtype != np.float32 or self.queries.shape != (n_t[0], 3)):
            raise GroundTruthError(
                f"{where}: queries: expected float32 [{n_t[0]}, 3] (t, x, y), got {self.queries.dtype} {self.queries.shape}"
            )
        if self.masks is not None and (self.masks.dtype != np.uint8 or self.masks.shape != (n_t[1], *self.size)):
            raise GroundTruthError(
                f"{where}: masks: expected uint8 {[n_t[1], *self.size]}, got {self.masks.dtype} {self.masks.shape}"
            )
        if self.frames is not None and (self.frames.dtype != np.uint8 or self.frames.shape != (n_t[1], *self.size, 3)):
            raise GroundTruthError(
                f"{where}: frames: expected uint8 {[n_t[1], *self.size, 3]}, got {self.frames.dtype} {self.frames.shape}"
            )

    @property
    def num_frames(self) -> int:
        return int(self.tracks.shape[1])


def _array(path: Path, video: str, field: str, value, *, dtype, ndim: int) -> np.ndarray:
    arr = np.asarray(value)
    if arr.ndim != ndim:
        raise GroundTruthError(f"{path}: video {video!r} {field}: expected {ndim} dimensions, got shape {arr.shape}")
    try:
        return arr.astype(dtype, casting="same_kind" if dtype != np.bool_ else "unsafe", copy=False)
    except TypeError as exc:
        raise GroundTruthError(f"{path}: video {video!r} {field}: expected {np.dtype(dtype)}, got {arr.dtype}") from exc


def read_tapvid_pickle(path: str | Path) -> list[GroundTruthVideo]:
    """The videos of a TAP-Vid DAVIS-style pickle (only open pickles you trust: loading runs code)."""
    path = Path(path)
    if not path.is_file():
        raise GroundTruthError(f"{path}: ground-truth file does not exist")
    try:
        with path.open("rb") as f:
            data = pickle.load(f)
    except Exception as exc:
        raise GroundTruthError(f"{path}: cannot read as a pickle ({type(exc).__name__}: {exc})") from exc
    if not isinstance(data, dict) or not data:
        raise GroundTruthError(
            f"{path}: expected a TAP-Vid pickle, a non-empty dict video name -> "
            f"{{'video', 'points', 'occluded'}}, got {type(data).__name__}"
        )
    videos = []
    for name, entry in data.items():
        missing = [k for k in ("video", "points", "occluded") if not isinstance(entry, dict) or k not in entry]
        if missing:
            raise GroundTruthError(f"{path}: video {name!r}: missing {missing} (expected keys 'video', 'points', 'occluded')")
        frames = np.asarray(entry["video"])
        if frames.ndim != 4:
            raise GroundTruthError(f"{path}: video {name!r} video: expected [T, H, W, 3], got shape {frames.shape}")
        h, w = int(frames.shape[1]), int(frames.shape[2])
        points = _array(path, name, "points", entry["points"], dtype=np.float64, ndim=3)
        occluded = _array(path, name, "occluded", entry["occluded"], dtype=np.bool_, ndim=2)
        if points.shape[1] != frames.shape[0] or points.shape[2] != 2 or occluded.shape != points.shape[:2]:
            raise GroundTruthError(
                f"{path}: video {name!r}: expected points [N, {frames.shape[0]}, 2] and occluded [N, {frames.shape[0]}] "
                f"for {frames.shape[0]} frames, got {points.shape} and {occluded.shape}"
            )
        tracks = (points * np.array([w, h]) - 0.5).astype(np.float32)
        videos.append(GroundTruthVideo(name=str(name), size=(h, w), tracks=tracks, occluded=occluded,
                                       frames=frames if frames.dtype == np.uint8 and frames.shape[-1] == 3 else None))
    return videos


def read_npz(path: str | Path) -> list[GroundTruthVideo]:
    """The videos of a ground-truth npz (format in the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise GroundTruthError(f"{path}: ground-truth file does not exist")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise GroundTruthError(f"{path}: cannot read as an npz archive ({exc})") from exc
    with archive:
        fields: dict[str, dict[str, np.ndarray]] = {}
        for key in archive.files:
            video, _, field = key.rpartition("/")
            if not video or field not in NPZ_FIELDS:
                raise GroundTruthError(
                    f"{path}: array {key!r}: expected names '<video>/<field>' with field one of {list(NPZ_FIELDS)}"
                )
            fields.setdefault(video, {})[field] = archive[key]
    if not fields:
        raise GroundTruthError(f"{path}: no videos (expected arrays named '<video>/tracks', '<video>/visible', ...)")
    videos = []
    for name, f in fields.items():
        missing = [k for k in ("tracks", "visible", "size") if k not in f]
        if missing:
            raise GroundTruthError(f"{path}: video {name!r}: missing arrays {[f'{name}/{k}' for k in missing]}")
        size = np.asarray(f["size"]).reshape(-1)
        if size.shape != (2,):
            raise GroundTruthError(f"{path}: video {name!r} size: expected [2] (H, W), got {f['size'].shape}")
        visible = _array(path, name, "visible", f["visible"], dtype=np.bool_, ndim=2)
        tracks = _array(path, name, "tracks", f["tracks"], dtype=np.float32, ndim=3)
        queries = f.get("queries")
        if queries is not None:
            queries = _array(path, name, "queries", queries, dtype=np.float32, ndim=2)
        try:  # shape checks of the record; name the file in their message
            videos.append(
                GroundTruthVideo(
                    name=name, size=(int(size[0]), int(size[1])), tracks=tracks, occluded=~visible,
                    queries=queries, masks=f.get("masks"), frames=f.get("frames"),
                )
            )
        except GroundTruthError as exc:
            raise GroundTruthError(f"{path}: {exc}") from exc
    return videos


def write_npz(path: str | Path, videos: Iterable[GroundTruthVideo]) -> None:
    """Write videos in the npz format `read_npz` reads."""
    arrays: dict[str, np.ndarray] = {}
    for v in videos:
        arrays[f"{v.name}/tracks"] = v.tracks
        arrays[f"{v.name}/visible"] = ~v.occluded
        arrays[f"{v.name}/size"] = np.asarray(v.size, dtype=np.int64)
        if v.queries is not None:
            arrays[f"{v.name}/queries"] = v.queries
        if v.masks is not None:
            arrays[f"{v.name}/masks"] = v.masks
        if v.frames is not None:
            arrays[f"{v.name}/frames"] = v.frames
    with Path(path).open("wb") as f:
        np.savez_compressed(f, **arrays)


def guess_format(path: str | Path) -> str:
    suffix = Path(path).suffix.lower()
    if suffix in (".pkl", ".pickle"):
        return "tapvid"
    if suffix == ".npz":
        return "npz"
    raise GroundTruthError(f"{path}: cannot tell the format from the suffix {suffix!r}; pass format 'tapvid' or 'npz'")


def read_groundtruth(path: str | Path, *, format: str | None = None) -> list[GroundTruthVideo]:
    """Videos of a ground-truth file; `format` None guesses from the suffix (.pkl, .npz)."""
    fmt = guess_format(path) if format is None else format
    if fmt not in FORMATS:
        raise GroundTruthError(f"ground-truth format: expected one of {list(FORMATS)}, got {fmt!r}")
    return read_tapvid_pickle(path) if fmt == "tapvid" else read_npz(path)
