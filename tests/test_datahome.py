"""The data home (issue 15): datasets fetched to and found in $TRACKPREP_DATA without --root,
default outputs, the one-line remedy when a dataset is missing, `trackprep datasets`; and the
smaller CLI messages of issue 14 (fetch into a file, names fetch cannot get, `info` on a
missing path, Ctrl-C during annotate)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from test_fetch import Server, davis_zip
from trackprep.cli import app
from trackprep.io import annotation_store as S
from trackprep.io.annotation_reader import open_annotations
from trackprep.io.datahome import ENV_VAR, DataHomeError, data_home, default_data_home, locate_dataset
from trackprep.io.manifests import MANIFEST_DIR_ENV, manifest_dir

REPO = Path(__file__).resolve().parents[1]


def run(*args: str):
    return CliRunner().invoke(app, list(args))


def tree(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty data home named by $TRACKPREP_DATA, and an empty working directory."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv(ENV_VAR, str(home))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return home


def test_data_home_is_the_variable_else_the_platform_default(monkeypatch, tmp_path):
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "x"))
    assert data_home() == tmp_path / "x"
    monkeypatch.setenv(ENV_VAR, "~/datasets")
    assert data_home() == Path.home() / "datasets"
    monkeypatch.setenv(ENV_VAR, "")  # set but empty counts as unset
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert data_home() == default_data_home()
    if sys.platform.startswith("linux"):  # the XDG base directory rule, as platformdirs applies it
        assert data_home() == tmp_path / "xdg" / "trackprep"


def test_annotate_and_check_find_davis2016_in_the_data_home(home, shared_data):
    (home / "davis2016").symlink_to(shared_data / "davis2016", target_is_directory=True)
    r = run("annotate", "--dataset", "davis2016", "--videos", "car-shadow", "--flow", "dis",
            "--size", "64x112", "--scheduler", "serial")
    assert r.exit_code == 0, r.output
    out = Path("annotations/davis2016.zarr")
    assert "output: annotations/davis2016.zarr (no --out given)" in r.stderr
    assert f"davis2016: {home / 'davis2016'} (data home)" in r.stderr
    assert S.complete_videos(S.open_store(out)) == ["davis2016/car-shadow"]
    assert open_annotations(out)["davis2016/car-shadow"].frames.shape == (40, 64, 112, 3)

    r = run("check", "davis2016")
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith(f"davis2016 at {home / 'davis2016'}: OK")
    assert "split val: complete, 20/20 sequences present, 1376/1376 frames" in r.stdout

    r = run("datasets", "--json")
    entry = {e["name"]: e for e in json.loads(r.stdout)["datasets"]}["davis2016"]
    assert entry["status"] == "complete" and entry["complete_splits"] == ["val"]
    assert entry["bytes"] == sum(p.stat().st_size for p in (shared_data / "davis2016").rglob("*") if p.is_file())


def test_missing_dataset_stops_with_one_line_remedy_and_creates_nothing(home):
    for args in (["annotate", "--dataset", "davis"], ["check", "davis"]):
        r = run(*args)
        assert r.exit_code != 0, r.output
        assert r.stderr.count("\n") == 1, r.stderr
        assert r.stderr.startswith(f"error: davis2017 is not in the data home: {home / 'davis2017'} does not exist")
        assert "`trackprep fetch davis`" in r.stderr and "Traceback" not in r.output
    assert tree(home) == [] and tree(Path.cwd()) == []

    # A dataset that needs a manual step says so; a name with no download says what it reads instead.
    r = run("annotate", "--dataset", "jumpcut")
    assert r.exit_code == 2 and "it needs a manual download: `trackprep fetch jumpcut` prints the steps" in r.stderr
    r = run("annotate", "--dataset", "imagefolder")
    assert r.exit_code == 2 and "expected --root DIR for it" in r.stderr
    assert tree(home) == [] and tree(Path.cwd()) == []


def test_root_and_dataset_counts_must_agree_unless_no_root_is_given(home, tmp_path):
    r = run("annotate", "--dataset", "davis2016", "--dataset", "segtrackv2", "--root", str(tmp_path))
    assert r.exit_code == 2 and "2 --dataset but 1 --root" in r.stderr and "or none to use the data home" in r.stderr
    with pytest.raises(DataHomeError, match="segtrackv2 is not in the data home"):
        locate_dataset("segtrackv2")
    assert locate_dataset("segtrackv2", tmp_path) == tmp_path  # --root wins, unchecked here


@pytest.fixture
def loopback_manifests(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The real manifests, with davis2017's archive served by a loopback server that cuts its
    first transfer midway."""
    payload = davis_zip()
    mdir = tmp_path / "manifests"
    shutil.copytree(manifest_dir(), mdir)
    with Server(payload, cuts=1) as server:
        manifest = {"name": "davis2017", "title": "DAVIS test", "homepage": "http://h",
                    "licence": {"terms": "Test terms. Second sentence.", "url": "http://l"},
                    "layout": "DAVIS/", "mask_encoding": "palette", "options": {"resolution": "480p"},
                    "splits": {"train": [{"name": "bear", "frames": 3, "objects": 1}]},
                    "archives": [{"url": server.url, "sha256": hashlib.sha256(payload).hexdigest(),
                                  "size": len(payload), "extracts_to": ["DAVIS"]}]}
        (mdir / "davis2017.yaml").write_text(yaml.safe_dump(manifest))
        monkeypatch.setenv(MANIFEST_DIR_ENV, str(mdir))
        yield server


