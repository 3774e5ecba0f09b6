"""The import graph keeps its two rules (tools/import_graph.py, run by CI): no cycles, counting
imports inside functions, and no rule that imports a reader, the ONNX graph module or a
runtime."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tools" / "import_graph.py"


def run(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), "--check", "--root", str(root)],
                          capture_output=True, text=True, timeout=120)


def test_this_checkout_has_no_cycle_and_no_rule_importing_a_reader():
    done = run(ROOT)
    assert done.returncode == 0, done.stdout
    assert done.stdout.startswith("0 import cycle(s), 0 forbidden rule import(s)")


def test_the_checker_sees_a_cycle_through_a_function_local_import_and_a_rule_reading_onnx(tmp_path):
    (tmp_path / "bloatguard").mkdir()
    (tmp_path / "rules").mkdir()
    (tmp_path / "bloatguard" / "__init__.py").write_text("")
    (tmp_path / "bloatguard" / "a.py").write_text("from bloatguard import b\n")
    (tmp_path / "bloatguard" / "b.py").write_text("def f():\n    from bloatguard.a import x\n")
    (tmp_path / "rules" / "__init__.py").write_text("")
    (tmp_path / "rules" / "r.py").write_text("def check():\n    from onnx import numpy_helper\n")
    # bloatguard.graph answers questions about ONNX protos: rules read bloatguard.opgraph.
    (tmp_path / "rules" / "g.py").write_text("from bloatguard.graph import node_label\n")
    (tmp_path / "bloatguard" / "graph.py").write_text("")
    done = run(tmp_path)
    assert done.returncode == 1
    assert "cycle: bloatguard.a <-> bloatguard.b" in done.stdout
    assert "bloatguard.rules.r imports onnx.numpy_helper" in done.stdout
    assert "bloatguard.rules.g imports bloatguard.graph" in done.stdout
