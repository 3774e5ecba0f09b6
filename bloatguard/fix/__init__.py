"""`bloatguard fix`: turn the fix hints of findings into candidate models, verify each against
the original, and keep the smallest one that passes (docs/architecture.md, "Fixes").

The flow, one module per step:

    kinds       every fix kind, declared once (the rules that name it, formats, safety, order)
    candidates  which transforms to try, from the findings' fix hints (and --unsafe-fixes)
    build       apply a candidate's steps to a copy of the model, in an isolated child
      transforms_safe   output-equivalent ONNX graph edits (dead weights, BatchNorm, ...)
      transforms_quant  lossy ONNX transforms (onnxruntime quantizers, fp16, features)
      transforms_lowrank  factorize-lowrank: a low-rank MatMul/Gemm weight as two factors
      transforms_torch  magnitude pruning of PyTorch state dicts
    inputs      sample or random inputs for fidelity and calibration
    verify      size/params/MACs, I/O signature, fidelity, latency, budgets -> verdicts
    write       atomic replacement of the original (git-aware, kill-safe)
    options     the verification options `fix` and `compare` share (light: no onnx)
    command     the CLI: argparse and the per-model orchestration
    table       the candidate table (text and JSON)
    distill     the distillation target when a size budget is out of reach of every fix

This package module stays import-light: `bloatguard check` uses `suggestion()` to say which
command would apply a finding's fix, and must not pay for onnx or onnxruntime to do it.
"""

from __future__ import annotations

from bloatguard.fix.kinds import applicable


def shell_path(path: str) -> str:
    """A model path as a shell word for a suggested command: quoted, and `./`-prefixed when it
    starts with `-` (`bloatguard fix -rf.onnx` would read the name as options)."""
    import shlex

    return shlex.quote(f"./{path}" if path.startswith("-") else path)


def suggestion(kind: str, safe: bool, model_format: str, path: str) -> str | None:
    """The command that would apply a fix of this kind, or None when fix cannot apply it."""
    if not applicable(kind, model_format):
        return None
    return f"bloatguard fix {path}" if safe else f"bloatguard fix --unsafe-fixes {path}"


__all__ = ["applicable", "shell_path", "suggestion"]
