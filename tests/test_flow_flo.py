"""Middlebury .flo reading and writing."""

from __future__ import annotations

import struct
import numpy as np
import pytest

from trackprep.io.flo import read_flo, write_flo


def test_write_then_read_is_bit_exact(tmp_path):
    rng = np.random.default_rng(0)
    flow = (rng.standard_normal((7, 11, 2)) * 50).astype(np.float32)
    flow[0, 0] = (-0.0, np.inf)  # signed zero and special values survive too
    flow[1, 2] = (1e10, np.nan)
    path = tmp_path / "x.flo"
    write_flo(path, flow)
    back = read_flo(path)
    assert back.dtype == np.float32 and back.shape == (7, 11, 2)
    assert back.tobytes() == flow.tobytes()
    assert path.stat().st_size == 12 + 7 * 11 * 2 * 4


def test_layout_matches_the_middlebury_specification(tmp_path):
    flow = np.zeros((2, 3, 2), np.float32)
    flow[1, 2] = (5.5, -1.25)  # row 1, column 2: u, v
    write_flo(tmp_path / "a.flo", flow)
    raw = (tmp_path / "a.flo").read_bytes()
    magic, width, height = struct.unpack("<fii", raw[:12])
    assert (magic, width, height) == (202021.25, 3, 2)
    values = struct.unpack("<12f", raw[12:])
    assert values[(1 * 3 + 2) * 2 : (1 * 3 + 2) * 2 + 2] == (5.5, -1.25)


def test_reads_the_real_grove3_ground_truth(shared_data):
    flow = read_flo(shared_data / "middlebury" / "Grove3" / "flow10.flo")
    assert flow.shape == (480, 640, 2)
    assert np.isfinite(flow).all() and 0.5 < np.abs(flow).max() < 100  # real motion, no unknown markers


def test_bad_files_are_refused_with_the_file_and_expectation(tmp_path):
    bad = tmp_path / "bad.flo"
    bad.write_bytes(struct.pack("<fii", 1.0, 2, 2) + b"\0" * 32)
    with pytest.raises(ValueError, match=r"bad\.flo.*magic number.*202021\.25"):
        read_flo(bad)
    short = tmp_path / "short.flo"
    short.write_bytes(struct.pack("<fii", 202021.25, 4, 3) + b"\0" * 10)
    with pytest.raises(ValueError, match=r"short\.flo.*4x3.*108 bytes expected, got 22"):
        read_flo(short)
    with pytest.raises(FileNotFoundError, match="missing.flo"):
        read_flo(tmp_path / "missing.flo")
    with pytest.raises(ValueError, match=r"\[H, W, 2\]"):
        write_flo(tmp_path / "c.flo", np.zeros((2, 4, 5), np.float32))
