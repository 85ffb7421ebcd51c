"""SegTrack v2 reader on a tree built in the archive's layout, with its quirks: stems from
ImageSets (bmx starts at bmx_06668), per-object folders merged into ids, a 3-channel mask,
png/bmp mixes (cheetah: GT/1 uses the image's .bmp, GT/2 uses .png), boundary grey values,
stray non-image files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from trackprep.io.check import check_dataset
from trackprep.io.datasets import DatasetError, open_dataset

H, W = 40, 56


def save(arr: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def frame(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


def box(y0: int, y1: int, x0: int, x1: int, value: int = 255) -> np.ndarray:
    m = np.zeros((H, W), np.uint8)
    m[y0:y1, x0:x1] = value
    return m


def make_segtrack_tree(root: Path) -> Path:
    base = root / "SegTrackv2"
    sets = base / "ImageSets"
    sets.mkdir(parents=True)
    (sets / "all.txt").write_text("*bmx\n*birdfall\n*cheetah\n")
    # bmx: stems start at 06668, two objects in GroundTruth/bmx/{1,2}/, object 2 saved as RGB.
    stems = [f"bmx_{n:05d}" for n in (6668, 6669, 6670)]
    (sets / "bmx.txt").write_text("bmx/\n" + "\n".join(stems) + "\n")
    for t, stem in enumerate(stems):
        save(frame(t), base / "JPEGImages" / "bmx" / f"{stem}.png")
        save(box(5, 15, 5 + t, 20 + t), base / "GroundTruth" / "bmx" / "1" / f"{stem}.png")
        save(np.repeat(box(10, 30, 15, 30)[..., None], 3, axis=2), base / "GroundTruth" / "bmx" / "2" / f"{stem}.png")
    (base / "JPEGImages" / "bmx" / "absence.label").write_text("stray file the reader must ignore\n")
    # birdfall: single object, flat GT, stems birdfall2_00018.. ; boundary grey 100 (off) and 200 (on).
    stems = [f"birdfall2_{n:05d}" for n in (18, 19)]
    (sets / "birdfall.txt").write_text("birdfall/\n" + "\n".join(stems) + "\n")
    for t, stem in enumerate(stems):
        save(frame(10 + t), base / "JPEGImages" / "birdfall" / f"{stem}.png")
        m = box(20, 30, 20, 30, 200)
        m[19, 20:30] = 100
        save(m, base / "GroundTruth" / "birdfall" / f"{stem}.png")
    # cheetah: .bmp frames; GT/1 named like the image (.bmp), GT/2 is stem + .png.
    stems = ["cheetah_00000", "cheetah_00001"]
    (sets / "cheetah.txt").write_text("cheetah/\n" + "\n".join(stems) + "\n")
    for t, stem in enumerate(stems):
        save(frame(20 + t), base / "JPEGImages" / "cheetah" / f"{stem}.bmp")
        save(box(0, 10, 0, 10), base / "GroundTruth" / "cheetah" / "1" / f"{stem}.bmp")
        save(box(30, 40, 40, 56), base / "GroundTruth" / "cheetah" / "2" / f"{stem}.png")
    return base


@pytest.fixture
def segtrack(tmp_path: Path) -> Path:
    make_segtrack_tree(tmp_path)
    return tmp_path


def test_sequences_from_all_txt(segtrack: Path) -> None:
    ds = open_dataset("segtrackv2", segtrack)
    assert ds.video_names() == ["bmx", "birdfall", "cheetah"]


def test_bmx_stem_offset_multi_object_and_3_channel_mask(segtrack: Path) -> None:
    video = open_dataset("segtrackv2", segtrack).video("bmx")
    assert video.num_frames == 3
    assert [p.name for p in video.frame_paths] == ["bmx_06668.png", "bmx_06669.png", "bmx_06670.png"]
    for t, r in enumerate(video.iter_frames()):
        expected = np.zeros((H, W), np.uint8)
        expected[box(5, 15, 5 + t, 20 + t) > 0] = 1
        expected[box(10, 30, 15, 30) > 0] = 2  # the higher id wins where the objects overlap
        assert r.has_mask
        np.testing.assert_array_equal(r.mask, expected)
    assert video.extras["objects"] == 2


def test_single_object_threshold_drops_boundary_grey(segtrack: Path) -> None:
    r = next(iter(open_dataset("segtrackv2", segtrack).video("birdfall").iter_frames()))
    np.testing.assert_array_equal(r.mask, (box(20, 30, 20, 30) > 0).astype(np.uint8))


def test_cheetah_extension_mix(segtrack: Path) -> None:
    video = open_dataset("segtrackv2", segtrack).video("cheetah")
    paths = video.mask_paths[0]
    assert sorted(p.suffix for p in paths) == [".bmp", ".png"]
    r = next(iter(video.iter_frames()))
    assert r.image.shape == (H, W, 3)
    assert (r.mask[0:10, 0:10] == 1).all() and (r.mask[30:40, 40:56] == 2).all()
    assert r.mask.astype(bool).sum() == 100 + 160


def test_listed_stem_without_image_names_both_files(segtrack: Path) -> None:
    (segtrack / "SegTrackv2" / "JPEGImages" / "bmx" / "bmx_06669.png").unlink()
    with pytest.raises(DatasetError, match=r"bmx_06669\.\*: frame listed in .*bmx\.txt not found"):
        open_dataset("segtrackv2", segtrack).video("bmx")


def test_mask_without_frame(segtrack: Path) -> None:
    extra = segtrack / "SegTrackv2" / "GroundTruth" / "bmx" / "2" / "bmx_06671.png"
    save(box(0, 5, 0, 5), extra)
    with pytest.raises(DatasetError, match=r"bmx_06671\.png: mask without a frame"):
        open_dataset("segtrackv2", segtrack).video("bmx")


def test_check_reports_frame_count_mismatch_against_manifest(segtrack: Path) -> None:
    report = check_dataset("segtrackv2", segtrack)
    assert not report.ok
    by_name = {s.name: s for s in report.sequences}
    assert by_name["bmx"].found_frames == 3 and by_name["bmx"].expected_frames == 36
    assert any("3 frames on disk, manifest expects 36" in p for p in by_name["bmx"].problems)
    assert "frog" in report.missing
