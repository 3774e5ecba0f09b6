from __future__ import annotations

from bloatguard.budget import BudgetRule


class ParamCount(BudgetRule):
    """## What it does
    Counts the elements of every weight tensor the model stores (initializers, `Constant`
    nodes, sparse initializers, tensors inside `If`/`Loop`/`Scan` subgraphs and functions,
    state-dict tensors) and checks the total against `max-params` and, with `--base`, its growth
    against `max-params-increase`.

    ## Why is this bad?
    Parameters drive memory use and, for most architectures, compute. Unlike file size they do
    not change with compression or quantization, so they show real architectural growth.

    ## Example
    ```toml
    [tool.bloatguard.budgets."models/det.onnx"]
    max-params = "5M"
    max-params-increase = "100K"
    ```

    ## Use instead
    Remove dead weights (BG103) and redundant input features (BG102); prune (BG106) or factorize
    (BG107) where those rules find room. Quantization does not lower the count: past what those
    reach, the finding's distillation target says what size of student would meet the budget.

    ## Fix safety
    No fix of its own.

    ## Options
    Budgets come from `[tool.bloatguard.budgets."<glob>"]`; `severity` under
    `[tool.bloatguard.rules.param-count]`.
    """

    code = "BG002"
    name = "param-count"
    summary = "Number of stored weight elements within budget"
    metric = "params"
