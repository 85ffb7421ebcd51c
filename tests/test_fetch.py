"""`fetch` against a loopback HTTP server serving a zip made here: a transfer cut midway
resumes with a Range request; a wrong checksum or a corrupt archive is refused and nothing
half-extracted is left behind."""

from __future__ import annotations

import hashlib
import io
import socket
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from trackprep.io.fetch import DOWNLOAD_DIR, RECORD_FILE, FetchError, download, extract_archive, fetch_dataset
from trackprep.io.manifests import parse_manifest

H, W, N = 24, 32, 3


def davis_zip(*, stored: bool = False) -> bytes:
    """A one-sequence DAVIS-2017 trainval tree, zipped with the top-level DAVIS/ folder."""
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED) as zf:
        for t in range(N):
            img = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(img, format="JPEG", quality=95)
            zf.writestr(f"DAVIS/JPEGImages/480p/bear/{t:05d}.jpg", img.getvalue())
            ids = np.zeros((H, W), np.uint8)
            ids[2:8, 2:8] = 1
            m = Image.fromarray(ids, mode="P")
            m.putpalette([0, 0, 0, 128, 0, 0] + [0] * 762)
            png = io.BytesIO()
            m.save(png, format="PNG")
            zf.writestr(f"DAVIS/Annotations/480p/bear/{t:05d}.png", png.getvalue())
        zf.writestr("DAVIS/ImageSets/2017/train.txt", "bear\n")
    return buf.getvalue()


class Server:
    """Serves `payload` at /DAVIS.zip with Range support; can cut the first N transfers midway."""

    def __init__(self, payload: bytes, *, cuts: int = 0, honour_range: bool = True) -> None:
        self.payload, self.cuts, self.honour_range = payload, cuts, honour_range
        self.ranges: list[str | None] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                if self.path != "/DAVIS.zip":
                    self.send_error(404)
                    return
                rng = self.headers.get("Range")
                server.ranges.append(rng)
                data, start = server.payload, 0
                if rng and server.honour_range:
                    start = int(rng.split("=")[1].split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.cuts > 0:
                    server.cuts -= 1
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)  # the connection drops midway
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/DAVIS.zip"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "Server":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def manifest_for(url: str, payload: bytes, *, sha256: str | None = None, size: bool = True, extracts_to: bool = True,
                 frames: int = N):
    archive = {"url": url, "sha256": sha256 or hashlib.sha256(payload).hexdigest()}
    if extracts_to:
        archive["extracts_to"] = ["DAVIS"]
    if size:
        archive["size"] = len(payload)
    return parse_manifest(
        {"name": "davis2017", "title": "DAVIS test", "homepage": "http://h", "licence": {"terms": "t", "url": "http://l"},
         "layout": "DAVIS/", "mask_encoding": "palette", "options": {"resolution": "480p"},
         "splits": {"train": [{"name": "bear", "frames": frames, "objects": 1}]}, "archives": [archive]},
        path=Path("test-davis.yaml"),
    )


@pytest.fixture(scope="module")
def payload() -> bytes:
    return davis_zip()


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.rglob("*") if p.name.startswith(".extract-") or p.suffix == ".part") if root.exists() else []


def test_fetch_resumes_a_cut_download_and_checks_the_tree(tmp_path: Path, payload: bytes) -> None:
    root = tmp_path / "davis"
    with Server(payload, cuts=1) as server:
        result = fetch_dataset(manifest_for(server.url, payload), root, echo=lambda s: None)
    assert result.status == "fetched"
    assert result.report is not None and result.report.ok, result.report.summary()
    assert result.report.complete_splits == ["train"] and result.report.total_frames == N
    assert server.ranges[0] is None and server.ranges[1] == f"bytes={len(payload) // 2}-"
    assert len(server.ranges) == 2  # the second request fetched only the missing half
    assert (root / "DAVIS" / "JPEGImages" / "480p" / "bear" / "00002.jpg").is_file()
    assert not (root / DOWNLOAD_DIR).exists() and leftovers(root) == []

    with Server(payload) as server:  # a second run finds the copy complete and downloads nothing
        again = fetch_dataset(manifest_for(server.url, payload), root, echo=lambda s: None)
    assert again.status == "already-complete" and server.ranges == []


def test_rerun_skips_archives_recorded_as_extracted(tmp_path: Path, payload: bytes) -> None:
    """Without `extracts_to` (FBMS's zips) the record of what an archive unpacked to stops a
    rerun from downloading it again and clashing with its own earlier extraction."""
    root = tmp_path / "davis"
    with Server(payload) as server:
        first = fetch_dataset(manifest_for(server.url, payload, extracts_to=False), root, echo=lambda s: None)
    assert first.status == "fetched" and first.report.ok
    assert '"DAVIS"' in (root / RECORD_FILE).read_text()
    with Server(payload) as server:  # the check now fails (5 frames expected), so fetch tries again
        second = fetch_dataset(manifest_for(server.url, payload, extracts_to=False, frames=5), root, echo=lambda s: None)
    assert server.ranges == []  # nothing downloaded again
    assert second.status == "fetched" and not second.report.ok
    assert "3 frames on disk, manifest expects 5" in second.report.summary()


