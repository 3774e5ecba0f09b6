import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(autouse=True)
def user_cache(tmp_path_factory, monkeypatch):
    """A private XDG cache per test: bloatguard's signing key (bloatguard.secret) goes there,
    never into the real home directory, and no test sees another's key."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))


@pytest.fixture
def debug_mode(monkeypatch):
    """BLOATGUARD_DEBUG=1: a bug in a reader or a rule raises instead of becoming an "internal
    error" fact or a note, so tests see it (opt in: some tests check that degradation)."""
    monkeypatch.setenv("BLOATGUARD_DEBUG", "1")


@pytest.fixture
def run_cli(capsys):
    """Run the real CLI entry point in-process; returns (exit code, stdout, stderr)."""
    from bloatguard.cli import main

    def run(*args: str):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:  # argparse's usage errors
            code = exc.code
        out, err = capsys.readouterr()
        return code, out, err

    return run
