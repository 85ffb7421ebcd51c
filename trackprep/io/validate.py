"""Contract checks for stores, as plain functions returning a list of violations.

Each violation is one line naming the store path, the video and the array concerned,
what was found and what the contract (../shared/DESIGN.md, io/schema.py) expects.
An empty list means the store is valid. Large arrays are read in row blocks, so
validating a long video costs no more memory than writing it did.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import zarr

from trackprep.core.labels import nearest_pixel, next_annotated_frame
from trackprep.core.types import VOID
from trackprep.io import annotation_store as store_io
from trackprep.io import integrity, schema
from trackprep.io.annotation_reader import VideoAnnotations

_POINT_BLOCK = 1 << 20  # points per read while checking them


def _check_array(where: str, group: zarr.Group, spec: schema.ArraySpec, shape: tuple[int | None, ...]) -> list[str]:
    """The array exists with the contract's dtype and a shape matching `shape` (None = any)."""
    try:
        arr = group[spec.name]
    except KeyError:
        return [f"{where}/{spec.name}: missing; expected {spec.dtype} {list(spec.dims)}"]
    if not isinstance(arr, zarr.Array):
        return [f"{where}/{spec.name}: is a group; expected a {spec.dtype} array"]
    out = []
    if np.dtype(arr.dtype) != spec.np_dtype():
        out.append(f"{where}/{spec.name}: dtype {arr.dtype}; expected {spec.dtype}")
    if len(arr.shape) != len(shape) or any(e is not None and e != a for a, e in zip(arr.shape, shape)):
        expected = ["?" if e is None else e for e in shape]
        out.append(f"{where}/{spec.name}: shape {list(arr.shape)}; expected {expected} ({', '.join(spec.dims)})")
    return out


