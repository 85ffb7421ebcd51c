"""Dataset readers: one module per dataset, one registry, one entry point.

    ds = open_dataset("davis2017", "/data/davis", split="train")
    for name in ds.video_names():          # lists files only, decodes nothing
        clip = read_clip(ds.video(name), size=(320, 576))

Names: "davis2016", "davis2017", "segtrackv2", "fbms59", "jumpcut", "imagefolder" (your own
folders; options as keyword arguments). "davis" is an alias for "davis2017": the 2017
trainval zip is the one DAVIS distributes today and it contains the 2016 sequences; ask
for "davis2016" to read the single-object 2016 ground truth.

To add a reader: subclass `Dataset` with a unique `name`, accept
`(root, *, split=None, manifest=None, **options)`, and add it to READERS.
"""

from __future__ import annotations

from pathlib import Path

from trackprep.io.datasets.base import (
    Dataset,
    DatasetError,
    FrameBatch,
    FrameRecord,
    ListedVideo,
    VideoSource,
    iter_frame_batches,
    read_clip,
)
from trackprep.io.datasets.davis import Davis2016, Davis2017
from trackprep.io.datasets.fbms import FBMS59
from trackprep.io.datasets.imagefolder import ImageFolderDataset, JumpCut
from trackprep.io.datasets.segtrack import SegTrackV2
from trackprep.io.datasets.synthetic import SyntheticDataset
from trackprep.io.manifests import Manifest

READERS: dict[str, type[Dataset]] = {
    "davis2016": Davis2016,
    "davis2017": Davis2017,
    "segtrackv2": SegTrackV2,
    "fbms59": FBMS59,
    "jumpcut": JumpCut,
    "imagefolder": ImageFolderDataset,
    "synthetic": SyntheticDataset,
}
ALIASES: dict[str, str] = {"davis": "davis2017"}


def known_datasets() -> list[str]:
    return sorted([*READERS, *ALIASES])


def canonical_name(name: str) -> str:
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key not in READERS:
        raise DatasetError(f"unknown dataset {name!r}; expected one of {', '.join(known_datasets())}")
    return key


def open_dataset(
    name: str, root: str | Path, *, split: str | None = None, manifest: Manifest | None = None, **options: object
) -> Dataset:
    """Open a dataset copy at `root` with the reader registered under `name` (or an alias).
    `manifest` overrides data_manifests/<name>.yaml; `options` go to the reader."""
    return READERS[canonical_name(name)](root, split=split, manifest=manifest, **options)


__all__ = [
    "ALIASES",
    "READERS",
    "Dataset",
    "DatasetError",
    "FrameBatch",
    "FrameRecord",
    "ListedVideo",
    "VideoSource",
    "canonical_name",
    "iter_frame_batches",
    "known_datasets",
    "open_dataset",
    "read_clip",
]
