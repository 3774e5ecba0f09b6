"""`bloatguard init` writes a config that loads and passes today; markdown renders the PR table."""

from __future__ import annotations

from pathlib import Path

import factories
from gitrepo import Repo

REPO = Path(__file__).resolve().parent.parent


def test_init_appends_to_pyproject_and_passes_today(tmp_path, run_cli, monkeypatch):
    repo = Repo(tmp_path / "p")
    original = '[project]\nname = "x"\n\n[tool.ruff]\nline-length = 100\n'
    repo.write("pyproject.toml", original)
    factories.mlp(repo.root / "models" / "m.onnx", sizes=(16, 32, 4))
    monkeypatch.chdir(repo.root)
    code, out, _ = run_cli("init", "models", "--headroom", "10%", "--growth", "3%")
    assert code == 0 and "pyproject.toml" in out
    text = (repo.root / "pyproject.toml").read_text()
    assert text.startswith(original)  # nothing clobbered
    assert '[tool.bloatguard.budgets."models/m.onnx"]' in text
    assert 'max-params = 744' in text  # 676 params + 10 %, rounded up to 2 significant digits
    assert 'max-params-increase = "3%"' in text
    assert run_cli("check", "models")[0] == 0
    # Second run refuses rather than overwriting.
    code, _, err = run_cli("init", "models")
    assert code == 2 and "exists already" in err
    assert (repo.root / "pyproject.toml").read_text() == text


def test_init_without_pyproject_writes_bloatguard_toml(tmp_path, run_cli, monkeypatch):
    repo = Repo(tmp_path / "p")
    factories.mlp(repo.root / "m.onnx", sizes=(64, 256))
    monkeypatch.chdir(repo.root)
    assert run_cli("init")[0] == 0
    text = (repo.root / "bloatguard.toml").read_text()
    assert '[budgets."m.onnx"]' in text and 'max-params = "19K"' in text
    factories.mlp(repo.root / "m.onnx", sizes=(64, 300))  # beyond the 10 % headroom
    code, out, _ = run_cli("check")
    assert code == 1 and "BG002" in out


def test_markdown_report_shows_base_to_head(tmp_path, run_cli, monkeypatch):
    repo = Repo(tmp_path / "p")
    repo.write("bloatguard.toml", '[budgets."**"]\nmax-params-increase = "5%"\n')
    factories.mlp(repo.root / "models" / "a.onnx", sizes=(16, 32, 4))
    factories.mlp(repo.root / "models" / "b|c.onnx", sizes=(4, 4))
    repo.commit()
    factories.mlp(repo.root / "models" / "a.onnx", sizes=(16, 64, 4))
    monkeypatch.chdir(repo.root)
    code, out, _ = run_cli("check", "models", "--base", "HEAD", "--output-format", "markdown",
                           "--no-latency")
    assert code == 1
    assert out.startswith("### bloatguard: 1 error(s), 0 warning(s) in 2 model(s)")
    assert "| ❌ | `models/a.onnx` | modified |" in out
    assert "676 → **1.35K** (+99.4%)" in out
    assert "`models/b\\|c.onnx`" in out  # pipes escaped so the table survives
    assert "#### Findings" in out and "**BG002** param-count" in out


def test_init_keeps_the_permissions_of_the_file_it_edits(tmp_path, run_cli, monkeypatch):
    # It replaces pyproject.toml atomically; the replacement must not come out owner-only.
    repo = Repo(tmp_path / "p")
    repo.write("pyproject.toml", '[project]\nname = "x"\n')
    (repo.root / "pyproject.toml").chmod(0o664)
    factories.mlp(repo.root / "m.onnx", sizes=(8, 8))
    monkeypatch.chdir(repo.root)
    assert run_cli("init")[0] == 0
    assert (repo.root / "pyproject.toml").stat().st_mode & 0o777 == 0o664
    assert [p.name for p in repo.root.iterdir() if "bloatguard-tmp" in p.name] == []


def test_init_writes_nothing_that_would_not_load(tmp_path, run_cli, monkeypatch):
    # An absolute growth cannot suit sizes and counts at once: refused, and no file is left.
    repo = Repo(tmp_path / "p")
    factories.mlp(repo.root / "m.onnx", sizes=(8, 8))
    monkeypatch.chdir(repo.root)
    code, _, err = run_cli("init", "--growth", "5M")
    assert code == 2 and "max-file-size-increase" in err
    assert not (repo.root / "bloatguard.toml").exists()


def test_init_names_a_model_outside_the_config_directory(tmp_path, run_cli, monkeypatch):
    repo = Repo(tmp_path / "p")
    factories.mlp(tmp_path / "elsewhere" / "m.onnx", sizes=(8, 8))
    monkeypatch.chdir(repo.root)
    code, _, err = run_cli("init", str(tmp_path / "elsewhere"), "--config-file", "bloatguard.toml")
    assert code == 2 and "outside" in err and "internal error" not in err
    assert not (repo.root / "bloatguard.toml").exists()
