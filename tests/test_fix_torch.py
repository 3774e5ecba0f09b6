"""Magnitude pruning of PyTorch state dicts: only with --unsafe-fixes, only after the static
pickle scan passed, loaded only with torch.load(weights_only=True), verified on the weights."""

from __future__ import annotations

import hashlib
import json
import pickle
import re
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

REPO = Path(__file__).resolve().parent.parent


def state_dict(path: Path, *, prunable: bool) -> Path:
    """A 2-layer MLP's state dict. With `prunable`, 80 % of each weight is tiny noise (what a
    sparsity-regularised training leaves), so pruning it keeps the weights' direction."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(128, 256), torch.nn.ReLU(), torch.nn.Linear(256, 64))
    if prunable:
        with torch.no_grad():
            for layer in (net[0], net[2]):
                mask = torch.rand_like(layer.weight) < 0.8
                layer.weight[mask] *= 1e-4
    torch.save(net.state_dict(), path)
    return path


def fix(run_cli, *args):
    code, out, err = run_cli("fix", *args, "--output-format", "json")
    return code, json.loads(out) if out.strip() else None, err


def test_pruning_needs_the_flag(run_cli, tmp_path):
    path = state_dict(tmp_path / "mlp.pt", prunable=True)
    code, report, _ = fix(run_cli, path)
    [model] = report["models"]
    assert code == 0 and model["status"] == "clean" and "--unsafe-fixes" in model["notes"][0]


def test_prunable_state_dict_is_pruned_stored_sparse_and_verified(run_cli, tmp_path):
    path = state_dict(tmp_path / "mlp.pt", prunable=True)
    before = torch.load(path, map_location="cpu", weights_only=True)
    size = path.stat().st_size
    code, report, err = fix(run_cli, path, "--unsafe-fixes", "--prune-sparsity", "0.8")
    assert code == 0, err
    [model] = report["models"]
    [candidate] = model["candidates"]
    assert model["status"] == "fixed" and candidate["verdict"] == "winner"
    assert candidate["fidelity"]["min_cosine"] > 0.999 and candidate["fidelity"]["sparse"] == ["0.weight", "2.weight"]
    assert candidate["latency"] is None  # no graph to time
    assert "to_dense()" in candidate["interface"]
    assert path.stat().st_size < 0.75 * size
    after = torch.load(path, map_location="cpu", weights_only=True)
    assert list(after) == list(before)
    dense = after["0.weight"].to_dense()
    assert dense.shape == before["0.weight"].shape
    assert abs(float((dense == 0).float().mean()) - 0.8) < 0.01
    assert torch.equal(after["0.bias"], before["0.bias"])  # biases are not pruned
    net = torch.nn.Sequential(torch.nn.Linear(128, 256), torch.nn.ReLU(), torch.nn.Linear(256, 64))
    net.load_state_dict({k: v.to_dense() if v.layout != torch.strided else v for k, v in after.items()})


def test_pruning_that_loses_the_weights_is_rejected(run_cli, tmp_path):
    path = state_dict(tmp_path / "mlp.pt", prunable=False)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    code, report, _ = fix(run_cli, path, "--unsafe-fixes", "--prune-sparsity", "0.8")
    [candidate] = report["models"][0]["candidates"]
    assert code == 0 and candidate["verdict"] == "rejected"
    assert candidate["reasons"][0].startswith("weight cosine similarity 0.")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest


class Payload:
    """Creates a canary file when unpickled, in whatever process does it (a print in a child
    would go where no test sees it)."""

    def __init__(self, canary: Path) -> None:
        self.canary = canary

    def __reduce__(self):
        return (open, (str(self.canary), "w"))


def test_an_unsafe_pickle_is_never_loaded(run_cli, tmp_path):
    path = tmp_path / "evil.pt"
    canary = tmp_path / "canary"
    path.write_bytes(pickle.dumps({"weight": Payload(canary)}))
    code, out, err = run_cli("fix", path, "--unsafe-fixes")
    assert code == 2 and "unsafe pickle (BG900)" in err
    assert not canary.exists()  # the payload never ran, in this process or any child


def test_the_only_torch_load_is_weights_only_with_mmap():
    calls = [(source.relative_to(REPO), match.group(0))
             for source in (REPO / "bloatguard").rglob("*.py")
             for match in re.finditer(r"torch\.load\([^)]*\)", source.read_text())]
    assert calls == [(Path("bloatguard/fix/transforms_torch.py"),
                      'torch.load(path, map_location="cpu", weights_only=True, mmap=True)')]
