"""The settings that apply to one model path: what rules and measurements read of the config.

A leaf module, so that the rule interface can name it without importing the config machinery
(which imports the rule registry to validate rule names and options).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class ResolvedSettings:
    """The settings for one model path, after every matching glob table has been applied."""

    budgets: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, list[int]] = field(default_factory=dict)
    samples: Path | None = None
    ignored: list[str] = field(default_factory=list)
    fix: dict[str, Any] = field(default_factory=dict)  # fidelity thresholds and `outputs`
    pins: dict[str, Any] = field(default_factory=dict)  # [latency.values]: fixed input values
