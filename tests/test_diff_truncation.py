"""The layer diff of `check --base` when many layers changed: the text report lists the top 5 and
counts the rest, the markdown report the top 15, and the JSON report keeps every row (README,
"Why did it grow")."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from onnx import helper

import factories
from gitrepo import Repo

LAYERS = 20


def fanout(path, grown: int = 0):
    """x[1,8] -> LAYERS independent MatMuls layer00..layer19 (8x4 weights each). The first
    `grown` layers widen: layer i gains i+1 columns, so every change has its own size and the
    largest-first order is known (layer i adds 8*(i+1) params)."""
    rng = np.random.default_rng(0)
    nodes, inits, outputs = [], [], []
    for i in range(LAYERS):
        width = 4 + (i + 1 if i < grown else 0)
        inits.append(factories.init(f"w{i:02d}", rng.standard_normal((8, width)).astype(np.float32)))
        nodes.append(helper.make_node("MatMul", ["x", f"w{i:02d}"], [f"y{i:02d}"], name=f"layer{i:02d}"))
        outputs.append(factories.info(f"y{i:02d}", [1, width]))
    return factories.build(nodes, [factories.info("x", [1, 8])], outputs, inits, path)


@pytest.fixture
def repo(tmp_path, monkeypatch):
    repo = Repo(tmp_path / "repo")
    fanout(repo.root / "models" / "m.onnx")
    repo.commit("base")
    monkeypatch.chdir(repo.root)
    return repo


def grow(repo: Repo, layers: int) -> list[str]:
    """Widen the first `layers` layers in the working tree; their names, largest change first."""
    fanout(repo.root / "models" / "m.onnx", grown=layers)
    return [f"layer{i:02d}" for i in reversed(range(layers))]


def check(run_cli, output_format: str) -> str:
    code, out, err = run_cli("check", "models", "--no-latency", "--no-cache", "--base", "HEAD",
                             "--output-format", output_format)
    assert code == 0, err  # no budgets: the diff is information, not a finding
    return out


def text_rows(out: str) -> list[str]:
    """The layer names of the text report's change lines ("    ~ layer19 (MatMul) resized ...")."""
    return re.findall(r"^    ~ (layer\d\d) \(MatMul\) resized ", out, flags=re.M)


def markdown_rows(out: str) -> list[str]:
    return re.findall(r"^\| `(layer\d\d)` \| `MatMul` \| resized \|", out, flags=re.M)


def test_text_shows_the_top_five_and_counts_the_rest(repo, run_cli):
    order = grow(repo, LAYERS)
    out = check(run_cli, "text")
    assert "what changed: 20 layers changed" in out
    assert text_rows(out) == order[:5]
    assert "    … and 15 more (--output-format json lists all)\n" in out
    # The largest change is shown with its numbers; the ones left out are nowhere in the report.
    assert "~ layer19 (MatMul) resized float32[8, 4] → float32[8, 24]: +160 params" in out
    assert not any(name in out for name in order[5:])


def test_markdown_shows_the_top_fifteen_and_counts_the_rest(repo, run_cli):
    order = grow(repo, LAYERS)
    out = check(run_cli, "markdown")
    assert markdown_rows(out) == order[:15]
    assert "| … 5 more (JSON report lists all) | | | | | | | |" in out
    assert not any(f"`{name}`" in out for name in order[15:])
    # The truncated table is still a table: each row has the header's eight cells.
    table = [line for line in out.splitlines() if line.startswith(("| `layer", "| …"))]
    assert len(table) == 16
    assert all(line.count("|") == 9 for line in table), table


def test_json_keeps_every_row(repo, run_cli):
    order = grow(repo, LAYERS)
    model = json.loads(check(run_cli, "json"))["models"][0]
    assert [row["name"] for row in model["diff"]] == order
    assert [row["params_delta"] for row in model["diff"]] == [8 * (i + 1) for i in reversed(range(LAYERS))]
    assert sum(row["params_delta"] for row in model["diff"]) == (model["metrics"]["params"]
                                                                 - model["base"]["metrics"]["params"])


@pytest.mark.parametrize("changed, text_more, markdown_more", [
    (5, None, None),    # exactly the text's top: nothing left out
    (6, 1, None),
    (15, 10, None),     # exactly the markdown's top
    (16, 11, 1),
])
def test_the_count_of_rows_left_out_at_the_edges(repo, run_cli, changed, text_more, markdown_more):
    order = grow(repo, changed)
    text = check(run_cli, "text")
    assert text_rows(text) == order[:5]
    if text_more is None:
        assert "more (--output-format json lists all)" not in text
    else:
        assert f"    … and {text_more} more (--output-format json lists all)\n" in text
    markdown = check(run_cli, "markdown")
    assert markdown_rows(markdown) == order[:15]
    if markdown_more is None:
        assert "more (JSON report lists all)" not in markdown
    else:
        assert f"| … {markdown_more} more (JSON report lists all) |" in markdown
    assert len(json.loads(check(run_cli, "json"))["models"][0]["diff"]) == changed
