"""Bad input gives a DatasetError that names the file: a missing frame, a mask without a
frame, a truncated image, an unknown sequence, frame/mask size disagreement, unknown names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from trackprep.io.check import check_dataset
from trackprep.io.datasets import DatasetError, open_dataset, read_clip
from trackprep.io.datasets.base import UnknownSequenceError

H, W = 32, 48


def make_davis(root: Path, n: int = 5) -> Path:
    """A DAVIS-2017 style sequence 'bear' with n frames and palette masks."""
    frames = root / "DAVIS" / "JPEGImages" / "480p" / "bear"
    masks = root / "DAVIS" / "Annotations" / "480p" / "bear"
    frames.mkdir(parents=True)
    masks.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for t in range(n):
        Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(frames / f"{t:05d}.jpg", quality=95)
        ids = np.zeros((H, W), np.uint8)
        ids[4:12, 4:12] = 1
        im = Image.fromarray(ids, mode="P")
        im.putpalette([0, 0, 0, 128, 0, 0] + [0] * 762)
        im.save(masks / f"{t:05d}.png")
    return root


@pytest.fixture
def davis(tmp_path: Path) -> Path:
    return make_davis(tmp_path)


def seq_dir(root: Path, kind: str = "JPEGImages") -> Path:
    return root / "DAVIS" / kind / "480p" / "bear"


def test_missing_frame_names_the_gap(davis: Path) -> None:
    (seq_dir(davis) / "00002.jpg").unlink()
    with pytest.raises(DatasetError) as err:
        open_dataset("davis2017", davis).video("bear")
    msg = str(err.value)
    assert str(seq_dir(davis) / "00002.jpg") in msg and "frame missing" in msg and "00000.jpg to 00004.jpg" in msg


def test_missing_first_frame(davis: Path) -> None:
    (seq_dir(davis) / "00000.jpg").unlink()
    with pytest.raises(DatasetError, match=r"bear/00000\.jpg: frame missing"):
        open_dataset("davis2017", davis).video("bear")


def test_mask_without_frame(davis: Path) -> None:
    stray = seq_dir(davis, "Annotations") / "00007.png"
    Image.fromarray(np.zeros((H, W), np.uint8), mode="P").save(stray)
    with pytest.raises(DatasetError) as err:
        open_dataset("davis2017", davis).video("bear")
    assert str(stray) in str(err.value) and "mask without a frame" in str(err.value)


def test_truncated_image_named_by_reader_and_check(davis: Path) -> None:
    bad = seq_dir(davis) / "00003.jpg"
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    video = open_dataset("davis2017", davis).video("bear")
    assert video.num_frames == 5  # listing alone does not decode, so it still succeeds
    with pytest.raises(DatasetError) as err:
        read_clip(video, size=None)
    assert str(bad) in str(err.value) and "cannot decode" in str(err.value)
    report = check_dataset("davis2017", davis)
    bear = next(s for s in report.sequences if s.name == "bear")
    assert any(str(bad) in p and "cannot decode" in p for p in bear.problems)
    assert not report.ok


def test_truncated_png_mask(davis: Path) -> None:
    bad = seq_dir(davis, "Annotations") / "00001.png"
    bad.write_bytes(bad.read_bytes()[:40])
    report = check_dataset("davis2017", davis)
    bear = next(s for s in report.sequences if s.name == "bear")
    assert any(str(bad) in p for p in bear.problems)


def test_unknown_sequence_names_the_folder(davis: Path) -> None:
    with pytest.raises(UnknownSequenceError) as err:
        open_dataset("davis2017", davis).video("no-such-seq")
    assert str(davis / "DAVIS" / "JPEGImages" / "480p" / "no-such-seq") in str(err.value)
    assert "bear" in str(err.value)  # lists what is there


def test_mask_size_differs_from_frame(davis: Path) -> None:
    bad = seq_dir(davis, "Annotations") / "00001.png"
    Image.fromarray(np.zeros((H + 2, W), np.uint8), mode="P").save(bad)
    with pytest.raises(DatasetError, match=r"00001\.png: mask is 48x34 .* is 48x32"):
        list(open_dataset("davis2017", davis).video("bear").iter_frames())
    bear = next(s for s in check_dataset("davis2017", davis).sequences if s.name == "bear")
    assert any("00001.png: size (48, 34) differs" in p for p in bear.problems)


def test_unknown_dataset_and_split_and_root(davis: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"unknown dataset 'kitti'; expected one of .*davis2016.*fbms59.*segtrackv2"):
        open_dataset("kitti", davis)
    with pytest.raises(DatasetError, match=r"davis2017\.yaml: dataset 'davis2017' has no split 'test'"):
        open_dataset("davis2017", davis, split="test")
    with pytest.raises(DatasetError, match=r"nowhere: dataset folder not found"):
        open_dataset("davis2017", tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match=r"empty: no JPEGImages/ folder here or in .*DAVIS"):
        open_dataset("davis2017", empty)
    report = check_dataset("davis2017", empty)
    assert not report.ok and "no JPEGImages" in report.errors[0]


def test_non_image_file_named(davis: Path) -> None:
    bad = seq_dir(davis) / "00004.jpg"
    bad.write_text("not an image")
    with pytest.raises(DatasetError, match=r"00004\.jpg: cannot decode image"):
        list(open_dataset("davis2017", davis).video("bear").iter_frames())


def test_decode_mode_check_reports_truncated_frame(davis: Path) -> None:
    bad = seq_dir(davis) / "00001.jpg"
    bad.write_bytes(bad.read_bytes()[:300])
    bear = next(s for s in check_dataset("davis2017", davis, decode=True).sequences if s.name == "bear")
    assert len(bear.problems) == 2 and str(bad) in bear.problems[1]  # frame count vs manifest, then the file
