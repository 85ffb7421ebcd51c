"""Dataset manifests: data_manifests/<name>.yaml, parsed and validated.

A manifest records what a complete copy of a dataset looks like (splits, sequences,
frame and object counts, annotated frames), where its archives come from (URL, size,
checksum) or the manual step when there is no direct link, the on-disk layout, the mask
encoding rule and the licence. The facts come from ../shared/reference/datasets.md; any
fact it marks UNVERIFIED stays marked so in the manifest's `unverified` list.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

# The manifests live beside the package in the repository (data_manifests/); a wheel
# installs them as data files under <prefix>/share/trackprep/ (see pyproject.toml). The
# environment variable lets a user, or a test, point elsewhere.
MANIFEST_DIR_ENV = "TRACKPREP_MANIFESTS"
SOURCE_MANIFEST_DIR = Path(__file__).resolve().parents[2] / "data_manifests"
INSTALLED_MANIFEST_DIR = Path(sys.prefix) / "share" / "trackprep" / "data_manifests"
DEFAULT_MANIFEST_DIR = SOURCE_MANIFEST_DIR if SOURCE_MANIFEST_DIR.is_dir() else INSTALLED_MANIFEST_DIR

CHECKSUM_ALGORITHMS = ("md5", "sha256")


class ManifestError(ValueError):
    """A manifest file is missing or malformed; the message names the file and the field."""


@dataclass(frozen=True)
class SequenceInfo:
    name: str
    frames: int | None = None  # expected number of frames; None where unknown
    objects: int | None = None  # number of annotated objects; None where unknown
    annotated: tuple[int, ...] | None = None  # 0-based indices of frames with ground truth; None = every frame
    note: str | None = None


@dataclass(frozen=True)
class Archive:
    url: str
    filename: str
    size: int | None = None  # bytes, where published
    checksum: tuple[str, str] | None = None  # (algorithm, hex digest), algorithm in CHECKSUM_ALGORITHMS
    checksum_source: str | None = None
    extracts_to: tuple[str, ...] = ()  # top-level entries the archive unpacks to (used to skip re-extraction)


@dataclass(frozen=True)
class Manifest:
    name: str
    title: str
    path: Path
    homepage: str
    licence: str
    licence_url: str
    layout: str
    mask_encoding: str
    splits: Mapping[str, tuple[SequenceInfo, ...]]
    archives: tuple[Archive, ...] = ()
    manual: str | None = None  # instructions where no direct download exists
    options: Mapping[str, Any] = field(default_factory=dict)  # reader options (layout knobs)
    aliases: Mapping[str, str] = field(default_factory=dict)  # other spellings of sequence names -> folder name
    unverified: tuple[str, ...] = ()

    def sequences(self, split: str | None = None) -> tuple[SequenceInfo, ...]:
        """The sequences of one split, or of every split (in file order) when split is None."""
        if split is None:
            return tuple(s for seqs in self.splits.values() for s in seqs)
        if split not in self.splits:
            raise ManifestError(f"{self.path}: no split {split!r}; expected one of {sorted(self.splits)}")
        return self.splits[split]

    def sequence(self, name: str) -> SequenceInfo | None:
        name = self.aliases.get(name, name)
        for s in self.sequences():
            if s.name == name:
                return s
        return None


def manifest_dir() -> Path:
    return Path(os.environ.get(MANIFEST_DIR_ENV) or DEFAULT_MANIFEST_DIR)


def manifest_names(directory: Path | None = None) -> list[str]:
    d = directory or manifest_dir()
    return sorted(p.stem for p in d.glob("*.yaml")) if d.is_dir() else []


def has_manifest(name: str, *, directory: Path | None = None) -> bool:
    return ((directory or manifest_dir()) / f"{name}.yaml").is_file()


def load_manifest(name: str, *, directory: Path | None = None) -> Manifest:
    path = (directory or manifest_dir()) / f"{name}.yaml"
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found; expected one of {manifest_names(directory)}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ManifestError(f"{path}: not valid YAML ({exc})") from exc
    return parse_manifest(data, path=path)


def parse_manifest(data: Any, *, path: Path) -> Manifest:
    """Validate a manifest's parsed YAML. Every error names the file and the field."""
    if not isinstance(data, dict):
        raise ManifestError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")

    def req(key: str, kind: type = str) -> Any:
        if key not in data:
            raise ManifestError(f"{path}: missing field {key!r}")
        value = data[key]
        if not isinstance(value, kind):
            raise ManifestError(f"{path}: field {key!r} must be {kind.__name__}, got {type(value).__name__} {value!r}")
        return value

    licence = req("licence", dict)
    splits_raw = req("splits", dict)
    splits: dict[str, tuple[SequenceInfo, ...]] = {}
    for split, entries in splits_raw.items():
        if not isinstance(entries, list):
            raise ManifestError(f"{path}: splits.{split} must be a list of sequences, got {type(entries).__name__}")
        splits[str(split)] = tuple(_parse_sequence(e, path=path, where=f"splits.{split}[{i}]") for i, e in enumerate(entries))
    seen: dict[str, str] = {}
    for split, seqs in splits.items():
        for s in seqs:
            if s.name in seen and seen[s.name] != split:
                raise ManifestError(f"{path}: sequence {s.name!r} is in both splits {seen[s.name]!r} and {split!r}")
            seen[s.name] = split

    archives = tuple(_parse_archive(a, path=path, where=f"archives[{i}]") for i, a in enumerate(data.get("archives") or []))
    manual = data.get("manual")
    if not archives and not manual:
        raise ManifestError(f"{path}: needs either 'archives' (direct downloads) or 'manual' (instructions)")
    return Manifest(
        name=req("name"),
        title=req("title"),
        path=path,
        homepage=req("homepage"),
        licence=str(licence.get("terms", "")),
        licence_url=str(licence.get("url", "")),
        layout=req("layout"),
        mask_encoding=req("mask_encoding"),
        splits=splits,
        archives=archives,
        manual=manual,
        options=dict(data.get("options") or {}),
        aliases={str(k): str(v) for k, v in (data.get("aliases") or {}).items()},
        unverified=tuple(str(u) for u in data.get("unverified") or ()),
    )


