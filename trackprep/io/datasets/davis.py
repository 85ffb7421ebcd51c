"""DAVIS 2016 and 2017 (480p), read as their zips unpack.

    DAVIS/JPEGImages/480p/<seq>/00000.jpg ...      (%05d from 0)
    DAVIS/Annotations/480p/<seq>/00000.png ...
    DAVIS/ImageSets/2017/{train,val}.txt            names, one per line (also ImageSets/2016/ in the 2017 zip)
    DAVIS/ImageSets/480p/{train,val,trainval}.txt   DAVIS-2016 zip: one "<frame path> <mask path>" line per frame

Masks: 2017 stores palette PNGs whose indices are object ids with 255 = void
(davis2017-evaluation `davis2017/davis.py`); 2016 stores binary masks read as `> 0`
(fperazzi/davis `dataset/loader.py`). Without ImageSets (a copy of only the image and
annotation folders) the split comes from the manifest; with no split at all, from the
sequence folders on disk.
"""

from __future__ import annotations

from pathlib import Path
import numpy as np

from trackprep.core.types import VOID
from trackprep.io.datasets.base import (
    Dataset,
    DatasetError,
    UnknownSequenceError,
    ListedVideo,
    list_images,
    numbered_frames,
    open_image,
    subdirs,
    trailing_number,
)
from trackprep.io.manifests import Manifest

FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png")


class DavisDataset(Dataset):
    year: int = 2017

    def __init__(
        self, root: str | Path, *, split: str | None = None, manifest: Manifest | None = None, resolution: str | None = None
    ) -> None:
        super().__init__(root, split=split, manifest=manifest)
        self.resolution = resolution or (self.manifest.options.get("resolution") if self.manifest else None) or "480p"
        self.base = _locate(self.root)
        self.image_root = self.base / "JPEGImages" / self.resolution
        self.mask_root = self.base / "Annotations" / self.resolution
        if not self.image_root.is_dir():
            raise DatasetError(f"{self.image_root}: folder not found; "
                f"expected the DAVIS frames at resolution {self.resolution!r}")

    # ------------------------------------------------------------------ listing
    def imageset_file(self) -> Path | None:
        """The ImageSets file for the selected split, in either format, or None."""
        if self.split is None:
            return None
        for folder in (str(self.year), self.resolution):
            p = self.base / "ImageSets" / folder / f"{self.split}.txt"
            if p.is_file():
                return p
        return None

    def video_names(self) -> list[str]:
        if self.split is None:
            return [p.name for p in subdirs(self.image_root)]
        imageset = self.imageset_file()
        if imageset is not None:
            return parse_imageset(imageset)
        if self.manifest is None:
            raise DatasetError(
                f"{self.base / 'ImageSets'}: no {self.year} or {self.resolution} list for split {self.split!r} "
                f"and no manifest; "
                f"expected ImageSets/{self.year}/{self.split}.txt"
            )
        return [s.name for s in self.manifest.sequences(self.split)]

    def video(self, name: str) -> ListedVideo:
        folder = self.image_root / name
        if not folder.is_dir():
            known = [p.name for p in subdirs(self.image_root)]
            raise UnknownSequenceError(
                f"{folder}: unknown sequence {name!r}; expected a folder of frames in {self.image_root} "
                f"({len(known)} there: {', '.join(known[:8])}{' ...' if len(known) > 8 else ''})"
            )
        frames = numbered_frames(folder, list_images(folder, extensions=FRAME_EXTENSIONS), start=0)
        mask_folder = self.mask_root / name
        if not mask_folder.is_dir():
            raise DatasetError(f"{mask_folder}: annotation folder not found; expected one PNG mask per frame of {folder}")
        mask_paths: list[tuple[Path, ...] | None] = [None] * len(frames)
        for m in list_images(mask_folder, extensions=(".png",)):
            n = trailing_number(m.stem)
            if n is None or not 0 <= n < len(frames):
                raise DatasetError(
                    f"{m}: mask without a frame; expected masks numbered like the {len(frames)} frames "
                    f"{frames[0].name} .. {frames[-1].name} in {folder}"
                )
            mask_paths[n] = (m,)
        binarize = self.year == 2016
        return ListedVideo(
            dataset=self.name,
            name=name,
            frame_paths=frames,
            mask_paths=mask_paths,
            decode_mask=lambda paths, size: decode_davis_mask(paths[0], binarize=binarize),
            extras={"year": self.year, "resolution": self.resolution},
        )


class Davis2016(DavisDataset):
    name = "davis2016"
    year = 2016


class Davis2017(DavisDataset):
    name = "davis2017"
    year = 2017


def _locate(root: Path) -> Path:
    for base in (root, root / "DAVIS"):
        if (base / "JPEGImages").is_dir():
            return base
    raise DatasetError(f"{root}: no JPEGImages/ folder here or in {root / 'DAVIS'}; "
        "expected the DAVIS layout (JPEGImages/, Annotations/)")


def parse_imageset(path: Path) -> list[str]:
    """Sequence names from an ImageSets file in either DAVIS format: one name per line (2017,
    and 2016 lists inside the 2017 zip) or one '/JPEGImages/480p/<seq>/<n>.jpg /Annotations/...'
    line per frame (the DAVIS-2016 zip). Names keep their first-appearance order."""
    names: list[str] = []
    for lineno, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()  # the 2016 480p lists end in a trailing space
        if not line:
            continue
        first = line.split()[0]
        if "/" in first:
            parts = [p for p in first.split("/") if p]
            if len(parts) < 3 or parts[0] != "JPEGImages":
                raise DatasetError(
                    f"{path}:{lineno}: cannot read {first!r}; "
                        "expected '/JPEGImages/<resolution>/<seq>/<frame>.jpg ...' or a name"
                )
            name = parts[2]
        else:
            name = first
        if name not in names:
            names.append(name)
    if not names:
        raise DatasetError(f"{path}: no sequences listed; expected one name (or frame path) per line")
    return names


def decode_davis_mask(path: Path, *, binarize: bool) -> np.ndarray:
    """Object ids of one DAVIS mask. Palette PNGs keep their indices (0 background, k object k,
    255 void); `binarize` (DAVIS 2016) maps every object to id 1, keeping void. A greyscale mask
    is a DAVIS-2016 binary mask: > 0 is the object."""
    im = open_image(path)
    if im.mode == "P":
        ids = np.array(im, dtype=np.uint8)
        if binarize:
            ids = np.where(ids == VOID, VOID, ids > 0).astype(np.uint8)
        return ids
    if not binarize:
        raise DatasetError(
            f"{path}: mask is a {im.mode}-mode image; expected a palette (P-mode) PNG of object ids as in DAVIS 2017 "
            f"(binary masks are DAVIS 2016: use the davis2016 reader)"
        )
    grey = np.asarray(im.convert("L"), dtype=np.uint8)
    return (grey > 0).astype(np.uint8)
