"""Every metric bloatguard reports, declared once.

A declaration says where the value comes from, its unit, the budget keys it enables, how the
reports label it and whether `init` writes a budget for it; the config validator, the budget
rules, the text and markdown reports, the JSON report, `init`, the metric cache and `merge` all
read this table. Adding a metric is one declaration here plus the measurement that stores its
value in `ModelFacts.measured` (docs/architecture.md shows the steps).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

KINDS = ("bytes", "count", "ms")


@dataclass(frozen=True)
class Metric:
    key: str  # the JSON report's `metrics` key, and the key in ModelFacts.measured
    label: str  # row and column label in the text and markdown reports
    noun: str  # how messages name it: "parameter count grew from ..."
    kind: str  # "bytes" | "count" | "ms": how values are parsed, printed and rounded
    # Budget keys max-<stem>, max-<stem>-increase, min-<stem>-increase; None: no budget.
    stem: str | None = None
    # Read from the facts themselves (file size, params); None: ModelFacts.measured[key].
    derive: Callable[[Any], Any] | None = None  # ModelFacts -> value (facts import this module)
    column: bool = True  # a column of the markdown table (an optional one only when measured)
    init: bool = False  # `bloatguard init` writes max-<stem> from today's value
    # Fixed by the model's bytes and settings (so the metric cache may keep it); False for
    # what is timed or sampled in each run.
    static: bool = True
    # Left out of the text and markdown tables when measured for no side (latency and peak
    # memory without --latency).
    optional: bool = False

    def value(self, facts: Any) -> Any:
        """This metric of a ModelFacts."""
        return self.derive(facts) if self.derive else facts.measured.get(self.key)

    def budget_key(self, role: str) -> str:
        """The config key of this metric's budget: role "limit", "increase", "floor" or "drift"
        (growth since the config's drift reference)."""
        assert self.stem is not None, self.key
        return {"limit": f"max-{self.stem}", "increase": f"max-{self.stem}-increase",
                "floor": f"min-{self.stem}-increase", "drift": f"max-{self.stem}-drift"}[role]


METRICS: tuple[Metric, ...] = (
    Metric("file_size", "file size", "file size", "bytes", "file-size",
           derive=lambda facts: facts.file_size, init=True),
    Metric("params", "params", "parameter count", "count", "params",
           derive=lambda facts: facts.params, init=True),
    Metric("weight_bytes", "weight bytes", "weight bytes", "bytes",
           derive=lambda facts: facts.weight_bytes, column=False),
    Metric("macs", "MACs", "compute", "count", "macs", init=True),
    # Static peak of intermediate tensors (bloatguard.measure.memory), from the MACs child.
    Metric("activation_memory", "activation memory", "activation memory", "bytes",
           "activation-memory", init=True),
    Metric("latency_ms", "latency", "latency", "ms", "latency", static=False, optional=True),
    # Measured where latency is (bloatguard.measure.latency): the resident memory a session's
    # creation and runs cost, in a fresh process per side.
    Metric("peak_memory", "peak memory", "peak memory", "bytes", "peak-memory", static=False,
           optional=True),
)
BY_KEY: dict[str, Metric] = {metric.key: metric for metric in METRICS}
WITH_BUDGETS: tuple[Metric, ...] = tuple(metric for metric in METRICS if metric.stem)
STATIC_MEASURED: tuple[str, ...] = tuple(metric.key for metric in METRICS
                                         if metric.static and metric.derive is None)
