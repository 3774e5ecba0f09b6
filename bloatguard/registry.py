"""Finds the rules: every module of the built-in `bloatguard.rules` package, plus modules that
other packages register under the `bloatguard.rules` entry-point group."""

from __future__ import annotations

import functools
import importlib
import inspect
import pkgutil
import sys

from bloatguard.rule import Rule


def _rules_in(module) -> list[type[Rule]]:
    return [obj for _, obj in inspect.getmembers(module, inspect.isclass)
            if issubclass(obj, Rule) and obj.__module__ == module.__name__
            and getattr(obj, "code", None)]


@functools.lru_cache(maxsize=1)
def all_rules() -> tuple[Rule, ...]:
    """Every registered rule, instantiated once, ordered by code."""
    package = importlib.import_module("bloatguard.rules")
    classes: list[type[Rule]] = []
    for info in pkgutil.iter_modules(package.__path__):
        classes += _rules_in(importlib.import_module(f"{package.__name__}.{info.name}"))
    if _may_have_plugins():
        from importlib.metadata import entry_points

        for entry in entry_points(group="bloatguard.rules"):
            classes += _rules_in(entry.load())
    return tuple(sorted(_unique(classes), key=lambda rule: rule.code))


def _unique(classes: list[type[Rule]]) -> list[Rule]:
    """One instance per rule class; a code or name claimed twice (a plugin shadowing a
    built-in rule, say) is refused, naming both modules, rather than one silently winning."""
    from bloatguard.errors import BloatguardError

    seen: dict[str, type[Rule]] = {}
    for cls in classes:
        for key in (cls.code, cls.name):
            other = seen.setdefault(key.lower(), cls)
            if other is not cls:
                raise BloatguardError(f"rule {key} is registered twice, by {other.__module__} and "
                                      f"{cls.__module__}; uninstall or rename one of them")
    return [cls() for cls in dict.fromkeys(classes)]


def _may_have_plugins() -> bool:
    """Whether any installed distribution declares a `bloatguard.rules` entry point, found by
    grepping the entry_points.txt files on sys.path. importlib.metadata finds exactly these,
    but importing and running it costs ~17 ms on every run, and almost nobody has plugins.
    Anything this scan cannot see through (a zip on sys.path) answers True."""
    import os

    for entry in sys.path:
        if not os.path.isdir(entry or "."):
            if os.path.exists(entry):
                return True  # a zip or egg file: leave it to importlib.metadata
            continue
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for name in names:
            if name.endswith((".dist-info", ".egg-info")):
                try:
                    with open(os.path.join(entry or ".", name, "entry_points.txt"), "rb") as handle:
                        if b"bloatguard.rules" in handle.read():
                            return True
                except OSError:
                    continue
    return False


def find_rule(code_or_name: str) -> Rule | None:
    wanted = code_or_name.strip().lower()
    for rule in all_rules():
        if wanted in (rule.code.lower(), rule.name):
            return rule
    return None


def selector_matches(selector: str, rule: Rule) -> bool:
    """`BG0` selects BG000..BG099, `BG002` one rule, `param-count` one rule by name, `ALL` all."""
    selector = selector.strip()
    if selector.upper() == "ALL":
        return True
    return rule.code.upper().startswith(selector.upper()) or selector.lower() == rule.name


def unknown_selectors(selectors: list[str]) -> list[str]:
    """The selectors that match no rule: a typo in --select must not silently disable every rule."""
    rules = all_rules()
    return [s for s in selectors if not any(selector_matches(s, rule) for rule in rules)]
