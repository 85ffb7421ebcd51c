"""Resolving and loading RAFT weights: explicit path, environment variable, torchvision's
cache, offline refusal before any video is read, and files for the wrong model."""

from __future__ import annotations

import socket
import time

import pytest
import torch
from torchvision.models.optical_flow import raft_small

from trackprep.flow import FlowSetupError, make_estimator
from trackprep.flow.evaluate import evaluate_pair
from trackprep.io import weights as W


@pytest.fixture(scope="module")
def small_file(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "raft_small_random.pth"
    torch.save(raft_small(weights=None).state_dict(), path)
    return path


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No env weights, an empty torch hub cache, downloads disabled."""
    monkeypatch.delenv(W.ENV_WEIGHTS, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setenv(W.ENV_OFFLINE, "1")
    return tmp_path


def test_names_of_the_pretrained_files():
    assert W.weights_filename("large") == "raft_large_C_T_SKHT_V2-ff5fadd5.pth"
    assert W.weights_url("large") == "https://download.pytorch.org/models/raft_large_C_T_SKHT_V2-ff5fadd5.pth"
    assert W.weights_filename("small") == "raft_small_C_T_V2-01064c6d.pth"


def test_missing_weights_offline_stop_check_ready_with_file_url_and_both_remedies(offline):
    est = make_estimator("raft", device="cpu")
    with pytest.raises(FlowSetupError) as info:
        est.check_ready()
    msg = str(info.value)
    assert "raft_large_C_T_SKHT_V2-ff5fadd5.pth" in msg
    assert "https://download.pytorch.org/models/raft_large_C_T_SKHT_V2-ff5fadd5.pth" in msg
    assert "--raft-weights" in msg and W.ENV_WEIGHTS in msg  # remedy 2
    assert str(offline / "torch_home" / "hub" / "checkpoints") in msg  # remedy 1: where the cache is


def test_missing_weights_stop_before_any_video_is_read(offline, tmp_path):
    # The frames and ground truth do not exist: had they been read first, the error would name them.
    with pytest.raises(FlowSetupError, match="raft_large_C_T_SKHT_V2"):
        evaluate_pair(tmp_path / "nope1.png", tmp_path / "nope2.png", gt=tmp_path / "nope.flo",
                      estimator=make_estimator("raft", device="cpu"))


def test_unreachable_download_host_is_detected_quickly(offline, monkeypatch):
    monkeypatch.delenv(W.ENV_OFFLINE)
    monkeypatch.setattr(W, "host_reachable", lambda host, *a, **k: False)
    with pytest.raises(W.RaftWeightsError, match="download.pytorch.org is unreachable"):
        W.resolve_raft_weights("small")


def test_host_probe_returns_false_fast_for_a_closed_port():
    with socket.socket() as s:  # bind then close: nothing listens on this port
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.monotonic()
    assert W.host_reachable("127.0.0.1", port, timeout=2.0) is False
    assert time.monotonic() - t0 < 2.5


def test_resolution_order_explicit_env_cache(offline, small_file, monkeypatch, tmp_path):
    cached = W.cache_path("small")
    assert cached == offline / "torch_home" / "hub" / "checkpoints" / "raft_small_C_T_V2-01064c6d.pth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(small_file.read_bytes())
    assert W.resolve_raft_weights("small") == W.ResolvedWeights(cached, "cache")
    monkeypatch.setenv(W.ENV_WEIGHTS, str(small_file))
    assert W.resolve_raft_weights("small") == W.ResolvedWeights(small_file, "env")
    other = tmp_path / "other.pth"
    other.write_bytes(small_file.read_bytes())
    assert W.resolve_raft_weights("small", explicit=other) == W.ResolvedWeights(other, "explicit")
    est = make_estimator("raft", raft_model="small", device="cpu")
    est.check_ready()
    assert est.weights_source == "env" and est.weights_path == small_file


def test_explicit_or_env_path_that_does_not_exist(offline, monkeypatch, tmp_path):
    with pytest.raises(W.RaftWeightsError, match=r"gone\.pth.*--raft-weights.*does not exist"):
        W.resolve_raft_weights("large", explicit=tmp_path / "gone.pth")
    monkeypatch.setenv(W.ENV_WEIGHTS, str(tmp_path / "also_gone.pth"))
    with pytest.raises(W.RaftWeightsError, match=r"also_gone\.pth.*TRACKPREP_RAFT_WEIGHTS"):
        W.resolve_raft_weights("large")


def test_weights_for_the_other_model_are_refused_plainly(small_file):
    est = make_estimator("raft", raft_model="large", raft_weights=small_file, device="cpu")
    with pytest.raises(FlowSetupError) as info:
        est.check_ready()
    msg = str(info.value)
    assert "does not fit raft_large" in msg and "holds raft_small weights" in msg
    assert str(small_file) in msg and "raft_large_C_T_SKHT_V2-ff5fadd5.pth" in msg
    assert "Traceback" not in msg and len(msg) < 1000


def test_files_that_are_not_raft_state_dicts(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a pickle")
    with pytest.raises(W.RaftWeightsError, match=r"junk\.pth.*could not be read"):
        W.load_raft("small", junk)
    other = tmp_path / "resnet_ish.pth"
    torch.save({"conv.weight": torch.zeros(3, 3)}, other)
    with pytest.raises(W.RaftWeightsError, match=r"does not fit raft_small: \d+ parameters missing.*1 unexpected"):
        W.load_raft("small", other)
    tensor_only = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), tensor_only)
    with pytest.raises(W.RaftWeightsError, match="holds a Tensor, not a state dict"):
        W.load_raft("small", tensor_only)


def test_wrapped_and_data_parallel_checkpoints_load(small_file, tmp_path):
    state = torch.load(small_file, weights_only=True)
    wrapped = tmp_path / "ckpt.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "step": torch.tensor(3)}, wrapped)
    net = W.load_raft("small", wrapped)
    assert torch.equal(net.state_dict()["feature_encoder.convnormrelu.0.weight"], state["feature_encoder.convnormrelu.0.weight"])
    assert not net.training


def test_annotate_without_weights_stops_before_opening_any_dataset(offline, tmp_path):
    # The dataset root does not exist: had it been opened (or a video read) first, the error
    # would name the root. Nothing is written either.
    from typer.testing import CliRunner

    from trackprep.cli import app

    out = tmp_path / "a.zarr"
    result = CliRunner().invoke(
        app, ["annotate", "--dataset", "davis2017", "--root", str(tmp_path / "no-such-root"), "--out", str(out)]
    )
    assert result.exit_code != 0
    assert "raft_large_C_T_SKHT_V2-ff5fadd5.pth" in result.output and "--raft-weights" in result.output
    assert "no-such-root" not in result.output and not out.exists()