def test_fetch_into_the_data_home_resumes_checks_and_is_listed_complete(home, loopback_manifests):
    server = loopback_manifests
    r = run("fetch", "davis", "--retries", "0")  # the cut transfer is not retried within this run
    assert r.exit_code == 3, r.output
    assert f"davis2017: into {home / 'davis2017'} (the data home, from ${ENV_VAR})" in r.stderr
    assert r.stderr.count("\n") == 2 and "run the command again to resume" in r.stderr
    r = run("datasets", "--json")
    assert {e["name"]: e["status"] for e in json.loads(r.stdout)["datasets"]}["davis2017"] == "download interrupted"
    r = run("annotate", "--dataset", "davis")  # says how to finish, not "fetch" from scratch
    assert r.exit_code == 2 and "holds only an unfinished download" in r.stderr
    assert "; run `trackprep fetch davis` to resume it, or pass --root DIR" in r.stderr

    r = run("fetch", "davis")
    assert r.exit_code == 0, r.output
    assert server.ranges[0] is None and server.ranges[-1].startswith("bytes=") and server.ranges[-1] != "bytes=0-"
    assert "davis2017 at" in r.stdout and ": OK" in r.stdout
    assert (home / "davis2017" / "DAVIS" / "JPEGImages" / "480p" / "bear" / "00002.jpg").is_file()
    assert not (home / "davis2017" / ".downloads").exists()  # the archive is deleted after extraction

    r = run("datasets")
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith(f"data home: {home} (${ENV_VAR})")
    row = next(line for line in r.stdout.splitlines() if line.startswith("davis2017 "))
    assert row.split()[1:3] == ["complete", "(train)"] and "trackprep fetch davis2017" in row
    assert row.endswith("Test terms.")  # the licence's first sentence
    jumpcut = next(line for line in r.stdout.splitlines() if line.startswith("jumpcut "))
    assert "absent" in jumpcut and "manual download" in jumpcut
    assert run("check", "davis").exit_code == 0
    r = run("annotate", "--dataset", "davis", "--flow", "dis", "--size", "24x32", "--scheduler", "serial")
    assert r.exit_code == 0, r.output
    assert S.complete_videos(S.open_store(Path("annotations/davis2017.zarr"))) == ["davis2017/bear"]


def test_fetch_refuses_a_file_as_root_in_one_line(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    r = run("fetch", "davis2016", "--root", str(f))
    assert r.exit_code == 3 and r.stderr.count("\n") == 1 and "Traceback" not in r.output
    assert f"{f}: not a folder; expected a folder to put davis2016 in" in r.stderr


@pytest.mark.parametrize("name,why", [("imagefolder", "reads your own folders"), ("synthetic", "trackprep demo")])
def test_fetch_and_check_name_only_datasets_they_can_get(name, why):
    for command in ("fetch", "check"):
        r = run(command, name)
        assert r.exit_code == 2 and r.stderr.count("\n") == 1, r.output
        assert why in r.stderr and "datasets with one: davis2016, davis2017, fbms59, jumpcut, segtrackv2" in r.stderr
        assert "imagefolder," not in r.stderr.split("datasets with one:")[1]


def test_info_on_a_missing_path_names_both_kinds_of_store(tmp_path):
    r = run("info", str(tmp_path / "nothing.zarr"))
    assert r.exit_code == 2 and r.stderr.count("\n") == 1
    assert "does not exist; expected a trackprep store: an annotation store" in r.stderr and "segment store" in r.stderr


def test_shard_writes_to_segments_folder_by_default(tmp_path, monkeypatch):
    from trackprep.io.datasets.synthetic import write_synthetic_dataset
    from trackprep.io.segment_store import open_segment_store, segment_store_summary

    write_synthetic_dataset(tmp_path / "synth", num_videos=1, seed=0, num_frames=8, height=32, width=48)
    monkeypatch.chdir(tmp_path)
    r = run("annotate", "--dataset", "synthetic", "--root", "synth", "--flow", "oracle", "--size", "32x48",
            "--scheduler", "serial")
    assert r.exit_code == 0, r.output
    r = run("shard", "--store", "annotations/synthetic.zarr", "--length", "4", "--tracks", "16", "--scheduler", "serial")
    assert r.exit_code == 0, r.output
    assert "output: segments/synthetic.zarr (no --out given)" in r.stderr
    assert segment_store_summary(open_segment_store(Path("segments/synthetic.zarr")))["segments"] == 2


def test_ctrl_c_during_annotate_says_the_store_resumes(tmp_path):
    """SIGINT once the first of several videos is done: exit 130 with one line saying how to go on;
    the rerun keeps the finished video and completes the rest."""
    from trackprep.io.datasets.synthetic import write_synthetic_dataset

    names = write_synthetic_dataset(tmp_path / "synth", num_videos=5, seed=0, num_frames=24, height=64, width=96)
    out = tmp_path / "a.zarr"
    args = [sys.executable, "-m", "trackprep", "annotate", "--dataset", "synthetic", "--root", str(tmp_path / "synth"),
            "--out", str(out), "--flow", "oracle", "--size", "64x96", "--scheduler", "serial"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(args, env=env, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if line.startswith("[1/5]"):  # the first video is written and marked complete
            proc.send_signal(signal.SIGINT)
            break
    rest_out, rest_err = proc.communicate(timeout=120)
    err = "".join(seen) + rest_err
    assert proc.returncode == 130, err
    assert f"interrupted: videos finished so far are kept in {out}; run the same command again to continue" in err
    assert "Traceback" not in err
    done = S.complete_videos(S.open_store(out))
    assert 1 <= len(done) < len(names)

    rerun = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{len(names) - len(done)} video(s) annotated, {len(done)} already complete, 0 failed" in rerun.stdout
    assert len(S.complete_videos(S.open_store(out))) == len(names)
