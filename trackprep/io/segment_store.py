"""The segment store (`trackprep shard --out S.zarr`) that the Track4Gen trainer streams.

Layout (../shared/DESIGN.md, "Store contracts"), all under ``S.zarr/segments/``:
one row per L-frame training segment, with the array names of trackprep.io.schema.

Chunking: every per-segment array (frames, masks, has_mask, tracks, visible, labels)
has chunks of exactly one segment, so reading a segment is one chunk read per array;
Zarr v3 sharding packs ``segments_per_shard`` (default 8) of those chunks into one file,
so a store of a million segments holds 125,000 files per array, not a million.
The index arrays (num_tracks, video, start) and the completion flags ``done`` have
one plain chunk per shard, so a writer that owns whole shards never touches a file
another writer touches: that is the unit of parallel work and of resume.

Padding: track rows >= num_tracks[s] are padding: NaN tracks, visible False,
label 255. NaN marks "undefined" everywhere, as in the annotation store.

Creation is atomic: the whole empty store, index included, is built under a hidden name
beside `out` (``.S.zarr.partial``) and renamed into place, so a store at `out` is always a
whole one, and a creation killed half-way leaves only the hidden folder, which the next run
removes. `--overwrite` moves the old store aside (``.S.zarr.old-*``) before the rename and
deletes it after. Integrity: each shard's writer records the CRC-32 of the files it wrote
in ``chunk_crc32`` (one row per shard, its own chunk), so a missing or altered shard file is
found (`shard_problems`) instead of reading as fill values.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.abc.store import Store as StoreLike
from zarr.codecs import BloscCodec, ZstdCodec
from zarr.core.sync import sync as zarr_sync

from trackprep.io.frame_codecs import DEFAULT_JPEG_QUALITY, frame_codecs
from trackprep import __version__
from trackprep.core.types import VOID
from trackprep.io import integrity, schema
from trackprep.io.faults import fault_point

DEFAULT_SEGMENTS_PER_SHARD = 8
TRACKS_DTYPES = ("float32", "float16")
DONE = "done"  # bool [S]: True once segment s is fully written (resume marker)
CRC = "chunk_crc32"  # int64 [shards, files]: CRC-32 of each file of a shard once written
_NO_RECORD, _NOT_WRITTEN = -1, -2  # no CRC recorded yet; zarr wrote no file (all fill values)

# Per-segment arrays, in the order they are written and read.
_PER_SEGMENT = (
    schema.SEG_FRAMES, schema.SEG_MASKS, schema.SEG_HAS_MASK, schema.SEG_TRACKS, schema.SEG_VISIBLE, schema.SEG_LABELS,
    schema.SEG_TRACK_IDS,
)
_INDEX = (schema.SEG_NUM_TRACKS, schema.SEG_VIDEO, schema.SEG_START)
_CHECKED = _PER_SEGMENT + _INDEX  # the arrays whose files chunk_crc32 records, in its column order

# Frames and tracks are dense, high-entropy data: on DAVIS frames at 24x320x576, LZ4
# decoded a segment about twice as fast as zstd-1 for ~8% more bytes (natural frames
# barely compress either way: 13.3 MB raw, 11.6 MB zstd, 12.6 MB LZ4), which keeps a
# random read well under the 50 ms budget. Masks and flags are mostly long runs of one
# value, which zstd shrinks many times over.
_FAST = BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")
_SMALL = ZstdCodec(level=3)
_CODECS = {"tracks": _FAST}  # frames: trackprep.io.frame_codecs (lossless: _FAST)


class SegmentStoreError(ValueError):
    """A path that is not a (complete) segment store, or data that does not fit it."""


def _check_positive(name: str, value: Any, *, allow_zero: bool = False) -> int:
    lo = 0 if allow_zero else 1
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
        raise ValueError(f"{name}: expected an integer >= {lo}, got {value!r}")
    return int(value)


def _aside(path: Path, tag: str) -> Path:
    return path.with_name(f".{path.name}.{tag}")


def _is_own(path: Path) -> bool:
    """A segment store, judged by its format attribute, or (its root zarr.json damaged, or one
    left half-made by a trackprep before stores were built aside) by holding its `segments` group
    and nothing else, or its own `segments/done` array, which no other kind of store has."""
    if schema.store_format(path) == schema.SEGMENT_FORMAT or (path / schema.SEGMENTS_GROUP / DONE / "zarr.json").is_file():
        return True
    return {p.name for p in path.iterdir()} <= {"zarr.json", schema.SEGMENTS_GROUP} and (
        path / schema.SEGMENTS_GROUP / "zarr.json").is_file()


def remove_leftovers(path: str | os.PathLike) -> None:
    """Delete what an interrupted creation or --overwrite of the store at `path` left beside it."""
    path = Path(path)
    for left in [_aside(path, "partial"), *path.parent.glob(f".{path.name}.old-*")]:
        if left.is_dir():
            shutil.rmtree(left)


def create_segment_store(
    path: str | os.PathLike,
    *,
    num_segments: int | None = None,
    videos: Sequence[str] | None = None,
    starts: Sequence[int] | None = None,
    length: int,
    height: int,
    width: int,
    max_tracks: int,
    config: Mapping[str, Any],
    overwrite: bool = False,
    tracks_dtype: str = "float32",
    segments_per_shard: int = DEFAULT_SEGMENTS_PER_SHARD,
    frames_codec: str = "lossless",
    jpeg_quality: int = DEFAULT_JPEG_QUALITY,
) -> zarr.Group:
    """Create an empty segment store and return its root group: `num_segments` segments, or one
    per (video, start) of `videos` / `starts`, whose index is then written with it. Frames are
    kept losslessly (LZ4) or as JPEG at `jpeg_quality` (trackprep.io.frame_codecs).

    `config` is the full resolved configuration that produces the store (recorded in the
    root attributes). Raises FileExistsError if `path` exists and `overwrite` is False, or if
    it exists and is not a segment store (never deleted). Built aside and renamed into place.
    """
    if videos is not None or starts is not None:
        if videos is None or starts is None or len(videos) != len(starts):
            raise ValueError(f"videos and starts: expected two sequences of equal length, got {videos!r}, {starts!r}")
        if num_segments is not None and num_segments != len(videos):
            raise ValueError(f"num_segments {num_segments} but {len(videos)} videos/starts; expected equal")
        num_segments = len(videos)
    if num_segments is None:
        raise ValueError("num_segments: expected the number of segments (or videos and starts)")
    s = _check_positive("num_segments", num_segments, allow_zero=True)
    L = _check_positive("length", length)
    h = _check_positive("height", height)
    w = _check_positive("width", width)
    n = _check_positive("max_tracks", max_tracks)
    spp = _check_positive("segments_per_shard", segments_per_shard)
    if tracks_dtype not in TRACKS_DTYPES:
        raise ValueError(f"tracks_dtype: expected one of {TRACKS_DTYPES}, got {tracks_dtype!r}")
    path = Path(path)
    if path.exists():
        if not overwrite:
            raise FileExistsError(f"{path}: already exists; pass overwrite=True (--overwrite) to replace it")
        if not path.is_dir() or (any(path.iterdir()) and not _is_own(path)):
            # Never delete something we did not make (e.g. the annotation store given as --out by mistake).
            raise FileExistsError(f"{path}: exists and is not a segment store; refusing to overwrite it")
    remove_leftovers(path)
    partial = _aside(path, "partial")
    root = zarr.open_group(str(partial), mode="w-", zarr_format=3, attributes={
        schema.ATTR_FORMAT: schema.SEGMENT_FORMAT,
        schema.ATTR_FORMAT_VERSION: schema.FORMAT_VERSION,
        schema.ATTR_PACKAGE_VERSION: __version__,
        schema.ATTR_CONFIG: dict(config),
        "segments_per_shard": spp,
    })
    fault_point("shard:root-written")
    g = root.create_group(schema.SEGMENTS_GROUP)
    inner = {"frames": (L, h, w, 3), "masks": (L, h, w), "has_mask": (L,), "tracks": (n, L, 2),
             "visible": (n, L), "labels": (n,), "track_ids": (n,)}
    fills = {"tracks": np.nan, "labels": VOID, "track_ids": -1}
    shard_rows = max(1, min(spp, s))
    frames = frame_codecs(frames_codec, quality=jpeg_quality, lossless=[_FAST])
    for spec in _PER_SEGMENT:
        dtype = tracks_dtype if spec is schema.SEG_TRACKS else spec.dtype
        codecs = frames if spec is schema.SEG_FRAMES else {"compressors": [_CODECS.get(spec.name, _SMALL)]}
        g.create_array(
            spec.name, shape=(s, *inner[spec.name]), dtype=dtype,
            chunks=(1, *inner[spec.name]), shards=(shard_rows, *inner[spec.name]),
            fill_value=fills.get(spec.name, 0), dimension_names=spec.dims, attributes={"meaning": spec.meaning},
            **codecs,
        )
    for spec in _INDEX:
        g.create_array(
            spec.name, shape=(s,), dtype=str if spec.dtype == "str" else spec.dtype, chunks=(shard_rows,),
            compressors=[_SMALL], fill_value="" if spec.dtype == "str" else 0,
            dimension_names=spec.dims, attributes={"meaning": spec.meaning},
        )
    g.create_array(DONE, shape=(s,), dtype="bool", chunks=(shard_rows,), fill_value=False,
                   attributes={"meaning": "True once the segment is fully written"})
    g.create_array(CRC, shape=(-(-s // shard_rows), len(_CHECKED)), dtype="int64", chunks=(1, len(_CHECKED)),
                   fill_value=_NO_RECORD, attributes={"meaning": "CRC-32 of each shard's file of "
                                                      + ", ".join(spec.name for spec in _CHECKED)})
    fault_point("shard:arrays-created")
    if videos is not None and starts is not None:
        write_index(root, videos=videos, starts=starts)
        fault_point("shard:index-written")
    if path.exists():
        old = _aside(path, f"old-{uuid.uuid4().hex[:8]}")
        path.rename(old)
        fault_point("shard:old-store-moved-aside")
        partial.rename(path)
        shutil.rmtree(old)
    else:
        partial.rename(path)
    fault_point("shard:store-created")
    return zarr.open_group(str(path), mode="r+", zarr_format=3)


def open_segment_store(path: str | os.PathLike | StoreLike, *, mode: str = "r") -> zarr.Group:
    """Open an existing segment store (a local path or any zarr Store); clear error naming it when
    it is missing or not a segment store."""
    if isinstance(path, (str, os.PathLike)):
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such segment store (make one with `trackprep shard --out {path}`)")
        try:  # zarr fails deep inside (UnicodeDecodeError) on a garbage zarr.json
            integrity.check_metadata(path, remedy=lambda _: "restore it, or rebuild the store with `trackprep shard --overwrite`")
        except integrity.MetadataError as exc:
            raise SegmentStoreError(str(exc)) from None
        target: Any = str(path)
    else:
        target = path
    try:
        root = zarr.open_group(target, mode=mode, zarr_format=3)
    except Exception as exc:  # zarr raises several types for "not a group"
        raise SegmentStoreError(f"{path}: not a Zarr v3 group ({type(exc).__name__}: {exc})") from exc
    fmt = root.attrs.get(schema.ATTR_FORMAT)
    if fmt != schema.SEGMENT_FORMAT:
        raise SegmentStoreError(f"{path}: expected a segment store (format {schema.SEGMENT_FORMAT!r}), got format {fmt!r}")
    version = root.attrs.get(schema.ATTR_FORMAT_VERSION)
    if version != schema.FORMAT_VERSION:
        raise SegmentStoreError(
            f"{path}: segment store format version {version!r}; this trackprep reads version {schema.FORMAT_VERSION}"
        )
    if schema.SEGMENTS_GROUP not in root:
        raise SegmentStoreError(f"{path}: missing the {schema.SEGMENTS_GROUP!r} group")
    return root


def _as_root(root: zarr.Group | str | os.PathLike) -> zarr.Group:
    return root if isinstance(root, zarr.Group) else open_segment_store(root, mode="r+")


def write_segments(root: zarr.Group | str | os.PathLike, first: int, segments: Sequence[Mapping[str, Any]]) -> None:
    """Write segments first .. first+len(segments)-1 in one write per array, then mark them done.

    Each mapping holds frames [L,H,W,3] uint8, masks [L,H,W] uint8, has_mask [L] bool,
    tracks [n,L,2] float, visible [n,L] bool, labels [n] uint8 (n <= max_tracks; padded here),
    video str, start int, and optionally track_ids [n] (source rows; -1 when absent).
    Sharded files are rewritten whole, so concurrent writers must own disjoint shards (the
    shard stage gives each task exactly one shard).
    """
    root = _as_root(root)
    g = root[schema.SEGMENTS_GROUP]
    frames_arr, tracks_arr = g[schema.SEG_FRAMES.name], g[schema.SEG_TRACKS.name]
    s_total, L, h, w = frames_arr.shape[:4]
    n_max = tracks_arr.shape[1]
    k = len(segments)
    if k == 0:
        return
    first = _check_positive("first", first, allow_zero=True)
    if first + k > s_total:
        raise IndexError(f"segments {first}..{first + k - 1}: the store holds {s_total} segments (0..{s_total - 1})")

    out = {spec.name: np.empty((k, *g[spec.name].shape[1:]), g[spec.name].dtype) for spec in _PER_SEGMENT}
    out["tracks"][:] = np.nan
    out["visible"][:] = False
    out["labels"][:] = VOID
    out["track_ids"][:] = -1
    num_tracks = np.zeros(k, np.int32)
    videos = np.empty(k, dtype=object)
    starts = np.zeros(k, np.int32)
    for j, seg in enumerate(segments):
        where = f"segment {first + j}"
        want = {"frames": ((L, h, w, 3), np.uint8), "masks": ((L, h, w), np.uint8), "has_mask": ((L,), np.bool_)}
        for name, (shape, dtype) in want.items():
            a = np.asarray(seg[name])
            if a.shape != shape or a.dtype != dtype:
                raise SegmentStoreError(f"{where} {name}: expected {np.dtype(dtype)} {list(shape)}, got {a.dtype} {list(a.shape)}")
            out[name][j] = a
        tracks = np.asarray(seg["tracks"])
        visible = np.asarray(seg["visible"])
        labels = np.asarray(seg["labels"])
        n = tracks.shape[0] if tracks.ndim == 3 else -1
        if tracks.ndim != 3 or tracks.shape[1:] != (L, 2) or not np.issubdtype(tracks.dtype, np.floating):
            raise SegmentStoreError(f"{where} tracks: expected float [n, {L}, 2], got {tracks.dtype} {list(tracks.shape)}")
        if n > n_max:
            raise SegmentStoreError(f"{where} tracks: {n} rows, but the store holds at most max_tracks={n_max}")
        if visible.shape != (n, L) or visible.dtype != np.bool_:
            raise SegmentStoreError(f"{where} visible: expected bool [{n}, {L}], got {visible.dtype} {list(visible.shape)}")
        if labels.shape != (n,) or labels.dtype != np.uint8:
            raise SegmentStoreError(f"{where} labels: expected uint8 [{n}], got {labels.dtype} {list(labels.shape)}")
        out["tracks"][j, :n] = tracks
        out["visible"][j, :n] = visible
        out["labels"][j, :n] = labels
        ids = seg.get("track_ids")
        if ids is not None:
            ids = np.asarray(ids)
            if ids.shape != (n,) or not np.issubdtype(ids.dtype, np.integer):
                raise SegmentStoreError(f"{where} track_ids: expected integer [{n}], got {ids.dtype} {list(ids.shape)}")
            out["track_ids"][j, :n] = ids
        num_tracks[j] = n
        videos[j] = str(seg["video"])
        starts[j] = int(seg["start"])

    sel = slice(first, first + k)
    for spec in _PER_SEGMENT:
        g[spec.name][sel] = out[spec.name]
    g[schema.SEG_NUM_TRACKS.name][sel] = num_tracks
    g[schema.SEG_VIDEO.name][sel] = videos
    g[schema.SEG_START.name][sel] = starts
    fault_point("shard:segments-written")
    record = _ShardRecord(g)
    record.record(range(first // record.rows, (first + k - 1) // record.rows + 1))
    g[DONE][sel] = True  # last: a crash before this line leaves the segments to be redone


class _ShardRecord:
    """The files holding each shard of a segment store, and the CRC-32s their writer recorded
    (the `chunk_crc32` row of the shard, columns in _CHECKED order)."""

    def __init__(self, g: zarr.Group) -> None:
        self.arrays = [(spec.name, g[spec.name]) for spec in _CHECKED]
        self.crc = g[CRC] if CRC in g else None  # None: a store made before checksums were recorded
        self.rows, self.size = int(g[DONE].chunks[0]), int(g[DONE].shape[0])
        self.local = integrity.local_path(g) is not None

    def files(self, k: int) -> list[tuple[str, Path | None]]:
        out = []
        for name, arr in self.arrays:
            folder = integrity.local_path(arr)
            key = integrity.chunk_key(arr, (k,) + (0,) * (arr.ndim - 1))
            out.append((name, None if folder is None else folder / key))
        return out

    def record(self, shards: range) -> None:
        if self.crc is None:
            return
        for k in shards:
            self.crc[k] = [integrity.file_crc32(f) if f is not None and f.is_file() else _NOT_WRITTEN
                           for _, f in self.files(k)]

    def damage(self, k: int, crcs: np.ndarray, *, checksums: bool) -> list[str]:
        """What is wrong with the files of shard `k` (holding written segments), one line per file."""
        segs = f"segments {k * self.rows}..{min(self.size, (k + 1) * self.rows) - 1}"
        if (crcs == _NO_RECORD).all():
            folder = integrity.local_path(self.crc)
            where = folder / integrity.chunk_key(self.crc, (k, 0)) if folder else self.crc.store_path
            return [f"{where}: checksum record of {segs} missing; expected one for every written shard"]
        problems = []
        for (name, f), crc in zip(self.files(k), crcs):
            if f is None or crc == _NOT_WRITTEN:
                continue
            if not f.is_file():
                problems.append(f"{f}: {name} file of {segs} missing; expected the data written there "
                                "(zarr would read it as fill values)")
            elif checksums and integrity.file_crc32(f) != crc:
                problems.append(f"{f}: {name} file of {segs} changed since it was written (CRC-32 differs)")
        return problems


def damaged_shards(root: zarr.Group, *, checksums: bool = True) -> dict[int, list[str]]:
    """shard index -> what is wrong (one line per file, naming it) for each shard holding written
    segments whose files are missing or (with `checksums`) changed since they were written.
    {} for a sound store, one made before checksums were recorded, or one not on a local disk."""
    record = _ShardRecord(root[schema.SEGMENTS_GROUP])
    if record.crc is None or record.size == 0 or not record.local:
        return {}
    crcs = np.asarray(record.crc[:])
    written = np.unique(np.flatnonzero(done_flags(root)) // record.rows)
    return {int(k): p for k in written if (p := record.damage(int(k), crcs[k], checksums=checksums))}


def shard_problems(root: zarr.Group, *, checksums: bool = True) -> list[str]:
    """`damaged_shards` as a flat list of lines."""
    return [line for lines in damaged_shards(root, checksums=checksums).values() for line in lines]


def write_segment(
    root: zarr.Group | str | os.PathLike,
    index: int,
    *,
    frames: np.ndarray,
    masks: np.ndarray,
    has_mask: np.ndarray,
    tracks: np.ndarray,
    visible: np.ndarray,
    labels: np.ndarray,
    video: str,
    start: int,
    track_ids: np.ndarray | None = None,
) -> None:
    """Write one segment (padding its tracks to max_tracks) and mark it done."""
    write_segments(root, index, [dict(frames=frames, masks=masks, has_mask=has_mask, tracks=tracks,
                                      visible=visible, labels=labels, video=video, start=start,
                                      track_ids=track_ids)])


def write_index(root: zarr.Group, *, videos: Sequence[str], starts: Sequence[int]) -> None:
    """Record every segment's video and start up front (the plan), before any segment is written."""
    g = root[schema.SEGMENTS_GROUP]
    s = g[schema.SEG_VIDEO.name].shape[0]
    if len(videos) != s or len(starts) != s:
        raise SegmentStoreError(f"{root.store}: index of {len(videos)} videos / {len(starts)} starts for {s} segments")
    if s:
        g[schema.SEG_VIDEO.name][:] = np.asarray(list(videos), dtype=object)
        g[schema.SEG_START.name][:] = np.asarray(starts, dtype=np.int32)