def _parse_sequence(entry: Any, *, path: Path, where: str) -> SequenceInfo:
    if isinstance(entry, str):
        return SequenceInfo(name=entry)
    if not isinstance(entry, dict) or "name" not in entry:
        raise ManifestError(f"{path}: {where} must be a name or a mapping with 'name', got {entry!r}")
    for key in ("frames", "objects"):
        v = entry.get(key)
        if v is not None and (not isinstance(v, int) or v < 0):
            raise ManifestError(f"{path}: {where}.{key} must be a non-negative integer, got {v!r}")
    annotated = entry.get("annotated")
    if annotated is not None:
        if not isinstance(annotated, list) or not all(isinstance(i, int) and i >= 0 for i in annotated):
            raise ManifestError(f"{path}: {where}.annotated must be a list of 0-based frame indices, got {annotated!r}")
        frames = entry.get("frames")
        if frames is not None and annotated and max(annotated) >= frames:
            raise ManifestError(f"{path}: {where}.annotated has index {max(annotated)} but the sequence has {frames} frames")
        annotated = tuple(annotated)
    return SequenceInfo(
        name=str(entry["name"]), frames=entry.get("frames"), objects=entry.get("objects"), annotated=annotated,
        note=entry.get("note"),
    )


def _parse_archive(entry: Any, *, path: Path, where: str) -> Archive:
    if not isinstance(entry, dict) or "url" not in entry:
        raise ManifestError(f"{path}: {where} must be a mapping with 'url', got {entry!r}")
    checksum = None
    algos = [a for a in CHECKSUM_ALGORITHMS if entry.get(a)]
    if len(algos) > 1:
        raise ManifestError(f"{path}: {where} gives several checksums {algos}; expected at most one")
    if algos:
        digest = str(entry[algos[0]]).lower()
        expected_len = {"md5": 32, "sha256": 64}[algos[0]]
        if len(digest) != expected_len or any(c not in "0123456789abcdef" for c in digest):
            raise ManifestError(f"{path}: {where}.{algos[0]} must be {expected_len} hex digits, got {digest!r}")
        checksum = (algos[0], digest)
    size = entry.get("size")
    if size is not None and (not isinstance(size, int) or size <= 0):
        raise ManifestError(f"{path}: {where}.size must be a positive number of bytes, got {size!r}")
    url = str(entry["url"])
    return Archive(
        url=url,
        filename=str(entry.get("filename") or url.rstrip("/").rsplit("/", 1)[-1].split("?")[0]),
        size=size,
        checksum=checksum,
        checksum_source=entry.get("checksum_source"),
        extracts_to=tuple(entry.get("extracts_to") or ()),
    )
