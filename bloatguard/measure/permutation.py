"""Permutation importance of input feature columns, measured with onnxruntime on sample inputs.

For each column, shuffle it across every sample row (the link between that feature and the rest
of the row is broken, its distribution kept) and measure how much the outputs move. A column whose
shuffling moves nothing cannot matter to the model on these samples: recursive feature
elimination would drop it first.

The model is untrusted input, so inference runs in an isolated child (bloatguard.isolate;
docs/architecture.md, "Security") with a timeout and a memory cap: a crash in a native library
becomes a message, not a dead linter. onnxruntime is imported only in that child, so a static
check never loads it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

TIMEOUT_S = 300.0
MEMORY_BYTES = 8 * 2**30  # beyond what the checking process already maps


class PermutationError(RuntimeError):
    """The permutation test could not run (the model does not run on the samples, timeout...)."""


def permutation_effects(model: Path, arrays: dict[str, np.ndarray], columns: dict[str, list[int]],
                        *, seed: int = 0, timeout: float = TIMEOUT_S) -> dict[str, list[float]]:
    """input name -> change of the outputs (max |delta| relative to the outputs' scale) when each
    listed column of that input is shuffled, in the order of `columns[name]`."""
    from bloatguard.isolate import IsolationError, run_isolated

    try:
        return run_isolated(_effects, str(model), arrays, columns, seed, timeout=timeout,
                            memory=MEMORY_BYTES)
    except IsolationError as exc:
        raise PermutationError(str(exc)) from None


# --- the child process -------------------------------------------------------------------------

def _session(model: str):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def _runner(session, arrays: dict[str, np.ndarray]):
    """A function from (N, *shape) arrays to a list of outputs. Samples are concatenated on the
    batch axis when every input has a free leading dimension (one run); otherwise run one by one."""
    declared = {i.name: i.shape for i in session.get_inputs()}
    batchable = all(declared[name] and not isinstance(declared[name][0], int)
                    for name in arrays)

    def run(feeds: dict[str, np.ndarray]) -> list:
        if batchable:
            return session.run(None, {n: a.reshape(-1, *a.shape[2:]) for n, a in feeds.items()})
        runs = [session.run(None, {n: a[i] for n, a in feeds.items()})
                for i in range(next(iter(feeds.values())).shape[0])]
        return [[r[k] for r in runs] for k in range(len(runs[0]))]

    return run


def _change(base: list, moved: list) -> float:
    """Largest output change relative to the outputs' magnitude; 1.0 for any changed label."""
    worst = 0.0
    for before, after in zip(base, moved):
        try:
            before = np.asarray(before, dtype=np.float64)
            after = np.asarray(after, dtype=np.float64)
        except (TypeError, ValueError):  # strings, maps (ZipMap): compare for equality
            worst = max(worst, 0.0 if before == after else 1.0)
            continue
        delta = np.nan_to_num(np.abs(after - before), nan=0.0, posinf=1.0, neginf=1.0)
        scale = float(np.max(np.abs(np.nan_to_num(before)), initial=0.0))
        worst = max(worst, float(np.max(delta, initial=0.0)) / max(scale, 1e-12))
    return worst


def _effects(model: str, arrays: dict[str, np.ndarray], columns: dict[str, list[int]],
             seed: int) -> dict[str, list[float]]:
    session = _session(model)
    run = _runner(session, arrays)
    base = run(arrays)
    rng = np.random.default_rng(seed)
    effects: dict[str, list[float]] = {}
    for name, listed in columns.items():
        rows = arrays[name].reshape(-1, arrays[name].shape[-1])
        # A random cyclic derangement: every row takes another row's value (a plain permutation
        # of a few rows is too often the identity).
        cycle = rng.permutation(rows.shape[0])
        order = np.empty_like(cycle)
        order[cycle] = np.roll(cycle, -1)
        effects[name] = []
        for column in listed:
            shuffled = rows.copy()
            shuffled[:, column] = rows[order, column]
            moved = run({**arrays, name: shuffled.reshape(arrays[name].shape)})
            effects[name].append(_change(base, moved))
    return effects
