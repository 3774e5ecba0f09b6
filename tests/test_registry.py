"""Rules from other packages, registered under the `bloatguard.rules` entry-point group."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap


def _install_plugin(site: "os.PathLike", entry_points: str) -> None:
    """A distribution as pip leaves it on sys.path: the module plus its .dist-info."""
    (site / "acme_rules.py").write_text(textwrap.dedent('''
        from bloatguard.rule import Rule

        class NoGelu(Rule):
            """Flags GELU."""
            code = "ACME001"
            name = "no-gelu"
            summary = "No GELU ops"

            def check(self, ctx):
                return iter(())
    '''))
    info = site / "acme_rules-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-rules\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(entry_points)


def _rules_listed(site) -> str:
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run([sys.executable, "-m", "bloatguard", "rules"], capture_output=True,
                          text=True, env=env, check=True).stdout


def test_a_plugin_rule_is_listed(tmp_path):
    _install_plugin(tmp_path, "[bloatguard.rules]\nacme = acme_rules\n")
    listed = _rules_listed(tmp_path)
    assert "ACME001" in listed and "no-gelu" in listed
    assert "BG002" in listed


def test_other_entry_point_groups_do_not_load_the_module(tmp_path):
    _install_plugin(tmp_path, "[console_scripts]\nacme = acme_rules:main\n")
    assert "ACME001" not in _rules_listed(tmp_path)
