"""Human units in config values, and the same units for printing.

Sizes and times must carry their unit (`25` alone could be bytes or megabytes); counts may be bare
integers. Parsers raise ValueError with a message meant to be shown after the key's name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_SIZE_UNITS = {
    "b": 1,
    "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}
_COUNT_SUFFIXES = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "b": 10**9, "t": 10**12}
_TIME_UNITS_MS = {"ns": 1e-6, "us": 1e-3, "µs": 1e-3, "ms": 1.0, "s": 1000.0}

_NUMBER = r"(?P<num>[0-9][0-9_]*(?:\.[0-9]+)?|\.[0-9]+)"
_AMOUNT = re.compile(rf"^\s*{_NUMBER}\s*(?P<unit>[a-zµ]*)\s*$", re.IGNORECASE)


def _split(value: str) -> tuple[float, str]:
    match = _AMOUNT.match(value)
    if not match:
        raise ValueError("expected a number followed by a unit")
    return float(match["num"].replace("_", "")), match["unit"].lower()


def parse_size(value: object) -> int:
    """`"25 MB"` -> 25_000_000 bytes; `"25 MiB"` -> 26_214_400."""
    if isinstance(value, bool) or isinstance(value, (int, float)):
        raise ValueError('a size needs a unit, e.g. "25 MB" (MB = 10^6 bytes, MiB = 2^20 bytes)')
    if not isinstance(value, str):
        raise ValueError('expected a size such as "25 MB"')
    number, unit = _split(value)
    if unit not in _SIZE_UNITS:
        raise ValueError(f'unknown size unit "{unit}"; use B, KB, MB, GB, KiB, MiB or GiB')
    return round(number * _SIZE_UNITS[unit])


def parse_count(value: object) -> int:
    """`5000000`, `"5M"`, `"1.2G"`, `"100K"` -> an integer count."""
    if isinstance(value, bool):
        raise ValueError('expected a count such as 5000000 or "5M"')
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a count cannot be negative")
        return value
    if not isinstance(value, str):
        raise ValueError('expected a count such as 5000000 or "5M"')
    number, unit = _split(value)
    if unit not in _COUNT_SUFFIXES:
        raise ValueError(f'unknown count suffix "{unit}"; use K, M, G (or no suffix)')
    return round(number * _COUNT_SUFFIXES[unit])


def parse_time_ms(value: object) -> float:
    """`"20 ms"` -> 20.0; `"1.5 s"` -> 1500.0."""
    if isinstance(value, bool) or isinstance(value, (int, float)):
        raise ValueError('a time needs a unit, e.g. "20 ms" or "1.5 s"')
    if not isinstance(value, str):
        raise ValueError('expected a time such as "20 ms"')
    number, unit = _split(value)
    if unit not in _TIME_UNITS_MS:
        raise ValueError(f'unknown time unit "{unit}"; use us, ms or s')
    return number * _TIME_UNITS_MS[unit]


@dataclass(frozen=True)
class Growth:
    """An allowed increase: relative (`"5%"` -> 0.05) or absolute (in the metric's own unit)."""

    relative: float | None = None
    absolute: float | None = None

    def limit_for(self, before: float) -> float:
        """The largest allowed value given the base value."""
        if self.relative is not None:
            return before * (1 + self.relative)
        assert self.absolute is not None
        return before + self.absolute

    def describe(self, kind: str) -> str:
        if self.relative is not None:
            return f"+{self.relative * 100:g}%"
        return "+" + format_amount(self.absolute, kind)


def parse_growth(value: object, kind: str) -> Growth:
    """`"5%"` for relative growth, otherwise an absolute amount in the metric's unit."""
    if isinstance(value, str) and value.strip().endswith("%"):
        number = value.strip()[:-1].strip()
        try:
            percent = float(number)
        except ValueError:
            raise ValueError(f'"{value}" is not a percentage such as "5%"') from None
        if percent < 0:
            raise ValueError("a growth budget cannot be negative")
        return Growth(relative=percent / 100)
    return Growth(absolute=PARSERS[kind](value))


PARSERS = {"bytes": parse_size, "count": parse_count, "ms": parse_time_ms}


def human_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit, size in (("GB", 10**9), ("MB", 10**6), ("KB", 10**3)):
        if abs(n) >= size:
            return f"{n / size:.3g} {unit}" if abs(n) / size < 100 else f"{n / size:.0f} {unit}"
    return f"{n:.0f} B"


def human_count(n: float | None) -> str:
    if n is None:
        return "-"
    for unit, size in (("T", 10**12), ("G", 10**9), ("M", 10**6), ("K", 10**3)):
        if abs(n) >= size:
            return f"{n / size:.3g}{unit}" if abs(n) / size < 100 else f"{n / size:.0f}{unit}"
    return f"{n:.0f}"


def human_ms(n: float | None) -> str:
    if n is None:
        return "-"
    return f"{n:.3g} ms" if n < 1000 else f"{n / 1000:.3g} s"


def format_amount(value: float | None, kind: str) -> str:
    return {"bytes": human_bytes, "count": human_count, "ms": human_ms}[kind](value)
