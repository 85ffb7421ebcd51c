"""Smaller items of issue 14 on the dataset side: a frame whose mask file is missing is reported
(it used to read silently as unannotated outside manifest-listed sequences), and a root that is
a file is called a file."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from test_datasets_errors import make_davis

from trackprep.config import resolve_config
from trackprep.io.datasets import DatasetError, open_dataset
from trackprep.pipeline.annotate import annotate


def _rename(root: Path, name: str) -> None:
    for kind in ("JPEGImages", "Annotations"):
        (root / "DAVIS" / kind / "480p" / "bear").rename(root / "DAVIS" / kind / "480p" / name)


@pytest.mark.parametrize("sequence", ["bear", "my_own_clip"])  # listed in the manifest, and not
def test_a_frame_without_its_mask_file_is_warned_about(tmp_path, sequence):
    root = make_davis(tmp_path, n=5)
    if sequence != "bear":
        _rename(root, sequence)
    ds = open_dataset("davis2017", root)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # all masks there: no warning
        assert ds.open_video(sequence).mask_flags().all()
    (root / "DAVIS" / "Annotations" / "480p" / sequence / "00003.png").unlink()
    frame = root / "DAVIS" / "JPEGImages" / "480p" / sequence / "00003.jpg"
    with pytest.warns(UserWarning, match=rf"davis2017/{sequence}: 1 frame\(s\) without a mask file .*first: {frame}\)"):
        video = ds.open_video(sequence)
    assert video.mask_flags().tolist() == [True, True, True, False, True]


def test_annotate_warns_about_a_missing_mask_file(tmp_path):
    root = make_davis(tmp_path / "data", n=4)
    _rename(root, "my_own_clip")
    (root / "DAVIS" / "Annotations" / "480p" / "my_own_clip" / "00001.png").unlink()
    config = resolve_config(overrides={"size": [32, 48], "flow": {"name": "dis", "dis_preset": "ultrafast"}})
    with pytest.warns(UserWarning, match=r"my_own_clip: 1 frame\(s\) without a mask file"):
        summary = annotate(datasets=[("davis2017", root)], out=tmp_path / "A.zarr", config=config, scheduler="serial")
    assert len(summary.completed) == 1


def test_sparse_datasets_expect_masks_only_where_the_manifest_says(tmp_path):
    from trackprep.io.datasets.fbms import FBMS59

    assert FBMS59.dense_masks is False
    root = make_davis(tmp_path, n=3)
    ds = open_dataset("davis2017", root)
    assert ds.expected_masks("my_own_clip", 3).tolist() == [True, True, True]


def test_a_root_that_is_a_file_is_called_a_file(tmp_path):
    path = tmp_path / "DAVIS.zip"
    path.write_bytes(b"PK")
    with pytest.raises(DatasetError, match=rf"^{path}: is a file; expected the folder holding the davis2017 files$"):
        open_dataset("davis2017", path)


def test_check_reports_a_missing_mask_file_outside_the_manifest_too(tmp_path):
    from trackprep.io.check import check_dataset

    root = make_davis(tmp_path, n=5)
    _rename(root, "my_own_clip")
    assert check_dataset("davis2017", root).sequences[0].problems == []
    (root / "DAVIS" / "Annotations" / "480p" / "my_own_clip" / "00003.png").unlink()
    (seq,) = check_dataset("davis2017", root).sequences
    assert seq.problems == ["no ground truth for frame(s) 3 (0-based, every frame of this dataset has a mask)"]
