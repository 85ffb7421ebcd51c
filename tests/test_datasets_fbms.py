"""FBMS-59 reader on a tree built in the archive's layout: `TrainingSet` in odd letter case,
sparse ground truth from <seq>Def.dat (0-based frame numbers), a .ppm with a white background
and a colour Def.dat does not declare, a .pgm with the marple2 extra background regions."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from trackprep.io.datasets import DatasetError, open_dataset
from trackprep.io.datasets.fbms import parse_def_file

H, W = 36, 48
WHITE, RED, BLUE, GREY = (255, 255, 255), (255, 0, 0), (0, 0, 255), (128, 128, 128)


def def_dat(scales: list[int], total: int, labelled: list[tuple[int, str]]) -> str:
    """A Def.dat in the layout the FBMS parsers agree on (segment-any-moving utils/fbms)."""
    lines = ["Ground truth definition file; do not change!", "", "Total number of regions:", str(len(scales))]
    for r, s in enumerate(scales):
        lines += [f"Scale of region {r}:", str(s)]
    lines += ["", "Confusion penality matrix:"]
    lines += [" ".join("0" if i == j else "1" for j in range(len(scales))) for i in range(len(scales))]
    lines += ["", "Total number of frames in this shot:", str(total), "Total number of labeled frames for this shot:", str(len(labelled))]
    for f, name in labelled:
        lines += ["Frame number:", str(f), "File name:", name, "Input file name:", name.replace("_gt.ppm", ".ppm").replace(".pgm", ".ppm")]
    return "\n".join(lines) + "\n"


def packed(rgb: tuple[int, int, int]) -> int:
    return rgb[0] * 65536 + rgb[1] * 256 + rgb[2]


def ppm_gt(t: int) -> np.ndarray:
    img = np.empty((H, W, 3), np.uint8)
    img[:] = WHITE
    img[5:15, 5 + t : 15 + t] = RED
    img[20:30, 30:40] = BLUE
    img[0:3, 0:3] = GREY  # a colour Def.dat does not declare (cats04 has such files)
    return img


def write_frames(folder: Path, stem: str, n: int, *, first: int = 1) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(n)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(folder / f"{stem}_{first + i:04d}.jpg")


def make_fbms_tree(root: Path) -> Path:
    seq = root / "TrainingSet" / "cats04"  # the odd spelling segment-any-moving uses
    write_frames(seq, "cats04", 10)
    gt = seq / "GroundTruth"
    gt.mkdir()
    labelled = [(0, "cats04_0001_gt.ppm"), (4, "cats04_0005_gt.ppm"), (9, "cats04_0010_gt.ppm")]
    (gt / "cats04Def.dat").write_text(def_dat([packed(WHITE), packed(RED), packed(BLUE)], 10, labelled))
    for t, (_, name) in enumerate(labelled):
        Image.fromarray(ppm_gt(t)).save(gt / name)
    (seq / "cats04.bmf").write_text("10 1\n" + "\n".join(f"cats04_{i:04d}.ppm" for i in range(1, 11)) + "\n")

    seq = root / "testset" / "marple2"
    write_frames(seq, "marple2", 6)
    gt = seq / "GroundTruth"
    gt.mkdir()
    (gt / "marple2Def.dat").write_text(def_dat([0, 40, 80, 120, 160], 6, [(0, "marple2_01.pgm"), (5, "marple2_06.pgm")]))
    for name in ("marple2_01.pgm", "marple2_06.pgm"):
        Image.fromarray(marple_gt()).save(gt / name)
    return root


def marple_gt() -> np.ndarray:
    g = np.zeros((H, W), np.uint8)
    for region, value in enumerate((0, 40, 80, 120, 160)):
        g[:, region * 8 : region * 8 + 8] = value
    return g


@pytest.fixture
def fbms(tmp_path: Path) -> Path:
    return make_fbms_tree(tmp_path)


def test_splits_in_any_letter_case(fbms: Path) -> None:
    assert open_dataset("fbms59", fbms).video_names() == ["cats04", "marple2"]
    assert open_dataset("fbms59", fbms, split="train").video_names() == ["cats04"]
    assert open_dataset("fbms59", fbms, split="test").video_names() == ["marple2"]


def test_def_file_parsed(fbms: Path) -> None:
    d = parse_def_file(fbms / "TrainingSet" / "cats04" / "GroundTruth" / "cats04Def.dat")
    assert d.scales == (packed(WHITE), packed(RED), packed(BLUE))
    assert d.total_frames == 10
    assert [f for f, _ in d.labelled] == [0, 4, 9]


def test_ppm_ground_truth_sparse_flags_white_background_and_undeclared_colour(fbms: Path) -> None:
    video = open_dataset("fbms59", fbms).video("cats4")  # the official evaluation's un-padded name
    assert video.name == "cats04" and video.num_frames == 10
    expected_flags = np.zeros(10, bool)
    expected_flags[[0, 4, 9]] = True
    np.testing.assert_array_equal(video.mask_flags(), expected_flags)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        records = list(video.iter_frames())
    messages = [str(w.message) for w in caught]
    assert len(messages) == 3 and all("#808080 not declared in cats04Def.dat" in m for m in messages)
    assert "cats04_0001_gt.ppm" in messages[0]
    np.testing.assert_array_equal([r.has_mask for r in records], expected_flags)
    for t, frame_index in enumerate([0, 4, 9]):
        expected = np.zeros((H, W), np.uint8)
        expected[5:15, 5 + t : 15 + t] = 1  # region 1 (red)
        expected[20:30, 30:40] = 2  # region 2 (blue); white and the undeclared grey are background
        np.testing.assert_array_equal(records[frame_index].mask, expected)
    assert not records[1].mask.any()


def test_pgm_grey_levels_and_marple_background_regions(fbms: Path) -> None:
    video = open_dataset("fbms59", fbms).video("marple2")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every grey level is declared: no warning
        records = list(video.iter_frames())
    np.testing.assert_array_equal([r.has_mask for r in records], [True, False, False, False, False, True])
    m = records[5].mask
    # regions 0, 2, 4 are background for marple2 (manifest options); 1 -> id 1, 3 -> id 2
    assert (m[:, 0:8] == 0).all() and (m[:, 8:16] == 1).all() and (m[:, 16:24] == 0).all()
    assert (m[:, 24:32] == 2).all() and (m[:, 32:40] == 0).all() and (m[:, 40:] == 0).all()


def test_def_frame_number_beyond_the_frames_is_a_mask_without_frame(fbms: Path) -> None:
    gt = fbms / "testset" / "marple2" / "GroundTruth"
    (gt / "marple2Def.dat").write_text(def_dat([0, 40, 80, 120, 160], 7, [(0, "marple2_01.pgm"), (6, "marple2_06.pgm")]))
    with pytest.raises(DatasetError, match=r"marple2_06\.pgm: mask without a frame.*frame number 6"):
        open_dataset("fbms59", fbms).video("marple2")


def test_missing_def_file_and_gap(fbms: Path) -> None:
    (fbms / "testset" / "marple2" / "GroundTruth" / "marple2Def.dat").unlink()
    with pytest.raises(DatasetError, match=r"marple2Def\.dat: not found"):
        open_dataset("fbms59", fbms).video("marple2")
    (fbms / "TrainingSet" / "cats04" / "cats04_0003.jpg").unlink()
    with pytest.raises(DatasetError, match=r"cats04_0003\.jpg: frame missing"):
        open_dataset("fbms59", fbms).video("cats04")


def fixture_manifest(cats04_annotated: list[int]):
    """The real fbms59 manifest's rules, with the fixture's two sequences as the split lists."""
    import dataclasses

    from trackprep.io.manifests import SequenceInfo, load_manifest

    real = load_manifest("fbms59")
    return dataclasses.replace(real, splits={
        "train": (SequenceInfo("cats04", frames=10, annotated=tuple(cats04_annotated)),),
        "test": (SequenceInfo("marple2", frames=6, annotated=(0, 5)),),
    })


def test_check_compares_sparse_annotated_frames_with_the_manifest(fbms: Path) -> None:
    from trackprep.io.check import check_dataset

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the undeclared grey of cats04
        report = check_dataset(fixture_manifest([0, 4, 9]), fbms)
        assert report.ok, report.summary()
        assert report.complete_splits == ["train", "test"] and report.total_frames == 16
        report = check_dataset(fixture_manifest([0, 5, 9]), fbms, split="train")
    assert not report.ok
    (cats,) = report.sequences
    assert cats.problems == ["no ground truth for frame(s) 5; unexpected ground truth for frame(s) 4 "
                             "(0-based, compared with the manifest)"]
