from __future__ import annotations

from bloatguard.budget import BudgetRule


class Compute(BudgetRule):
    """## What it does
    Counts the multiply-accumulates (MACs) of one inference: Conv, ConvTranspose, Gemm, MatMul,
    recurrent layers and their quantized forms, for the input shapes in
    `[tool.bloatguard.inputs]`, and checks them against `max-macs` and, with `--base`, their
    growth against `max-macs-increase`. This is the deterministic proxy for latency: the same
    model gives the same count on every machine.

    ## Why is this bad?
    More compute means more latency and energy on every device the model runs on.

    ## Example
    ```toml
    [tool.bloatguard.budgets."models/det.onnx"]
    max-macs = "1.2G"

    [tool.bloatguard.inputs."models/det.onnx"]
    images = [1, 3, 320, 320]
    ```

    ## Use instead
    Smaller input resolution, fewer or thinner layers, structured pruning of zero channels
    (BG106).

    ## Fix safety
    No fix of its own.

    ## Options
    Symbolic input dimensions must be resolved in `[tool.bloatguard.inputs]` (a leading batch
    dimension defaults to 1); otherwise MACs are reported as unknown with the reason.
    """

    code = "BG003"
    name = "compute"
    summary = "Multiply-accumulates per inference within budget"
    metric = "macs"
