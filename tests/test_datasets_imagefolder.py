"""The generic image-folder reader, through the JumpCut manifest (whose layout is a guess
modelled on the kongfu sample of sduirc/JumpCut) and with user options."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from trackprep.io.check import check_dataset
from trackprep.io.datasets import DatasetError, open_dataset
from trackprep.io.fetch import fetch_dataset
from trackprep.io.manifests import load_manifest

H, W = 30, 40
KEYS = ["000_001", "000_002", "000_010", "001_000"]  # natural order, not string order


def palette_mask(on: np.ndarray, path: Path) -> None:
    im = Image.fromarray(on.astype(np.uint8), mode="P")
    im.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)  # index 1 is white, as a binary palette PNG
    im.save(path)


def make_jumpcut_like(root: Path) -> Path:
    seq = root / "kongfu"
    seq.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i, key in enumerate(KEYS):
        Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(seq / f"kongfu_ori_{key}.png")
        on = np.zeros((H, W), bool)
        on[i : i + 5, 10:20] = True
        if key != "000_010":  # one frame without ground truth
            palette_mask(on, seq / f"kongfu_ori_mask_{key}.png")
    (seq / f"kongfu_edge_{KEYS[0]}.png").write_bytes((seq / f"kongfu_ori_{KEYS[0]}.png").read_bytes())  # ignored
    return root


def test_jumpcut_pairs_frames_and_masks_by_key(tmp_path: Path) -> None:
    ds = open_dataset("jumpcut", make_jumpcut_like(tmp_path))
    assert ds.video_names() == ["kongfu"]
    video = ds.video("kongfu")
    assert [p.name for p in video.frame_paths] == [f"kongfu_ori_{k}.png" for k in KEYS]
    records = list(video.iter_frames())
    assert [r.has_mask for r in records] == [True, True, False, True]
    for i, r in enumerate(records):
        if r.has_mask:
            expected = np.zeros((H, W), np.uint8)
            expected[i : i + 5, 10:20] = 1
            np.testing.assert_array_equal(r.mask, expected)
    report = check_dataset("jumpcut", tmp_path)
    assert [s.name for s in report.sequences] == ["kongfu"] and report.sequences[0].found_frames == 4
    assert report.ok, report.summary()


def test_user_layout_with_index_masks(tmp_path: Path) -> None:
    seq = tmp_path / "clips" / "walk"
    (seq / "rgb").mkdir(parents=True)
    (seq / "gt").mkdir()
    for t in range(3):
        Image.fromarray(np.full((H, W, 3), 10 * t, np.uint8)).save(seq / "rgb" / f"img{t}.jpg")
        Image.fromarray(np.full((H, W), t, np.uint8), mode="L").save(seq / "gt" / f"img{t}.png")
    ds = open_dataset("imagefolder", tmp_path, sequences_dir="clips", frames_subdir="rgb", masks_subdir="gt",
                      frame_regex=r"^(?P<key>img\d+)\.jpg$", mask_regex=r"^(?P<key>img\d+)\.png$", mask_rule="index")
    records = list(ds.video("walk").iter_frames())
    assert [int(r.mask.max()) for r in records] == [0, 1, 2]
    Image.fromarray(np.zeros((H, W), np.uint8), mode="L").save(seq / "gt" / "img7.png")
    with pytest.raises(DatasetError, match=r"img7\.png: mask without a frame"):
        ds.video("walk")
    with pytest.raises(DatasetError, match=r"unknown image-folder option\(s\) \['frame_glob'\]"):
        open_dataset("imagefolder", tmp_path, frame_glob="*.jpg")
    with pytest.raises(DatasetError, match=r"has no \(\?P<key>...\) group"):
        open_dataset("imagefolder", tmp_path, sequences_dir="clips", frame_regex=r"img\d+")


def test_jumpcut_fetch_prints_the_manual_step(tmp_path: Path) -> None:
    result = fetch_dataset(load_manifest("jumpcut"), tmp_path / "jc")
    assert result.status == "manual"
    assert "https://www.dropbox.com/s/v0v3pkrhz1vizyt/VideoSeg_dataset.rar" in result.instructions
    assert str(tmp_path / "jc") in result.instructions
    assert not (tmp_path / "jc").exists()  # nothing downloaded, nothing created

    from trackprep.cli import app

    out = CliRunner().invoke(app, ["fetch", "jumpcut", "--root", str(tmp_path / "jc")])
    assert out.exit_code == 2 and "VideoSeg_dataset.rar" in out.output

    # once the user has unpacked it, a rerun reports the copy instead of repeating the instructions
    make_jumpcut_like(tmp_path / "jc")
    assert fetch_dataset(load_manifest("jumpcut"), tmp_path / "jc").status == "already-complete"
    out = CliRunner().invoke(app, ["fetch", "jumpcut", "--root", str(tmp_path / "jc")])
    assert out.exit_code == 0 and "already complete" in out.output and "VideoSeg_dataset.rar" not in out.output, out.output
