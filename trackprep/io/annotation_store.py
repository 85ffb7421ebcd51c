"""The annotation store: one Zarr v3 group per video (../shared/DESIGN.md, "Store contracts").

    A.zarr/                      root attrs: format, format_version, package_version, config, config_hash, config_fingerprint
    A.zarr/<dataset>/<video>/    frames, masks, has_mask, points, start, length, labels; attrs.status

Format version 2: tracks are a contiguous ragged array (points [P, 2], start [N], length [N]),
so a video's store grows with its number of points, not with tracks x frames. A video is
written as it is computed (`VideoWriter`: frames as decoded, tracks as they end), and read
back through `trackprep.io.annotation_reader.open_annotations`.

A video group is written by exactly one task, and `status = "complete"` is the
last thing written, so a reader (or a resumed run) can trust any group marked
complete and treat every other group as absent. Root attributes are written
once, at creation, so concurrent writers of different videos never touch a
shared file (Zarr creates missing parent groups with set-if-not-exists).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec
from zarr.errors import ContainsArrayError, ContainsGroupError

# zarr warns, on every read of `points`, that numcodecs' filters are not in the Zarr v3 core
# spec (they are in numcodecs, which zarr-python and other numcodecs-based readers use).
_NUMCODECS_WARNING = "Numcodecs codecs are not in the Zarr version 3 specification"
warnings.filterwarnings("ignore", message=_NUMCODECS_WARNING)

import trackprep
from trackprep.core.labels import is_foreground
from trackprep.core.types import Clip, TrackSet
from trackprep.io import integrity, schema
from trackprep.io.frame_codecs import DEFAULT_JPEG_QUALITY, frame_codecs

ATTR_CONFIG_HASH = "config_hash"
ATTR_FINGERPRINT = "config_fingerprint"  # the result-affecting settings hashed into config_hash
STATUS_WRITING = "writing"
# Token of the task writing a video's group. Two writers of one video (overlapping runs, or a
# retried task whose first attempt is still alive) each replace the group with their own token;
# only the writer whose token is still there may mark the group complete.
ATTR_WRITER = "writer"

# Points per chunk (one coordinate per chunk: x and y are separate chunks, so the delta
# filter differences consecutive x's and consecutive y's): 1 MiB of int32 each, which
# compresses as well as 4 MiB and keeps the writer's buffer (one chunk of rows) small; tracks
# (start, length, labels) per chunk: 256 KiB of int32. Writers append whole chunks only.
POINTS_PER_CHUNK = 1 << 18
TRACKS_PER_CHUNK = 1 << 16

# Points are stored quantised to 1/64 px: max error 1/128 px, two orders of magnitude below
# any optical flow's accuracy (RAFT's end-point error on Sintel is ~1 px) and the 1.5 px cycle
# test. Chosen by benchmarks/bench_long_video.py --codecs on DAVIS car-shadow (DIS, stride 1):
# float32 lossless 5.3-5.9 bytes per point (Blosc zstd/lz4, byte or bit shuffle); quantised
# 1/64 px, delta, Blosc zstd 5 byte-shuffle 1.9 bytes per point (1/32 px: 1.6, 1/256: 2.4).
POINT_SCALE = 64  # stored value = round(x * POINT_SCALE) as int32
POINTS_ENCODING = {
    "quantization_step_px": 1.0 / POINT_SCALE,
    "max_error_px": 0.5 / POINT_SCALE,
    "codecs": "numcodecs.fixedscaleoffset(scale=64, astype=int32) -> numcodecs.delta(int32) -> blosc(zstd, 5, shuffle)",
    "source": "benchmarks/bench_long_video.py --codecs (DAVIS-2016 car-shadow, DIS flow, stride 1)",
}
ATTR_POINTS_ENCODING = "encoding"


class StoreError(Exception):
    """A store is missing, unreadable, of another format or built with another configuration."""


def _image_codec() -> BloscCodec:
    # Masks are always lossless (object ids); frames by default too (trackprep.io.frame_codecs).
    return BloscCodec(cname="zstd", clevel=3, shuffle="noshuffle")


def _track_codec() -> BloscCodec:
    # start/length/labels: small integers, mostly in runs; byte shuffle groups their zero high bytes.
    return BloscCodec(cname="zstd", clevel=5, shuffle="shuffle")


class HistoryCodec:
    """Keeps the history of the tracks being chained (trackprep.core.track_history) the way the
    store will keep them: rounded to 1/64 px, per-coordinate delta, Blosc LZ4 (fast: a
    collection decodes and re-encodes every live point). The store rounds identically, so what
    is written is unchanged; a static camera's tracks take ~2.5 bytes a point instead of 8.

    With `spill_dir` the packed parts go to files there (append-only, a new file every
    FILE_BYTES; a file is deleted once all its parts are released), so the history costs disk
    and page cache, not the process's memory. `close()` deletes what is left."""

    FILE_BYTES = 1 << 28

    def __init__(self, *, spill_dir: str | Path | None = None) -> None:
        from numcodecs import Blosc

        self._blosc = Blosc(cname="lz4", clevel=5, shuffle=Blosc.SHUFFLE)
        self._dir = None if spill_dir is None else Path(spill_dir)
        self._files: dict[int, Any] = {}  # file number -> open file (binary, read + append)
        self._parts: dict[int, int] = {}  # file number -> parts not released
        self._current, self._size = -1, 0

    def encode(self, points: np.ndarray) -> tuple:
        q = np.rint(points * POINT_SCALE).astype(np.int32)
        x, y = (self._blosc.encode(np.diff(q[:, c], prepend=np.int32(0))) for c in (0, 1))
        if self._dir is None:
            return q.shape[0], x, y
        if self._current < 0 or self._size >= self.FILE_BYTES:
            self._current += 1
            self._files[self._current] = open(self._dir / f"history-{self._current:05d}.bin", "w+b", buffering=0)
            self._parts[self._current], self._size = 0, 0
        f = self._files[self._current]
        try:
            written = os.pwrite(f.fileno(), x + y, self._size)  # unbuffered: decode reads the fd
            if written != len(x) + len(y):
                raise OSError(28, "short write")
        except OSError as exc:
            raise OSError(exc.errno, f"{f.name}: cannot write the tracks' history spill ({exc.strerror or exc}); "
                          "expected room in $TMPDIR (about 2.5 bytes per point of the live tracks)") from None
        handle = (q.shape[0], self._current, self._size, len(x), len(y))
        self._parts[self._current] += 1
        self._size += len(x) + len(y)
        return handle

    def decode(self, packed: tuple) -> np.ndarray:
        if self._dir is None:
            n, *columns = packed
        else:
            n, number, offset, nx, ny = packed
            data = os.pread(self._files[number].fileno(), nx + ny, offset)
            columns = [data[:nx], data[nx:]]
        out = np.empty((n, 2), dtype=np.float32)
        for c, data in enumerate(columns):
            q = np.cumsum(np.frombuffer(self._blosc.decode(data), dtype=np.int32), dtype=np.int32)
            np.multiply(q, np.float32(1.0 / POINT_SCALE), out=out[:, c])  # exact: a power of two
        return out

    def release(self, packed: tuple) -> None:
        if self._dir is None:
            return
        number = packed[1]
        self._parts[number] -= 1
        if self._parts[number] == 0 and number != self._current:
            self._drop(number)

    def _drop(self, number: int) -> None:
        f = self._files.pop(number)
        f.close()
        Path(f.name).unlink(missing_ok=True)
        del self._parts[number]

    def close(self) -> None:
        for number in list(self._files):
            self._drop(number)


