"""Accepted regressions: a sanctioned way to let a finding stand without failing the run.

A waiver names models (a glob), codes, a reason, and where it comes from:

- `[[tool.bloatguard.accept]]` in the config: an expiry date and optional bounds on the metrics
  (`max-params = "3.2M"`: the waiver holds only while the model stays at or below it, so a
  waiver can never let a model keep growing);
- a `Bloatguard-Accept: <path-glob> <codes> <reason>` trailer in a commit message of the
  compared range: for that change only (the next change compares with the new base);
- the Action's pull-request label (`--accept-regressions REASON`): every *regression* finding
  (growth against the base), never an absolute budget.

A waived finding keeps its severity in the data, gains `accepted`, and does not fail the run.
An expired waiver, or one whose bound the model exceeds, accepts nothing and makes its finding
an error that says so. A config waiver that matches no finding is stale: a warning that asks for
its removal. Unreadable models (BG000) and unsafe content (BG900, BG901) are never waivable.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bloatguard import globs
from bloatguard.metrics import WITH_BUDGETS
from bloatguard.rule import Finding, Severity

# What a waiver may bound: the metrics' absolute limits (max-params, max-file-size, ...).
BOUNDS = {metric.budget_key("limit"): metric for metric in WITH_BUDGETS}

# Never waivable: a model that cannot be read, and content that would run code when loaded.
NEVER_WAIVED = {"BG000": "unreadable-model", "BG900": "unsafe-serialization",
                "BG901": "unsafe-chat-template"}


@dataclass
class Waiver:
    path: str  # glob, relative to the config's directory (or the repository root for trailers)
    codes: list[str]  # codes, prefixes or rule names
    reason: str
    source: str  # "config" | "trailer" | "label"
    origin: str  # where it is written: "accept entry 2 in bloatguard.toml", "commit 1a2b3c4"
    expires: datetime.date | None = None
    bounds: dict[str, float] = field(default_factory=dict)  # budget limit key -> accepted value
    regressions_only: bool = False  # the label: growth findings only
    config: Path | None = None  # the config file of a config waiver
    used: bool = False

    def covers(self, finding: Finding, relpath: str | None) -> bool:
        if finding.code in NEVER_WAIVED or relpath is None:
            return False
        if self.regressions_only and not _is_regression(finding):
            return False
        return globs.match(self.path, relpath) and any(
            _selects(selector, finding.code, finding.rule) for selector in self.codes)

    def accepted(self) -> dict[str, Any]:
        return {"reason": self.reason,
                "expires": self.expires.isoformat() if self.expires else None,
                "source": self.source}


def never_waived(selector: str) -> list[str]:
    """The never-waivable codes a selector (code, prefix, name, ALL) would cover."""
    return [code for code, name in NEVER_WAIVED.items() if _selects(selector, code, name)]


def _selects(selector: str, code: str, name: str) -> bool:
    selector = selector.strip()
    return (selector.upper() == "ALL" or code.upper().startswith(selector.upper())
            or selector.lower() == name)


def _is_regression(finding: Finding) -> bool:
    """Growth against the base: a budget's `-increase` key, or latency's paired verdict."""
    key = str(finding.details.get("key", ""))
    return key.endswith("-increase")


@dataclass
class Stale:
    """A config waiver that matched no finding: remove it (warning)."""

    waiver: Waiver

    @property
    def table(self) -> str:  # what config warnings are named by (bloatguard.coverage)
        return self.waiver.origin

    @property
    def config(self) -> Path | None:
        return self.waiver.config

    @property
    def message(self) -> str:
        waiver = self.waiver
        return (f"{waiver.origin}: the waiver for {waiver.path} ({', '.join(waiver.codes)}) "
                f"matches no finding any more; remove it (reason was: {waiver.reason})")

    def to_json(self) -> dict[str, Any]:
        return {"waiver": self.waiver.origin, "path": self.waiver.path, "codes": self.waiver.codes,
                "message": self.message}


def apply(results, waivers: list[Waiver], relpath, *, today: datetime.date) -> list[Stale]:
    """Mark the findings the waivers accept; make expired or exceeded ones fail. `relpath`
    maps a result to its path as waiver globs see it. Returns the stale config waivers."""
    for result in results:
        path = relpath(result)
        metrics = result.facts.metrics() if result.facts is not None else {}
        for finding in result.findings:
            for waiver in waivers:
                if waiver.covers(finding, path):
                    waiver.used = True
                    if _judge(finding, waiver, metrics, today):
                        break
    return [Stale(waiver) for waiver in waivers if waiver.source == "config" and not waiver.used]


def _judge(finding: Finding, waiver: Waiver, metrics: dict[str, Any], today: datetime.date) -> bool:
    """Accept the finding, or say why the waiver does not hold. True when it is settled."""
    if waiver.expires is not None and waiver.expires < today:
        _refuse(finding, f"its waiver ({waiver.origin}) expired on {waiver.expires.isoformat()} "
                         f"(reason: {waiver.reason}); renew it with a new date or remove it")
        return True
    for key, bound in waiver.bounds.items():
        metric = BOUNDS[key]
        value = metrics.get(metric.key)
        if value is not None and value > bound:
            from bloatguard.units import format_amount

            _refuse(finding, f"beyond its waiver's bound ({waiver.origin}: {key} = "
                             f"{format_amount(bound, metric.kind)}; now "
                             f"{format_amount(value, metric.kind)})")
            return True
    finding.accepted = waiver.accepted()
    return True


def _refuse(finding: Finding, why: str) -> None:
    finding.message += f" — {why}"
    finding.severity = Severity.ERROR
    finding.details = {**finding.details, "waiver_refused": why}


# --- sources -------------------------------------------------------------------------------------

TRAILER = "Bloatguard-Accept"


def from_trailers(messages: list[tuple[str, str]], origin_root: str = "") -> list[Waiver]:
    """Waivers from `Bloatguard-Accept: <path-glob> <codes> <reason>` lines of commit messages,
    given as (sha, message). Codes are comma-separated. Raises ValueError naming the commit for
    a malformed trailer or one that names a never-waivable code."""
    waivers = []
    for sha, message in messages:
        for line in message.splitlines():
            key, _, value = line.partition(":")
            if key.strip().lower() != TRAILER.lower():
                continue
            parts = value.split(None, 2)
            origin = f"{TRAILER} trailer of commit {sha[:12]}"
            if len(parts) < 3:
                raise ValueError(f"{origin}: expected `{TRAILER}: <path-glob> <codes> <reason>`, "
                                 f"got {line.strip()!r}")
            path, codes, reason = parts[0], [c for c in parts[1].split(",") if c], parts[2].strip()
            blocked = sorted({code for selector in codes for code in never_waived(selector)})
            if blocked:
                raise ValueError(f"{origin}: {', '.join(blocked)} can never be waived "
                                 "(an unreadable model or unsafe content)")
            waivers.append(Waiver(path=path, codes=codes, reason=reason, source="trailer",
                                  origin=origin))
    return waivers


def for_label(reason: str) -> Waiver:
    """The Action's label: every regression finding of the pull request, with the label as the
    reason (absolute budgets, unreadable models and unsafe content excepted)."""
    return Waiver(path="**", codes=["ALL"], reason=reason, source="label",
                  origin="the pull request's accept label", regressions_only=True)


def relative_to(root: Path):
    """A result -> path function for waiver globs relative to `root`."""
    from bloatguard.paths import located

    root = root.resolve()

    def relpath(result) -> str | None:
        try:
            return located(result.settings_path or Path(result.path)).relative_to(root).as_posix()
        except ValueError:
            return None

    return relpath
