"""Reads `[tool.bloatguard]` (pyproject.toml) or `bloatguard.toml`, validates it, and answers
"which settings apply to this model path?".

Every error names the file and the key: a config that silently ignores a misspelt budget is worse
than no config.
"""

from __future__ import annotations

import datetime
import functools
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from bloatguard import globs
from bloatguard.errors import ConfigError
from bloatguard.hygiene import parse_bool
from bloatguard.metrics import WITH_BUDGETS
from bloatguard.paths import located
from bloatguard.settings import ResolvedSettings

if TYPE_CHECKING:
    from bloatguard.waivers import Waiver
from bloatguard.units import PARSERS, Growth, parse_count, parse_growth, parse_size, parse_time_ms

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

CONFIG_NAMES = ("bloatguard.toml", "pyproject.toml")


@dataclass(frozen=True)
class BudgetKey:
    metric: str  # the key in ModelFacts.metrics()
    kind: str  # "bytes" | "count" | "ms": how values are parsed and printed
    # "limit" (absolute) | "increase" (against --base) | "floor" (noise floor) | "drift" (growth
    # since [drift] reference, whatever the base)
    role: str


# Every metric with a stem has three budget keys: the limit, the growth against --base, and the
# noise floor under which growth is never a regression ("fail only if +5% AND > 1 MB").
BUDGET_KEYS: dict[str, BudgetKey] = {
    metric.budget_key(role): BudgetKey(metric.key, metric.kind, role)
    for metric in WITH_BUDGETS for role in ("limit", "increase", "floor", "drift")}


def _parse_nonnegative(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError("expected a non-negative number")
    return float(value)


def _parse_share(value: Any) -> float:
    number = _parse_nonnegative(value)
    if number > 1:
        raise ValueError("expected a number between 0 and 1")
    return number


# Fidelity thresholds of `bloatguard fix` and `compare`, per model glob (CLI options override
# them), and `outputs`: what slices of an output mean (see _parse_output_slices).
FIX_THRESHOLDS: dict[str, Callable[[Any], float]] = {
    "tolerance": _parse_nonnegative, "min-cosine": _parse_share, "min-top1": _parse_share,
    "max-error": _parse_nonnegative,
}
SLICE_METRICS = ("cosine", "max-error", "top1")


def _parse_output_slices(value: Any) -> dict[str, Any]:
    """`{slices = [[0, 4], [4, 84]], axis = 1, metric = "cosine"}`: the slices of one output
    along one axis (start inclusive, stop exclusive), each judged on its own by `metric`."""
    if not isinstance(value, dict):
        raise ValueError('expected a table such as {slices = [[0, 4], [4, 84]], axis = 1}')
    unknown = sorted(set(value) - {"slices", "axis", "metric"})
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r} (known: slices, axis, metric)")
    axis = value.get("axis")
    if isinstance(axis, bool) or not isinstance(axis, int) or axis < 0:
        raise ValueError("`axis` must be the index of the sliced axis, such as 1")
    slices = value.get("slices")
    if not isinstance(slices, list) or not slices or not all(
            isinstance(pair, list) and len(pair) == 2
            and all(isinstance(i, int) and not isinstance(i, bool) for i in pair)
            and 0 <= pair[0] < pair[1] for pair in slices):
        raise ValueError("`slices` must be a list of [start, stop] index pairs with "
                         "0 <= start < stop, such as [[0, 4], [4, 84]]")
    metric = value.get("metric", "cosine")
    if metric not in SLICE_METRICS:
        raise ValueError(f"`metric` must be one of {', '.join(SLICE_METRICS)}")
    return {"axis": axis, "slices": [list(pair) for pair in slices], "metric": metric}


def _parse_budget(key: str, value: Any) -> Any:
    spec = BUDGET_KEYS[key]
    if spec.role in ("increase", "drift"):
        return parse_growth(value, spec.kind)
    return PARSERS[spec.kind](value)


