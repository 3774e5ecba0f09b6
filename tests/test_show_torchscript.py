"""`bloatguard show` on TorchScript archives (torch.jit.script and torch.jit.trace, saved with
.save): one row per module, rows that add up to what `check` reports, and to what torch itself
holds in the module's state dict."""

from __future__ import annotations

import json
import warnings

import pytest

torch = pytest.importorskip("torch")


class Net(torch.nn.Module):
    """A conv, a BatchNorm (buffers: running stats and an int64 counter) and an MLP head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3)
        self.bn = torch.nn.BatchNorm2d(8)
        self.head = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))

    def forward(self, x):
        return self.head(self.bn(self.conv(x)).mean((2, 3)))


def save(tmp_path, how: str, name: str):
    torch.manual_seed(0)
    net = Net().eval()
    path = tmp_path / name
    with warnings.catch_warnings():  # torch.jit's deprecation notices
        warnings.simplefilter("ignore")
        if how == "script":
            torch.jit.script(net).save(str(path))
        else:
            torch.jit.trace(net, torch.ones(1, 3, 8, 8)).save(str(path))
    return net, path


def show_json(run_cli, path, *args):
    code, out, err = run_cli("show", path, "--output-format", "json", *args)
    assert code == 0, err
    return json.loads(out)


def check_model(run_cli, path):
    code, out, err = run_cli("check", path, "--no-latency", "--no-cache", "--output-format", "json")
    assert code == 0, err
    return json.loads(out)["models"][0]


def by_module(net) -> dict[str, int]:
    """Elements per module of the state dict, as torch counts them."""
    counts: dict[str, int] = {}
    for key, tensor in net.state_dict().items():
        module = key.rpartition(".")[0]
        counts[module] = counts.get(module, 0) + tensor.numel()
    return counts


@pytest.mark.parametrize("how, name", [("script", "net.jit"), ("trace", "traced.pt")])
def test_torchscript_rows_add_up_to_check(tmp_path, monkeypatch, run_cli, how, name):
    monkeypatch.chdir(tmp_path)
    net, _ = save(tmp_path, how, name)
    document = show_json(run_cli, name)
    model = check_model(run_cli, name)
    assert document["format"] == model["format"] == "torchscript"
    metrics = model["metrics"]
    rows = document["rows"]
    assert metrics["params"] == document["totals"]["params"] == sum(row["params"] for row in rows)
    assert metrics["weight_bytes"] == document["totals"]["weight_bytes"] == sum(
        row["weight_bytes"] for row in rows)
    # The same numbers torch gives: parameters and buffers of every module, once each.
    state = net.state_dict()
    assert metrics["params"] == sum(t.numel() for t in state.values())
    assert metrics["weight_bytes"] == sum(t.numel() * t.element_size() for t in state.values())
    assert {row["name"]: row["params"] for row in rows} == by_module(net) == {
        "conv": 8 * 3 * 9 + 8, "bn": 4 * 8 + 1, "head.0": 8 * 16 + 16, "head.2": 16 * 2 + 2}
    listed = sorted(weight["name"] for row in rows for weight in row["weights"])
    assert listed == sorted(state)
    # TorchScript code is not analysed: no MACs, and the report says why rather than showing 0.
    assert document["totals"]["macs"] is None and metrics["macs"] is None
    assert any("TorchScript" in note for note in document["notes"])


def test_torchscript_text_and_grouping(tmp_path, monkeypatch, run_cli):
    monkeypatch.chdir(tmp_path)
    net, _ = save(tmp_path, "script", "net.jit")
    total = sum(t.numel() for t in net.state_dict().values())
    code, text, _ = run_cli("show", "net.jit")
    assert code == 0
    assert text.startswith("net.jit (torchscript)\n")
    assert f"total (4 rows): {total} params" in text
    by_dtype = show_json(run_cli, "net.jit", "--by", "dtype")
    assert {row["name"]: row["params"] for row in by_dtype["rows"]} == {"float32": total - 1, "int64": 1}
    top = show_json(run_cli, "net.jit", "--top", "1", "--sort", "params")
    assert [row["name"] for row in top["rows"]] == ["conv"] and top["rows_total"] == 4


class Tied(torch.nn.Module):
    """An output projection that shares the embedding's weight: one tensor in the archive."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(10, 4)
        self.out = torch.nn.Linear(4, 10, bias=False)
        self.out.weight = self.embed.weight

    def forward(self, x):
        return self.out(self.embed(x))


def test_a_tied_weight_is_one_row_counted_once(tmp_path, monkeypatch, run_cli):
    monkeypatch.chdir(tmp_path)
    net = Tied()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(net).save(str(tmp_path / "tied.jit"))
    document = show_json(run_cli, "tied.jit")
    metrics = check_model(run_cli, "tied.jit")["metrics"]
    stored = sum(p.numel() for p in net.parameters())  # torch yields a shared parameter once
    assert stored == 40
    assert metrics["params"] == document["totals"]["params"] == stored
    assert sum(row["params"] for row in document["rows"]) == stored
    assert metrics["weight_bytes"] == sum(row["weight_bytes"] for row in document["rows"]) == 4 * stored
