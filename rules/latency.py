from __future__ import annotations

from typing import Iterator

from bloatguard.budget import BudgetRule
from bloatguard.facts import LatencyComparison, LatencyInfo
from bloatguard.rule import Finding, RuleContext, Severity


class Latency(BudgetRule):
    """## What it does
    Times the model with onnxruntime on the CPU and checks the median against `max-latency`.
    With `--base`, base and head are timed side by side in one process, in interleaved rounds,
    and the head is a regression when the median head/base ratio exceeds
    `max-latency-increase` *and* a one-sided sign test over the rounds is significant (after
    correcting for the number of models compared), confirmed by a second measurement.

    ## Why is this bad?
    A model that got 20 % slower costs 20 % more on every request and every device, and nobody
    notices until production dashboards do. Comparing two medians from different CI runs cannot
    catch it: shared runners vary by more than that. Comparing in the same run, round by round,
    can.

    ## Example
    ```toml
    [tool.bloatguard.budgets."models/**/*.onnx"]
    max-latency = "20 ms"            # median, on the machine and threads the report names
    max-latency-increase = "10%"     # against --base: ratio > 1.10 and significant

    [tool.bloatguard.inputs."models/det.onnx"]
    images = [1, 3, 320, 320]        # symbolic dims for the random inputs

    [tool.bloatguard.latency]
    threads = 1                      # intra-op threads (inter-op-threads too)
    time-budget = "10 s"             # per model, or per base/head pair
    min-effect = "5%"                # never call a smaller change a regression
    alpha = 0.01

    [tool.bloatguard.latency.values."models/vad.onnx"]
    sr = 16000                       # integer inputs whose values matter
    ```

    ## Use instead
    Check what the change added (BG003 MACs is the deterministic view of the same question),
    fuse or remove ops (BG104), quantize with static QDQ rather than `quantize_dynamic` on
    Conv-heavy models, or raise the budget on purpose in the same pull request.

    ## Fix safety
    No fix of its own; `bloatguard fix` re-times every candidate against the original.

    ## Options
    Budgets come from `[tool.bloatguard.budgets."<glob>"]`: `max-latency` (a time),
    `max-latency-increase` (a percentage, or a time added to the base median) and
    `min-latency-increase` (changes smaller than this time are ignored). How latency is measured
    is set in `[tool.bloatguard.latency]`: `threads`, `inter-op-threads`, `graph-optimization`,
    `warmup`, `time-budget`, `min-rounds`, `max-rounds`, `block-time`, `timeout`, `memory-limit`,
    `min-effect`, `alpha`, `feed-cap`, `int-range`, `confirm`, and pinned input values per model
    glob under `values`. Latency is measured with `--latency` (the default with `--base`); a
    model that cannot be timed while a latency budget applies gets a warning saying why.
    `severity` under `[tool.bloatguard.rules.latency]`.
    """

    code = "BG004"
    name = "latency"
    summary = "onnxruntime CPU latency within budget; no significant regression against --base"
    metric = "latency_ms"
    reads = frozenset({"base", "latency"})

    def check(self, ctx: RuleContext) -> Iterator[Finding]:
        info = ctx.facts.latency
        if ctx.facts.unreadable or info is None:
            return  # latency was not requested (the deterministic pre-commit path) or not ONNX
        keys = [key for key in ("max-latency", "max-latency-increase") if key in ctx.budgets]
        if "error" in info:
            if keys:
                yield self.finding(
                    ctx, f"cannot check {' and '.join(keys)}: latency not measured ({info['error']})",
                    details={"metric": self.metric, "keys": keys, "reason": info["error"]},
                    severity=Severity.WARNING)
            return
        yield from self._limit(ctx, info)
        comparison = ctx.facts.latency_comparison
        if comparison is not None:
            yield from self._regression(ctx, comparison, info)
        elif "max-latency-increase" in ctx.budgets and "comparison_error" in info:
            yield self.finding(ctx, f"cannot check max-latency-increase: {info['comparison_error']}",
                               severity=Severity.WARNING,
                               details={"metric": self.metric, "key": "max-latency-increase",
                                        "reason": info["comparison_error"]})

    def _where(self, info: LatencyInfo) -> str:
        threads = info["threads"]
        return (f"median of {info['runs']} runs, {threads} thread{'s' if threads != 1 else ''}, "
                f"on {info['machine']}")

    def _limit(self, ctx: RuleContext, info: LatencyInfo) -> Iterator[Finding]:
        key = "max-latency"
        limit = ctx.budgets.get(key)
        value = info["median_ms"]
        if limit is None or value <= limit:
            return
        yield self.finding(
            ctx,
            f"latency {self.fmt(value)} exceeds the budget of {self.fmt(limit)} "
            f"({self._source(ctx, key)}) by {self.fmt(value - limit)} ({self._where(info)})",
            details={"metric": self.metric, "value": value, "limit": limit, "key": key,
                     "p90_ms": info["p90_ms"], "threads": info["threads"],
                     "machine": info["machine"]})

    def _regression(self, ctx: RuleContext, comparison: LatencyComparison,
                    info: LatencyInfo) -> Iterator[Finding]:
        """Growth is judged on the paired ratio and its verdict, never on two medians."""
        key = "max-latency-increase"
        growth = ctx.budgets.get(key)
        if growth is None or comparison["verdict"] != "regression":
            return
        before, ratio = comparison["base_median_ms"], comparison["ratio"]
        allowed_ratio = growth.limit_for(before) / before if before else float("inf")
        delta = before * (ratio - 1)
        if ratio <= allowed_ratio or delta < ctx.budgets.get("min-latency-increase", 0):
            return
        low, high = comparison["ci"]
        confirmed = " and confirmed by a second measurement" if comparison.get("confirmed") else ""
        yield self.finding(
            ctx,
            f"latency regressed ×{ratio:.2f} [{low:.2f}, {high:.2f}] ({self.fmt(before)} → "
            f"{self.fmt(comparison['head_median_ms'])}; p = {comparison['p_value']:.2g} over "
            f"{comparison['rounds']} interleaved rounds{confirmed}), more than the allowed "
            f"{growth.describe(self.kind)} ({self._source(ctx, key)})",
            details={"metric": self.metric, "key": key, "ratio": ratio, "ci": [low, high],
                     "p_value": comparison["p_value"], "rounds": comparison["rounds"],
                     "verdict": comparison["verdict"], "before": before,
                     "after": comparison["head_median_ms"], "allowed_ratio": allowed_ratio,
                     "allowed_increase": growth.describe(self.kind),
                     "threads": info["threads"], "machine": info["machine"]})
