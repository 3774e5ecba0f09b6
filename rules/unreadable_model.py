from __future__ import annotations

from typing import Iterator

from bloatguard.rule import Finding, Rule, RuleContext, Severity


class UnreadableModel(Rule):
    """## What it does
    Reports model files that bloatguard cannot read: corrupt or truncated files, empty files,
    Git LFS pointers checked out instead of the model, unsupported formats and archives, ONNX
    external data that is missing or points outside the model's directory. With `--base`, the
    base version is held to the same standard: a base that cannot be read (an LFS pointer whose
    object is not fetched, a corrupt blob) cannot be compared with, so it is reported too.

    ## Why is this bad?
    A model that cannot be read cannot be held to any budget. A Git LFS pointer in particular
    looks like a 130-byte model to a naive tool, and would pass every size budget.

    ## Example
    `models/det.onnx` holds `version https://git-lfs.github.com/spec/v1 ...`.

    ## Use instead
    Fetch the real file (`git lfs pull`; `lfs: true` on actions/checkout), re-export a corrupt
    model, or exclude files that are not models with `exclude` in the config.

    ## Fix safety
    No automatic fix: bloatguard never rewrites a file it cannot read.

    ## Options
    None. An unreadable model makes `bloatguard check` exit with code 2.
    """

    code = "BG000"
    name = "unreadable-model"
    summary = "The file cannot be read as a model"
    default_severity = Severity.ERROR
    reads = frozenset({"base"})

    def check(self, ctx: RuleContext) -> Iterator[Finding]:
        for side, facts in (("head", ctx.facts), ("base", ctx.base)):
            if facts is None or not facts.unreadable:
                continue
            # An unreadable base cannot be compared with: the growth budgets were not checked.
            what = "the base version cannot be read: " if side == "base" else ""
            message = what + facts.unreadable + (f"; remedy: {facts.remedy}" if facts.remedy else "")
            yield self.finding(ctx, message, details={"side": side, "cause": facts.unreadable,
                                                      "remedy": facts.remedy},
                               severity=Severity.ERROR)
