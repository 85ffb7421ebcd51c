"""`trackprep fetch`: download, verify, extract and check a dataset.

Downloads resume: bytes go to `<file>.part`, and a later attempt (a retry within the call
or a rerun of the command) asks the server for the rest with an HTTP Range request.
The finished file is checked against the manifest's size and md5/sha256 before anything
is extracted; a mismatch deletes it and stops. Extraction goes into a temporary folder
inside the destination, and only a complete extraction is moved into place (one rename
per top-level entry), so a failure never leaves a half-extracted tree behind. Datasets
without a direct link (JumpCut's Dropbox .rar) print what to download and where to put it.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import socket
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable

from trackprep.io.check import CheckReport, check_dataset
from trackprep.io.manifests import Archive, Manifest

DOWNLOAD_DIR = ".downloads"  # inside the dataset root; archives and their .part files
RECORD_FILE = ".trackprep-fetch.json"  # inside the dataset root: which archives were extracted into what
CHUNK = 1 << 20
USER_AGENT = "trackprep-fetch"


class FetchError(RuntimeError):
    """A download, verification or extraction failed; the message names the URL or file."""


@dataclass
class FetchResult:
    dataset: str
    root: Path
    status: str  # "fetched", "already-complete" or "manual"
    report: CheckReport | None = None
    instructions: str | None = None


# ------------------------------------------------------------------ download


def file_digest(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def verify_file(path: Path, *, size: int | None, checksum: tuple[str, str] | None) -> str | None:
    """None when `path` has the expected size and checksum, else what is wrong."""
    actual = path.stat().st_size
    if size is not None and actual != size:
        return f"size {actual} bytes, expected {size}"
    if checksum is not None:
        algorithm, expected = checksum
        digest = file_digest(path, algorithm)
        if digest != expected:
            return f"{algorithm} {digest}, expected {expected}"
    return None


def download(
    url: str,
    dest: Path,
    *,
    size: int | None = None,
    checksum: tuple[str, str] | None = None,
    retries: int = 3,
    timeout: float = 60.0,
    progress: Callable[[int, int | None], None] | None = None,
) -> Path:
    """Download `url` to `dest`, resuming from `dest.part`; verify size and checksum.

    A connection that drops mid-transfer is resumed up to `retries` times within this call;
    after that the .part file stays, and calling again continues where it stopped. A file
    failing verification is deleted and FetchError raised, so the next call starts afresh.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_file():
        if verify_file(dest, size=size, checksum=checksum) is None:
            return dest
        dest.unlink()  # a stale or corrupt earlier download
    part = dest.with_name(dest.name + ".part")
    attempt = 0
    while True:
        offset = part.stat().st_size if part.exists() else 0
        if size is not None and offset > size:
            part.unlink()
            offset = 0
        if size is not None and offset == size:
            break
        try:
            _fetch_range(url, part, offset=offset, timeout=timeout, progress=progress)
        except (urllib.error.URLError, http.client.HTTPException, OSError, _Interrupted) as exc:
            if isinstance(exc, urllib.error.HTTPError) and exc.code not in (408, 429, 500, 502, 503, 504):
                raise FetchError(f"{url}: HTTP {exc.code} {exc.reason}; expected the archive to be downloadable") from exc
            attempt += 1
            if attempt > retries:
                have = part.stat().st_size if part.exists() else 0
                raise FetchError(
                    f"{url}: download interrupted ({exc}) after {retries} retries; {have} bytes kept in {part}, "
                    f"run the command again to resume"
                ) from exc
            continue
        break  # _fetch_range returns only once it has every promised byte
    problem = verify_file(part, size=size, checksum=checksum)
    if problem:
        part.unlink()
        raise FetchError(f"{dest.name} from {url}: {problem}; the file was deleted and nothing was extracted")
    os.replace(part, dest)
    return dest


class _Interrupted(Exception):
    """The server closed the connection before sending the promised bytes."""


def _fetch_range(
    url: str, part: Path, *, offset: int, timeout: float, progress: Callable[[int, int | None], None] | None
) -> int | None:
    """Append the bytes from `offset` on to `part`; returns the full file size when known."""
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if offset:
        req.add_header("Range", f"bytes={offset}-")
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # the range starts at or past the end: the .part may be complete
            total = _total_from_content_range(exc.headers.get("Content-Range"))
            if total is not None and total == offset:
                return total
            part.unlink()  # inconsistent with the server's file: start over
            raise _Interrupted(f"HTTP 416 for bytes={offset}-; restarting from 0") from exc
        raise
    with resp:
        if offset and resp.status == 206:
            content_range = resp.headers.get("Content-Range", "")
            start = _start_from_content_range(content_range)
            if start != offset:
                raise FetchError(f"{url}: asked for bytes from {offset}, server sent {content_range!r}; "
                    f"expected them from {offset}")
            mode, written = "ab", offset
            total = _total_from_content_range(content_range)
        else:  # 200: the server ignores Range, so the whole file comes again
            mode, written = "wb", 0
            length = resp.headers.get("Content-Length")
            total = int(length) if length is not None else None
        expected_end = total
        with open(part, mode) as out:
            while True:
                try:
                    block = resp.read(CHUNK)
                except (http.client.IncompleteRead, ConnectionError, socket.timeout) as exc:
                    raise _Interrupted(str(exc)) from exc
                if not block:
                    break
                out.write(block)
                written += len(block)
                if progress:
                    progress(written, total)
        if expected_end is not None and written < expected_end:
            # http.client returns b"" when the peer closes early instead of raising.
            raise _Interrupted(f"connection closed at byte {written} of {expected_end}")
        return total


