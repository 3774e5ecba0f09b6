"""`bloatguard baseline`: adopt bloatguard on a repository that already breaks its budgets.

One `[[accept]]` waiver per current error finding, bounded at today's value (so the model may
not grow further), with a reason and an expiry, appended to the config. Nothing else in the
file changes, and the result is validated before it is written: `bloatguard check` right after
exits 0, and then holds the line.
"""

from __future__ import annotations

import datetime
from pathlib import Path

from bloatguard.errors import BloatguardError
from bloatguard.metrics import BY_KEY
from bloatguard.waivers import NEVER_WAIVED

DEFAULT_DAYS = 90


def run_baseline(paths: list[Path], *, config_path: Path | None, reason: str,
                 expires: datetime.date) -> tuple[Path, int]:
    """Write the waivers; returns (config file, number of waivers written)."""
    from bloatguard import engine
    from bloatguard.app import load_config
    from bloatguard.atomic import replace_file
    from bloatguard.config import loads

    paths = paths or [Path(".")]
    config = load_config(config_path, paths)
    if config.path is None:
        raise BloatguardError("no bloatguard config found: a baseline accepts budget findings, "
                              "so write budgets first (`bloatguard init`)")
    results = engine.check(paths, config, engine.Selection())
    entries = _entries(results, config)
    if not entries:
        raise BloatguardError(f"nothing to accept: no model under {', '.join(map(str, paths))} "
                              "has an error finding; nothing was written")
    prefix = "tool.bloatguard." if config.path.name == "pyproject.toml" else ""
    blocks = [_render(entry, prefix, reason, expires) for entry in entries]
    current = config.path.read_text(encoding="utf-8")
    separator = "" if current.endswith("\n\n") or not current else ("\n" if current.endswith("\n") else "\n\n")
    text = current + separator + "\n".join(blocks)
    loads(text, config.path)  # what we write must load: checked before writing it
    replace_file(config.path, text.encode("utf-8"))
    return config.path, len(entries)


def _entries(results, config) -> list[dict]:
    """One waiver per (model, code) with an error finding that may be waived, bounded at the
    model's current value of the metric the finding is about."""
    entries: dict[tuple[str, str], dict] = {}
    for result in results:
        rel = config.relpath(result.settings_path or Path(result.path))
        if rel is None or result.facts is None:
            continue
        metrics = result.facts.metrics()
        for finding in result.findings:
            if (finding.severity.value != "error" or finding.accepted is not None
                    or finding.code in NEVER_WAIVED):
                continue
            entry = entries.setdefault((rel, finding.code), {"path": rel, "code": finding.code,
                                                             "bounds": {}})
            metric = BY_KEY.get(str(finding.details.get("metric", "")))
            if metric is not None and metric.stem and metrics.get(metric.key) is not None:
                entry["bounds"][metric.budget_key("limit")] = (metric.kind, metrics[metric.key])
    return list(entries.values())


def _render(entry: dict, prefix: str, reason: str, expires: datetime.date) -> str:
    lines = [f"[[{prefix}accept]]", f"path = {_quote(entry['path'])}",
             f"codes = [{_quote(entry['code'])}]", f"reason = {_quote(reason)}",
             f"expires = {expires.isoformat()}"]
    for key, (kind, value) in sorted(entry["bounds"].items()):
        lines.append(f"{key} = {_amount(kind, value)}  # today's value: it may not grow")
    return "\n".join(lines) + "\n"


def _amount(kind: str, value: float) -> str:
    """The exact value, in the unit its budget key needs (sizes and times always carry one)."""
    if kind == "bytes":
        return f'"{int(value)} B"'
    if kind == "ms":
        return f'"{value:g} ms"'
    return str(int(value))


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