def _parse_shape(value: Any) -> list[int]:
    if not isinstance(value, list) or not all(isinstance(d, int) and not isinstance(d, bool)
                                              and d >= 0 for d in value):
        raise ValueError("expected a list of non-negative integers such as [1, 3, 224, 224]")
    return value


def _nonempty_string(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("expected a non-empty string")
    return value.strip()


def _date(value: Any) -> datetime.date:
    """A TOML date (expires = 2027-01-31) or the same as a string."""
    if isinstance(value, datetime.datetime):
        return value.date()
    if isinstance(value, datetime.date):
        return value
    if isinstance(value, str):
        try:
            return datetime.date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise ValueError("expected a date such as 2027-01-31")


def _string_list(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError("expected a list of strings")
    return value


GRAPH_OPTIMIZATIONS = ("disabled", "basic", "extended", "all")


@dataclass
class LatencyConfig:
    """`[tool.bloatguard.latency]`: how BG004 measures (see bloatguard.measure.latency)."""

    threads: int = 1  # intra-op threads: fixed, so a number means the same thing on every run
    inter_op_threads: int = 1
    graph_optimization: str = "all"  # onnxruntime's production default
    warmup: int = 5  # untimed runs per model before timing
    # Per model (absolute), or per base/head pair including a flagged pair's re-measurement.
    time_budget_ms: float = 10_000.0
    min_rounds: int = 10
    max_rounds: int = 100
    block_ms: float = 20.0  # a round times each model for about this long
    timeout_ms: float | None = None  # None: derived from the time budget
    memory_limit: int | None = None  # bytes of address space; None: derived from model sizes
    min_effect: float = 0.05  # smallest slowdown ever called a regression
    alpha: float = 0.01  # significance level, after correcting for the models compared
    feed_cap: int = 2**30
    int_range: tuple[int, int] = (0, 9)  # inclusive range of random integer inputs
    confirm: bool = True  # re-measure a flagged regression in a fresh process
    # (model glob, {input name: pinned value}), e.g. a sample rate that must be 16000.
    values: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


def _parse_pinned(value: Any) -> Any:
    """A number, a boolean, or a rectangular nested list of them."""
    def shape(item: Any) -> tuple[int, ...]:
        if isinstance(item, list):
            if not item:
                raise ValueError("empty lists cannot be fed to a model")
            shapes = {shape(element) for element in item}
            if len(shapes) != 1:
                raise ValueError("nested lists must be rectangular")
            return (len(item), *shapes.pop())
        if isinstance(item, (bool, int, float)):
            return ()
        raise ValueError("expected a number, a boolean or a (nested) list of them")

    shape(value)
    return value


def _parse_positive_count(value: Any) -> int:
    count = parse_count(value)
    if count < 1:
        raise ValueError("must be at least 1")
    return count


def _parse_percent(value: Any) -> float:
    if not isinstance(value, str) or not value.strip().endswith("%"):
        raise ValueError('expected a percentage such as "5%"')
    relative = parse_growth(value, "count").relative
    assert relative is not None  # a percentage is relative growth
    return relative


def _parse_alpha(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, float) or not 0 < value < 0.5:
        raise ValueError("expected a significance level between 0 and 0.5, such as 0.01")
    return value


def _parse_int_range(value: Any) -> tuple[int, int]:
    if (not isinstance(value, list) or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
            or value[0] > value[1]):
        raise ValueError("expected [low, high], two integers with low <= high (both included)")
    return value[0], value[1]


def _parse_graph_optimization(value: Any) -> str:
    if value not in GRAPH_OPTIMIZATIONS:
        raise ValueError("use " + ", ".join(GRAPH_OPTIMIZATIONS))
    return value


def _parse_positive_size(value: Any) -> int:
    size = parse_size(value)
    if size <= 0:
        raise ValueError("must be more than zero")
    return size


def _parse_positive_time(value: Any) -> float:
    ms = parse_time_ms(value)
    if ms <= 0:
        raise ValueError("must be more than zero")
    return ms


# key -> (LatencyConfig attribute, parser)
LATENCY_KEYS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "threads": ("threads", _parse_positive_count),
    "inter-op-threads": ("inter_op_threads", _parse_positive_count),
    "graph-optimization": ("graph_optimization", _parse_graph_optimization),
    "warmup": ("warmup", parse_count),
    "time-budget": ("time_budget_ms", _parse_positive_time),
    "min-rounds": ("min_rounds", _parse_positive_count),
    "max-rounds": ("max_rounds", _parse_positive_count),
    "block-time": ("block_ms", _parse_positive_time),
    "timeout": ("timeout_ms", _parse_positive_time),
    "memory-limit": ("memory_limit", _parse_positive_size),
    "min-effect": ("min_effect", _parse_percent),
    "alpha": ("alpha", _parse_alpha),
    "feed-cap": ("feed_cap", _parse_positive_size),
    "int-range": ("int_range", _parse_int_range),
    "confirm": ("confirm", parse_bool),
}


@dataclass
class Config:
    path: Path | None = None
    root: Path = field(default_factory=Path.cwd)
    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    budgets: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    inputs: list[tuple[str, dict[str, list[int]]]] = field(default_factory=list)
    samples: list[tuple[str, str]] = field(default_factory=list)
    rules: dict[str, dict[str, Any]] = field(default_factory=dict)
    per_file_ignores: list[tuple[str, list[str]]] = field(default_factory=list)
    fix: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    select: list[str] | None = None
    ignore: list[str] = field(default_factory=list)
    cache_dir: str | None = None
    latency: LatencyConfig = field(default_factory=LatencyConfig)
    accept: list[Waiver] = field(default_factory=list)  # [[accept]] waivers, in file order
    drift_reference: str | None = None  # [drift] reference: the commit-ish drift is measured from

    def relpath(self, model_path: Path) -> str | None:
        """The model's path relative to the config's directory, as globs see it."""
        try:
            return located(Path(model_path)).relative_to(self.root.resolve()).as_posix()
        except ValueError:
            return None

    def is_included(self, model_path: Path) -> bool:
        rel = self.relpath(model_path)
        if rel is None:
            return True
        if self.include and not globs.match_any(self.include, rel):
            return False
        return not globs.match_any(self.exclude, rel)

    def inside_root(self, relative: str, key: str) -> Path:
        """root/relative, refused when a symlinked directory on the way leads outside the
        project (the loader checked the path as written: _Validator._inside)."""
        path = self.root / relative
        root = self.root.resolve()
        if not path.resolve().is_relative_to(root):
            raise ConfigError(f"{self.path or 'config'}: {key}: {relative!r} leads outside the "
                              f"project through a symlink; keep the file inside {root}")
        return path

    def resolve(self, model_path: Path) -> ResolvedSettings:
        rel = self.relpath(model_path)
        settings = ResolvedSettings()
        if rel is None:
            return settings
        for pattern, table in self.budgets:
            if globs.match(pattern, rel):
                settings.budgets.update(table)
        for pattern, shapes in self.inputs:
            if globs.match(pattern, rel):
                settings.inputs.update(shapes)
        for pattern, sample_path in self.samples:
            if globs.match(pattern, rel):
                settings.samples = self.inside_root(sample_path, f"samples.{pattern!r}")
        for pattern, codes in self.per_file_ignores:
            if globs.match(pattern, rel):
                settings.ignored += codes
        for pattern, thresholds in self.fix:
            if globs.match(pattern, rel):
                settings.fix.update(thresholds)
        for pattern, values in self.latency.values:
            if globs.match(pattern, rel):
                settings.pins.update(values)
        return settings

    def glob_tables(self) -> Iterator[tuple[str, str]]:
        """(section, glob) of every table that applies by model path, as the config names them."""
        sections = (("budgets", self.budgets), ("inputs", self.inputs), ("samples", self.samples),
                    ("per-file-ignores", self.per_file_ignores), ("fix", self.fix),
                    ("latency.values", self.latency.values))
        for section, tables in sections:
            for pattern, _ in tables:
                yield section, pattern

    def rule_options(self, rule_name: str) -> dict[str, Any]:
        return self.rules.get(rule_name, {})


def find_config_file(start: Path) -> Path | None:
    """Walk up from `start` to the repository root (the directory holding `.git`)."""
    here = start.resolve()
    if here.is_file() or not here.exists():
        here = here.parent
    for directory in (here, *here.parents):
        for name in CONFIG_NAMES:
            candidate = directory / name
            if candidate.is_file() and (name != "pyproject.toml" or _has_section(candidate)):
                return candidate
        if (directory / ".git").exists():
            return None
    return None


def _has_section(pyproject: Path) -> bool:
    try:
        with open(pyproject, "rb") as handle:
            return "bloatguard" in tomllib.load(handle).get("tool", {})
    except (OSError, tomllib.TOMLDecodeError):
        # A broken pyproject.toml is only our business if it holds our section; load() reports it.
        return b"[tool.bloatguard" in pyproject.read_bytes()


def load(path: Path | None) -> Config:
    """Load and validate a config file; `None` gives the defaults."""
    if path is None:
        return Config()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found; check the --config path") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}; fix the syntax") from None
    return loads(text, path)


