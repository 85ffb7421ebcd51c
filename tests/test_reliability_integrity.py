"""Damaged stores (issue 14, items 2 and 3): deleted or altered chunk files and garbage zarr.json
are found by `validate` (naming the file), reported in one line by `info`, `shard` and `viz`,
never turned into training segments, and repaired by rerunning the command that wrote them."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from trackprep.cli import app
from trackprep.config import resolve_config
from trackprep.io.annotation_reader import open_annotations
from trackprep.io import segment_store as G
from trackprep.io.datasets.synthetic import write_synthetic_dataset
from trackprep.io.validate import validate_store
from trackprep.pipeline.annotate import annotate
from trackprep.pipeline.shard import shard

SIZE = (32, 48)
ORACLE = resolve_config(overrides={"size": list(SIZE), "flow": {"name": "oracle"}})
SHARD = dict(length=8, tracks=40, segments_per_shard=2, scheduler="serial")
SHARD_ARGS = ["--length", "8", "--tracks", "40", "--segments-per-shard", "2", "--scheduler", "serial"]
VIDEO = "synthetic/scene001"


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    base = tmp_path_factory.mktemp("integrity")
    write_synthetic_dataset(base / "synth", num_videos=3, seed=0, num_frames=16, height=SIZE[0], width=SIZE[1])
    summary = annotate(datasets=[("synthetic", base / "synth")], out=base / "A.zarr", config=ORACLE, scheduler="serial")
    assert len(summary.completed) == 3
    shard(base / "A.zarr", base / "S.zarr", **SHARD)
    return base


def _copy(stores: Path, name: str, tmp_path: Path) -> Path:
    dst = tmp_path / name
    shutil.copytree(stores / name, dst)
    return dst


def _run(*args) -> tuple[int, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output and not isinstance(result.exception, (KeyError, UnicodeDecodeError))
    return result.exit_code, result.output


def _error_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and len(output.strip().splitlines()) == 1, output  # one line, nothing else
    return lines[0]


def _first_file(folder: Path) -> Path:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != "zarr.json")[0]


def _deleted(path: Path) -> Path:
    path.unlink()
    return path


def _garbage(path: Path) -> Path:
    path.write_bytes(b"\xc3\x28 not json \x00\xff")
    return path


def _named_by_validate_and_info(store: Path, broken: Path, *, info_line: str) -> None:
    """validate exits 1 naming the file; info reports it in one line: an error (unreadable
    metadata) or, for a missing chunk, a DAMAGED line beside the rest of its summary."""
    code, out = _run("validate", store)
    assert code == 1 and str(broken) in out
    code, out = _run("info", store)
    if broken.name == "zarr.json":
        assert code == 2 and str(broken) in _error_line(out)
    else:
        assert code == 0 and info_line in out and "DAMAGED" in out


# what is damaged in the annotation store -> the file that must be named
ANNOTATION_DAMAGE = {
    "frames chunk deleted": lambda a: _deleted(_first_file(a / VIDEO / "frames" / "c")),
    "labels chunk deleted": lambda a: _deleted(_first_file(a / VIDEO / "labels" / "c")),
    "video zarr.json garbage": lambda a: _garbage(a / VIDEO / "zarr.json"),
    "array zarr.json garbage": lambda a: _garbage(a / VIDEO / "labels" / "zarr.json"),
}


@pytest.mark.parametrize("damage", sorted(ANNOTATION_DAMAGE))
def test_damaged_annotation_video_is_named_by_every_command_and_never_sharded(stores, tmp_path, damage):
    a = _copy(stores, "A.zarr", tmp_path)
    broken = ANNOTATION_DAMAGE[damage](a)

    _named_by_validate_and_info(a, broken, info_line=f"{VIDEO}: DAMAGED {broken}: chunk file missing")
    code, out = _run("validate", "--quick", a)
    assert code == 1 and str(broken) in out

    seg = tmp_path / "S.zarr"
    code, out = _run("shard", "--store", a, "--out", seg, *SHARD_ARGS)
    assert code == 2 and str(broken) in _error_line(out)
    assert not seg.exists() and not list(tmp_path.glob(".S.zarr*"))  # no segment written, from any video

    code, out = _run("viz", a, "--video", VIDEO, "--out", tmp_path / "v.png")
    assert code == 2 and str(broken) in _error_line(out) and not (tmp_path / "v.png").exists()


def test_a_changed_chunk_file_is_found_by_its_checksum(stores, tmp_path):
    a = _copy(stores, "A.zarr", tmp_path)
    chunk = _first_file(a / VIDEO / "masks" / "c")
    data = bytearray(chunk.read_bytes())
    data[-1] ^= 0xFF
    chunk.write_bytes(bytes(data))
    code, out = _run("validate", "--quick", a)
    assert code == 1 and f"{chunk}: chunk file changed since it was written" in out
    code, out = _run("shard", "--store", a, "--out", tmp_path / "S.zarr", *SHARD_ARGS)
    assert code == 2 and str(chunk) in _error_line(out)


def test_rerunning_annotate_redoes_a_video_with_a_missing_chunk(stores, tmp_path):
    a = _copy(stores, "A.zarr", tmp_path)
    _deleted(_first_file(a / VIDEO / "frames" / "c"))
    summary = annotate(datasets=[("synthetic", stores / "synth")], out=a, config=ORACLE, scheduler="serial")
    assert [r.key for r in summary.completed] == [VIDEO] and len(summary.skipped) == 2
    assert validate_store(a) == []
    redone, original = open_annotations(a)[VIDEO], open_annotations(stores / "A.zarr")[VIDEO]
    np.testing.assert_array_equal(redone.frames[:], original.frames[:])
    np.testing.assert_array_equal(redone.points[:], original.points[:])
    np.testing.assert_array_equal(redone.labels, original.labels)


def _segments_equal(a: Path, b: Path) -> None:
    ra, rb = G.SegmentReader(a), G.SegmentReader(b)
    assert len(ra) == len(rb) > 0
    for i in range(len(ra)):
        sa, sb = ra.read(i), rb.read(i)
        for k in sa:
            np.testing.assert_array_equal(sa[k], sb[k], err_msg=f"segment {i} {k}")


SEGMENT_DAMAGE = {
    "frames shard deleted": lambda s: _deleted(_first_file(s / "segments" / "frames" / "c")),
    "labels shard deleted": lambda s: _deleted(_first_file(s / "segments" / "labels" / "c")),
    "checksum record deleted": lambda s: _deleted(_first_file(s / "segments" / G.CRC / "c")),
    "array zarr.json garbage": lambda s: _garbage(s / "segments" / "frames" / "zarr.json"),
    "root zarr.json garbage": lambda s: _garbage(s / "zarr.json"),
}


@pytest.mark.parametrize("damage", sorted(SEGMENT_DAMAGE))
def test_damaged_segment_store_is_named_and_a_rerun_repairs_it(stores, tmp_path, damage):
    s = _copy(stores, "S.zarr", tmp_path)
    broken = SEGMENT_DAMAGE[damage](s)

    _named_by_validate_and_info(s, broken, info_line=f"DAMAGED {broken}")
    code, out = _run("viz", s, "--segment", "0", "--out", tmp_path / "v.png")
    assert code == 2 and str(broken) in _error_line(out)

    # Rerunning shard rewrites the shards whose files are gone; garbage metadata needs --overwrite,
    # which recognises the store as its own even with its root zarr.json destroyed.
    code, out = _run("shard", "--store", stores / "A.zarr", "--out", s, *SHARD_ARGS)
    if broken.name == "zarr.json":
        assert code == 2 and str(broken) in _error_line(out) and "--overwrite" in out
        code, out = _run("shard", "--store", stores / "A.zarr", "--out", s, *SHARD_ARGS, "--overwrite")
    assert code == 0, out
    assert validate_store(s) == []
    _segments_equal(s, stores / "S.zarr")


def test_a_chunk_file_that_does_not_decode_is_named_by_validate(stores, tmp_path):
    a = _copy(stores, "A.zarr", tmp_path)
    chunk = _first_file(a / VIDEO / "frames" / "c")
    chunk.write_bytes(b"garbage, not a Blosc frame")
    code, out = _run("validate", a)
    assert code == 1 and f"{a}/{VIDEO}/frames: cannot decode the chunk at rows 0..0" in out
    code, out = _run("validate", "--quick", a)  # without decoding: the checksum differs
    assert code == 1 and f"{chunk}: chunk file changed since it was written" in out


def test_a_changed_segment_file_is_found_by_quick_validate_and_rewritten_by_a_rerun(stores, tmp_path):
    s = _copy(stores, "S.zarr", tmp_path)
    shard_file = _first_file(s / "segments" / "masks" / "c")
    data = bytearray(shard_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard_file.write_bytes(bytes(data))
    code, out = _run("validate", "--quick", s)
    assert code == 1 and f"{shard_file}: masks file of segments 0..1 changed since it was written" in out
    code, out = _run("shard", "--store", stores / "A.zarr", "--out", s, *SHARD_ARGS)
    assert code == 0 and "redoing 1 damaged shard(s)" in out
    assert validate_store(s, quick=True) == [] and validate_store(s) == []
    _segments_equal(s, stores / "S.zarr")


def test_the_trainers_reader_refuses_a_segment_whose_file_is_missing(stores, tmp_path):
    s = _copy(stores, "S.zarr", tmp_path)
    gone = _deleted(_first_file(s / "segments" / "frames" / "c"))  # the file of segments 0 and 1
    reader = G.SegmentReader(s)
    with pytest.raises(G.SegmentStoreError, match=rf"^{gone}: frames file of segments 0..1 missing"):
        reader.read(1)
    np.testing.assert_array_equal(reader.read(2)["frames"], G.SegmentReader(stores / "S.zarr").read(2)["frames"])


@pytest.mark.parametrize("damage", ["video zarr.json garbage", "array zarr.json garbage"])
def test_rerunning_annotate_redoes_a_video_whose_metadata_is_unreadable(stores, tmp_path, damage):
    a = _copy(stores, "A.zarr", tmp_path)
    broken = ANNOTATION_DAMAGE[damage](a)
    code, out = _run("info", a)
    assert code == 2 and f"{broken}: not UTF-8 text" in out and f"rerun annotate with the same arguments to redo {VIDEO}" in out
    code, out = _run("annotate", "--dataset", "synthetic", "--root", stores / "synth", "--out", a,
                     "--flow", "oracle", "--size", "32x48", "--scheduler", "serial", "--quiet")
    assert code == 0 and "1 video(s) annotated, 2 already complete, 0 failed" in out
    assert validate_store(a) == []
    redone, original = open_annotations(a)[VIDEO], open_annotations(stores / "A.zarr")[VIDEO]
    np.testing.assert_array_equal(redone.points[:], original.points[:])


def test_annotate_on_a_store_whose_root_metadata_is_unreadable_names_the_file(stores, tmp_path):
    a = _copy(stores, "A.zarr", tmp_path)
    broken = _garbage(a / "synthetic" / "zarr.json")  # a dataset group: the store cannot be listed
    code, out = _run("annotate", "--dataset", "synthetic", "--root", stores / "synth", "--out", a,
                     "--flow", "oracle", "--size", "32x48", "--scheduler", "serial", "--quiet")
    line = _error_line(out)
    assert code == 2 and f"{broken}: not UTF-8 text" in line and "restore it from a backup" in line
