"""The annotation store: one Zarr v3 group per video (../shared/DESIGN.md, "Store contracts").

    A.zarr/                      root attrs: format, format_version, package_version, config, config_hash, config_fingerprint
    A.zarr/<dataset>/<video>/    frames, masks, has_mask, tracks, visible, labels; attrs.status

A video group is written by exactly one task, and `status = "complete"` is the
last thing written, so a reader (or a resumed run) can trust any group marked
complete and treat every other group as absent. Root attributes are written
once, at creation, so concurrent writers of different videos never touch a
shared file (Zarr creates missing parent groups with set-if-not-exists).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec
from zarr.errors import ContainsArrayError, ContainsGroupError

import trackprep
from trackprep.core.types import Clip, TrackSet
from trackprep.io import integrity, schema

ATTR_CONFIG_HASH = "config_hash"
ATTR_FINGERPRINT = "config_fingerprint"  # the result-affecting settings hashed into config_hash
STATUS_WRITING = "writing"
# Token of the task writing a video's group. Two writers of one video (overlapping runs, or a
# retried task whose first attempt is still alive) each replace the group with their own token;
# only the writer whose token is still there may mark the group complete.
ATTR_WRITER = "writer"

# Track rows per chunk: about 8 MiB of float32 (x, y) per chunk, so a chunk is
# big enough to compress well and small enough that writing one holds little memory.
_TRACK_CHUNK_BYTES = 8 << 20
_MIN_TRACK_ROWS, _MAX_TRACK_ROWS = 256, 65536


class StoreError(Exception):
    """A store is missing, unreadable, of another format or built with another configuration."""


def _image_codec() -> BloscCodec:
    # Lossless: frames and masks are ground truth for training and evaluation.
    return BloscCodec(cname="zstd", clevel=3, shuffle="noshuffle")


def _track_codec() -> BloscCodec:
    # Byte shuffle groups the exponent bytes of float32 coordinates; NaN runs compress to almost nothing.
    return BloscCodec(cname="zstd", clevel=3, shuffle="shuffle")


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
    if version != schema.FORMAT_VERSION:
        raise StoreError(f"{path}: annotation store format version {version!r}, this trackprep reads {schema.FORMAT_VERSION}")


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
        schema.ATTR_FORMAT_VERSION: schema.FORMAT_VERSION,
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

    Every zarr.json of the store is checked when reading (mode "r") or with `check_metadata`;
    a writer reopening the store for each video (mode "r+") skips that walk."""
    path = Path(path)
    if mode not in ("r", "r+"):
        raise ValueError(f"open_store mode: expected 'r' or 'r+', got {mode!r}")
    if not (path / "zarr.json").is_file():
        what = "does not exist" if not path.exists() else "has no zarr.json (not a Zarr v3 group)"
        raise StoreError(f"{path}: annotation store {what}")
    if mode == "r" or check_metadata:
        try:  # zarr fails deep inside (UnicodeDecodeError) on a garbage zarr.json of any node
            integrity.check_metadata(
                path, remedy="restore it, or delete the folder of the video it belongs to and rerun annotate to redo it")
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


def _track_rows_per_chunk(num_frames: int) -> int:
    rows = _TRACK_CHUNK_BYTES // max(1, num_frames * 2 * 4)
    return int(min(_MAX_TRACK_ROWS, max(_MIN_TRACK_ROWS, rows)))


def write_video(
    root: zarr.Group, key: str, clip: Clip, tracks: TrackSet, *, attrs: dict[str, Any] | None = None
) -> None:
    """Write one video's arrays; any earlier (partial or failed) group of that key is replaced.

    Tracks go out one chunk of rows at a time from the ragged TrackSet, so the dense
    [N, T, 2] array is never held whole: memory stays linear in video length.
    """
    if tracks.num_frames != clip.num_frames:
        raise ValueError(f"{key}: tracks cover {tracks.num_frames} frames, the clip has {clip.num_frames}")
    t, h, w = clip.frames.shape[:3]
    n = len(tracks)
    token = uuid.uuid4().hex
    group = root.create_group(key, overwrite=True)
    group.attrs.update({schema.ATTR_STATUS: STATUS_WRITING, ATTR_WRITER: token})

    frames = group.create_array(
        schema.FRAMES.name, shape=(t, h, w, 3), chunks=(1, h, w, 3), dtype=schema.FRAMES.dtype,
        compressors=_image_codec(), dimension_names=schema.FRAMES.dims,
    )
    frames[:] = clip.frames
    masks = group.create_array(
        schema.MASKS.name, shape=(t, h, w), chunks=(1, h, w), dtype=schema.MASKS.dtype,
        compressors=_image_codec(), dimension_names=schema.MASKS.dims,
    )
    masks[:] = clip.masks
    has_mask = group.create_array(
        schema.HAS_MASK.name, shape=(t,), chunks=(max(1, t),), dtype=schema.HAS_MASK.dtype,
        dimension_names=schema.HAS_MASK.dims,
    )
    has_mask[:] = clip.has_mask

    rows = _track_rows_per_chunk(t)
    track_arr = group.create_array(
        schema.TRACKS.name, shape=(n, t, 2), chunks=(rows, max(1, t), 2), dtype=schema.TRACKS.dtype,
        fill_value=np.nan, compressors=_track_codec(), dimension_names=schema.TRACKS.dims,
    )
    visible_arr = group.create_array(
        schema.VISIBLE.name, shape=(n, t), chunks=(rows, max(1, t)), dtype=schema.VISIBLE.dtype,
        fill_value=False, compressors=_track_codec(), dimension_names=schema.VISIBLE.dims,
    )
    for a in range(0, n, rows):  # chunk-aligned, so no chunk is read back and rewritten
        block_tracks, block_visible = tracks.dense(slice(a, min(n, a + rows)))
        track_arr[a : a + block_tracks.shape[0]] = block_tracks
        visible_arr[a : a + block_visible.shape[0]] = block_visible
    labels = group.create_array(
        schema.LABELS.name, shape=(n,), chunks=(max(1, min(n, 1 << 20)),), dtype=schema.LABELS.dtype,
        fill_value=255, compressors=_track_codec(), dimension_names=schema.LABELS.dims,
    )
    labels[:] = tracks.labels

    info = {"num_frames": t, "num_tracks": n, "height": h, "width": w}
    info.update(attrs or {})
    # Read the token back from disk (this group object caches its own attributes, and any
    # attribute write from it would put our token back).
    current = zarr.open_group(root.store, path=f"{root.path}/{key}".strip("/"), mode="r").attrs.get(ATTR_WRITER)
    if current != token:
        raise StoreError(f"{key}: another task took over this video while it was being written; leaving it to that task")
    # Last, in one metadata write: only now is every array on disk. The chunk record lets
    # readers tell a deleted or damaged chunk file from data (trackprep.io.integrity).
    group.attrs.update({**json.loads(json.dumps(info, default=str)), integrity.CHUNKS_ATTR: integrity.record_chunks(group),
                        schema.ATTR_STATUS: schema.STATUS_COMPLETE})


