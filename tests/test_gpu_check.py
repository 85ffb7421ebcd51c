"""benchmarks/gpu_check.py: the CPU smoke run works, its JSON holds every field its table prints,
and a part that overruns its time limit is killed without losing what it measured."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from trackprep.pipeline.annotate import TIMED_PARTS

from conftest import REPO

SCRIPT = REPO / "benchmarks" / "gpu_check.py"


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gpu_check = load_script()


def parse_table(stdout: str) -> list[dict]:
    """Rows of the printed table, cut at the columns its dashed line marks."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("part "))
    dashes = lines[start + 1]
    spans, pos = [], 0
    for run in dashes.split("  "):
        spans.append((pos, pos + len(run)))
        pos += len(run) + 2
    rows = []
    for line in lines[start + 2:]:
        if not line.strip():
            break
        cells = [line[a:b].strip() for a, b in spans[:4]] + [line[spans[4][0]:].strip()]
        rows.append(dict(zip(("part", "name", "value", "unit", "note"), cells)))
    return rows


@pytest.fixture(scope="module")
def smoke(tmp_path_factory, shared_data):
    if not (shared_data / "davis2016" / "JPEGImages" / "480p" / "blackswan").is_dir():
        pytest.skip(f"DAVIS-2016 blackswan not found under {shared_data}")
    out = tmp_path_factory.mktemp("gpu_check") / "report.json"
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(SCRIPT), "--cpu-smoke", "--out", str(out),
                           "--data", str(shared_data / "davis2016")],
                          capture_output=True, text=True, timeout=240)
    return proc, json.loads(out.read_text()) if out.exists() else None, time.perf_counter() - t0


def test_cpu_smoke_runs_every_part_within_its_limits(smoke):
    proc, report, seconds = smoke
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert report["mode"] == "cpu-smoke" and list(report["parts"]) == ["machine", "raft", "annotate", "svd"]
    for name, part in report["parts"].items():
        assert part["status"] == "ok" and part["seconds"] <= part["limit_s"], (name, part["status"], part["log_tail"])
    assert report["seconds"] <= gpu_check.SMOKE_TOTAL


def test_the_json_has_every_field_the_table_prints(smoke):
    proc, report, _ = smoke
    printed = parse_table(proc.stdout)
    stored = [r for part in report["parts"].values() for r in part["rows"]]
    assert len(printed) == len(stored) > 30
    by_key = {(r["part"], r["name"]): r for r in stored}
    for row in printed:
        json_row = by_key[(row["part"], row["name"])]
        assert row["value"] == gpu_check.fmt(json_row["value"]), row
        assert row["unit"] == json_row["unit"] and row["note"] == json_row["note"], row
    for name, part in report["parts"].items():
        assert f"{name}: ok in {part['seconds']:.1f} s" in proc.stdout


def test_the_smoke_figures_are_real_measurements(smoke):
    _, report, _ = smoke
    rows = {(r["part"], r["name"]): r for p in report["parts"].values() for r in p["rows"]}
    value = lambda part, name: rows[(part, name)]["value"]  # noqa: E731
    assert value("machine", "torch") == torch.__version__
    for bs in (1, 4):
        assert value("raft", f"fp32 batch {bs}: throughput") > 0
        # No half precision on a CPU: the row is there, empty, with the reason.
        assert value("raft", f"bf16 batch {bs}: throughput") is None
        assert "CUDA only" in rows[("raft", f"fp16 batch {bs}: throughput")]["note"]
    stages = {s: value("annotate", f"{s} stage") for s in TIMED_PARTS}
    assert all(v > 0 for v in stages.values())
    assert value("annotate", "total of the stages") == pytest.approx(sum(stages.values()), abs=1e-5)
    assert value("annotate", "flow share") == pytest.approx(100 * stages["flow"] / sum(stages.values()), abs=1e-3)
    assert value("annotate", "tracks") > 0 and value("annotate", "peak host memory (RSS)") > 100
    assert value("svd", "training step 1 x 8 x 64x96") > 0
    assert value("svd", "trainable parameters") < value("svd", "UNet parameters")
    assert value("svd", "mixed precision") == "no" and value("svd", "gradient checkpointing") == "off"  # CPU defaults
    assert value("svd", "zero-shot tracking features, 8-frame clip") > 0
    assert "up_blocks.2.upsamplers.0" in rows[("svd", "zero-shot tracking features, 8-frame clip")]["note"]


def test_a_part_past_its_limit_is_killed_and_reported(tmp_path):
    # The svd part needs seconds just to import torch and diffusers: one second is too little.
    spec = gpu_check.specs(smoke=True, data=tmp_path, device="cpu")["svd"]
    t0 = time.perf_counter()
    result = gpu_check.run_part("svd", spec, limit=1.0, work=tmp_path)
    assert time.perf_counter() - t0 < 10
    assert result["status"] == "timed out"
    # Whatever it had planned by then is listed, empty, with the reason.
    assert all(r["value"] is None and "hit its 1 s limit" in r["note"] for r in result["rows"])


def test_rows_a_part_did_not_reach_are_kept_with_the_reason():
    plan = [{"part": "p", "name": n, "unit": "s"} for n in ("a", "b", "c")]
    measured = [{"part": "p", "name": "b", "value": 1.5, "unit": "s", "note": ""}]
    rows = gpu_check.complete_rows(plan, measured, why="not measured: the part hit its 9 s limit")
    assert [r["name"] for r in rows] == ["a", "b", "c"]
    assert [r["value"] for r in rows] == [None, 1.5, None]
    assert rows[0]["note"] == rows[2]["note"] == "not measured: the part hit its 9 s limit"


def test_records_cut_mid_line_by_a_kill_are_read_up_to_the_cut(tmp_path):
    path = tmp_path / "part.jsonl"
    path.write_text(json.dumps({"plan": [{"part": "p", "name": "a", "unit": ""}]}) + "\n"
                    + json.dumps({"row": {"part": "p", "name": "a", "value": 2, "unit": "", "note": ""}}) + "\n"
                    + '{"row": {"part": "p", "na')
    plan, rows = gpu_check.read_records(path)
    assert [p["name"] for p in plan] == ["a"] and [r["value"] for r in rows] == [2]
