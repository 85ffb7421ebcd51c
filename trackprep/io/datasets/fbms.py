"""FBMS-59, read as FBMS_Trainingset.zip / FBMS_Testset.zip unpack.

    Trainingset/<seq>/<seq>_<num>.jpg            (Testset/ likewise; any letter case)
    Trainingset/<seq>/GroundTruth/<seq>Def.dat   regions, their values, and the labelled frames
    Trainingset/<seq>/GroundTruth/*.pgm|*.ppm    sparse ground truth (every 10th/20th frame)

Which frame a ground-truth file belongs to comes from Def.dat's "Frame number" (0-based),
never from the number in a file name (the tennis numbering is uncertain). A pixel's value
is its region's "scale": a grey level in .pgm, the packed colour r*65536 + g*256 + b in
.ppm (segment-any-moving's `utils/fbms`); white is the .ppm background (motiongrouping
FBMS_clean.py). Region 0, plus the manifest's extra background regions for the marple
sequences, is background; the other regions become object ids 1..K in Def.dat order.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trackprep.io.datasets.base import (
    Dataset,
    DatasetError,
    UnknownSequenceError,
    ListedVideo,
    find_child,
    list_images,
    numbered_frames,
    open_image,
    subdirs,
)
from trackprep.io.manifests import Manifest

SPLIT_FOLDERS = {"train": "Trainingset", "test": "Testset"}
WHITE = 0xFFFFFF


@dataclass(frozen=True)
class DefFile:
    """The parsed `<seq>Def.dat`."""

    path: Path
    scales: tuple[int, ...]  # value of region r in the ground-truth images
    total_frames: int
    labelled: tuple[tuple[int, str], ...]  # (0-based frame number, ground-truth file name)


def parse_def_file(path: Path) -> DefFile:
    lines = [line.strip() for line in path.read_text(encoding="latin-1").splitlines()]
    pos = 0

    def value_after(label: str) -> str:
        """The first non-empty line after the next line starting with `label`."""
        nonlocal pos
        while pos < len(lines) and not lines[pos].lower().startswith(label.lower()):
            pos += 1
        if pos >= len(lines):
            raise DatasetError(f"{path}: line {label!r} not found; expected the FBMS Def.dat format")
        pos += 1
        while pos < len(lines) and not lines[pos]:
            pos += 1
        if pos >= len(lines):
            raise DatasetError(f"{path}: no value after {label!r}; expected the FBMS Def.dat format")
        return lines[pos]

    def int_after(label: str) -> int:
        text = value_after(label)
        try:
            return int(text)
        except ValueError:
            raise DatasetError(f"{path}:{pos + 1}: {label!r} is followed by {text!r}; expected an integer") from None

    regions = int_after("Total number of regions")
    scales = tuple(int_after(f"Scale of region {r}:") for r in range(regions))
    total = int_after("Total number of frames in this shot")
    count = int_after("Total number of labeled frames")
    labelled = []
    for _ in range(count):
        frame = int_after("Frame number")
        labelled.append((frame, value_after("File name")))
    if len(set(scales)) != len(scales):
        raise DatasetError(f"{path}: region scales {scales} repeat a value; expected one value per region")
    return DefFile(path=path, scales=scales, total_frames=total, labelled=tuple(labelled))


class FBMS59(Dataset):
    name = "fbms59"
    dense_masks = False  # every 10th or 20th frame; the manifest lists which

    def __init__(self, root: str | Path, *, split: str | None = None, manifest: Manifest | None = None) -> None:
        super().__init__(root, split=split, manifest=manifest)
        if split is not None and split not in SPLIT_FOLDERS:
            raise DatasetError(f"{self.root}: FBMS-59 has no split {split!r}; expected one of {sorted(SPLIT_FOLDERS)}")
        self.set_folders = self._locate_sets()
        opts = self.manifest.options if self.manifest else {}
        self.background_regions = {str(k): set(v) for k, v in (opts.get("background_regions") or {}).items()}

    def _locate_sets(self) -> dict[str, Path]:
        found: dict[str, Path] = {}
        for split, folder in SPLIT_FOLDERS.items():
            for base in [self.root, *subdirs(self.root)]:
                p = find_child(base, folder)
                if p is not None and p.is_dir():
                    found[split] = p
                    break
        wanted = [self.split] if self.split else list(SPLIT_FOLDERS)
        if not any(s in found for s in wanted):
            names = " or ".join(SPLIT_FOLDERS[s] for s in wanted)
            raise DatasetError(f"{self.root}: no {names} folder here or one level down (any letter case); "
                "expected the FBMS-59 layout")
        if self.split and self.split not in found:
            raise DatasetError(f"{self.root}: no {SPLIT_FOLDERS[self.split]} folder here or one level down; "
                f"expected it for split {self.split!r}")
        return {s: found[s] for s in wanted if s in found}

    def video_names(self) -> list[str]:
        return [p.name for folder in self.set_folders.values() for p in subdirs(folder)]

    def _sequence_folder(self, name: str) -> Path:
        name = self.manifest.aliases.get(name, name) if self.manifest else name
        for folder in self.set_folders.values():
            if (folder / name).is_dir():
                return folder / name
        searched = ", ".join(str(f) for f in self.set_folders.values())
        raise UnknownSequenceError(f"{name}: unknown sequence; expected a folder of that name in {searched}")

    def video(self, name: str) -> ListedVideo:
        folder = self._sequence_folder(name)
        name = folder.name
        frames = numbered_frames(folder, list_images(folder))
        gt_folder = find_child(folder, "GroundTruth")
        def_path = find_child(gt_folder, f"{name}Def.dat") if gt_folder is not None else None
        if def_path is None:
            raise DatasetError(f"{folder / 'GroundTruth' / (name + 'Def.dat')}: not found; "
                "expected the FBMS ground-truth definition file")
        assert gt_folder is not None
        definition = parse_def_file(def_path)
        mask_paths: list[tuple[Path, ...] | None] = [None] * len(frames)
        for frame, file_name in definition.labelled:
            gt = find_child(gt_folder, Path(file_name.replace("\\", "/")).name)
            if gt is None:
                raise DatasetError(f"{gt_folder / Path(file_name).name}: ground truth listed in {def_path} not found; "
                    "expected that file")
            if not 0 <= frame < len(frames):
                raise DatasetError(
                    f"{gt}: mask without a frame: {def_path} gives it frame number {frame} but {folder} has {len(frames)} "
                    f"frames; expected a 0-based frame number below {len(frames)}"
                )
            if mask_paths[frame] is not None:
                raise DatasetError(f"{def_path}: frame number {frame} is labelled twice; expected each frame at most once")
            mask_paths[frame] = (gt,)
        if definition.total_frames != len(frames):
            warnings.warn(
                f"{def_path}: declares {definition.total_frames} frames but {folder} holds {len(frames)}", stacklevel=2
            )
        background = self.background_regions.get(name, set()) | {0}
        return ListedVideo(
            dataset=self.name,
            name=name,
            frame_paths=frames,
            mask_paths=mask_paths,
            decode_mask=lambda paths, size: decode_fbms_mask(paths[0], definition, background=background),
            extras={"split": next((s for s, f in self.set_folders.items() if folder.parent == f), None),
                    "def_file": str(def_path)},
        )


def region_ids(definition: DefFile, background: set[int]) -> dict[int, int]:
    """scale value -> object id: background regions 0, the others 1..K in Def.dat order."""
    out: dict[int, int] = {}
    next_id = 1
    for region, scale in enumerate(definition.scales):
        if region in background:
            out[scale] = 0
        else:
            out[scale] = next_id
            next_id += 1
    return out


def decode_fbms_mask(path: Path, definition: DefFile, *, background: set[int]) -> np.ndarray:
    im = open_image(path)
    arr = np.asarray(im)
    if arr.ndim == 3:
        rgb = arr[..., :3].astype(np.uint32)
        values = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]  # packed colour, as segment-any-moving
        colour = True
    else:
        values = arr.astype(np.uint32)
        colour = False
    ids = region_ids(definition, background)
    if colour:
        ids.setdefault(WHITE, 0)  # white is the .ppm background
    uniq, inverse = np.unique(values, return_inverse=True)
    undeclared = [int(v) for v in uniq if int(v) not in ids]
    if undeclared:
        shown = ", ".join(f"#{v:06x}" if colour else str(v) for v in undeclared[:6])
        warnings.warn(
            f"{path}: value(s) {shown} not declared in {definition.path.name}; mapped to background", stacklevel=2
        )
    lut = np.array([ids.get(int(v), 0) for v in uniq], dtype=np.uint8)
    return lut[inverse.reshape(values.shape)]