def read_index(root: zarr.Group) -> tuple[list[str], np.ndarray]:
    """(video of each segment, start int32 [S])."""
    g = root[schema.SEGMENTS_GROUP]
    return [str(v) for v in g[schema.SEG_VIDEO.name][:]], np.asarray(g[schema.SEG_START.name][:], np.int32)


def done_flags(root: zarr.Group) -> np.ndarray:
    """bool [S]: which segments are written."""
    return np.asarray(root[schema.SEGMENTS_GROUP][DONE][:], dtype=bool)


def mark_complete(root: zarr.Group) -> None:
    """Set the root status to complete; refuses while any segment is missing."""
    done = done_flags(root)
    if not done.all():
        missing = np.flatnonzero(~done)
        raise SegmentStoreError(f"{root.store}: {missing.size} segments not written yet (first: {missing[:5].tolist()})")
    root.attrs[schema.ATTR_STATUS] = schema.STATUS_COMPLETE


def is_complete(root: zarr.Group) -> bool:
    return root.attrs.get(schema.ATTR_STATUS) == schema.STATUS_COMPLETE


def store_bytes(path: str | os.PathLike) -> int:
    """Bytes the store takes on disk (sum of file sizes)."""
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def store_location(root: zarr.Group) -> str:
    """The store's path on disk (or its URL for other stores), for messages."""
    store_root = getattr(root.store_path.store, "root", None)
    return str(store_root) if store_root is not None else str(root.store_path)