def record_failure(root: zarr.Group, key: str, error: str) -> None:
    """Replace the video's group by an empty one marked failed, with its error message."""
    group = root.create_group(key, overwrite=True)
    group.attrs.update({schema.ATTR_STATUS: schema.STATUS_FAILED, schema.ATTR_ERROR: str(error)})


def video_status(root: zarr.Group, key: str) -> str | None:
    """"complete", "failed", "writing" (interrupted) or None when the video has no group."""
    try:
        node = root[key]
    except KeyError:
        return None
    if not isinstance(node, zarr.Group):
        return None
    status = node.attrs.get(schema.ATTR_STATUS)
    return str(status) if status is not None else STATUS_WRITING


def _video_groups(root: zarr.Group) -> list[tuple[str, zarr.Group]]:
    found = []
    for dataset_name, dataset_group in sorted(root.groups(), key=lambda kv: kv[0]):
        for video_name, video_group in sorted(dataset_group.groups(), key=lambda kv: kv[0]):
            found.append((f"{dataset_name}/{video_name}", video_group))
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


@dataclass(frozen=True)
class StoredVideo:
    """One complete video of an annotation store; the arrays are lazy Zarr arrays."""

    key: str
    frames: zarr.Array  # uint8 [T, H, W, 3]
    masks: zarr.Array  # uint8 [T, H, W]
    has_mask: zarr.Array  # bool [T]
    tracks: zarr.Array  # float32 [N, T, 2]; NaN where not visible
    visible: zarr.Array  # bool [N, T]
    labels: zarr.Array  # uint8 [N]

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def num_tracks(self) -> int:
        return int(self.tracks.shape[0])


def read_video(root: zarr.Group, key: str) -> StoredVideo:
    """The arrays of a complete video; StoreError when it is missing or not complete."""
    status = video_status(root, key)
    if status != schema.STATUS_COMPLETE:
        where = f"{store_location(root)}/{key}"
        detail = "does not exist" if status is None else f"has status {status!r}, expected 'complete'"
        raise StoreError(f"{where}: video {detail}")
    group = root[key]
    arrays = {}
    for spec in schema.ANNOTATION_ARRAYS:
        try:
            arrays[spec.name] = group[spec.name]
        except KeyError as exc:
            raise StoreError(f"{store_location(root)}/{key}: array {spec.name!r} is missing") from exc
    return StoredVideo(key=key, **arrays)


def store_summary(root: zarr.Group) -> dict[str, Any]:
    """What `trackprep info` prints: counts per status, frames, tracks, foreground share, failures, config."""
    complete, failed, incomplete = [], {}, []
    frames = tracks = fg = 0
    per_video = []
    for key, group in _video_groups(root):
        status = group.attrs.get(schema.ATTR_STATUS)
        if status == schema.STATUS_COMPLETE:
            complete.append(key)
            labels = np.asarray(group[schema.LABELS.name][:])
            n_fg = int(np.count_nonzero((labels > 0) & (labels != 255)))
            t = int(group[schema.FRAMES.name].shape[0])
            frames, tracks, fg = frames + t, tracks + labels.shape[0], fg + n_fg
            per_video.append({"video": key, "frames": t, "tracks": int(labels.shape[0]), "foreground_tracks": n_fg})
        elif status == schema.STATUS_FAILED:
            failed[key] = str(group.attrs.get(schema.ATTR_ERROR, ""))
        else:
            incomplete.append(key)
    return {
        "store": store_location(root),
        "format": root.attrs.get(schema.ATTR_FORMAT),
        "format_version": root.attrs.get(schema.ATTR_FORMAT_VERSION),
        "package_version": root.attrs.get(schema.ATTR_PACKAGE_VERSION),
        "videos_complete": len(complete),
        "videos_failed": len(failed),
        "videos_incomplete": incomplete,
        "frames": frames,
        "tracks": tracks,
        "foreground_share": fg / tracks if tracks else 0.0,
        "per_video": per_video,
        "failures": failed,
        "damaged": damaged_videos(root, keys=complete),
        "config": root.attrs.get(schema.ATTR_CONFIG),
    }
