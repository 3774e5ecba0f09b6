"""`bloatguard history`: one point per first-parent commit that changed a model, renames
followed, each distinct version measured once; JSON, CSV, a Mermaid chart, PNG and SVG plots."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

import factories
from gitrepo import Repo


@pytest.fixture
def repo(tmp_path, monkeypatch):
    repo = build_history(tmp_path)
    monkeypatch.chdir(repo.root)
    return repo


def build_history(tmp_path) -> Repo:
    """models/a.onnx grows twice, is renamed to models/b.onnx, then reverted to its first
    version; an unrelated commit in between does not count."""
    repo = Repo(tmp_path / "repo")
    for width, message in ((8, "first"), (16, "wider"), (32, "wider again")):
        factories.mlp(repo.root / "models" / "a.onnx", sizes=(16, width, 4))
        repo.commit(message)
    repo.write("README.md", "docs\n")
    repo.commit("docs only")
    repo.git("mv", "models/a.onnx", "models/b.onnx")
    repo.commit("rename")
    factories.mlp(repo.root / "models" / "b.onnx", sizes=(16, 8, 4))
    repo.commit("back to the first width")
    return repo


def params(width: int) -> int:
    return factories.mlp_params((16, width, 4))


def test_points_follow_the_path_through_its_rename(repo, run_cli):
    code, out, _ = run_cli("history", "models/b.onnx", "--output-format", "json")
    assert code == 0
    document = json.loads(out)
    assert document["path"] == "models/b.onnx"
    points = document["points"]
    assert [p["subject"] for p in points] == ["first", "wider", "wider again", "rename",
                                              "back to the first width"]
    assert [p["metrics"]["params"] for p in points] == [params(8), params(16), params(32),
                                                        params(32), params(8)]
    assert [p["path"] for p in points] == ["models/a.onnx"] * 3 + ["models/b.onnx"] * 2
    assert all(len(p["sha"]) == 40 and p["date"][:4].isdigit() for p in points)


def test_each_distinct_version_is_measured_once(repo, run_cli):
    """The rename and the revert reuse the measurement of a blob already seen: three blobs,
    three cache entries of facts."""
    run_cli("history", "models/b.onnx", "--output-format", "json")
    cache = repo.root / ".git" / "bloatguard-cache"
    facts_entries = [p for p in cache.rglob("*.json")
                     if "tensors" in json.loads(json.loads(p.read_text())["payload"])]
    assert len(facts_entries) == 3


def test_text_and_csv(repo, run_cli):
    code, out, _ = run_cli("history", "models/b.onnx")
    grew = params(16) - params(8)
    assert f"+{grew} (+{grew / params(8) * 100:.1f}%)" in out
    assert "wider again" in out and "params at 5 commit(s)" in out
    code, out, _ = run_cli("history", "models/b.onnx", "--output-format", "csv")
    rows = out.strip().splitlines()
    assert rows[0].startswith("sha,date,subject,path,file_size,params")
    assert len(rows) == 6


def test_markdown_has_a_mermaid_chart(repo, run_cli):
    code, out, _ = run_cli("history", "models/b.onnx", "--output-format", "markdown", "--metric", "macs")
    assert "```mermaid\nxychart-beta" in out
    line = next(line for line in out.splitlines() if line.strip().startswith("line ["))
    assert line.strip() == "line [" + ", ".join(str(16 * w + w * 4) for w in (8, 16, 32, 32, 8)) + "]"


@pytest.mark.parametrize("suffix", [".png", ".svg"])
def test_plot_writes_a_valid_image(repo, run_cli, tmp_path, suffix):
    pytest.importorskip("matplotlib")
    target = tmp_path / f"chart{suffix}"
    code, _, err = run_cli("history", "models/b.onnx", "--plot", str(target))
    assert code == 0 and "wrote" in err
    data = target.read_bytes()
    if suffix == ".png":
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 5000
    else:
        assert ET.fromstring(data).tag.endswith("svg")


def test_a_file_no_commit_changed_is_a_clear_error(repo, run_cli):
    factories.mlp(repo.root / "models" / "new.onnx")
    code, _, err = run_cli("history", "models/new.onnx")
    assert code == 2 and "no commit changed this file" in err
