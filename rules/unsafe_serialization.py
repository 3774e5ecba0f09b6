from __future__ import annotations

from typing import Iterator

from bloatguard.rule import Finding, Rule, RuleContext, Severity


class UnsafeSerialization(Rule):
    """## What it does
    Scans pickles (`.pt`, `.pth`, `.bin`, `.ckpt`, TorchScript archives, any file whose first
    bytes are a pickle) opcode by opcode, without loading them, and reports every global they
    would import that is not on bloatguard's allowlist of tensor-rebuild functions, storage types
    and plain containers.

    ## Why is this bad?
    Unpickling calls whatever the pickle names: `os.system`, `builtins.exec`,
    `pkgutil.resolve_name`. A model file from a pull request can run code on every machine that
    loads it with `torch.load(weights_only=False)`.

    ## Example
    A checkpoint saved with `torch.save(model)` (the whole module object) or one carrying an
    `argparse.Namespace` of training options.

    ## Use instead
    Save the weights only: `torch.save(model.state_dict(), path)`, or safetensors
    (`safetensors.torch.save_file`).

    ## Fix safety
    No automatic fix: re-save the weights in a safe format.

    ## Options
    None: the allowlist is the design, not a blocklist.
    """

    code = "BG900"
    name = "unsafe-serialization"
    summary = "Pickles that would import code outside the safe allowlist"
    default_severity = Severity.ERROR
    reads = frozenset()  # the reader's scan is in the facts

    def check(self, ctx: RuleContext) -> Iterator[Finding]:
        names = ctx.facts.unsafe_globals
        if names:
            yield self.finding(
                ctx,
                f"pickle would import {', '.join(names)} when loaded; re-save the weights as a "
                "state dict or safetensors",
                details={"globals": names})
