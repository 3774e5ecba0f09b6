"""The shared logic of budget rules: an absolute limit, and growth against the base version.

Each budget rule (file-size, param-count, compute, latency) is a subclass that only names its
metric; the checks, messages and details are the same for all of them.
"""

from __future__ import annotations

from typing import ClassVar, Iterator

from bloatguard.metrics import BY_KEY
from bloatguard.rule import Finding, Rule, RuleContext, Severity
from bloatguard.units import format_amount


class BudgetRule(Rule):
    metric: ClassVar[str]  # the metric's key in bloatguard.metrics; the rest comes from there
    stem: ClassVar[str]  # config keys are max-<stem>, max-<stem>-increase, min-<stem>-increase
    kind: ClassVar[str]  # "bytes" | "count" | "ms"
    noun: ClassVar[str]  # how messages name the metric
    default_severity = Severity.ERROR
    reads = frozenset({"base"})  # growth is judged against the base version's facts

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        spec = BY_KEY[cls.metric]
        cls.stem, cls.kind, cls.noun = spec.stem, spec.kind, spec.noun

    def fmt(self, value: float | None) -> str:
        return format_amount(value, self.kind)

    def check(self, ctx: RuleContext) -> Iterator[Finding]:
        if ctx.facts.unreadable:
            return
        value = ctx.facts.metrics().get(self.metric)
        yield from self._check_limit(ctx, value)
        if ctx.base is not None and not ctx.base.unreadable:
            yield from self._check_growth(ctx, ctx.base.metrics().get(self.metric), value)

    def _source(self, ctx: RuleContext, key: str) -> str:
        return f"{key} in {ctx.config.path.name}" if ctx.config.path else key

    def _check_limit(self, ctx: RuleContext, value: float | None) -> Iterator[Finding]:
        key = f"max-{self.stem}"
        limit = ctx.budgets.get(key)
        if limit is None:
            return
        if value is None:
            reason = "; ".join(ctx.facts.notes) or "it could not be measured"
            yield self.finding(ctx, f"cannot check {key}: {self.noun} unknown ({reason})",
                               details={"metric": self.metric, "limit": limit, "key": key},
                               severity=Severity.WARNING)
        elif value > limit:
            yield self.finding(
                ctx,
                f"{self.noun} {self.fmt(value)} exceeds the budget of {self.fmt(limit)} "
                f"({self._source(ctx, key)}) by {self.fmt(value - limit)}",
                details={"metric": self.metric, "value": value, "limit": limit, "key": key})

    def _check_growth(self, ctx: RuleContext, before: float | None,
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
        yield self.finding(
            ctx,
            f"{self.noun} grew from {self.fmt(before)} to {self.fmt(after)}{percent}, more than "
            f"the allowed {growth.describe(self.kind)} ({self._source(ctx, key)})",
            details={"metric": self.metric, "before": before, "after": after, "delta": delta,
                     "limit": allowed, "allowed_increase": growth.describe(self.kind),
                     "key": key})
