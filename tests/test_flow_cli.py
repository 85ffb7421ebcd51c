"""`trackprep eval-flow` on the real Middlebury pair, and its error path."""

from __future__ import annotations

import re
import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from trackprep.cli import flow_cmds
from trackprep.flow import FlowSetupError
from trackprep.io.flo import write_flo


@pytest.fixture
def app():
    # Only this module's commands, so the test does not depend on the other areas' CLI modules.
    app = typer.Typer()
    flow_cmds.register(app)

    @app.callback()
    def _root() -> None:
        pass

    return app


@pytest.fixture
def grove3(shared_data):
    return shared_data / "middlebury" / "Grove3"


def test_eval_flow_prints_aepe_and_outlier_shares(app, grove3):
    result = CliRunner().invoke(
        app, ["eval-flow", str(grove3 / "frame10_gray.png"), str(grove3 / "frame11_gray.png"),
              "--gt", str(grove3 / "flow10.flo"), "--flow", "dis"],
    )
    assert result.exit_code == 0, result.output
    aepe = float(re.search(r"AEPE: ([\d.]+) px", result.output).group(1))
    over1 = float(re.search(r"> 1 px: ([\d.]+) %", result.output).group(1))
    over3 = float(re.search(r"> 3 px: ([\d.]+) %", result.output).group(1))
    assert 0.3 < aepe < 1.2 and 0 < over3 < over1 < 100


def test_eval_flow_without_weights_offline_exits_with_the_remedies(app, grove3, monkeypatch, tmp_path):
    monkeypatch.delenv("TRACKPREP_RAFT_WEIGHTS", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("TRACKPREP_OFFLINE", "1")
    result = CliRunner().invoke(
        app, ["eval-flow", str(grove3 / "frame10_gray.png"), str(grove3 / "frame11_gray.png"),
              "--gt", str(grove3 / "flow10.flo")],
    )
    assert result.exit_code == 2
    assert "raft_large_C_T_SKHT_V2-ff5fadd5.pth" in result.output and "--raft-weights" in result.output


def test_eval_flow_refuses_the_oracle_and_mismatched_ground_truth(tmp_path, grove3):
    with pytest.raises(FlowSetupError, match="'oracle'"):
        flow_cmds.eval_flow("a.png", "b.png", gt="c.flo", flow="oracle")
    write_flo(tmp_path / "small.flo", np.zeros((10, 20, 2), np.float32))
    with pytest.raises(ValueError, match=r"small\.flo.*20x10.*640x480"):
        flow_cmds.eval_flow(grove3 / "frame10_gray.png", grove3 / "frame11_gray.png", gt=tmp_path / "small.flo", flow="dis")


def test_command_is_registered_in_the_trackprep_app():
    from trackprep.cli import app as trackprep_app

    names = {c.name for c in trackprep_app.registered_commands}
    assert "eval-flow" in names
