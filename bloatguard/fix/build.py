"""Build a candidate: apply its steps to a copy of the model, in an isolated child.

The model is untrusted input to native code (protobuf parsing, onnxruntime sessions during
calibration, torch's unpickler), so every build runs in a forked child with a timeout and a
memory cap (bloatguard.isolate), and answers in JSON. The child sends onnxruntime's chatty
logging and any native prints to a log file next to the candidate, not the user's terminal.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from bloatguard.fix.kinds import BY_NAME
from bloatguard.isolate import IsolationError, run_isolated

MODEL_NAME = "model.onnx"


class BuildError(Exception):
    """The candidate could not be built; the message says why (for the table)."""


def build(source: Path, directory: Path, model_format: str, steps: list[dict[str, Any]], *,
          external: bool, timeout: float, memory: int) -> dict[str, Any]:
    """Build the candidate in `directory` (created). Returns {"path", "changes" (one list per
    step), "input_map"}; raises BuildError."""
    directory.mkdir(parents=True, exist_ok=True)
    if model_format == "pytorch":
        return _build_state_dict(source, directory, steps, timeout, memory)
    job = {"source": str(source), "directory": str(directory), "format": model_format,
           "steps": steps, "external": external}
    try:
        return run_isolated(_build_child, job, timeout=timeout, memory=memory)
    except IsolationError as exc:
        message = str(exc).removeprefix("BuildError: ")
        log = directory / "build.log"
        if message.startswith(("crashed", "exited")) and log.is_file():
            # A native crash: the last line the library printed is the best clue there is.
            lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
            message += f" ({lines[-1][:200]})" if lines else ""
        raise BuildError(message) from None


def _build_child(job: dict[str, Any]) -> dict[str, Any]:
    _quiet(Path(job["directory"]) / "build.log")
    return _build_onnx(job)


def _quiet(log: Path) -> None:
    """Send this child's stdout/stderr (onnxruntime's INFO logging, native prints) to a log."""
    import logging
    import warnings

    descriptor = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(descriptor, 1)
    os.dup2(descriptor, 2)
    os.close(descriptor)
    logging.disable(logging.WARNING)
    warnings.simplefilter("ignore")


def _build_onnx(job: dict[str, Any]) -> dict[str, Any]:
    import onnx

    from bloatguard.fix.onnx_edit import save, too_big_for_one_file

    directory = Path(job["directory"])
    external = job["external"]
    model = onnx.load(job["source"])
    changes: list[list[str]] = []  # per step
    input_map: dict[str, Any] = {}
    for index, step in enumerate(job["steps"]):
        kind, params = step["kind"], dict(step["params"])
        spec = BY_NAME.get(kind)
        if spec is None or spec.transform is None:
            raise BuildError(f"unknown step {kind!r}")
        transform = _transform(spec.transform)
        if spec.file_to_file:  # kind -> function(src, dst, params, external) -> changes
            src = directory / f"step{index}-in.onnx"
            dst = directory / f"step{index}-out.onnx"
            save(model, src, external)
            done = transform(src, dst, params, external or too_big_for_one_file(model))
            model = onnx.load(str(dst))
        else:  # edits the ModelProto in memory: function(model, params) -> changes
            done = transform(model, params)
            input_map.update(params.get("input_map", {}))
        changes.append(done)
    path = directory / MODEL_NAME
    save(model, path, external)
    # Intermediate copies, the quantizers' variants among them: the candidate alone stays.
    for leftover in directory.glob("step*"):
        leftover.unlink()
    for leftover in directory.glob("preprocessed*"):
        leftover.unlink()
    return {"path": str(path), "changes": changes, "input_map": input_map}


def _transform(reference: str) -> Callable:
    """The function a FixKind names as "module:function" (imported in the build child only)."""
    import importlib

    module, _, name = reference.partition(":")
    return getattr(importlib.import_module(module), name)


def _build_state_dict(source: Path, directory: Path, steps: list[dict[str, Any]],
                      timeout: float, memory: int) -> dict[str, Any]:
    """Prune a state dict in a fresh torch process (see transforms_torch.run_in_subprocess)."""
    from bloatguard.fix.transforms_torch import run_in_subprocess

    path = directory / source.name
    changes: list[list[str]] = []
    for step in steps:
        if step["kind"] != "prune-weights":
            raise BuildError(f"{step['kind']} does not apply to PyTorch files")
        try:
            changes.append(run_in_subprocess("prune", str(source), str(path), step["params"],
                                         timeout=timeout, memory=memory))
        except RuntimeError as exc:
            raise BuildError(str(exc)) from None
    return {"path": str(path), "changes": changes, "input_map": {}}
