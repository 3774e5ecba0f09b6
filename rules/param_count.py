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
    Prune (BG106), remove redundant input features (BG102) or dead weights (BG103).

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
