"""SegTrack v2, read as SegTrackv2.zip unpacks.

    SegTrackv2/JPEGImages/<seq>/<stem>.{png|bmp}
    SegTrackv2/GroundTruth/<seq>/<stem>.png              single object
    SegTrackv2/GroundTruth/<seq>/{1..K}/<stem>.<ext>     one sub-folder per object
    SegTrackv2/ImageSets/all.txt                         '*<seq>' per line
    SegTrackv2/ImageSets/<seq>.txt                       '<seq>/' then one frame stem per line

Frame stems come from ImageSets/<seq>.txt, never from an assumed `<seq>_%05d` (bmx starts
at bmx_06668). Extensions are used inconsistently (tensorbay's SegTrack2 loader lists the
penguin/monkeydog/cheetah quirks), so a mask is found by the frame's own file name or by
its stem with any image extension. Masks may have 3 channels; the first is read and
thresholded; per-object folders k become object id k (motiongrouping SegTrack_clean.py merges them too).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from trackprep.io.datasets.base import (
    IMAGE_EXTENSIONS,
    Dataset,
    DatasetError,
    UnknownSequenceError,
    ListedVideo,
    list_images,
    numbered_frames,
    open_image,
    subdirs,
)
from trackprep.io.manifests import Manifest

DEFAULT_THRESHOLD = 127  # "/255 > 0.5" of RCF's STv2 evaluation tool; values 1..254 occur at boundaries
# Preference when one stem exists with several extensions (never seen, but then the choice is stable).
_EXT_ORDER = {e: i for i, e in enumerate((".png", ".bmp", ".jpg", ".jpeg", ".ppm", ".pgm"))}


class SegTrackV2(Dataset):
    name = "segtrackv2"

    def __init__(
        self,
        root: str | Path,
        *,
        split: str | None = None,
        manifest: Manifest | None = None,
        mask_threshold: int | None = None,
    ) -> None:
        super().__init__(root, split=split, manifest=manifest)
        opts = self.manifest.options if self.manifest else {}
        if mask_threshold is None:
            mask_threshold = opts.get("mask_threshold", DEFAULT_THRESHOLD)
        self.mask_threshold = int(mask_threshold)
        self.base = _locate(self.root)
        self.image_root = self.base / "JPEGImages"
        self.gt_root = self.base / "GroundTruth"
        self.sets_root = self.base / "ImageSets"

    def video_names(self) -> list[str]:
        all_txt = self.sets_root / "all.txt"
        if all_txt.is_file():
            names = [line.strip().lstrip("*") for line in all_txt.read_text(encoding="utf-8").splitlines()]
            names = [n for n in names if n]
            if not names:
                raise DatasetError(f"{all_txt}: no sequences listed; expected one '*<name>' per line")
            return names
        return [p.name for p in subdirs(self.image_root)]

    def frame_stems(self, name: str, folder: Path) -> tuple[list[Path], Path | None]:
        """The frame files of a sequence in order, and the ImageSets file they came from (if any)."""
        listed = self.sets_root / f"{name}.txt"
        files = list_images(folder)
        if not listed.is_file():
            return numbered_frames(folder, files), None
        lines = [line.strip() for line in listed.read_text(encoding="utf-8").splitlines()]
        lines = [line for line in lines if line]
        if lines and lines[0].endswith("/"):
            lines = lines[1:]  # line 1 is the path prefix "<seq>/"
        if not lines:
            raise DatasetError(f"{listed}: no frame stems listed; expected '<seq>/' then one stem per line")
        by_stem = _by_stem(files)
        frames = []
        for stem in lines:
            if stem not in by_stem:
                raise DatasetError(
                    f"{folder / stem}.*: frame listed in {listed} not found; "
                        f"expected an image {stem}{{{','.join(IMAGE_EXTENSIONS)}}}"
                )
            frames.append(by_stem[stem])
        return frames, listed

    def video(self, name: str) -> ListedVideo:
        folder = self.image_root / name
        if not folder.is_dir():
            raise UnknownSequenceError(
                f"{folder}: unknown sequence {name!r}; expected a folder of frames in {self.image_root} "
                f"(sequences there: {', '.join(p.name for p in subdirs(self.image_root))})"
            )
        frames, _ = self.frame_stems(name, folder)
        stems = {p.stem: i for i, p in enumerate(frames)}
        gt_folder = self.gt_root / name
        if not gt_folder.is_dir():
            raise DatasetError(f"{gt_folder}: ground-truth folder not found; expected masks for the frames of {folder}")
        object_folders = _object_folders(gt_folder)
        per_frame: list[list[Path]] = [[] for _ in frames]
        for obj_folder in object_folders:
            for m in list_images(obj_folder):
                # The GT file is the frame's own name, or its stem with another extension.
                if m.stem not in stems:
                    raise DatasetError(f"{m}: mask without a frame; expected a frame {m.stem}.* in {folder}")
                per_frame[stems[m.stem]].append(m)
        incomplete = [frames[i].name for i, ps in enumerate(per_frame) if ps and len(ps) != len(object_folders)]
        if incomplete:
            warnings.warn(
                f"{gt_folder}: {len(incomplete)} frame(s) (first {incomplete[0]}) lack a mask for some of the "
                f"{len(object_folders)} objects; those objects count as absent there",
                stacklevel=2,
            )
        threshold = self.mask_threshold
        per_object = object_folders[0] != gt_folder
        return ListedVideo(
            dataset=self.name,
            name=name,
            frame_paths=frames,
            mask_paths=[tuple(ps) if ps else None for ps in per_frame],
            decode_mask=lambda paths, size: merge_object_masks(paths, threshold=threshold, per_object=per_object),
            extras={"objects": len(object_folders)},
        )


def _locate(root: Path) -> Path:
    for base in (root, root / "SegTrackv2"):
        if (base / "JPEGImages").is_dir():
            return base
    raise DatasetError(
        f"{root}: no JPEGImages/ folder here or in {root / 'SegTrackv2'}; "
            "expected the SegTrack v2 layout (JPEGImages/, GroundTruth/, ImageSets/)"
    )


def _by_stem(files: Sequence[Path]) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for p in sorted(files, key=lambda p: _EXT_ORDER.get(p.suffix.lower(), 99)):
        out.setdefault(p.stem, p)
    return out


def _object_folders(gt_folder: Path) -> list[Path]:
    """[gt_folder] for a single-object sequence, else the sub-folders 1..K in order."""
    numbered = [p for p in subdirs(gt_folder) if p.name.isdigit()]
    if not numbered:
        return [gt_folder]
    numbered.sort(key=lambda p: int(p.name))
    ids = [int(p.name) for p in numbered]
    if ids != list(range(1, len(ids) + 1)):
        raise DatasetError(f"{gt_folder}: object sub-folders {ids}; expected them numbered 1..{len(ids)} without gaps")
    if list_images(gt_folder):
        raise DatasetError(f"{gt_folder}: holds both mask files and object sub-folders; expected one or the other")
    return numbered


def merge_object_masks(paths: Sequence[Path], *, threshold: int, per_object: bool) -> np.ndarray:
    """One uint8 id mask from SegTrack v2 mask files: the first channel > threshold is the object;
    per-object files take their folder's number as id, applied in increasing order (higher id wins)."""
    out: np.ndarray | None = None
    ordered = sorted(paths, key=lambda p: int(p.parent.name)) if per_object else list(paths)
    for p in ordered:
        im = open_image(p)
        if im.mode in ("P", "1", "LA", "PA"):
            im = im.convert("L")
        arr = np.asarray(im)
        if arr.ndim == 3:
            arr = arr[..., 0]  # some masks are 3-channel; the first channel is read, as tensorbay does
        if out is None:
            out = np.zeros(arr.shape, dtype=np.uint8)
        elif arr.shape != out.shape:
            raise DatasetError(
                f"{p}: mask is {arr.shape[1]}x{arr.shape[0]} but {ordered[0]} is {out.shape[1]}x{out.shape[0]}; "
                "expected equal sizes"
            )
        out[arr > threshold] = int(p.parent.name) if per_object else 1
    assert out is not None
    return out
