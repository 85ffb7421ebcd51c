"""`trackprep check`: compare a local dataset copy with its manifest.

Reports missing sequences, frame-count and annotated-frame mismatches, listing errors
(gaps in the numbering, masks without frames) and unreadable files. By default every
file gets a cheap integrity check (`verify_image`: JPEG draft decode, PNG CRCs) plus a
header-only frame/mask size comparison; `decode=True` decodes every frame instead, and
`verify_files=False` compares the file listing alone (what `trackprep datasets` reports).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from trackprep.core.types import VOID
from trackprep.io.datasets import DatasetError, ListedVideo, VideoSource, canonical_name, open_dataset
from trackprep.io.datasets.base import UnknownSequenceError, image_size, verify_image
from trackprep.io.manifests import Manifest, SequenceInfo, load_manifest


@dataclass
class SequenceCheck:
    name: str
    split: str | None
    expected_frames: int | None
    found_frames: int | None = None
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # disagreements with UNVERIFIED manifest facts; not failures

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class SplitCheck:
    split: str
    expected: int  # sequences in the manifest
    present: int  # of those, found on disk
    ok: int  # of those, without problems
    expected_frames: int
    found_frames: int

    @property
    def status(self) -> str:
        if self.present == 0:
            return "absent"
        return "complete" if self.ok == self.expected else "incomplete"


@dataclass
class CheckReport:
    dataset: str
    root: Path
    split: str | None
    sequences: list[SequenceCheck] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # in the manifest (selected split), not on disk
    extra: list[str] = field(default_factory=list)  # on disk, not in the manifest
    splits: list[SplitCheck] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # the dataset could not be opened at all

    @property
    def complete_splits(self) -> list[str]:
        return [s.split for s in self.splits if s.status == "complete"]

    @property
    def total_frames(self) -> int:
        return sum(s.found_frames or 0 for s in self.sequences)

    @property
    def ok(self) -> bool:
        """No errors, every sequence found is sound, and the selected split (or, without a
        split, every split that is present at all) is complete."""
        if self.errors or any(not s.ok for s in self.sequences):
            return False
        if self.split is not None:
            return self.split in self.complete_splits
        if not self.splits:  # no sequence list (JumpCut): sound sequences are all we can ask for
            return bool(self.sequences)
        return bool(self.complete_splits) and all(s.status != "incomplete" for s in self.splits)

    def summary(self) -> str:
        lines = [f"{self.dataset} at {self.root}: {'OK' if self.ok else 'PROBLEMS FOUND'}"]
        lines += [f"  error: {e}" for e in self.errors]
        for s in self.splits:
            lines.append(
                f"  split {s.split}: {s.status}, {s.present}/{s.expected} sequences present, "
                f"{s.found_frames}/{s.expected_frames} frames"
            )
        if not self.splits and self.sequences:
            lines.append(f"  {len(self.sequences)} sequences, {self.total_frames} frames (no sequence list in the manifest)")
        if self.missing:
            lines.append(f"  missing sequences ({len(self.missing)}): {', '.join(self.missing)}")
        if self.extra:
            lines.append(f"  not in the manifest ({len(self.extra)}): {', '.join(self.extra)}")
        for s in self.sequences:
            lines += [f"  {s.name}: {p}" for p in s.problems]
            lines += [f"  {s.name} (note): {n}" for n in s.notes]
        return "\n".join(lines)


def check_dataset(
    dataset: str | Manifest,
    root: str | Path,
    *,
    split: str | None = None,
    decode: bool = False,
    verify_files: bool = True,
    progress: Callable[[str], None] | None = None,
) -> CheckReport:
    manifest = dataset if isinstance(dataset, Manifest) else load_manifest(canonical_name(dataset))
    report = CheckReport(dataset=manifest.name, root=Path(root), split=split)
    try:
        ds = open_dataset(manifest.name, root, split=split, manifest=manifest)
        listed = ds.video_names()
    except DatasetError as exc:
        report.errors.append(str(exc))
        return report
    expected = {s.name: (split_name, s) for split_name, seqs in manifest.splits.items() for s in seqs
                if split is None or split_name == split}
    unlisted = [n for n in listed if n not in expected and manifest.sequence(n) is None]
    report.extra = unlisted if manifest.sequences() else []  # JumpCut has no list: nothing is "extra"
    names = list(expected) + unlisted
    missing: list[str] = []
    for name in names:
        split_name, info = expected.get(name, (None, None))
        if progress:
            progress(name)
        try:
            video = ds.video(name)
        except UnknownSequenceError:
            missing.append(name)
            continue
        except DatasetError as exc:
            report.sequences.append(SequenceCheck(name, split_name, info.frames if info else None, problems=[str(exc)]))
            continue
        report.sequences.append(check_video(video, info, split=split_name, decode=decode, verify_files=verify_files,
                                            expected_masks=ds.expected_masks(name, video.num_frames)))
    found = {s.name: s for s in report.sequences}
    for split_name, seqs in manifest.splits.items():
        if (split is not None and split_name != split) or not seqs:
            continue
        present = [found[s.name] for s in seqs if s.name in found]
        report.splits.append(SplitCheck(
            split=split_name,
            expected=len(seqs),
            present=len(present),
            ok=sum(p.ok for p in present),
            expected_frames=sum(s.frames or 0 for s in seqs),
            found_frames=sum(p.found_frames or 0 for p in present),
        ))
    # A split with no sequence on disk is simply not part of this copy; only the gaps of
    # splits that are there (or of the split asked for) count as missing.
    absent = {s.split for s in report.splits if s.status == "absent" and s.split != split}
    report.missing = [n for n in missing if expected[n][0] not in absent]
    return report


def check_video(
    video: VideoSource, info: SequenceInfo | None, *, split: str | None, decode: bool, verify_files: bool = True,
    expected_masks: np.ndarray | None = None,
) -> SequenceCheck:
    """`expected_masks`: bool [T], the frames that should have ground truth (Dataset.expected_masks);
    None: not compared. `verify_files=False` judges from the file listing only (fast)."""
    result = SequenceCheck(video.name, split, info.frames if info else None, found_frames=video.num_frames)
    if info is not None and info.frames is not None and info.frames != video.num_frames:
        result.problems.append(f"{video.num_frames} frames on disk, manifest expects {info.frames}")
    if decode:
        try:
            flags = np.array([r.has_mask for r in video.iter_frames()], dtype=bool)
        except DatasetError as exc:
            result.problems.append(str(exc))
            return result
    elif not verify_files:
        flags = video.mask_flags()
    else:
        unreadable = [f"{path}: {problem}" for path in video.files() if (problem := verify_image(path))]
        if unreadable:  # headers of broken files cannot be compared; report them and stop here
            result.problems += unreadable
            return result
        if isinstance(video, ListedVideo):
            result.problems += _size_mismatches(video)
        try:  # decoding one frame catches a wrong mask encoding (e.g. binary masks read as DAVIS 2017)
            first = next(iter(video.iter_frames()), None)
        except DatasetError as exc:
            result.problems.append(str(exc))
            first = None
        if first is not None and first.has_mask and info is not None and info.objects is not None:
            # DAVIS counts objects as the largest id on frame 0 (davis2017-evaluation davis.py);
            # the manifest's counts are UNVERIFIED, so a difference is a note, not a failure.
            ids = first.mask[first.mask != VOID]
            found = int(ids.max()) if ids.size else 0
            if found != info.objects:
                result.notes.append(f"largest object id on frame 0 is {found}, manifest says {info.objects} objects")
        flags = video.mask_flags()
    if expected_masks is not None:
        expected = expected_masks
        if not np.array_equal(flags, expected):
            lacking = np.flatnonzero(expected & ~flags).tolist()
            surplus = np.flatnonzero(flags & ~expected).tolist()
            parts = []
            if lacking:
                parts.append(f"no ground truth for frame(s) {_short(lacking)}")
            if surplus:
                parts.append(f"unexpected ground truth for frame(s) {_short(surplus)}")
            basis = "compared with the manifest" if info is not None else "every frame of this dataset has a mask"
            result.problems.append("; ".join(parts) + f" (0-based, {basis})")
    return result


def _size_mismatches(video: ListedVideo) -> list[str]:
    """Header-only comparison of every mask's size with its frame's."""
    out = []
    for frame, masks in zip(video.frame_paths, video.mask_paths):
        if not masks:
            continue
        size = image_size(frame)
        for m in masks:
            if image_size(m) != size:
                out.append(f"{m}: size {image_size(m)[::-1]} differs from its frame {frame.name} {size[::-1]} (W, H)")
    return out


def _short(items: list[int]) -> str:
    return ", ".join(map(str, items[:10])) + (f" ... ({len(items)} in all)" if len(items) > 10 else "")