def segment_store_summary(root: zarr.Group) -> dict[str, Any]:
    """What `trackprep info` prints for a segment store (JSON-serialisable)."""
    g = root[schema.SEGMENTS_GROUP]
    s, L, h, w = g[schema.SEG_FRAMES.name].shape[:4]
    n_max = g[schema.SEG_TRACKS.name].shape[1]
    done = done_flags(root)
    num_tracks = np.asarray(g[schema.SEG_NUM_TRACKS.name][:], np.int64)[done]
    labels = np.asarray(g[schema.SEG_LABELS.name][:]) if s else np.zeros((0, n_max), np.uint8)
    real = np.arange(n_max)[None, :] < np.asarray(g[schema.SEG_NUM_TRACKS.name][:], np.int64)[:, None]
    real &= done[:, None]
    fg = int(((labels > 0) & (labels != VOID) & real).sum())
    videos, starts = read_index(root)
    per_video: dict[str, int] = {}
    for v in videos:
        per_video[v] = per_video.get(v, 0) + 1
    location = store_location(root)
    on_disk = store_bytes(location) if Path(location).is_dir() else None
    return {
        "store": location,
        "format": root.attrs.get(schema.ATTR_FORMAT),
        "format_version": root.attrs.get(schema.ATTR_FORMAT_VERSION),
        "package_version": root.attrs.get(schema.ATTR_PACKAGE_VERSION),
        "complete": is_complete(root),
        "segments": int(s),
        "segments_written": int(done.sum()),
        "length": int(L), "height": int(h), "width": int(w),
        "max_tracks": int(n_max),
        "tracks_dtype": str(g[schema.SEG_TRACKS.name].dtype),
        "segments_per_shard": root.attrs.get("segments_per_shard"),
        "tracks_per_segment": {
            "min": int(num_tracks.min()) if num_tracks.size else 0,
            "mean": float(num_tracks.mean()) if num_tracks.size else 0.0,
            "max": int(num_tracks.max()) if num_tracks.size else 0,
        },
        "foreground_share": fg / int(real.sum()) if real.any() else 0.0,
        "videos": per_video,
        "bytes": on_disk,
        "bytes_per_segment": on_disk / s if on_disk is not None and s else None,
        "config": root.attrs.get(schema.ATTR_CONFIG),
        "damaged": shard_problems(root, checksums=False),  # presence only: one stat per file
    }


