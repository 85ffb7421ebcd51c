"""DAVIS readers: the real DAVIS-2016 val copy in ../shared/data, and DAVIS-2017 / 2016 trees
built here in the exact archive layouts (palette PNG ids with void, both ImageSets formats)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from trackprep.io.check import check_dataset
from trackprep.io.datasets import DatasetError, open_dataset, read_clip
from trackprep.io.datasets.davis import Davis2017
from trackprep.io.manifests import load_manifest

H, W = 48, 64


@pytest.fixture
def real_davis2016(shared_data: Path) -> Path:
    root = shared_data / "davis2016"
    if not (root / "JPEGImages" / "480p").is_dir():
        pytest.skip(f"real DAVIS-2016 copy not found at {root} (it sits in ../shared/data beside the checkout)")
    return root


def palette_png(ids: np.ndarray, path: Path) -> None:
    im = Image.fromarray(ids.astype(np.uint8), mode="P")
    pal = np.zeros((256, 3), np.uint8)
    pal[1], pal[2], pal[255] = (128, 0, 0), (0, 128, 0), (224, 224, 192)  # DAVIS-like colours
    im.putpalette(pal.tobytes())
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path)


def davis2017_ids(t: int) -> np.ndarray:
    """Object 1 moves right, object 2 is fixed, a void band along the top (as DAVIS marks uncertain pixels)."""
    ids = np.zeros((H, W), np.uint8)
    ids[10:20, 5 + 2 * t : 15 + 2 * t] = 1
    ids[30:40, 40:50] = 2
    ids[0:2, :] = 255
    return ids


def write_frame(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path, quality=95)


def make_davis2017_tree(root: Path, seqs: dict[str, int]) -> Path:
    """DAVIS/ as the 2017 trainval zip unpacks (JPEGImages, Annotations, ImageSets/2017 and 2016)."""
    base = root / "DAVIS"
    for i, (seq, n) in enumerate(seqs.items()):
        for t in range(n):
            write_frame(base / "JPEGImages" / "480p" / seq / f"{t:05d}.jpg", seed=100 * i + t)
            palette_png(davis2017_ids(t), base / "Annotations" / "480p" / seq / f"{t:05d}.png")
    sets = base / "ImageSets"
    (sets / "2017").mkdir(parents=True)
    (sets / "2016").mkdir(parents=True)
    (sets / "2017" / "train.txt").write_text("bear\nboxing-fisheye\n")
    (sets / "2017" / "val.txt").write_text("blackswan\n")
    (sets / "2016" / "train.txt").write_text("bear\n")
    (sets / "2016" / "val.txt").write_text("blackswan\n")
    return base


@pytest.fixture
def davis2017(tmp_path: Path) -> Path:
    make_davis2017_tree(tmp_path, {"bear": 4, "boxing-fisheye": 3, "blackswan": 2})
    return tmp_path


def test_davis2017_palette_ids_and_void_are_kept(davis2017: Path) -> None:
    ds = open_dataset("davis2017", davis2017, split="train")  # root holding DAVIS/ is accepted
    assert ds.video_names() == ["bear", "boxing-fisheye"]
    video = ds.video("bear")
    assert video.num_frames == 4
    records = list(video.iter_frames())
    assert [r.index for r in records] == [0, 1, 2, 3]
    for t, r in enumerate(records):
        assert r.has_mask and r.image.shape == (H, W, 3)
        np.testing.assert_array_equal(r.mask, davis2017_ids(t))
    assert set(np.unique(records[0].mask)) == {0, 1, 2, 255}


def test_davis_alias_and_val_split(davis2017: Path) -> None:
    ds = open_dataset("davis", davis2017 / "DAVIS", split="val")
    assert isinstance(ds, Davis2017)
    assert ds.video_names() == ["blackswan"]


def test_davis2016_from_the_2017_tree_binarises_objects_keeps_void(davis2017: Path) -> None:
    ds = open_dataset("davis2016", davis2017, split="train")
    assert ds.video_names() == ["bear"]  # ImageSets/2016/train.txt, names only
    r = next(iter(ds.video("bear").iter_frames()))
    expected = davis2017_ids(0)
    expected = np.where(expected == 255, 255, expected > 0).astype(np.uint8)
    np.testing.assert_array_equal(r.mask, expected)


def test_davis2016_zip_layout_per_frame_imagesets(tmp_path: Path) -> None:
    """DAVIS-data.zip: binary L-mode masks, ImageSets/480p/<split>.txt with one path pair per frame."""
    base = tmp_path / "DAVIS"
    lines = []
    for seq, n in (("bear", 3), ("boat", 2)):
        for t in range(n):
            write_frame(base / "JPEGImages" / "480p" / seq / f"{t:05d}.jpg", seed=t)
            m = np.zeros((H, W), np.uint8)
            m[5:15, 5 + t : 20 + t] = 255
            (base / "Annotations" / "480p" / seq).mkdir(parents=True, exist_ok=True)
            Image.fromarray(m, mode="L").save(base / "Annotations" / "480p" / seq / f"{t:05d}.png")
            lines.append(f"/JPEGImages/480p/{seq}/{t:05d}.jpg /Annotations/480p/{seq}/{t:05d}.png ")  # trailing space as in the 480p lists
    (base / "ImageSets" / "480p").mkdir(parents=True)
    (base / "ImageSets" / "480p" / "train.txt").write_text("\n".join(lines) + "\n")
    ds = open_dataset("davis2016", base, split="train")
    assert ds.video_names() == ["bear", "boat"]
    records = list(ds.video("boat").iter_frames())
    assert len(records) == 2
    assert records[1].mask[5:15, 6:21].min() == 1 and records[1].mask.sum() == 10 * 15


def test_frame_without_mask_has_mask_false(davis2017: Path) -> None:
    (davis2017 / "DAVIS" / "Annotations" / "480p" / "bear" / "00002.png").unlink()
    video = open_dataset("davis2017", davis2017).video("bear")
    np.testing.assert_array_equal(video.mask_flags(), [True, True, False, True])
    clip = read_clip(video, size=(24, 32))
    np.testing.assert_array_equal(clip.has_mask, [True, True, False, True])
    assert clip.frames.shape == (4, 24, 32, 3) and clip.masks.shape == (4, 24, 32)
    assert not clip.masks[2].any()
    # nearest resize keeps ids exact: no blended values appear
    assert set(np.unique(clip.masks[0])) <= {0, 1, 2, 255}


def test_davis2017_refuses_binary_masks(tmp_path: Path) -> None:
    base = make_davis2017_tree(tmp_path, {"bear": 1})
    path = base / "Annotations" / "480p" / "bear" / "00000.png"
    Image.fromarray(np.full((H, W), 255, np.uint8), mode="L").save(path)
    with pytest.raises(DatasetError, match="00000.png.*palette"):
        list(open_dataset("davis2017", tmp_path).video("bear").iter_frames())


# --------------------------------------------------------------- real data


def test_real_davis2016_val_frames_and_masks_match(real_davis2016: Path) -> None:
    root = real_davis2016
    ds = open_dataset("davis2016", root)  # no ImageSets in this copy: the sequence folders are listed
    names = ds.video_names()
    manifest = load_manifest("davis2016")
    assert sorted(names) == sorted(s.name for s in manifest.sequences("val"))
    assert sum(ds.video(n).num_frames for n in names) == 1376
    video = ds.video("car-shadow")
    records = list(video.iter_frames())
    assert len(records) == video.num_frames == 40
    for r in records:
        assert r.image.shape == (480, 854, 3) and r.mask.shape == (480, 854)
        assert r.has_mask and set(np.unique(r.mask)) <= {0, 1}
    assert 0.01 < np.mean([r.mask.mean() for r in records]) < 0.5  # one car, neither empty nor everything
    clip = read_clip(video, size=(64, 96))
    assert clip.frames.shape == (40, 64, 96, 3) and clip.has_mask.all()


def test_real_davis2016_check_reports_complete_val_split(real_davis2016: Path) -> None:
    root = real_davis2016
    report = check_dataset("davis2016", root)
    assert report.ok, report.summary()
    assert report.complete_splits == ["val"]
    assert report.total_frames == 1376 and len(report.sequences) == 20
    assert not report.missing and not report.extra
    assert "split val: complete, 20/20 sequences present, 1376/1376 frames" in report.summary()

    from trackprep.cli import app

    result = CliRunner().invoke(app, ["check", "davis2016", "--root", str(root), "--split", "val"])
    assert result.exit_code == 0, result.output
    assert "split val: complete" in result.output
    result = CliRunner().invoke(app, ["check", "davis2016", "--root", str(root), "--split", "train"])
    assert result.exit_code == 1 and "missing sequences (30)" in result.output


def test_check_notes_object_count_differences_without_failing(davis2017: Path) -> None:
    """Object counts in the manifest are UNVERIFIED, so a difference is a note: bear's fixture
    has ids 1 and 2 on frame 0 where the manifest says 1 object."""
    report = check_dataset("davis2017", davis2017, split="train")
    bear = next(s for s in report.sequences if s.name == "bear")
    assert bear.notes == ["largest object id on frame 0 is 2, manifest says 1 objects"]
    assert "bear (note): largest object id" in report.summary()