def _points_codecs() -> dict[str, Any]:
    """Codecs of `points` (see POINTS_ENCODING)."""
    from zarr.codecs.numcodecs import Delta, FixedScaleOffset

    filters = [FixedScaleOffset(offset=0, scale=POINT_SCALE, dtype="<f4", astype="<i4"), Delta(dtype="<i4")]
    return {"filters": filters, "compressors": BloscCodec(cname="zstd", clevel=5, shuffle="shuffle")}


def store_location(root: zarr.Group) -> str:
    """The store's path on disk (or its URL for other stores), for error messages."""
    store_root = getattr(root.store_path.store, "root", None)
    return str(store_root) if store_root is not None else str(root.store_path)


def config_hash(config: dict[str, Any]) -> str:
    """A stable hash of a JSON-serialisable configuration (key order does not matter)."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _check_format(root: zarr.Group, path: Path) -> None:
    fmt = root.attrs.get(schema.ATTR_FORMAT)
    if fmt != schema.ANNOTATION_FORMAT:
        raise StoreError(f"{path}: not an annotation store (format attribute {fmt!r}, expected {schema.ANNOTATION_FORMAT!r})")
    version = root.attrs.get(schema.ATTR_FORMAT_VERSION)
    if version != schema.ANNOTATION_FORMAT_VERSION:
        layout = " (dense tracks [N, T, 2])" if version == 1 else ""
        raise StoreError(
            f"{path}: annotation store format version {version!r}{layout}; this trackprep reads version "
            f"{schema.ANNOTATION_FORMAT_VERSION} (ragged tracks): rebuild it with `trackprep annotate ... --out {path} "
            "--overwrite` (or annotate into a new --out)"
        )


def create_store(
    path: str | Path, *, config: dict[str, Any], overwrite: bool = False, fingerprint: dict[str, Any] | None = None
) -> zarr.Group:
    """Create an annotation store, or reopen an existing one for resuming.

    `config` (the full resolved configuration) is recorded in the root attributes.
    `fingerprint` is the part of it that changes results (default: all of it); an
    existing store built with a different fingerprint is refused unless `overwrite`,
    which deletes the store and starts afresh. Reopening keeps the original attributes.
    Only an annotation store (or an empty folder) is ever deleted: `--out` naming a
    dataset folder by mistake must not cost the user their data.
    """
    path = Path(path)
    fingerprint = json.loads(json.dumps(config if fingerprint is None else fingerprint, default=str))
    digest = config_hash(fingerprint)
    if path.exists() and overwrite:
        if not (path.is_dir() and (schema.store_format(path) == schema.ANNOTATION_FORMAT or not any(path.iterdir()))):
            raise StoreError(f"{path}: exists and is not an annotation store; refusing to delete it for --overwrite")
        shutil.rmtree(path)
    attrs = {
        schema.ATTR_FORMAT: schema.ANNOTATION_FORMAT,
        schema.ATTR_FORMAT_VERSION: schema.ANNOTATION_FORMAT_VERSION,
        schema.ATTR_PACKAGE_VERSION: trackprep.__version__,
        schema.ATTR_CONFIG: json.loads(json.dumps(config, default=str)),
        ATTR_CONFIG_HASH: digest,
        ATTR_FINGERPRINT: fingerprint,
    }
    if not path.exists() or (path.is_dir() and not any(path.iterdir())):
        try:
            # "w-" with the attributes in the same write: two runs starting at once on a new store
            # cannot delete each other's videos, and no reader ever sees a root without its format.
            return zarr.open_group(str(path), mode="w-", zarr_format=3, attributes=attrs)
        except (FileExistsError, ContainsGroupError, ContainsArrayError):
            pass  # another run created it a moment ago: resume it like any existing store
    root = open_store(path, mode="r+", check_metadata=True)
    found = root.attrs.get(ATTR_CONFIG_HASH)
    if found != digest:
        from trackprep.config import config_differences

        stored = root.attrs.get(ATTR_FINGERPRINT)
        if isinstance(stored, dict):
            diff = "; ".join(config_differences(stored, fingerprint))
        else:
            diff = f"stored config {json.dumps(root.attrs.get(schema.ATTR_CONFIG), sort_keys=True)}"
        raise StoreError(
            f"{path}: existing store was built with another configuration ({diff}). "
            "Use --overwrite to rebuild it, or choose another --out"
        )
    return root



def open_store(path: str | Path, *, mode: str = "r", check_metadata: bool = False) -> zarr.Group:
    """Open an existing annotation store; a clear StoreError naming the path otherwise.

    Every zarr.json of the store is checked when reading (mode "r"); with `check_metadata`
    (mode "r+", once per run) those of the root and dataset groups. A writer reopening the
    store for each video (mode "r+") skips that walk."""
    path = Path(path)
    if mode not in ("r", "r+"):
        raise ValueError(f"open_store mode: expected 'r' or 'r+', got {mode!r}")
    if not (path / "zarr.json").is_file():
        what = "does not exist" if not path.exists() else "has no zarr.json (not a Zarr v3 group)"
        raise StoreError(f"{path}: annotation store {what}")
    if mode == "r" or check_metadata:
        # zarr fails deep inside (UnicodeDecodeError) on a garbage zarr.json. A writer needs only
        # the root and dataset groups readable: a video whose metadata is not is redone.
        def remedy(meta: Path) -> str:
            parts = meta.parent.relative_to(path).parts
            if len(parts) >= 2:
                return f"rerun annotate with the same arguments to redo {parts[0]}/{parts[1]}"
            return "restore it from a backup, or rebuild the store (annotate --overwrite)"

        try:
            integrity.check_metadata(path, remedy=remedy, max_depth=None if mode == "r" else 1)
        except integrity.MetadataError as exc:
            raise StoreError(str(exc)) from None
    try:
        root = zarr.open_group(str(path), mode=mode, zarr_format=3)
    except Exception as exc:  # corrupt metadata, wrong node type
        raise StoreError(f"{path}: cannot open as a Zarr v3 group: {exc}") from exc
    _check_format(root, path)
    return root


def video_key(dataset: str, video: str) -> str:
    """The group path of one video: "<dataset>/<video>"."""
    for what, value in (("dataset", dataset), ("video", video)):
        if not value or "/" in value or value.startswith("."):
            raise ValueError(f"{what} name {value!r}: expected a non-empty name without '/' that does not start with '.'")
    return f"{dataset}/{video}"


def require_dataset_group(root: zarr.Group, dataset: str) -> None:
    """Create the group of one dataset unless it exists; safe when several runs start at once."""
    try:
        root.require_group(dataset)
    except ContainsGroupError:
        pass  # another run created it between zarr's check and its write


class _Appender:
    """Appends rows to a 1-D or [P, 2] array growing along axis 0, one whole chunk at a time,
    so no chunk is written twice (the last, partial one at `close`) and a large batch of rows
    is never copied whole."""

    def __init__(self, array: zarr.Array) -> None:
        self.array, self.rows = array, int(array.chunks[0])
        self.pending: list[np.ndarray] = []
        self.pending_rows = 0
        self.written = 0

    def append(self, block: np.ndarray) -> None:
        if block.shape[0]:
            self.pending.append(block)
            self.pending_rows += block.shape[0]
        while self.pending_rows >= self.rows:
            self._write(self.rows)

    def close(self) -> None:
        if self.pending_rows:
            self._write(self.pending_rows)

    def _write(self, count: int) -> None:
        """Write the first `count` pending rows (one chunk, or the rest at close)."""
        parts, need = [], count
        while need:
            head = self.pending[0]
            parts.append(head[:need])
            if head.shape[0] > need:
                self.pending[0] = head[need:]
            else:
                self.pending.pop(0)
            need -= parts[-1].shape[0]
        data = np.concatenate(parts) if len(parts) > 1 else parts[0]
        self.pending_rows -= count
        self.array.resize((self.written + count, *self.array.shape[1:]))
        self.array[self.written : self.written + count] = data
        self.written += count


class VideoWriter:
    """Writes one video's group as its parts arrive: frames as they are decoded, tracks as
    they end. Any earlier (partial or failed) group of that key is replaced at the start; the
    group is marked complete by `finish` only, after every array is on disk, and only if no
    other writer has taken the video over meanwhile.
    """

    def __init__(
        self, root: zarr.Group, key: str, *, num_frames: int, height: int, width: int,
        frames_codec: str = "lossless", jpeg_quality: int = DEFAULT_JPEG_QUALITY,
    ) -> None:
        self.root, self.key = root, key
        self.num_frames, self.height, self.width = int(num_frames), int(height), int(width)
        self.token = uuid.uuid4().hex
        t, h, w = self.num_frames, self.height, self.width
        group = root.create_group(key, overwrite=True)
        group.attrs.update({schema.ATTR_STATUS: STATUS_WRITING, ATTR_WRITER: self.token})
        self.group = group
        self.frames = group.create_array(
            schema.FRAMES.name, shape=(t, h, w, 3), chunks=(1, h, w, 3), dtype=schema.FRAMES.dtype,
            dimension_names=schema.FRAMES.dims, **frame_codecs(frames_codec, quality=jpeg_quality),
        )
        self.masks = group.create_array(
            schema.MASKS.name, shape=(t, h, w), chunks=(1, h, w), dtype=schema.MASKS.dtype,
            compressors=_image_codec(), dimension_names=schema.MASKS.dims,
        )
        self.has_mask = np.zeros(t, dtype=bool)
        self.frames_written = np.zeros(t, dtype=bool)
        points = group.create_array(
            schema.POINTS.name, shape=(0, 2), chunks=(POINTS_PER_CHUNK, 1), dtype=schema.POINTS.dtype,
            dimension_names=schema.POINTS.dims, attributes={ATTR_POINTS_ENCODING: POINTS_ENCODING}, **_points_codecs(),
        )
        self._tracks = {spec.name: _Appender(group.create_array(
            spec.name, shape=(0,), chunks=(TRACKS_PER_CHUNK,), dtype=spec.dtype, compressors=_track_codec(),
            dimension_names=spec.dims,
        )) for spec in (schema.START, schema.LENGTH, schema.LABELS)}
        self._points = _Appender(points)
        self.num_tracks = self.num_points = self.fg_tracks = 0

    def write_frames(self, first: int, frames: np.ndarray, masks: np.ndarray, has_mask: np.ndarray) -> None:
        """Frames first .. first + len(frames) - 1 (uint8 [n, H, W, 3]), their masks and mask flags."""
        n = frames.shape[0]
        if first < 0 or first + n > self.num_frames:
            raise ValueError(f"{self.key}: frames {first}..{first + n - 1} outside the video's {self.num_frames} frames")
        self.frames[first : first + n] = frames
        self.masks[first : first + n] = masks
        self.has_mask[first : first + n] = has_mask
        self.frames_written[first : first + n] = True

    def add_tracks(self, tracks: TrackSet) -> None:
        """Append tracks (start frames counted from the video's first frame)."""
        if len(tracks) == 0:
            return
        if tracks.num_frames > self.num_frames:
            raise ValueError(f"{self.key}: tracks cover {tracks.num_frames} frames, the video has {self.num_frames}")
        for a in range(0, tracks.points.shape[0], POINTS_PER_CHUNK):
            finite = np.isfinite(tracks.points[a : a + POINTS_PER_CHUNK]).all(axis=1)
            if not finite.all():
                bad = a + int(np.flatnonzero(~finite)[0])
                raise ValueError(f"{self.key}: track point {bad} of this batch is {tracks.points[bad].tolist()}; "
                                 "expected finite (x, y)")
        self._points.append(tracks.points)
        self._tracks[schema.START.name].append(tracks.start)
        self._tracks[schema.LENGTH.name].append(tracks.lengths.astype(np.int32))
        self._tracks[schema.LABELS.name].append(tracks.labels)
        self.num_tracks += len(tracks)
        self.num_points += int(tracks.points.shape[0])
        self.fg_tracks += int(np.count_nonzero(is_foreground(tracks.labels)))

    def finish(self, attrs: dict[str, Any] | None = None) -> None:
        """Write what is buffered, then mark the video complete (the last write)."""
        if not self.frames_written.all():
            missing = np.flatnonzero(~self.frames_written)
            raise ValueError(f"{self.key}: {missing.size} frame(s) never written (first: {int(missing[0])}); expected all {self.num_frames}")
        for appender in (self._points, *self._tracks.values()):
            appender.close()
        has_mask = self.group.create_array(
            schema.HAS_MASK.name, shape=(self.num_frames,), chunks=(max(1, self.num_frames),),
            dtype=schema.HAS_MASK.dtype, dimension_names=schema.HAS_MASK.dims,
        )
        has_mask[:] = self.has_mask
        info = {"num_frames": self.num_frames, "num_tracks": self.num_tracks, "num_points": self.num_points,
                "height": self.height, "width": self.width}
        info.update(attrs or {})
        # Read the token back from disk (this group object caches its own attributes, and any
        # attribute write from it would put our token back).
        path = f"{self.root.path}/{self.key}".strip("/")
        current = zarr.open_group(self.root.store, path=path, mode="r").attrs.get(ATTR_WRITER)
        if current != self.token:
            raise StoreError(f"{self.key}: another task took over this video while it was being written; leaving it to that task")
        # Last, in one metadata write: only now is every array on disk. The chunk record lets
        # readers tell a deleted or damaged chunk file from data (trackprep.io.integrity).
        self.group.attrs.update({**json.loads(json.dumps(info, default=str)),
                                 integrity.CHUNKS_ATTR: integrity.record_chunks(self.group),
                                 schema.ATTR_STATUS: schema.STATUS_COMPLETE})


def write_video(
    root: zarr.Group, key: str, clip: Clip, tracks: TrackSet, *, attrs: dict[str, Any] | None = None,
    frames_codec: str = "lossless", jpeg_quality: int = DEFAULT_JPEG_QUALITY,
) -> None:
    """Write one video held in memory (a clip and its tracks) in one go; see VideoWriter."""
    if tracks.num_frames != clip.num_frames:
        raise ValueError(f"{key}: tracks cover {tracks.num_frames} frames, the clip has {clip.num_frames}")
    h, w = clip.size
    writer = VideoWriter(root, key, num_frames=clip.num_frames, height=h, width=w, frames_codec=frames_codec,
                         jpeg_quality=jpeg_quality)
    writer.write_frames(0, clip.frames, clip.masks, clip.has_mask)
    writer.add_tracks(tracks)
    writer.finish(attrs)


def record_failure(root: zarr.Group, key: str, error: str) -> None:
    """Replace the video's group by an empty one marked failed, with its error message."""
    group = root.create_group(key, overwrite=True)
    group.attrs.update({schema.ATTR_STATUS: schema.STATUS_FAILED, schema.ATTR_ERROR: str(error)})


def video_status(root: zarr.Group, key: str) -> str | None:
    """"complete", "failed", "writing" (interrupted, or its zarr.json unreadable) or None when the
    video has no group."""
    try:
        node = root[key]
    except KeyError:
        return None
    except ValueError:  # an unreadable zarr.json (UnicodeDecodeError and JSONDecodeError are ValueErrors)
        return STATUS_WRITING
    if not isinstance(node, zarr.Group):
        return None
    status = node.attrs.get(schema.ATTR_STATUS)
    return str(status) if status is not None else STATUS_WRITING


def _video_groups(root: zarr.Group) -> list[tuple[str, zarr.Group]]:
    """Every video group whose metadata reads. One whose zarr.json does not is left out, as if
    absent: annotate redoes it, and readers refuse the store first (open_store)."""
    found = []
    for dataset_name, dataset_group in sorted(root.groups(), key=lambda kv: kv[0]):
        folder = integrity.local_path(dataset_group)
        if folder is None:
            found += [(f"{dataset_name}/{k}", g) for k, g in sorted(dataset_group.groups(), key=lambda kv: kv[0])]
            continue
        for video_dir in sorted(p for p in folder.iterdir() if (p / "zarr.json").is_file()):
            try:
                node = dataset_group[video_dir.name]
            except ValueError:  # unreadable zarr.json
                continue
            if isinstance(node, zarr.Group):
                found.append((f"{dataset_name}/{video_dir.name}", node))
    return found


def video_keys(root: zarr.Group) -> list[str]:
    """Every video group in the store, whatever its status, sorted."""
    return [key for key, _ in _video_groups(root)]


def complete_videos(root: zarr.Group) -> list[str]:
    """Keys of the videos whose every array is written, sorted."""
    return [k for k, g in _video_groups(root) if g.attrs.get(schema.ATTR_STATUS) == schema.STATUS_COMPLETE]


def damaged_videos(root: zarr.Group, *, checksums: bool = False, keys: list[str] | None = None) -> dict[str, str]:
    """key -> what is wrong, for each complete video (of `keys`, default all) whose recorded chunk
    files are missing or, with `checksums`, changed (trackprep.io.integrity)."""
    loc = store_location(root)
    out = {}
    for key in complete_videos(root) if keys is None else keys:
        problems = integrity.video_problems(root[key], where=f"{loc}/{key}", checksums=checksums)
        if problems:
            out[key] = problems[0]
    return out


def failed_videos(root: zarr.Group) -> dict[str, str]:
    """key -> error message of every video recorded as failed."""
    return {
        k: str(g.attrs.get(schema.ATTR_ERROR, ""))
        for k, g in _video_groups(root)
        if g.attrs.get(schema.ATTR_STATUS) == schema.STATUS_FAILED
    }
