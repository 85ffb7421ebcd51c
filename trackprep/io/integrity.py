"""Integrity of stores on disk: unreadable metadata, missing and damaged chunk files.

Zarr reads a missing chunk file as the array's fill value, silently, so a deleted frames
chunk reads as a black frame. Writers therefore record the CRC-32 of every chunk file they
wrote when they finish (an annotation video in its group attributes, a segment-store shard in
the store's `chunk_crc32` array; trackprep.io.segment_store), and the checks here compare the
files on disk with that record: `presence` (one stat per file), `checksums` (reads every file)
and `decode` (decodes every chunk through zarr, which also catches data a codec rejects).

Metadata: a `zarr.json` that is not valid JSON makes zarr fail deep inside with a
UnicodeDecodeError; `metadata_problems` finds such files first, so every command can say
which file is broken in one line. Only local (file-system) stores are checked.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import zarr

CHUNKS_ATTR = "chunk_crc32"  # group attribute: {array name: {chunk key: crc32 of the file}}
_READ_BYTES = 1 << 20  # checksum files in 1 MiB blocks: memory stays flat whatever the chunk size


class MetadataError(ValueError):
    """A zarr.json that cannot be read; the message names the file."""


def local_path(node: zarr.Group | zarr.Array) -> Path | None:
    """The folder of a group or array on disk; None for stores that are not local folders."""
    root = getattr(node.store_path.store, "root", None)
    if root is None:
        return None
    return Path(root) / node.store_path.path if node.store_path.path else Path(root)


def file_crc32(path: Path) -> int:
    crc = 0
    with path.open("rb") as f:
        while block := f.read(_READ_BYTES):
            crc = zlib.crc32(block, crc)
    return crc


# ---------------------------------------------------------------- metadata


def _metadata_files(folder: Path, *, max_depth: int | None) -> Iterator[Path]:
    """Every zarr.json of the hierarchy at `folder` (down to `max_depth` levels below it), without
    walking into chunk folders."""
    for dirpath, dirnames, filenames in os.walk(folder):
        if "zarr.json" in filenames:
            yield Path(dirpath) / "zarr.json"
        if max_depth is not None and len(Path(dirpath).relative_to(folder).parts) >= max_depth:
            dirnames[:] = []
        # An array's chunks live under c/ (the default v3 key encoding); hidden folders hold locks.
        dirnames[:] = sorted(d for d in dirnames if d != "c" and not d.startswith("."))


def metadata_problem(path: Path) -> str | None:
    """What is wrong with one zarr.json, or None."""
    try:
        meta = json.loads(path.read_bytes().decode("utf-8"))
    except OSError as exc:
        return f"{path}: cannot read ({exc.strerror or exc})"
    except UnicodeDecodeError as exc:
        return f"{path}: not UTF-8 text (byte {exc.start}); expected Zarr v3 metadata (JSON)"
    except json.JSONDecodeError as exc:
        return f"{path}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); expected Zarr v3 metadata"
    if not isinstance(meta, dict) or meta.get("node_type") not in ("group", "array") or meta.get("zarr_format") != 3:
        got = meta.get("node_type") if isinstance(meta, dict) else type(meta).__name__
        return f"{path}: node_type {got!r}; expected Zarr v3 metadata of a group or an array"
    return None


def metadata_problems(folder: str | Path, *, max_depth: int | None = None) -> dict[Path, str]:
    """zarr.json -> what is wrong, for each unreadable one in the store at `folder` (down to
    `max_depth` group levels); {} when every one reads."""
    return {f: p for f in _metadata_files(Path(folder), max_depth=max_depth) if (p := metadata_problem(f))}


def check_metadata(folder: str | Path, *, remedy: Callable[[Path], str], max_depth: int | None = None) -> None:
    """Raise MetadataError naming the first unreadable zarr.json of the store (and how many more),
    followed by what the user can do about that file (`remedy`)."""
    problems = metadata_problems(folder, max_depth=max_depth)
    if problems:
        path, problem = next(iter(problems.items()))
        more = f" (and {len(problems) - 1} more unreadable zarr.json)" if len(problems) > 1 else ""
        raise MetadataError(f"{problem}{more}; {remedy(path)}")


# ---------------------------------------------------------------- chunk files


def _grid(array: zarr.Array) -> tuple[int, ...]:
    """Number of stored objects (chunks, or shards of a sharded array) along each axis."""
    unit = array.metadata.chunk_grid.chunk_shape
    return tuple(-(-s // c) for s, c in zip(array.shape, unit))


def chunk_key(array: zarr.Array, coords: tuple[int, ...]) -> str:
    """The store key (relative to the array) of the chunk or shard at grid position `coords`."""
    return array.metadata.encode_chunk_key(coords)


def stored_chunks(array: zarr.Array) -> dict[str, Path]:
    """key -> file of every chunk (or shard) file of a local array that exists."""
    folder = local_path(array)
    out: dict[str, Path] = {}
    if folder is None:
        return out
    for coords in np.ndindex(*_grid(array)):
        key = chunk_key(array, tuple(int(c) for c in coords))
        path = folder / key
        if path.is_file():
            out[key] = path
    return out


def record_chunks(group: zarr.Group) -> dict[str, dict[str, int]]:
    """{array: {key: crc32}} of every chunk file of every array in `group`, read back from disk.

    Chunks equal to the fill value are not written by zarr; they are simply not in the record."""
    return {name: {key: file_crc32(path) for key, path in stored_chunks(arr).items()}
            for name, arr in sorted(group.arrays())}


def chunk_problems(folder: Path, record: dict[str, int], *, where: str, checksums: bool) -> list[str]:
    """Files of `record` (key -> crc32, keys relative to `folder`) that are missing or differ."""
    problems, missing, bad = [], [], []
    for key, crc in sorted(record.items()):
        path = folder / key
        if not path.is_file():
            missing.append(path)
        elif checksums and file_crc32(path) != crc:
            bad.append(path)
    if missing:
        problems.append(f"{missing[0]}: chunk file missing" + (f" (and {len(missing) - 1} more in {where})" if len(missing) > 1 else "")
                        + "; expected every chunk written with the data (zarr would read it as fill values)")
    if bad:
        problems.append(f"{bad[0]}: chunk file changed since it was written (CRC-32 differs)"
                        + (f" (and {len(bad) - 1} more in {where})" if len(bad) > 1 else "") + "; expected the bytes written")
    return problems


def decode_problems(array: zarr.Array, *, where: str) -> list[str]:
    """Read every chunk of `array` (one chunk row at a time along axis 0); one line for the first failure."""
    step = array.chunks[0] if array.ndim else 1
    for a in range(0, array.shape[0] if array.ndim else 1, max(1, step)):
        try:
            array[a : a + step] if array.ndim else array[()]
        except Exception as exc:  # codec errors come in many types
            return [f"{where}: cannot decode the chunk at rows {a}..{a + step - 1} ({type(exc).__name__}: "
                    f"{' '.join(str(exc).split())}); expected readable data"]
    return []


def video_problems(group: zarr.Group, *, where: str, checksums: bool = True) -> list[str]:
    """Files of one complete annotation video: its arrays' metadata reads, and every chunk file
    its writer recorded is there and, with `checksums`, unchanged."""
    folder = local_path(group)
    record: Any = group.attrs.get(CHUNKS_ATTR)
    problems = list(metadata_problems(folder).values()) if folder is not None else []
    if folder is not None and isinstance(record, dict) and not problems:
        for name, files in sorted(record.items()):
            problems += chunk_problems(folder / name, files, where=f"{where}/{name}", checksums=checksums)
    return problems


def video_decode_problems(group: zarr.Group, *, where: str) -> list[str]:
    """Every chunk of every array of the video group decodes; one line per array that does not."""
    return [p for name, arr in sorted(group.arrays()) for p in decode_problems(arr, where=f"{where}/{name}")]
