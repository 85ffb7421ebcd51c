"""A generic reader for "one folder per sequence, frames and masks as image files" layouts.

Used for JumpCut, whose archive layout nobody has published (see data_manifests/jumpcut.yaml),
and for a user's own data. Every knob comes from the manifest's `options` or from keyword
arguments to `open_dataset`:

    sequences_dir  folder under the root holding one folder per sequence ("" = the root)
    frames_subdir  folder under a sequence folder holding its frames ("" = the sequence folder)
    masks_subdir   likewise for masks
    frame_regex    regular expression a frame's file name must match; its group `key` pairs it
    mask_regex     likewise for masks; a mask belongs to the frame with the same key
    mask_rule      "binary" (grey level > mask_threshold is object 1) or "index" (values are ids)
    mask_threshold see mask_rule

Frames are ordered by the numbers in their key ('000_012' sorts as (0, 12)).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from trackprep.io.datasets.base import (
    Dataset,
    DatasetError,
    ListedVideo,
    UnknownSequenceError,
    list_images,
    open_image,
    subdirs,
)
from trackprep.io.manifests import Manifest

DEFAULTS = {
    "sequences_dir": "",
    "frames_subdir": "frames",
    "masks_subdir": "masks",
    "frame_regex": r"^(?P<key>.*?)\.(jpg|jpeg|png|bmp)$",
    "mask_regex": r"^(?P<key>.*?)\.(png|bmp)$",
    "mask_rule": "binary",
    "mask_threshold": 0,
}
MASK_RULES = ("binary", "index")


def natural_key(key: str) -> tuple:
    return tuple(int(t) if t.isdigit() else t for t in re.findall(r"\d+|\D+", key))


class ImageFolderDataset(Dataset):
    name = "imagefolder"
    dense_masks = False  # a frame pairs with a mask when one has its key; not every frame need have one

    def __init__(
        self, root: str | Path, *, split: str | None = None, manifest: Manifest | None = None, **options: object
    ) -> None:
        super().__init__(root, split=split, manifest=manifest)
        unknown = sorted(set(options) - set(DEFAULTS))
        if unknown:
            raise DatasetError(f"{self.root}: unknown image-folder option(s) {unknown}; expected some of {sorted(DEFAULTS)}")
        opts = {**DEFAULTS, **(dict(self.manifest.options) if self.manifest else {}), **options}
        where = self.manifest.path if self.manifest else "options"
        try:
            self.frame_regex = re.compile(str(opts["frame_regex"]))
            self.mask_regex = re.compile(str(opts["mask_regex"]))
        except re.error as exc:
            raise DatasetError(f"{where}: invalid frame_regex/mask_regex ({exc}); "
                "expected Python regular expressions") from exc
        for rx, field in ((self.frame_regex, "frame_regex"), (self.mask_regex, "mask_regex")):
            if "key" not in rx.groupindex:
                raise DatasetError(f"{where}: {field} {rx.pattern!r} has no (?P<key>...) group; "
                    "expected one to pair frames and masks")
        if opts["mask_rule"] not in MASK_RULES:
            raise DatasetError(f"{where}: mask_rule {opts['mask_rule']!r}; expected one of {MASK_RULES}")
        self.mask_rule = str(opts["mask_rule"])
        self.mask_threshold = int(opts["mask_threshold"])  # type: ignore[arg-type]
        self.sequences_root = self.root / str(opts["sequences_dir"])
        self.frames_subdir = str(opts["frames_subdir"])
        self.masks_subdir = str(opts["masks_subdir"])
        if not self.sequences_root.is_dir():
            raise DatasetError(f"{self.sequences_root}: folder not found; "
                "expected one folder per sequence here (option sequences_dir)")

    def video_names(self) -> list[str]:
        if self.split is not None and self.manifest is not None and self.manifest.sequences(self.split):
            return [s.name for s in self.manifest.sequences(self.split)]
        return [p.name for p in subdirs(self.sequences_root) if self._matching(p / self.frames_subdir, self.frame_regex)]

    @staticmethod
    def _matching(folder: Path, rx: re.Pattern) -> dict[str, Path]:
        if not folder.is_dir():
            return {}
        out: dict[str, Path] = {}
        for p in list_images(folder):
            m = rx.match(p.name)
            if m:
                out[m.group("key")] = p
        return out

    def video(self, name: str) -> ListedVideo:
        seq = self.sequences_root / name
        if not seq.is_dir():
            raise UnknownSequenceError(f"{seq}: unknown sequence {name!r}; "
                f"expected a sequence folder in {self.sequences_root}")
        frames = self._matching(seq / self.frames_subdir, self.frame_regex)
        masks = self._matching(seq / self.masks_subdir, self.mask_regex)
        # When frames and masks share a folder a mask name may also match a loose frame pattern.
        frames = {k: p for k, p in frames.items() if p not in set(masks.values())}
        if not frames:
            raise DatasetError(
                f"{seq / self.frames_subdir}: no file matches frame_regex {self.frame_regex.pattern!r}; "
                    f"expected the frames of {name!r}"
            )
        for key, m in masks.items():
            if key not in frames:
                raise DatasetError(f"{m}: mask without a frame (key {key!r}); "
                    f"expected a frame matching {self.frame_regex.pattern!r}")
        keys = sorted(frames, key=natural_key)
        rule, threshold = self.mask_rule, self.mask_threshold
        return ListedVideo(
            dataset=self.name,
            name=name,
            frame_paths=[frames[k] for k in keys],
            mask_paths=[(masks[k],) if k in masks else None for k in keys],
            decode_mask=lambda paths, size: decode_folder_mask(paths[0], rule=rule, threshold=threshold),
        )


def decode_folder_mask(path: Path, *, rule: str, threshold: int) -> np.ndarray:
    im = open_image(path)
    if rule == "index":
        if im.mode not in ("P", "L"):
            raise DatasetError(f"{path}: {im.mode}-mode mask; "
                "expected a palette or greyscale PNG of object ids (mask_rule index)")
        return np.array(im, dtype=np.uint8)
    grey = np.asarray(im.convert("L"), dtype=np.uint8)
    return (grey > threshold).astype(np.uint8)


class JumpCut(ImageFolderDataset):
    """JumpCut through the image-folder reader; its layout lives in data_manifests/jumpcut.yaml (UNVERIFIED)."""

    name = "jumpcut"
