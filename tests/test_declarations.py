"""One declaration per concept: every metric (bloatguard.metrics) and every fix kind
(bloatguard.fix.kinds) is declared once, and everything that lists them derives from there."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

RULES = Path(__file__).resolve().parent.parent / "rules"


# --- metrics -------------------------------------------------------------------------------------

def test_every_budgeted_metric_has_its_config_keys():
    from bloatguard.config import BUDGET_KEYS
    from bloatguard.metrics import METRICS

    expected = {f"{prefix}-{m.stem}{suffix}" for m in METRICS if m.stem
                for prefix, suffix in (("max", ""), ("max", "-increase"), ("min", "-increase"),
                                       ("max", "-drift"))}
    assert set(BUDGET_KEYS) == expected
    for key, spec in BUDGET_KEYS.items():
        assert spec.metric in {m.key for m in METRICS}, key


def test_every_metric_reaches_json_text_and_markdown():
    from bloatguard.facts import ModelFacts
    from bloatguard.metrics import METRICS
    from bloatguard.report.markdown import render as markdown
    from bloatguard.report.text import model_table
    from bloatguard.result import ModelResult

    facts = ModelFacts("m.onnx", "onnx", 1000)
    facts.measured.update({m.key: 7 for m in METRICS if m.derive is None})
    assert list(facts.metrics()) == [key for m in METRICS
                                     for key in ([m.key, "params_by_dtype"] if m.key == "params" else [m.key])]
    table = model_table(ModelResult(path="m.onnx", facts=facts), {})
    for metric in METRICS:
        assert metric.label in table, metric.key
    header = markdown([ModelResult(path="m.onnx", facts=facts)]).splitlines()[2]
    for metric in METRICS:
        # Optional metrics (latency) get a column of their own when measured, as here.
        assert (metric.label in header) == (metric.column or metric.optional), metric.key


def test_budget_rules_take_everything_but_their_metric_from_the_registry():
    from bloatguard.budget import BudgetRule
    from bloatguard.metrics import BY_KEY
    from bloatguard.registry import all_rules

    budget_rules = [rule for rule in all_rules() if isinstance(rule, BudgetRule)]
    assert {rule.metric for rule in budget_rules} == {"file_size", "params", "macs", "latency_ms"}
    for rule in budget_rules:
        spec = BY_KEY[rule.metric]
        assert (rule.stem, rule.kind, rule.noun) == (spec.stem, spec.kind, spec.noun)


# --- fix kinds -----------------------------------------------------------------------------------

def _emitted_kinds() -> dict[str, set[str]]:
    """rule code -> fix kinds its module names in Fix("...") calls (read from the source)."""
    emitted: dict[str, set[str]] = {}
    for module in RULES.glob("*.py"):
        tree = ast.parse(module.read_text())
        code = next((node.value.value for node in ast.walk(tree) if isinstance(node, ast.Assign)
                     and any(getattr(t, "id", "") == "code" for t in node.targets)), None)
        for call in ast.walk(tree):
            if (isinstance(call, ast.Call) and getattr(call.func, "id", "") == "Fix" and call.args
                    and isinstance(call.args[0], ast.Constant)):
                emitted.setdefault(code, set()).add(call.args[0].value)
    return emitted


def test_every_kind_a_rule_names_is_declared_for_that_rule():
    from bloatguard.fix.kinds import BY_NAME

    emitted = _emitted_kinds()
    assert emitted, "no Fix(...) found: the test reads the wrong files"
    for code, kinds in emitted.items():
        for kind in kinds:
            assert kind in BY_NAME, (code, kind)
            assert code in BY_NAME[kind].answers, (code, kind)


def test_every_declared_transform_exists():
    import importlib

    from bloatguard.fix.kinds import KINDS

    for kind in KINDS:
        if kind.transform:
            module, _, name = kind.transform.partition(":")
            assert callable(getattr(importlib.import_module(module), name)), kind.name
        else:
            assert not kind.formats, f"{kind.name} claims formats but has no transform"


@pytest.mark.parametrize("safe", [True, False])
def test_a_hint_and_the_fix_plan_agree_on_safety(safe):
    """What `check` prints (`bloatguard fix` vs `--unsafe-fixes`) is what `fix` will do: a safe
    hint yields a step plain `fix` applies, an unsafe hint one that needs --unsafe-fixes."""
    from bloatguard.fix import suggestion
    from bloatguard.fix.candidates import plan
    from bloatguard.fix.kinds import KINDS
    from bloatguard.rule import Finding, Fix, Severity

    for kind in KINDS:
        if "onnx" not in kind.formats or kind.safety == ("unsafe" if safe else "safe"):
            continue  # no transform, or no rule hints it with this safety
        finding = Finding(kind.answers[0], "rule", Severity.WARNING, "m", fix=Fix(kind.name, safe))
        command = suggestion(kind.name, safe, "onnx", "m.onnx")
        plain = plan([finding], "onnx", unsafe=False, only=None)
        everything = plan([finding], "onnx", unsafe=True, only=None)
        if "--unsafe-fixes" in command:
            assert everything.unsafe, kind.name
            assert any("--unsafe-fixes" in note for note in plain.notes), kind.name
            # ... and nothing of it is offered as safe: `fix --dry-run` must not list a safe
            # row for a hint `check` called unsafe (prune-channels once did).
            assert not plain.safe and not everything.safe, kind.name
        else:
            assert plain.safe, kind.name
            assert not any("is an unsafe fix" in note for note in plain.notes), kind.name


def test_exactly_zero_channels_are_a_safe_hint(tmp_path):
    """BG106 once offered prune-channels as unsafe while `fix` applied it as a safe step."""
    import numpy as np
    from onnx import helper

    from bloatguard.config import Config
    from bloatguard.engine import apply_rules, measure
    from bloatguard.registry import find_rule
    from bloatguard.result import ModelResult

    import factories

    weight = np.random.default_rng(0).standard_normal((32, 16, 3, 3)).astype(np.float32)
    weight[2:6] = 0
    path = factories.build([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])],
                           [factories.info("x", [1, 16, 8, 8])], [factories.info("y", [1, 32, 8, 8])],
                           [factories.init("w", weight)], tmp_path / "conv.onnx")
    result = ModelResult(path=str(path), facts=measure(path, Config()))
    apply_rules(result, path, Config(), [find_rule("BG106")])
    [channels] = [f for f in result.findings if f.fix and f.fix.kind == "prune-channels"]
    assert channels.fix.safe is True