def _start_from_content_range(value: str) -> int | None:
    try:  # "bytes 100-199/200"
        return int(value.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return None


def _total_from_content_range(value: str | None) -> int | None:
    try:
        total = (value or "").rsplit("/", 1)[1]
        return None if total == "*" else int(total)
    except (IndexError, ValueError):
        return None


# ------------------------------------------------------------------ extraction


def extract_archive(archive: Path, dest: Path) -> list[Path]:
    """Extract `archive` (zip or tar) into `dest` atomically: into a temporary folder first,
    then each top-level entry is renamed into place. Refuses entries that would land outside
    `dest` and top-level entries that already exist. Returns the paths created."""
    dest.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".extract-{archive.name}-", dir=dest))
    try:
        try:
            if zipfile.is_zipfile(archive):
                with zipfile.ZipFile(archive) as zf:
                    for member in zf.namelist():
                        _check_member(archive, member)
                    zf.extractall(tmp)  # CRC errors surface here as BadZipFile
            elif tarfile.is_tarfile(archive):
                with tarfile.open(archive) as tf:
                    tf.extractall(tmp, filter="data")  # the "data" filter refuses links and paths outside tmp
            else:
                raise FetchError(f"{archive}: not a zip or tar archive; "
                    "expected one of those (other formats need a manual step)")
        except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as exc:
            raise FetchError(
                f"{archive}: extraction failed ({exc}); nothing was extracted, delete the archive and fetch again"
            ) from exc
        entries = sorted(p for p in tmp.iterdir() if p.name != "__MACOSX")
        clashes = [str(dest / p.name) for p in entries if (dest / p.name).exists()]
        if clashes:
            raise FetchError(f"{archive}: would overwrite {', '.join(clashes)}; "
                "expected them absent (move them away and fetch again)")
        placed = []
        for p in entries:
            os.replace(p, dest / p.name)
            placed.append(dest / p.name)
        return placed
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _check_member(archive: Path, member: str) -> None:
    path = PurePosixPath(member.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts:
        raise FetchError(f"{archive}: member {member!r} would be written outside the destination; refusing the archive")


# ------------------------------------------------------------------ the command


def manual_instructions(manifest: Manifest, root: Path) -> str:
    text = (manifest.manual or "").replace("{root}", str(root))
    return f"{manifest.title} needs a manual download.\n{text}".rstrip()


def fetch_dataset(
    manifest: Manifest,
    root: str | Path,
    *,
    keep_archives: bool = False,
    retries: int = 3,
    timeout: float = 60.0,
    echo: Callable[[str], None] = print,
    progress: Callable[[int, int | None], None] | None = None,
) -> FetchResult:
    """Fetch `manifest`'s dataset into `root` and check it; see the module docstring."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise FetchError(f"{root}: not a folder; expected a folder to put {manifest.name} in, or a path that does not exist yet")
    # Checked first for manual datasets too: once the user has put the files in place, a
    # rerun says so instead of repeating the instructions.
    if root.is_dir():
        before = check_dataset(manifest, root)
        if before.ok:
            echo(f"{manifest.name}: already complete at {root}")
            return FetchResult(manifest.name, root, "already-complete", report=before)
    if manifest.manual and not manifest.archives:
        return FetchResult(manifest.name, root, "manual", instructions=manual_instructions(manifest, root))
    root.mkdir(parents=True, exist_ok=True)
    record = _read_record(root)
    for archive in manifest.archives:
        # An archive counts as done when its known top-level entries, or those recorded when
        # this command extracted it (FBMS's zips do not say what they unpack to), all exist.
        entries = list(archive.extracts_to) or record.get(archive.filename, {}).get("entries", [])
        if entries and all((root / e).exists() for e in entries):
            echo(f"{archive.filename}: {', '.join(entries)} already in {root}, not downloading")
            continue
        path = _download_archive(archive, root, retries=retries, timeout=timeout, echo=echo, progress=progress)
        echo(f"{archive.filename}: extracting into {root}")
        placed = extract_archive(path, root)
        record[archive.filename] = {"url": archive.url, "checksum": list(archive.checksum) if archive.checksum else None,
                                    "entries": [p.name for p in placed]}
        _write_record(root, record)
        if not keep_archives:
            path.unlink()
    downloads = root / DOWNLOAD_DIR
    if downloads.is_dir() and not any(downloads.iterdir()):
        downloads.rmdir()
    return FetchResult(manifest.name, root, "fetched", report=check_dataset(manifest, root))


def _read_record(root: Path) -> dict:
    path = root / RECORD_FILE
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return {}  # a damaged record only costs a re-download


def _write_record(root: Path, record: dict) -> None:
    tmp = root / (RECORD_FILE + ".tmp")
    tmp.write_text(json.dumps(record, indent=1, sort_keys=True))
    os.replace(tmp, root / RECORD_FILE)


def _download_archive(
    archive: Archive, root: Path, *, retries: int, timeout: float, echo: Callable[[str], None],
    progress: Callable[[int, int | None], None] | None,
) -> Path:
    dest = root / DOWNLOAD_DIR / archive.filename
    what = f" ({archive.size} bytes)" if archive.size else ""
    check = f", {archive.checksum[0]} checked" if archive.checksum else ", no published checksum"
    echo(f"{archive.filename}: downloading {archive.url}{what}{check}")
    return download(archive.url, dest, size=archive.size, checksum=archive.checksum, retries=retries, timeout=timeout,
                    progress=progress)
