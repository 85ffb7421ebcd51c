"""Middlebury .flo optical-flow files (Baker et al., IJCV 2011; the format of flow-code's
flowIO.cpp): the float32 magic 202021.25 ("PIEH" in ASCII), int32 width, int32 height, then
height * width * 2 float32 values (u, v) row by row, all little-endian.

Flow is [H, W, 2] here (u = dx, v = dy), the file's own layout; values above 1e9 mark
pixels whose flow is unknown.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

FLO_MAGIC = np.float32(202021.25)
_HEADER_BYTES = 12


def write_flo(path: str | Path, flow: np.ndarray) -> None:
    """Write float [H, W, 2] flow; the values are stored as float32, so float32 input round-trips bit-exactly."""
    flow = np.asarray(flow)
    if flow.ndim != 3 or flow.shape[2] != 2 or not np.issubdtype(flow.dtype, np.floating):
        raise ValueError(f"write_flo {str(path)!r}: expected float array [H, W, 2], got {flow.dtype} {flow.shape}")
    height, width = flow.shape[:2]
    with open(path, "wb") as f:
        f.write(np.array([FLO_MAGIC], dtype="<f4").tobytes())
        f.write(np.array([width, height], dtype="<i4").tobytes())
        f.write(np.ascontiguousarray(flow, dtype="<f4").tobytes())


def read_flo(path: str | Path) -> np.ndarray:
    """float32 [H, W, 2] (u, v) from a Middlebury .flo file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise FileNotFoundError(f"flow file {str(path)!r} could not be read: {exc.strerror}") from exc
    if len(data) < _HEADER_BYTES:
        raise ValueError(f"flow file {str(path)!r}: {len(data)} bytes, expected at least a {_HEADER_BYTES}-byte .flo header")
    magic = np.frombuffer(data, dtype="<f4", count=1)[0]
    if magic != FLO_MAGIC:
        raise ValueError(
            f"flow file {str(path)!r}: magic number {magic!r}, expected {float(FLO_MAGIC)} (a Middlebury .flo file)"
        )
    width, height = (int(v) for v in np.frombuffer(data, dtype="<i4", count=2, offset=4))
    expected = _HEADER_BYTES + 4 * 2 * width * height
    if width <= 0 or height <= 0 or len(data) != expected:
        raise ValueError(
            f"flow file {str(path)!r}: header says {width}x{height}, so {expected} bytes expected, got {len(data)}"
        )
    return np.frombuffer(data, dtype="<f4", offset=_HEADER_BYTES).reshape(height, width, 2).astype(np.float32)
