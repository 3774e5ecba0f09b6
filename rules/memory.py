from __future__ import annotations

from typing import Iterator

from bloatguard.budget import MetricBudget
from bloatguard.rule import Finding, Rule, RuleContext, Severity


class Memory(Rule):
    """## What it does
    Checks two memory figures against their budgets and, with `--base`, their growth:

    - **activation memory** (`max-activation-memory`): the most bytes of intermediate tensors
      one inference holds at once, computed from the graph for the input shapes in
      `[tool.bloatguard.inputs]`, without running anything. A tensor is alive from the node
      that produces it (an input: from the start) to the last node that reads it; a graph
      output to the end. Weights are not counted; tensors computed from weights alone (a
      `Cast` of a float16 weight, `ConstantOfShape`) are, at every node, since runtimes fold
      them at load and keep them. An `If` counts its costlier branch, a `Loop`/`Scan` body one
      iteration. Deterministic: it runs in the pre-commit hook, without `--base`.
    - **peak memory** (`max-peak-memory`): measured where latency is measured (`--base`, or
      `--latency`): the resident memory (high-water mark) that creating the onnxruntime
      session and running it costs a fresh process, beyond what the process held before,
      with the session options latency uses. Base and head are measured in separate processes.

    ## Why is this bad?
    A model that fits on disk can still fail to fit in RAM: on phones, microcontrollers and
    small serving boxes the activations and the runtime's arena are what fail a deployment,
    and a pull request that doubles a feature map's resolution doubles them without changing
    the file size.

    ## Example
    ```toml
    [tool.bloatguard.budgets."models/**/*.onnx"]
    max-activation-memory = "16 MiB"
    max-activation-memory-increase = "10%"
    max-peak-memory = "200 MB"
    max-peak-memory-increase = "20%"
    min-peak-memory-increase = "8 MiB"   # smaller changes are noise

    [tool.bloatguard.inputs."models/det.onnx"]
    images = [1, 3, 320, 320]
    ```

    ## Use instead
    Smaller input resolution or fewer channels where the peak occurs (the note names the node
    and the tensors alive there), downsample earlier, avoid keeping a large tensor alive across
    a long branch (a skip connection from the first layer to the last), fold constants instead
    of storing weights narrower behind a `Cast` (the cast copies are held at run time), or
    raise the budget on purpose in the same pull request.

    ## Fix safety
    No fix of its own; `bloatguard fix` keeps no candidate that breaks a memory budget the
    original meets.

    ## Options
    Budgets come from `[tool.bloatguard.budgets."<glob>"]`: `max-activation-memory` and
    `max-peak-memory` (sizes, with their unit), `max-activation-memory-increase` and
    `max-peak-memory-increase` (a percentage, or a size added to the base's figure), and
    `min-activation-memory-increase` / `min-peak-memory-increase` (changes smaller than this
    size are ignored). Symbolic input dimensions follow the MACs policy: a leading batch
    dimension defaults to 1, others must be set in `[tool.bloatguard.inputs]`, else the
    activation memory is unknown with the reason. Peak memory is measured with the settings of
    `[tool.bloatguard.latency]` (threads, graph optimization, memory limit). `severity` under
    `[tool.bloatguard.rules.memory]`.
    """

    code = "BG005"
    name = "memory"
    summary = "Static peak activation memory and measured peak memory within budget"
    default_severity = Severity.ERROR
    # Growth is judged against the base; peak memory is measured in each run, like latency.
    reads = frozenset({"base", "latency"})

    def __init__(self) -> None:
        self.activation = MetricBudget("activation_memory")
        self.peak = MetricBudget("peak_memory")

    def check(self, ctx: RuleContext) -> Iterator[Finding]:
        if ctx.facts.unreadable:
            return
        for finding in self.activation.check(self, ctx):
            yield _with_peak(ctx, finding)
        # Peak memory exists only where it was measured this run (--latency, --base); without
        # it, as in the pre-commit hook, its budgets wait for a run that measures.
        if "peak_memory" in ctx.facts.measured:
            yield from self.peak.check(self, ctx)


def _with_peak(ctx: RuleContext, finding: Finding) -> Finding:
    """A finding on the activation peak names the node where it occurs and, in its details,
    the tensors alive there."""
    peak = ctx.facts.activation_peak
    if peak is not None and ("value" in finding.details or "after" in finding.details):
        where = f" in {peak['graph']}" if peak.get("graph", "main graph") != "main graph" else ""
        finding.message += f"; it peaks at {peak['node']}{where}"
        finding.details["peak"] = peak
    return finding