def test_download_resumes_across_runs(tmp_path: Path, payload: bytes) -> None:
    dest = tmp_path / "DAVIS.zip"
    checksum = ("sha256", hashlib.sha256(payload).hexdigest())
    with Server(payload, cuts=1) as server:
        with pytest.raises(FetchError, match=r"interrupted .* bytes kept in .*DAVIS\.zip\.part, run the command again to resume"):
            download(server.url, dest, size=len(payload), checksum=checksum, retries=0)
        part = dest.with_name("DAVIS.zip.part")
        assert part.stat().st_size == len(payload) // 2 and not dest.exists()
        download(server.url, dest, size=len(payload), checksum=checksum, retries=0)
    assert dest.read_bytes() == payload and not part.exists()
    assert server.ranges == [None, f"bytes={len(payload) // 2}-"]


def test_server_ignoring_range_restarts_cleanly(tmp_path: Path, payload: bytes) -> None:
    dest = tmp_path / "DAVIS.zip"
    with Server(payload, cuts=1, honour_range=False) as server:
        download(server.url, dest, size=None, checksum=("sha256", hashlib.sha256(payload).hexdigest()), retries=2)
    assert dest.read_bytes() == payload  # the 200 reply was written from byte 0, not appended


def test_wrong_checksum_is_refused_and_nothing_extracted(tmp_path: Path, payload: bytes) -> None:
    root = tmp_path / "davis"
    wrong = "0" * 64
    with Server(payload) as server:
        with pytest.raises(FetchError, match=rf"DAVIS\.zip from {server.url}: sha256 [0-9a-f]{{64}}, expected {wrong}; the file was deleted"):
            fetch_dataset(manifest_for(server.url, payload, sha256=wrong), root, echo=lambda s: None)
    assert not (root / "DAVIS").exists()
    assert list((root / DOWNLOAD_DIR).iterdir()) == [] and leftovers(root) == []


def test_corrupt_archive_leaves_nothing_half_extracted(tmp_path: Path) -> None:
    data = bytearray(davis_zip(stored=True))
    # Flip bytes inside the last image member's stored data: its CRC check fails only after
    # the earlier members were already written, so a non-atomic extractor would leave them.
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as zf:
        info = zf.getinfo(f"DAVIS/JPEGImages/480p/bear/{N - 1:05d}.jpg")
    pos = info.header_offset + 30 + len(info.filename) + 200
    data[pos : pos + 8] = bytes(255 - b for b in data[pos : pos + 8])
    payload = bytes(data)
    root = tmp_path / "davis"
    with Server(payload) as server:
        with pytest.raises(FetchError, match=r"DAVIS\.zip: extraction failed .*nothing was extracted"):
            fetch_dataset(manifest_for(server.url, payload), root, echo=lambda s: None)
    assert not (root / "DAVIS").exists() and leftovers(root) == []


def test_extract_refuses_paths_outside_and_existing_entries(tmp_path: Path) -> None:
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../escape.txt", "x")
    with pytest.raises(FetchError, match=r"evil\.zip: member '\.\./escape\.txt' would be written outside"):
        extract_archive(evil, tmp_path / "out")
    assert not (tmp_path / "escape.txt").exists() and leftovers(tmp_path) == []

    ok = tmp_path / "ok.zip"
    with zipfile.ZipFile(ok, "w") as zf:
        zf.writestr("DAVIS/a.txt", "a")
    (tmp_path / "out" / "DAVIS").mkdir(parents=True)
    with pytest.raises(FetchError, match=r"would overwrite .*DAVIS"):
        extract_archive(ok, tmp_path / "out")
    assert leftovers(tmp_path) == []


def test_http_error_is_reported_with_url(tmp_path: Path, payload: bytes) -> None:
    with Server(payload) as server:
        url = server.url.replace("DAVIS.zip", "missing.zip")
        with pytest.raises(FetchError, match=rf"{url}: HTTP 404"):
            download(url, tmp_path / "missing.zip", retries=0)


def test_extract_tar_archive(tmp_path: Path) -> None:
    import tarfile

    src = tmp_path / "src" / "Trainingset" / "cats01"
    src.mkdir(parents=True)
    (src / "cats01_0001.jpg").write_bytes(b"x")
    archive = tmp_path / "fbms.tgz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(tmp_path / "src" / "Trainingset", arcname="Trainingset")
    placed = extract_archive(archive, tmp_path / "out")
    assert placed == [tmp_path / "out" / "Trainingset"]
    assert (tmp_path / "out" / "Trainingset" / "cats01" / "cats01_0001.jpg").read_bytes() == b"x"
    assert leftovers(tmp_path / "out") == []