class SegmentReader:
    """Random access to the segments of S.zarr, one segment per `read`.

    Opens read-only; the small index arrays (num_tracks, video, start) are loaded once, so
    `read(i)` costs one chunk read per per-segment array. Picklable (reopens by path), so it
    can live in DataLoader workers.
    """

    def __init__(self, path: str | os.PathLike | StoreLike, *, require_complete: bool = True) -> None:
        self.path = Path(path) if isinstance(path, (str, os.PathLike)) else path
        self.require_complete = require_complete
        self._open()

    def _open(self) -> None:
        root = open_segment_store(self.path, mode="r")
        if self.require_complete and not is_complete(root):
            done = done_flags(root)
            raise SegmentStoreError(
                f"{self.path}: incomplete segment store ({int(done.sum())} of {done.size} segments written); "
                "rerun `trackprep shard` with the same arguments to finish it"
            )
        g = root[schema.SEGMENTS_GROUP]
        self._done = done_flags(root)
        self._record, self._crcs = _ShardRecord(g), {}  # CRC rows read as their shards are first read
        self.attrs: dict = dict(root.attrs)
        self._arrays = {spec.name: g[spec.name] for spec in _PER_SEGMENT}
        self.num_tracks = np.asarray(g[schema.SEG_NUM_TRACKS.name][:], dtype=np.int32)
        self.videos = np.array([str(v) for v in g[schema.SEG_VIDEO.name][:]], dtype=object)
        self.starts = np.asarray(g[schema.SEG_START.name][:], dtype=np.int32)
        s, self.length, self.height, self.width = self._arrays["frames"].shape[:4]
        self.max_tracks = int(self._arrays["tracks"].shape[1])
        self._len = int(s)

    def __getstate__(self) -> dict:
        return {"path": self.path, "require_complete": self.require_complete}

    def __setstate__(self, state: dict) -> None:
        self.path = state["path"]
        self.require_complete = state["require_complete"]
        self._open()

    def __len__(self) -> int:
        return self._len

    def read(self, index: int, *, verify: bool = False) -> dict[str, Any]:
        """One segment as numpy arrays keyed by the schema names (tracks always float32).
        Its files must be there (SegmentStoreError naming a missing one); `verify`: and unchanged
        since they were written (reads them once more, for their CRC-32)."""
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not -self._len <= index < self._len:
            raise IndexError(f"{self.path}: segment index {index!r} out of range for {self._len} segments")
        i = int(index) % self._len
        self._check_files(i, checksums=verify)
        # One gather over all arrays: their (index, chunk) reads and decodes overlap instead of
        # paying zarr's per-call round trip through its event loop once per array.
        values = zarr_sync(self._read_arrays(i))
        out: dict[str, Any] = dict(zip(self._arrays, values))
        out["tracks"] = out["tracks"].astype(np.float32, copy=False)
        out["num_tracks"] = int(self.num_tracks[i])
        out["video"] = str(self.videos[i])
        out["start"] = int(self.starts[i])
        return out

    def _check_files(self, i: int, *, checksums: bool) -> None:
        """The files holding segment i are there (and, with `checksums`, unchanged): one stat per
        array, so a deleted file is an error naming it, never a segment of fill values."""
        record = self._record
        if record.crc is None or not record.local or not self._done[i]:
            return
        k = i // record.rows
        if k not in self._crcs:
            self._crcs[k] = np.asarray(record.crc[k])
        problems = record.damage(k, self._crcs[k], checksums=checksums)
        if problems:
            raise SegmentStoreError(f"{problems[0]}; `trackprep validate {self.path}` lists every damaged file")

    async def _read_arrays(self, i: int) -> list[np.ndarray]:
        return await asyncio.gather(*(arr.async_array.getitem(i) for arr in self._arrays.values()))

    def __repr__(self) -> str:
        return (f"SegmentReader({str(self.path)!r}: {self._len} segments of {self.length}x{self.height}x{self.width}, "
                f"max_tracks={self.max_tracks})")
