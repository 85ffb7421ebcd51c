"""The manifests in data_manifests/: totals from the facts sheet, cross-checked against the
official DAVIS sequence table in ../shared/reference, and the validator's error messages."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from trackprep.io.datasets import READERS, known_datasets
from trackprep.io.manifests import ManifestError, load_manifest, manifest_names, parse_manifest

DB_INFO = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "davis2017_db_info.yaml"


def totals(name: str, split: str) -> tuple[int, int, int]:
    seqs = load_manifest(name).sequences(split)
    return len(seqs), sum(s.frames or 0 for s in seqs), sum(s.objects or 0 for s in seqs)


def test_every_manifest_has_a_reader_and_every_dataset_reader_a_manifest() -> None:
    names = manifest_names()
    assert names == ["davis2016", "davis2017", "fbms59", "jumpcut", "segtrackv2"]
    for n in names:
        m = load_manifest(n)
        assert m.name == n and n in READERS
        assert m.licence and m.licence_url.startswith("http") and m.layout and m.mask_encoding
        assert m.archives or m.manual
    assert "davis" in known_datasets()


def test_counts_match_the_facts_sheet() -> None:
    assert totals("davis2017", "train") == (60, 4209, 144)
    assert totals("davis2017", "val") == (30, 1999, 61)
    assert totals("davis2016", "train")[:2] == (30, 2079)
    assert totals("davis2016", "val")[:2] == (20, 1376)
    assert totals("segtrackv2", "all") == (14, 976, 24)
    fbms = load_manifest("fbms59")
    assert [len(fbms.sequences(s)) for s in ("train", "test")] == [29, 30]
    assert [sum(s.frames for s in fbms.sequences(sp)) for sp in ("train", "test")] == [6554, 7306]
    assert [sum(len(s.annotated) for s in fbms.sequences(sp)) for sp in ("train", "test")] == [353, 367]
    assert fbms.aliases["bear1"] == "bear01" and fbms.sequence("cats4").name == "cats04"


def test_davis2016_is_the_2016_subset_of_davis2017() -> None:
    d17, d16 = load_manifest("davis2017"), load_manifest("davis2016")
    for split in ("train", "val"):
        frames17 = {s.name: s.frames for s in d17.sequences(split)}
        for s in d16.sequences(split):
            assert frames17[s.name] == s.frames


def test_davis_frame_counts_match_the_official_db_info() -> None:
    if not DB_INFO.is_file():
        pytest.skip(f"official DAVIS table not found at {DB_INFO} (only in the project's shared checkout)")
    table = {s["name"]: s for s in yaml.safe_load(DB_INFO.read_text())["sequences"]}
    for name in ("davis2017", "davis2016"):
        m = load_manifest(name)
        for split, seqs in m.splits.items():
            for s in seqs:
                row = table[s.name]
                assert row["num_frames"] == s.frames, s.name
                assert row["set"] == split, s.name
                if name == "davis2016":
                    assert row["year"] == 2016, s.name


def test_unverified_facts_stay_marked() -> None:
    assert any("object counts" in u for u in load_manifest("davis2017").unverified)
    assert any("layout" in u for u in load_manifest("jumpcut").unverified)
    assert "UNVERIFIED" in load_manifest("jumpcut").layout
    assert load_manifest("davis2016").archives[0].checksum == ("md5", "0cb3cf9c5617209fa3cc4794e52a2ffa")
    assert load_manifest("davis2017").archives[0].size == 832766765


def _minimal(**over):
    d = {"name": "x", "title": "X", "homepage": "http://h", "licence": {"terms": "t", "url": "http://l"},
         "layout": "l", "mask_encoding": "m", "splits": {"all": [{"name": "a", "frames": 3}]},
         "archives": [{"url": "http://h/x.zip"}]}
    d.update(over)
    return d


def test_validator_names_the_file_and_field(tmp_path: Path) -> None:
    p = tmp_path / "x.yaml"
    assert parse_manifest(_minimal(), path=p).archives[0].filename == "x.zip"
    with pytest.raises(ManifestError, match=r"x\.yaml: archives\[0\]\.sha256 must be 64 hex digits, got 'abc'"):
        parse_manifest(_minimal(archives=[{"url": "http://h/x.zip", "sha256": "abc"}]), path=p)
    with pytest.raises(ManifestError, match=r"x\.yaml: splits\.all\[0\]\.frames must be a non-negative integer, got 'many'"):
        parse_manifest(_minimal(splits={"all": [{"name": "a", "frames": "many"}]}), path=p)
    with pytest.raises(ManifestError, match=r"x\.yaml: missing field 'layout'"):
        parse_manifest({k: v for k, v in _minimal().items() if k != "layout"}, path=p)
    with pytest.raises(ManifestError, match=r"x\.yaml: sequence 'a' is in both splits"):
        parse_manifest(_minimal(splits={"train": ["a"], "val": ["a"]}), path=p)
    with pytest.raises(ManifestError, match=r"annotated has index 5 but the sequence has 3 frames"):
        parse_manifest(_minimal(splits={"all": [{"name": "a", "frames": 3, "annotated": [0, 5]}]}), path=p)
    with pytest.raises(ManifestError, match=r"nope\.yaml: manifest not found"):
        load_manifest("nope")
