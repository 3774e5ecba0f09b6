"""The shared logic of budget rules: an absolute limit, and growth against the base version.

`MetricBudget` holds the checks of one metric's budgets (`max-<stem>`, `max-<stem>-increase`,
`min-<stem>-increase`); the messages and details are the same for every metric. A budget rule
that checks one metric (file-size, param-count, compute, latency) is a `BudgetRule` subclass
that only names it; a rule that checks several (memory: activation and peak memory) calls one
`MetricBudget` per metric.
"""

from __future__ import annotations

from typing import ClassVar, Iterator

from bloatguard.metrics import BY_KEY
from bloatguard.rule import Finding, Rule, RuleContext, Severity
from bloatguard.units import format_amount

# Notes that begin with one of these belong to that metric: another metric's "unknown" warning
# does not quote them, and this metric's quotes only them.
_OWN_NOTES = ("activation memory", "peak memory")


def source(ctx: RuleContext, key: str) -> str:
    """Where a budget key was set, for messages: "max-macs in bloatguard.toml"."""
    return f"{key} in {ctx.config.path.name}" if ctx.config.path else key


class MetricBudget:
    """The budget checks of one metric (a key of bloatguard.metrics), reported by `rule`."""

    def __init__(self, metric: str) -> None:
        spec = BY_KEY[metric]
        assert spec.stem is not None, metric
        self.metric, self.stem, self.kind, self.noun = metric, spec.stem, spec.kind, spec.noun

    def fmt(self, value: float | None) -> str:
        return format_amount(value, self.kind)

    def check(self, rule: Rule, ctx: RuleContext) -> Iterator[Finding]:
        """The limit, and with a base the growth; nothing for an unreadable model."""
        if ctx.facts.unreadable:
            return
        value = ctx.facts.metrics().get(self.metric)
        yield from self.limit(rule, ctx, value)
        if ctx.base is not None and not ctx.base.unreadable:
            yield from self.growth(rule, ctx, ctx.base.metrics().get(self.metric), value)
        if ctx.reference is not None and not ctx.reference.unreadable:
            yield from self.drift(rule, ctx, ctx.reference.metrics().get(self.metric), value)

    def unknown_reason(self, ctx: RuleContext) -> str:
        notes = ctx.facts.notes
        if self.noun.startswith(_OWN_NOTES):
            # Its own notes, and a reader's saying why it measures this metric for no model of
            # its format ("... have no graph: compute (MACs) and activation memory are not
            # measured").
            notes = [note for note in notes if note.startswith(self.noun)
                     or f" {self.noun} are not measured" in note]
        else:
            notes = [note for note in notes if not note.startswith(_OWN_NOTES)]
        return "; ".join(notes) or "it could not be measured"

    def limit(self, rule: Rule, ctx: RuleContext, value: float | None) -> Iterator[Finding]:
        key = f"max-{self.stem}"
        limit = ctx.budgets.get(key)
        if limit is None:
            return
        if value is None:
            yield rule.finding(ctx, f"cannot check {key}: {self.noun} unknown ({self.unknown_reason(ctx)})",
                               details={"metric": self.metric, "limit": limit, "key": key},
                               severity=Severity.WARNING)
        elif value > limit:
            details = {"metric": self.metric, "value": value, "limit": limit, "key": key}
            target = _distillation_target(ctx, key, limit)
            if target is not None:
                details["distillation"] = target
            yield rule.finding(
                ctx,
                f"{self.noun} {self.fmt(value)} exceeds the budget of {self.fmt(limit)} "
                f"({source(ctx, key)}) by {self.fmt(value - limit)}",
                details=details)

    def growth(self, rule: Rule, ctx: RuleContext, before: float | None,
               after: float | None) -> Iterator[Finding]:
        key = f"max-{self.stem}-increase"
        growth = ctx.budgets.get(key)
        if growth is None or before is None or after is None:
            return
        allowed = growth.limit_for(before)
        delta = after - before
        floor = ctx.budgets.get(f"min-{self.stem}-increase", 0)
        if after <= allowed or delta < floor:
            return
        percent = f" ({delta / before * 100:+.1f}%)" if before else ""
        yield rule.finding(
            ctx,
            f"{self.noun} grew from {self.fmt(before)} to {self.fmt(after)}{percent}, more than "
            f"the allowed {growth.describe(self.kind)} ({source(ctx, key)})",
            details={"metric": self.metric, "before": before, "after": after, "delta": delta,
                     "limit": allowed, "allowed_increase": growth.describe(self.kind),
                     "key": key})


    def drift(self, rule: Rule, ctx: RuleContext, before: float | None,
              after: float | None) -> Iterator[Finding]:
        """Cumulative growth since the drift reference: many changes that each stayed under
        max-<stem>-increase can still add up to more than a team meant to allow."""
        key = f"max-{self.stem}-drift"
        drift = ctx.budgets.get(key)
        if drift is None or before is None or after is None or after <= drift.limit_for(before):
            return
        delta = after - before
        percent = f" ({delta / before * 100:+.1f}%)" if before else ""
        yield rule.finding(
            ctx,
            f"{self.noun} drifted from {self.fmt(before)} at {ctx.reference_name} to "
            f"{self.fmt(after)}{percent}: more than the allowed drift of "
            f"{drift.describe(self.kind)} since {ctx.reference_name} ({source(ctx, key)})",
            details={"metric": self.metric, "reference": ctx.reference_name, "before": before,
                     "after": after, "delta": delta, "limit": drift.limit_for(before),
                     "allowed_drift": drift.describe(self.kind), "key": key})


class BudgetRule(Rule):
    """A rule that checks one metric's budgets."""

    metric: ClassVar[str]  # the metric's key in bloatguard.metrics; the rest comes from there
    stem: ClassVar[str]  # config keys are max-<stem>, max-<stem>-increase, min-<stem>-increase
    kind: ClassVar[str]  # "bytes" | "count" | "ms"
    noun: ClassVar[str]  # how messages name the metric
    budget: ClassVar[MetricBudget]
    default_severity = Severity.ERROR
    reads = frozenset({"base"})  # growth is judged against the base version's facts

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        cls.budget = MetricBudget(cls.metric)
        cls.stem, cls.kind, cls.noun = cls.budget.stem, cls.budget.kind, cls.budget.noun

    def fmt(self, value: float | None) -> str:
        return self.budget.fmt(value)

    def check(self, ctx: RuleContext) -> Iterator[Finding]:
        yield from self.budget.check(self, ctx)

    def _source(self, ctx: RuleContext, key: str) -> str:
        return source(ctx, key)

    def _check_limit(self, ctx: RuleContext, value: float | None) -> Iterator[Finding]:
        return self.budget.limit(self, ctx, value)

    def _check_growth(self, ctx: RuleContext, before: float | None,
                      after: float | None) -> Iterator[Finding]:
        return self.budget.growth(self, ctx, before, after)


def _distillation_target(ctx: RuleContext, key: str, limit: float) -> dict | None:
    """For a broken size budget (max-params, max-macs, max-file-size): what a distilled
    student would have to be to meet it (bloatguard.fix.distill; from the facts' tensor names
    and shapes only, so a warm run says the same)."""
    from bloatguard.fix import distill

    if key not in distill.BUDGETS:
        return None
    return distill.check_hint(ctx.facts, key, limit)
