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


def test_a_plugin_cannot_take_over_a_builtin_code(tmp_path):
    _install_plugin(tmp_path, "[bloatguard.rules]\nacme = acme_rules\n")
    module = tmp_path / "acme_rules.py"
    module.write_text(module.read_text().replace('"ACME001"', '"BG002"'))
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "bloatguard", "rules"], capture_output=True,
                          text=True, env=env)
    assert done.returncode == 2
    assert "BG002 is registered twice" in done.stderr and "acme_rules" in done.stderr


def test_the_readme_rule_table_matches_the_registry():
    """Code, name and default severity of every rule, in the README's table and its options
    paragraph, as the registry declares them."""
    import re
    from pathlib import Path

    from bloatguard.registry import all_rules

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    rows = re.findall(r"^\| (BG\d{3}) \| ([a-z-]+) \| (error|warning|info) \|", readme, re.M)
    assert rows == [(rule.code, rule.name, rule.default_severity.value) for rule in all_rules()]
    options = readme.split("Rule options (under")[1].split("\n\n")[0]
    for rule in all_rules():
        for option in rule.options:
            assert re.search(rf"`{rule.name}`: [^;]*`{option}`", options), (rule.name, option)
