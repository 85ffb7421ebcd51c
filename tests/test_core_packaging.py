"""Packaging (issue 2): the two console scripts, every command described in `--help`, the CI
script running exactly the README's test command, and the built-in self-check."""

from __future__ import annotations

import re
import subprocess
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

REPO = Path(__file__).resolve().parents[1]


def test_console_scripts_point_at_the_two_typer_apps():
    scripts = {ep.name: ep.value for ep in entry_points(group="console_scripts")}
    assert scripts.get("trackprep") == "trackprep.cli:main"
    assert scripts.get("track4gen") == "track4gen.cli:main"


@pytest.mark.parametrize("module", ["trackprep.cli", "track4gen.cli"])
def test_help_lists_every_command_with_a_one_line_description(module):
    import importlib

    app = importlib.import_module(module).app
    commands = typer.main.get_command(app).commands
    assert len(commands) >= 3
    result = CliRunner().invoke(app, ["--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    text = re.sub(r"\x1b\[[0-9;]*m", "", result.output)  # in case rich colours the output (FORCE_COLOR)
    for name, command in commands.items():
        short = command.get_short_help_str(limit=200)
        assert short and not short.endswith("..."), f"{module} {name}: no one-line description"
        assert re.search(rf"\b{re.escape(name)}\b\s+{re.escape(short[:30])}", text), (name, text)


def readme_test_command() -> str:
    """The first line of the code block after the README's `test-command` marker."""
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    at = lines.index("<!-- test-command -->")
    assert lines[at + 1].startswith("```"), "the marker must sit right above a code block"
    return lines[at + 2]


def test_ci_runs_exactly_the_readme_test_command():
    out = subprocess.run(["bash", str(REPO / ".ci" / "run"), "--print-command"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    cmd = readme_test_command()
    assert out.stdout.strip() == cmd
    # from nothing: a fresh virtual environment, an install with the test extra, then pytest
    assert cmd.startswith("python3 -m venv .venv") and "pip install -e '.[test]'" in cmd and "pytest" in cmd


def test_selfcheck_reproduces_ground_truth_on_a_small_clip():
    from trackprep.cli import app
    from trackprep.selfcheck import run_selfcheck

    r = run_selfcheck(num_frames=6, height=64, width=96, sample=2000)
    assert r.num_tracks >= 64 * 96 and 0.0 < r.foreground_share < 1.0
    assert r.median_error_px < 0.05 and r.p99_error_px < 0.5
    result = CliRunner().invoke(app, ["selfcheck", "--frames", "4", "--size", "48x64"])
    assert result.exit_code == 0, result.output
    assert re.search(r"median \d\.\d\de[-+]\d\d px", result.output)
    bad = CliRunner().invoke(app, ["selfcheck", "--size", "48by64"])
    assert bad.exit_code == 2 and "expected HxW" in bad.output
    bad = CliRunner().invoke(app, ["selfcheck", "--frames", "1"])
    assert bad.exit_code == 2 and "at least 2 frames" in bad.output