def _label_candidates(points: np.ndarray, *, error: float, height: int, width: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(row, column) pixels a stored point may have been labelled at: the nearest pixel of the
    point moved by up to the store's quantisation error in x and y (one pixel unless the point
    lies that close to a pixel boundary)."""
    shifts = (0.0,) if error == 0 else (-error, error)
    return [nearest_pixel(points + np.array([dx, dy], np.float32), height=height, width=width)
            for dx in shifts for dy in shifts]


def validate_annotation_video(root: zarr.Group, key: str, *, where: str, min_track_length: int = 1) -> list[str]:
    """Every contract rule for one complete video group (format version 2: ragged tracks)."""
    group = root[key]
    frames_problems = _check_array(where, group, schema.FRAMES, (None, None, None, 3))
    if frames_problems:
        return frames_problems
    t, h, w = group[schema.FRAMES.name].shape[:3]
    problems = []
    problems += _check_array(where, group, schema.MASKS, (t, h, w))
    problems += _check_array(where, group, schema.HAS_MASK, (t,))
    problems += _check_array(where, group, schema.POINTS, (None, 2))
    problems += _check_array(where, group, schema.START, (None,))
    if problems:
        return problems
    n = group[schema.START.name].shape[0]
    problems += _check_array(where, group, schema.LENGTH, (n,))
    problems += _check_array(where, group, schema.LABELS, (n,))
    if problems:
        return problems

    video = VideoAnnotations(group, key, where=where)
    start, length, p = video.start, video.length, video.num_points
    if int(length.sum()) != p:
        return [f"{where}/length: sums to {int(length.sum())}; expected the {p} rows of points (one per track frame)"]
    if n and start.min() < 0:
        problems.append(f"{where}/start: {int((start < 0).sum())} negative value(s) (first: {int(start.min())}); expected >= 0")
    late = np.flatnonzero(start + length > t)
    if late.size:
        r = int(late[0])
        problems.append(f"{where}/start,length: {late.size} track(s) beyond the last frame (first: track {r}, start "
                        f"{start[r]} + length {length[r]} > {t}); expected start + length <= {t}")
    short = np.flatnonzero(length < min_track_length)
    if short.size:
        problems.append(f"{where}/length: {short.size} track(s) shorter than min_track_length {min_track_length} "
                        f"(first: track {int(short[0])}, length {length[short[0]]}); expected >= {min_track_length}")

    nan = outside = 0
    first_nan: int | None = None
    for a in range(0, p, _POINT_BLOCK):
        pts = np.asarray(video.points[a : a + _POINT_BLOCK], dtype=np.float32)
        bad = ~np.isfinite(pts).all(axis=1)
        nan += int(bad.sum())
        if first_nan is None and bad.any():
            first_nan = a + int(np.argmax(bad))
        x, y = pts[~bad, 0], pts[~bad, 1]
        outside += int(((x < 0) | (x > w - 1) | (y < 0) | (y > h - 1)).sum())
    if nan:
        problems.append(f"{where}/points: {nan} NaN or infinite point(s) (first at row {first_nan}); expected finite (x, y)")
    if outside:
        problems.append(f"{where}/points: {outside} point(s) outside the {w}x{h} frame; expected 0 <= x <= {w - 1}, 0 <= y <= {h - 1}")
    if problems:
        return problems

    # Labels: object ids present in the annotated masks (or VOID), and the mask value under each
    # track at its first annotated frame (VOID when it meets none): the contract's rule. A
    # quantised store may move a point by its stated error: any pixel within it is accepted.
    error = float(dict(video.points.attrs.get(store_io.ATTR_POINTS_ENCODING) or {}).get("max_error_px", 0.0))
    has_mask = np.asarray(video.has_mask[:], dtype=bool)
    labels = video.labels
    frame = next_annotated_frame(has_mask)[np.clip(start, 0, max(t - 1, 0))] if t else np.zeros(n, np.int64)
    met = np.flatnonzero(frame < start + length)
    first_point = video.points_at(met, frame[met])
    wrong = labels != VOID  # right for a track that meets no annotated frame; the others are set below
    expected = np.full(n, VOID, np.uint8)
    present = np.zeros(256, dtype=bool)
    present[VOID] = True
    order = np.argsort(frame[met], kind="stable")
    bounds = np.searchsorted(frame[met][order], np.arange(t + 1))
    for i in np.flatnonzero(has_mask):
        m = np.asarray(video.masks[int(i)])
        present |= np.bincount(m.ravel(), minlength=256) > 0
        sel = order[bounds[i] : bounds[i + 1]]
        if sel.size:
            rows = met[sel]
            cands = [m[y, x] for y, x in _label_candidates(first_point[sel], error=error, height=h, width=w)]
            expected[rows] = cands[0]
            wrong[rows] = ~np.any([labels[rows] == c for c in cands], axis=0)
    used = np.unique(labels)
    stray = used[~present[used]]
    if stray.size:
        problems.append(
            f"{where}/labels: values {stray.tolist()} do not occur in the annotated masks; "
            f"expected object ids present in masks (or {VOID})"
        )
    bad = np.flatnonzero(wrong)
    if bad.size:
        r = int(bad[0])
        at = f"frame {frame[r]}" if frame[r] < start[r] + length[r] else "no annotated frame"
        problems.append(
            f"{where}/labels: {bad.size} track(s) labelled other than the mask under their first annotated point "
            f"(first: track {r}, label {labels[r]}, mask {expected[r]} at {at}); expected the object id there, "
            f"{VOID} for a track that meets no annotated frame"
        )
    return problems


def validate_annotation_store(path: str | Path, *, quick: bool = False) -> list[str]:
    """Every contract rule of an annotation store; [] when it is valid. Every chunk file its
    writer recorded must be there and every chunk of every complete video must decode
    (trackprep.io.integrity); `quick` checks only that the files are there and unchanged
    (recorded CRC-32), without decoding."""
    try:
        root = store_io.open_store(path, mode="r")
    except store_io.StoreError as exc:
        return [str(exc)]
    loc = store_io.store_location(root)
    problems = []
    if not isinstance(root.attrs.get(schema.ATTR_CONFIG), dict):
        problems.append(f"{loc}: root attribute {schema.ATTR_CONFIG!r} missing; expected the resolved configuration")
    if not root.attrs.get(schema.ATTR_PACKAGE_VERSION):
        problems.append(f"{loc}: root attribute {schema.ATTR_PACKAGE_VERSION!r} missing; expected the trackprep version")
    for dataset_name, dataset_group in root.groups():
        for name, node in dataset_group.arrays():
            problems.append(f"{loc}/{dataset_name}/{name}: an array directly under a dataset; expected video groups only")
    tracks_config = (root.attrs.get(schema.ATTR_CONFIG) or {}).get("tracks") or {}
    min_track_length = int(tracks_config.get("min_track_length", 1))
    for key in store_io.video_keys(root):
        where = f"{loc}/{key}"
        status = root[key].attrs.get(schema.ATTR_STATUS)
        if status == schema.STATUS_COMPLETE:
            # Quick: each file against its recorded CRC-32. Full: every chunk decoded and every
            # rule checked on the values (a file edited in place through zarr is judged by its data).
            problems += integrity.video_problems(root[key], where=where, checksums=quick)
            if not quick:
                undecodable = integrity.video_decode_problems(root[key], where=where)
                problems += undecodable or validate_annotation_video(root, key, where=where,
                                                                     min_track_length=min_track_length)
        elif status == schema.STATUS_FAILED:
            if not root[key].attrs.get(schema.ATTR_ERROR):
                problems.append(f"{where}: status 'failed' without an {schema.ATTR_ERROR!r} attribute; expected the error message")
        else:
            problems.append(
                f"{where}: status {status!r}; expected 'complete' or 'failed' (an interrupted write: rerun annotate to redo it)"
            )
    return problems


# Store format -> validator. The segment-store validator registers itself here.
VALIDATORS: dict[str, Callable[..., list[str]]] = {schema.ANNOTATION_FORMAT: validate_annotation_store}


def validate_store(path: str | Path, *, quick: bool = False) -> list[str]:
    """Validate any trackprep store, choosing the rules by its format attribute.
    `quick`: only that every file is readable metadata or there and unchanged, without decoding."""
    fmt = schema.store_format(path)
    if fmt is None:
        meta = Path(path) / "zarr.json"
        if meta.is_file() and (problem := integrity.metadata_problem(meta)):
            return [problem]
        what = "does not exist" if not Path(path).exists() else "is not a readable Zarr v3 store"
        return [f"{path}: {what}; expected a trackprep store"]
    validator = VALIDATORS.get(fmt)
    if validator is None:
        return [f"{path}: store format {fmt!r}; expected one of {sorted(VALIDATORS)}"]
    return validator(path, quick=quick)


def validate_segment_store(path: str | Path, *, quick: bool = False) -> list[str]:
    """Every contract rule of a segment store (`trackprep shard`); [] when it is valid.

    Reads one segment at a time (one chunk per array), so memory stays at one segment. Every
    file of a written segment must be there; `quick` stops there, comparing them with their
    recorded CRC-32 instead of decoding.
    """
    from trackprep.io import segment_store as seg_io

    try:
        root = seg_io.open_segment_store(path, mode="r")
    except (seg_io.SegmentStoreError, FileNotFoundError) as exc:
        return [str(exc)]
    loc = seg_io.store_location(root)
    problems: list[str] = []
    if not isinstance(root.attrs.get(schema.ATTR_CONFIG), dict):
        problems.append(f"{loc}: root attribute {schema.ATTR_CONFIG!r} missing; expected the resolved configuration")
    if not root.attrs.get(schema.ATTR_PACKAGE_VERSION):
        problems.append(f"{loc}: root attribute {schema.ATTR_PACKAGE_VERSION!r} missing; expected the trackprep version")
    g = root[schema.SEGMENTS_GROUP]
    where = f"{loc}/{schema.SEGMENTS_GROUP}"
    frames_problems = _check_array(where, g, schema.SEG_FRAMES, (None, None, None, None, 3))
    if frames_problems:
        return problems + frames_problems
    s, L, h, w = g[schema.SEG_FRAMES.name].shape[:4]
    shape_problems = _check_array(where, g, schema.SEG_MASKS, (s, L, h, w))
    shape_problems += _check_array(where, g, schema.SEG_HAS_MASK, (s, L))
    tracks_spec = schema.SEG_TRACKS
    if schema.SEG_TRACKS.name in g and g[schema.SEG_TRACKS.name].dtype == np.float16:
        tracks_spec = schema.ArraySpec(tracks_spec.name, "float16", tracks_spec.dims, tracks_spec.meaning)  # allowed
    shape_problems += _check_array(where, g, tracks_spec, (s, None, L, 2))
    if shape_problems:
        return problems + shape_problems
    n = g[schema.SEG_TRACKS.name].shape[1]
    shape_problems += _check_array(where, g, schema.SEG_VISIBLE, (s, n, L))
    shape_problems += _check_array(where, g, schema.SEG_LABELS, (s, n))
    shape_problems += _check_array(where, g, schema.SEG_NUM_TRACKS, (s,))
    shape_problems += _check_array(where, g, schema.SEG_START, (s,))
    if schema.SEG_VIDEO.name not in g or g[schema.SEG_VIDEO.name].shape != (s,):
        shape_problems.append(f"{where}/{schema.SEG_VIDEO.name}: missing or not of shape [{s}]; expected str [S]")
    if shape_problems:
        return problems + shape_problems
    for spec in (schema.SEG_FRAMES, schema.SEG_MASKS, schema.SEG_TRACKS, schema.SEG_VISIBLE, schema.SEG_LABELS):
        chunks = g[spec.name].chunks
        if chunks[0] != 1:
            problems.append(f"{where}/{spec.name}: chunks {list(chunks)}; expected one segment per chunk (1, ...)")

    # As for annotation stores: --quick compares files with their recorded CRC-32; the full
    # check needs every file present, then decodes every segment and checks its values.
    problems += seg_io.shard_problems(root, checksums=quick)
    if quick:
        return problems
    done = seg_io.done_flags(root)
    if not seg_io.is_complete(root) or not done.all():
        problems.append(f"{loc}: {int(done.sum())} of {s} segments written; expected all (an interrupted "
                        "`trackprep shard`: rerun it with the same arguments to finish)")
    videos, starts = seg_io.read_index(root)
    num_tracks = np.asarray(g[schema.SEG_NUM_TRACKS.name][:])
    pairs = list(zip(videos, starts.tolist()))
    if len(set(pairs)) != len(pairs):
        problems.append(f"{where}/video,start: {len(pairs) - len(set(pairs))} repeated (video, start) pair(s); expected each segment once")
    reader = seg_io.SegmentReader(root.store, require_complete=False)
    for i in np.flatnonzero(done):
        at = f"{where} segment {i} ({videos[i]} from frame {starts[i]})"
        k = int(num_tracks[i])
        if not 0 <= k <= n:
            problems.append(f"{at}: num_tracks {k}; expected 0 <= num_tracks <= {n}")
            continue
        if not videos[i] or starts[i] < 0:
            problems.append(f"{at}: video {videos[i]!r}, start {starts[i]}; expected a video key and start >= 0")
        try:
            seg = reader.read(int(i))
        except Exception as exc:  # a codec rejecting a damaged file: many exception types
            problems.append(f"{at}: cannot decode ({type(exc).__name__}: {' '.join(str(exc).split())}); expected readable data")
            continue
        tr, vis, lab = seg["tracks"], seg["visible"], seg["labels"]
        finite = np.isfinite(tr).all(-1)
        if (finite != vis).any():
            problems.append(f"{at}: {int((finite != vis).sum())} point(s) where NaN does not match visible; "
                            "expected finite (x, y) exactly where visible")
        short = int((vis[:k].sum(1) < 2).sum())
        if short:
            problems.append(f"{at}: {short} kept track(s) visible in fewer than 2 frames; expected >= 2")
        if vis[k:].any() or (lab[k:] != VOID).any():
            problems.append(f"{at}: padding rows {k}..{n - 1} hold data; expected visible False and label {VOID}")
        if (lab[:k] == VOID).any():
            problems.append(f"{at}: {int((lab[:k] == VOID).sum())} kept track(s) labelled {VOID}; expected object ids (0 background)")
        x, y = tr[..., 0][vis], tr[..., 1][vis]
        outside = int(((x < 0) | (x > w - 1) | (y < 0) | (y > h - 1)).sum())
        if outside:
            problems.append(f"{at}: {outside} visible point(s) outside the {w}x{h} frame")
    return problems


VALIDATORS[schema.SEGMENT_FORMAT] = validate_segment_store
