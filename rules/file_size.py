from __future__ import annotations

from bloatguard.budget import BudgetRule


class FileSize(BudgetRule):
    """## What it does
    Checks the model's size on disk, external data files included, against `max-file-size`
    and, with `--base`, its growth against `max-file-size-increase`.

    ## Why is this bad?
    Every byte of a model is downloaded by every clone, container build and device update.
    Size creeps up one pull request at a time unless something holds the line.

    ## Example
    ```toml
    [tool.bloatguard.budgets."models/**/*.onnx"]
    max-file-size = "25 MB"
    max-file-size-increase = "5%"
    min-file-size-increase = "100 KB"   # smaller changes are noise
    ```

    ## Use instead
    Remove dead weights (BG103), quantize (BG101), prune (BG106), or raise the budget on purpose
    in the same pull request so reviewers see it.

    ## Fix safety
    No fix of its own; the hygiene rules' fixes shrink the file.

    ## Options
    Budgets come from `[tool.bloatguard.budgets."<glob>"]`; `severity` under
    `[tool.bloatguard.rules.file-size]`.
    """

    code = "BG001"
    name = "file-size"
    summary = "Model file size (external data included) within budget"
    metric = "file_size"
