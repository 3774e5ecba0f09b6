"""`bloatguard init`: a starting config from today's measurements, so adopting bloatguard is one
command. Budgets are today's values plus headroom; growth budgets guard every model from then on.
Existing content is never overwritten: a pyproject.toml gets tables appended, and an existing
bloatguard section is left alone.
"""

from __future__ import annotations

import math
from pathlib import Path

from bloatguard.config import find_config_file
from bloatguard.errors import BloatguardError
from bloatguard.metrics import METRICS


def _round_up(value: float, digits: int = 2) -> float:
    """Round up to `digits` significant digits, so a budget never starts below the measurement."""
    if value <= 0:
        return 0
    scale = 10 ** (math.floor(math.log10(value)) - digits + 1)
    return math.ceil(value / scale) * scale


def _size(value: float) -> str:
    for unit, size in (("GB", 10**9), ("MB", 10**6), ("KB", 10**3)):
        if value >= size:
            return f'"{_round_up(value / size):g} {unit}"'
    return f'"{math.ceil(value)} B"'


def _count(value: float) -> str:
    for unit, size in (("G", 10**9), ("M", 10**6), ("K", 10**3)):
        if value >= size:
            return f'"{_round_up(value / size):g}{unit}"'
    return str(math.ceil(value))


_AMOUNT = {"bytes": _size, "count": _count}  # metrics init writes budgets for


def _quote(key: str) -> str:
    return '"' + key.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_config(results, config, *, headroom: float, growth: str, prefix: str) -> str:
    written = [metric for metric in METRICS if metric.init]
    lines = [f"# Written by `bloatguard init`: today's measurements plus {headroom:.0%} headroom.",
             f"[{prefix}budgets.{_quote('**')}]",
             *(f'{metric.budget_key("increase")} = "{growth}"' for metric in written), ""]
    for result in results:
        facts = result.facts
        if facts is None or facts.unreadable:
            continue
        rel = config.relpath(Path(result.path))
        if rel is None:
            raise BloatguardError(f"{result.path}: outside {config.root}, where the config goes; "
                                  "run init from the repository that holds the models")
        lines.append(f"[{prefix}budgets.{_quote(rel)}]")
        for metric in written:
            value = metric.value(facts)
            # An unknown metric gets no budget (a budget of 0 would fail every change), nor does
            # a zero one: 0 plus headroom is still 0.
            if value:
                lines.append(f"{metric.budget_key('limit')} = {_AMOUNT[metric.kind](value * (1 + headroom))}")
        lines.append("")
    return "\n".join(lines)


def run_init(paths: list[Path], *, target: Path | None, headroom: float, growth: str) -> Path:
    from bloatguard import config as config_module
    from bloatguard import engine

    start = paths[0] if paths else Path.cwd()
    existing = find_config_file(start)
    if existing is not None and (target is None or existing.resolve() == target.resolve()):
        raise BloatguardError(f"{existing}: a bloatguard config exists already; edit it, or remove "
                              "its bloatguard section to start over")
    if target is None:
        root = _repo_root(start)
        pyproject = root / "pyproject.toml"
        target = pyproject if pyproject.exists() else root / "bloatguard.toml"
    root = target.parent
    config = config_module.Config(root=root)
    results = engine.check(paths or [Path(".")], config, engine.Selection(select=["BG000"]))
    if not any(result.facts is not None and not result.facts.unreadable for result in results):
        raise BloatguardError(f"{', '.join(map(str, paths or [Path('.')]))}: no readable model to write "
                              "budgets for; nothing was written")
    prefix = "tool.bloatguard." if target.name == "pyproject.toml" else ""
    text = render_config(results, config, headroom=headroom, growth=growth, prefix=prefix)
    if target.exists():
        current = target.read_text(encoding="utf-8")
        if prefix and "[tool.bloatguard" in current:
            raise BloatguardError(f"{target}: has a [tool.bloatguard] section already; edit it")
        if not prefix and current.strip():
            raise BloatguardError(f"{target}: exists and is not empty; edit it")
        separator = "" if current.endswith("\n\n") or not current else ("\n" if current.endswith("\n") else "\n\n")
        text = current + separator + text
    config_module.loads(text, target)  # what we write must load: checked before writing it
    _write(target, text)
    return target


def _write(target: Path, text: str) -> Path:
    from bloatguard.atomic import replace_file

    replace_file(target, text.encode("utf-8"))
    return target


def _repo_root(start: Path) -> Path:
    here = start.resolve()
    here = here if here.is_dir() else here.parent
    for directory in (here, *here.parents):
        if (directory / ".git").exists():
            return directory
    return here