def loads(text: str, path: Path) -> Config:
    """Validate `text` as the contents of the config file `path` (which need not exist yet)."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}; fix the syntax") from None
    if path.name == "pyproject.toml":
        table = document.get("tool", {}).get("bloatguard", {})
        prefix = "tool.bloatguard"
    else:
        table = document
        prefix = ""
    return _Validator(path, prefix).build(table)


def _unknown(kind: str, key: str, known: list[str]) -> str:
    """"unknown budget; did you mean `max-file-size`? (known: max-file-size, ...)" """
    import difflib

    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    guess = f"; did you mean `{close[0]}`?" if close else ""
    return f"unknown {kind}{guess} (known: {', '.join(known)})"


class _Validator:
    def __init__(self, path: Path, prefix: str) -> None:
        self.path = path
        self.prefix = prefix

    def key(self, *parts: str) -> str:
        rendered = ".".join(f'"{p}"' if any(c in p for c in "*/.?[ ") else p for p in parts)
        return f"{self.prefix}.{rendered}" if self.prefix else rendered

    def fail(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.path}: {key}: {problem}")

    def parse(self, key: str, value: Any, parser: Callable[[Any], Any]) -> Any:
        try:
            return parser(value)
        except ValueError as exc:
            raise self.fail(key, f"{value!r} is invalid: {exc}") from None

    def table(self, key: str, value: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(key, "expected a table")
        return value

    def build(self, table: dict[str, Any]) -> Config:
        config = Config(path=self.path, root=self.path.parent)
        handlers = {
            "include": self._include, "exclude": self._exclude, "budgets": self._budgets,
            "inputs": self._inputs, "samples": self._samples, "rules": self._rules,
            "per-file-ignores": self._per_file_ignores, "select": self._select,
            "ignore": self._ignore, "cache-dir": self._cache_dir, "latency": self._latency,
            "fix": self._fix, "accept": self._accept, "drift": self._drift,
        }
        for key, value in table.items():
            handler = handlers.get(key)
            if handler is None:
                raise self.fail(self.key(key), _unknown("key", key, sorted(handlers)))
            handler(config, value)
        return config

    def _include(self, config: Config, value: Any) -> None:
        config.include = self.parse(self.key("include"), value, _string_list)

    def _exclude(self, config: Config, value: Any) -> None:
        config.exclude = self.parse(self.key("exclude"), value, _string_list)

    def _select(self, config: Config, value: Any) -> None:
        config.select = self._selectors(self.key("select"), value)

    def _ignore(self, config: Config, value: Any) -> None:
        config.ignore = self._selectors(self.key("ignore"), value)

    def _selectors(self, key: str, value: Any) -> list[str]:
        from bloatguard.registry import unknown_selectors

        codes = self.parse(key, value, _string_list)
        unknown = unknown_selectors(codes)
        if unknown:
            raise self.fail(key, f"{unknown[0]!r} matches no rule; see `bloatguard rules`")
        return codes

    def _cache_dir(self, config: Config, value: Any) -> None:
        if not isinstance(value, str):
            raise self.fail(self.key("cache-dir"), "expected a directory path string")
        config.cache_dir = self._inside(self.key("cache-dir"), value)

    def _inside(self, key: str, value: str) -> str:
        """A path from the config file, which a pull request can change: it must stay inside
        the directory the config applies to, so a committed config cannot make bloatguard read
        (samples) or create and write (cache-dir) files anywhere else on the machine."""
        if not value or os.path.isabs(value) or value.startswith("~") \
                or os.path.normpath(value).split(os.sep)[0] == "..":
            raise self.fail(key, f"{value!r} is outside the project: give a path relative to "
                            f"{self.path.name}'s directory that stays inside it")
        return value

    def _budgets(self, config: Config, value: Any) -> None:
        for pattern, budget in self.table(self.key("budgets"), value).items():
            parsed = {}
            for key, raw in self.table(self.key("budgets", pattern), budget).items():
                full_key = self.key("budgets", pattern, key)
                if key not in BUDGET_KEYS:
                    raise self.fail(full_key, _unknown("budget", key, list(BUDGET_KEYS)))
                parsed[key] = self.parse(full_key, raw, functools.partial(_parse_budget, key))
            config.budgets.append((pattern, parsed))

    def _inputs(self, config: Config, value: Any) -> None:
        for pattern, shapes in self.table(self.key("inputs"), value).items():
            parsed = {}
            for name, shape in self.table(self.key("inputs", pattern), shapes).items():
                parsed[name] = self.parse(self.key("inputs", pattern, name), shape, _parse_shape)
            config.inputs.append((pattern, parsed))

    def _samples(self, config: Config, value: Any) -> None:
        for pattern, sample in self.table(self.key("samples"), value).items():
            if not isinstance(sample, str):
                raise self.fail(self.key("samples", pattern), "expected the path of a .npz file")
            config.samples.append((pattern, self._inside(self.key("samples", pattern), sample)))

    def _latency(self, config: Config, value: Any) -> None:
        latency = config.latency
        for key, raw in self.table(self.key("latency"), value).items():
            full_key = self.key("latency", key)
            if key == "values":
                for pattern, pins in self.table(full_key, raw).items():
                    parsed = {}
                    for name, pin in self.table(self.key("latency", "values", pattern), pins).items():
                        parsed[name] = self.parse(self.key("latency", "values", pattern, name),
                                                  pin, _parse_pinned)
                    latency.values.append((pattern, parsed))
                continue
            if key not in LATENCY_KEYS:
                raise self.fail(full_key, _unknown("key", key, sorted([*LATENCY_KEYS, "values"])))
            attribute, parser = LATENCY_KEYS[key]
            setattr(latency, attribute, self.parse(full_key, raw, parser))
        if latency.min_rounds > latency.max_rounds:
            raise self.fail(self.key("latency", "min-rounds"),
                            f"{latency.min_rounds} is more than max-rounds ({latency.max_rounds})")

    def _fix(self, config: Config, value: Any) -> None:
        """[fix."<glob>"]: output-fidelity thresholds `bloatguard fix` holds candidates to, and
        [fix."<glob>".outputs.<output>]: the slices an output is judged by."""
        for pattern, table in self.table(self.key("fix"), value).items():
            parsed: dict[str, Any] = {}
            for key, raw in self.table(self.key("fix", pattern), table).items():
                full_key = self.key("fix", pattern, key)
                if key == "outputs":
                    parsed[key] = {name: self.parse(self.key("fix", pattern, key, name), spec,
                                                    _parse_output_slices)
                                   for name, spec in self.table(full_key, raw).items()}
                elif key not in FIX_THRESHOLDS:
                    raise self.fail(full_key, _unknown("key", key, [*FIX_THRESHOLDS, "outputs"]))
                else:
                    parsed[key] = self.parse(full_key, raw, FIX_THRESHOLDS[key])
            config.fix.append((pattern, parsed))

    def _drift(self, config: Config, value: Any) -> None:
        """[drift] reference = "v1.0": the version every model's max-<metric>-drift budget is
        measured from, whatever the base of a run."""
        for key, raw in self.table(self.key("drift"), value).items():
            if key != "reference":
                raise self.fail(self.key("drift", key), _unknown("key", key, ["reference"]))
            config.drift_reference = self.parse(self.key("drift", key), raw, _nonempty_string)

    def _accept(self, config: Config, value: Any) -> None:
        """[[accept]]: waivers with a path glob, codes, a reason, an expiry and optional bounds."""
        if not isinstance(value, list) or not all(isinstance(entry, dict) for entry in value):
            raise self.fail(self.key("accept"), f"expected an array of tables: [[{self.key('accept')}]]")
        for number, entry in enumerate(value, start=1):
            config.accept.append(self._waiver(f"{self.key('accept')}[{number}]", number, entry))

    def _waiver(self, key: str, number: int, entry: dict[str, Any]) -> Waiver:
        from bloatguard.waivers import BOUNDS, Waiver, never_waived

        known = ["path", "codes", "reason", "expires", *BOUNDS]
        for name in entry:
            if name not in known:
                raise self.fail(f"{key}.{name}", _unknown("key", name, known))
        for name in ("path", "codes", "reason", "expires"):
            if name not in entry:
                raise self.fail(key, f"`{name}` is required (path, codes, reason, expires)")
        path = self.parse(f"{key}.path", entry["path"], _nonempty_string)
        codes = self.parse(f"{key}.codes", entry["codes"], _string_list)
        blocked = sorted({code for selector in codes for code in never_waived(selector)})
        if blocked:
            raise self.fail(f"{key}.codes", f"{', '.join(blocked)} can never be waived (an "
                            "unreadable model or unsafe content); name the budget or hygiene codes")
        codes = self._selectors(f"{key}.codes", codes)
        if not codes:
            raise self.fail(f"{key}.codes", "name at least one code")
        bounds = {name: self.parse(f"{key}.{name}", raw, PARSERS[BOUNDS[name].kind])
                  for name, raw in entry.items() if name in BOUNDS}
        return Waiver(path=path, codes=codes, source="config",
                      reason=self.parse(f"{key}.reason", entry["reason"], _nonempty_string),
                      expires=self.parse(f"{key}.expires", entry["expires"], _date),
                      bounds=bounds, origin=f"accept entry {number} in {self.path.name}",
                      config=self.path)

    def _per_file_ignores(self, config: Config, value: Any) -> None:
        for pattern, codes in self.table(self.key("per-file-ignores"), value).items():
            key = self.key("per-file-ignores", pattern)
            config.per_file_ignores.append((pattern, self._selectors(key, codes)))

    def _rules(self, config: Config, value: Any) -> None:
        from bloatguard.registry import find_rule

        for name, options in self.table(self.key("rules"), value).items():
            rule = find_rule(name)
            if rule is None:
                from bloatguard.registry import all_rules

                names = [known.name for known in all_rules()]
                raise self.fail(self.key("rules", name), _unknown("rule", name, names))
            parsed = {}
            for option, raw in self.table(self.key("rules", name), options).items():
                full_key = self.key("rules", name, option)
                if option == "severity":
                    if raw not in ("error", "warning", "info"):
                        raise self.fail(full_key, f"{raw!r} is invalid: use error, warning or info")
                    parsed[option] = raw
                elif option in rule.options:
                    parsed[option] = self.parse(full_key, raw, rule.options[option].parse)
                else:
                    raise self.fail(full_key, _unknown(f"option of {rule.name}", option,
                                                       ["severity", *rule.options]))
            config.rules[rule.name] = parsed


__all__ = ["BUDGET_KEYS", "Config", "ConfigError", "Growth", "LatencyConfig", "ResolvedSettings",
           "find_config_file", "load"]
