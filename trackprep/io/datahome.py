"""The data home: where datasets are fetched to, and found, when a command is given no --root.

`$TRACKPREP_DATA` when set, else the platform's per-user data folder as platformdirs names it
(`$XDG_DATA_HOME/trackprep`, i.e. `~/.local/share/trackprep`, on Linux;
`~/Library/Application Support/trackprep` on macOS; `%LOCALAPPDATA%\\trackprep` on Windows).
A user data folder rather than a cache: a dataset that needed a manual download cannot be
fetched again at will. Each dataset lives in a folder named by its canonical name
(`<home>/davis2017`, `<home>/davis2016`, ...), the folder `fetch` extracts into and the
readers open; a symbolic link to a copy kept elsewhere works as well.

`trackprep datasets` reports every dataset with a manifest from here (`catalog`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from trackprep.io.check import CheckReport, check_dataset
from trackprep.io.datasets import DatasetError, canonical_name
from trackprep.io.fetch import DOWNLOAD_DIR, RECORD_FILE
from trackprep.io.manifests import Manifest, load_manifest, manifest_names

ENV_VAR = "TRACKPREP_DATA"
APP_NAME = "trackprep"

# Known names that are not downloadable datasets, and what they read instead.
NOT_FETCHABLE = {
    "imagefolder": "reads your own folders of frames and masks",
    "synthetic": "reads the synthetic videos that `trackprep demo` writes",
}


class DataHomeError(ValueError):
    """A dataset the command needs is not in the data home; the message says where it looked and
    how to get it."""


def default_data_home() -> Path:
    import platformdirs  # only commands that look for data pay for it

    return platformdirs.user_data_path(APP_NAME, appauthor=False)


def data_home() -> Path:
    """$TRACKPREP_DATA (with ~ expanded) when set and not empty, else `default_data_home()`."""
    value = os.environ.get(ENV_VAR, "").strip()
    return Path(value).expanduser() if value else default_data_home()


def home_origin() -> str:
    """Where the data home's location comes from, for messages."""
    if os.environ.get(ENV_VAR, "").strip():
        return f"${ENV_VAR}"
    return f"the per-user default; set ${ENV_VAR} to use another folder"


def manifest_dataset(name: str) -> str:
    """The canonical name of a dataset with a manifest (one `fetch` can get and `check` can
    verify); DatasetError otherwise, saying why and listing those names."""
    key = canonical_name(name)
    names = manifest_names()
    if key in names:
        return key
    why = NOT_FETCHABLE.get(key, "is a reader without a manifest in data_manifests/")
    raise DatasetError(f"{name!r} {why}: there is no manifest to fetch or check it by; datasets with one: "
                       f"{', '.join(names)} (davis is an alias of davis2017)")


def dataset_folder(name: str, *, home: Path | None = None) -> Path:
    """The data-home folder of dataset `name` (any alias): `<home>/<canonical name>`."""
    return (home or data_home()) / canonical_name(name)


def fetch_leftovers(folder: Path) -> int:
    """Bytes of interrupted downloads (`.part` files) waiting in `folder`."""
    downloads = folder / DOWNLOAD_DIR
    return sum(p.stat().st_size for p in downloads.glob("*.part")) if downloads.is_dir() else 0


def _holds_data(folder: Path) -> bool:
    """True when `folder` holds anything besides fetch's own bookkeeping."""
    try:
        return any(p.name not in (DOWNLOAD_DIR, RECORD_FILE) for p in folder.iterdir())
    except OSError:
        return False


def locate_dataset(name: str, root: str | Path | None = None) -> Path:
    """The folder to read dataset `name` from: `root` when given, else its data-home folder.

    A dataset missing from the data home raises DataHomeError naming the folder looked at and
    the remedy: `trackprep fetch NAME`, whose output is the manual step for datasets that
    need one. Nothing is created."""
    if root is not None:
        return Path(root)
    key = canonical_name(name)
    if key in NOT_FETCHABLE:
        raise DataHomeError(f"--dataset {name} {NOT_FETCHABLE[key]}: expected --root DIR for it")
    folder = dataset_folder(key)
    if folder.is_dir() and _holds_data(folder):
        return folder
    manifest = load_manifest(key)
    state = "is empty" if folder.is_dir() else ("is not a folder" if folder.exists() else "does not exist")
    if fetch_leftovers(folder):
        state, remedy = "holds only an unfinished download", f"run `trackprep fetch {name}` to resume it"
    elif manifest.manual and not manifest.archives:
        remedy = f"it needs a manual download: `trackprep fetch {name}` prints the steps"
    else:
        remedy = f"get it with `trackprep fetch {name}`"
    raise DataHomeError(f"{key} is not in the data home: {folder} {state} (data home from {home_origin()}); "
                        f"{remedy}, or pass --root DIR")


def folder_bytes(folder: Path) -> int:
    """Bytes of the files under `folder` (following a link to the folder itself and to files,
    not links to folders inside it)."""
    total = 0
    for dirpath, _dirs, files in os.walk(folder):
        for f in files:
            try:
                total += os.stat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass  # a dangling link counts nothing
    return total


@dataclass(frozen=True)
class DatasetEntry:
    """One row of `trackprep datasets`."""

    manifest: Manifest
    folder: Path
    status: str  # "absent", "complete", "incomplete", "download interrupted"
    bytes: int
    report: CheckReport | None = None  # the listing-level check, where the folder holds data

    @property
    def how_to_get(self) -> str:
        if self.manifest.manual and not self.manifest.archives:
            return f"manual download: `trackprep fetch {self.manifest.name}` prints the steps"
        return f"trackprep fetch {self.manifest.name}"

    @property
    def licence(self) -> str:
        """The first sentence of the manifest's licence terms."""
        text = " ".join(self.manifest.licence.split())
        return text.split(". ")[0].rstrip(".") + "." if text else "(not recorded)"


def catalog(*, home: Path | None = None) -> list[DatasetEntry]:
    """Every dataset with a manifest: its data-home folder, status and size on disk.

    Completeness is checked from the file listing against the manifest (sequences, frame
    counts, annotated frames), without opening files; `trackprep check NAME` verifies files."""
    home = home or data_home()
    entries = []
    for name in manifest_names():
        manifest = load_manifest(name)
        folder = home / name
        report = None
        if folder.is_dir() and _holds_data(folder):
            report = check_dataset(manifest, folder, verify_files=False)
            status = "complete" if report.ok else "incomplete"
        elif fetch_leftovers(folder):
            status = "download interrupted"
        else:
            status = "absent"
        size = folder_bytes(folder) if folder.is_dir() else 0
        entries.append(DatasetEntry(manifest, folder, status, size, report))
    return entries
