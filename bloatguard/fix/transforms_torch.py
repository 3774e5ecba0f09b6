"""Magnitude pruning of PyTorch state dicts (only with `--unsafe-fixes`).

torch is imported here only, inside the isolated child that builds or verifies the candidate,
and only after the static reader's pickle scan found nothing but allowlisted globals (BG900
passed): the file is then loaded with `weights_only=True`, which refuses any other global
anyway, so a hostile pickle meets two locks.

A state dict has no graph, so pruning saves bytes only through its layout: the pruned 2-D
weights are stored as sparse CSR tensors with int32 indices when that is smaller than dense
(above roughly 50 % zeros for float32). That changes how the file must be loaded: a sparse
tensor has to be densified (`t.to_dense()`) before `load_state_dict`, which the report says.
Tensors of other ranks keep a dense layout: no sparse layout of them would be smaller.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable


class NotAStateDict(ValueError):
    pass


def load_state_dict(path):
    """The one way bloatguard loads tensors from a pickle-based file (docs/architecture.md, "Security"). mmap keeps
    a large checkpoint out of memory; it needs torch.save's zip format (since torch 1.6)."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as exc:
        if "mmap" in str(exc):
            raise NotAStateDict("a legacy (pre-1.6) torch file; re-save it with torch.save "
                                "to prune it") from None
        raise


def _tensors(state) -> dict[str, Any]:
    """name -> tensor of a state dict, or of the first nested one (checkpoints often wrap it
    as {"state_dict": {...}} or {"model": {...}})."""
    import torch

    if not isinstance(state, dict):
        raise NotAStateDict(f"the file holds a {type(state).__name__}, not a state dict")
    direct = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if direct:
        return state
    for value in state.values():
        if isinstance(value, dict) and any(isinstance(v, torch.Tensor) for v in value.values()):
            return value
    raise NotAStateDict("no tensors found in the file")


def prune_state_dict(src: Path, dst: Path, params: dict[str, Any]) -> list[str]:
    """Zero the `sparsity` share of smallest-magnitude weights of every float layer weight
    (2-D+, named like a weight, at least `min_elements`), per tensor. Tied tensors (one
    storage under several names) are pruned once and stay tied."""
    import torch

    from bloatguard.hygiene import named_like_layer_weight

    sparsity = float(params.get("sparsity", 0.5))
    min_elements = int(params.get("min_elements", 1024))
    state = load_state_dict(src)
    tensors = _tensors(state)
    done: dict[int, Any] = {}
    changes: list[str] = []
    for name, tensor in list(tensors.items()):
        if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point() \
                or tensor.layout != torch.strided or tensor.numel() < min_elements \
                or not named_like_layer_weight(name, tuple(tensor.shape)):
            continue
        key = id(tensor)
        if key not in done:
            done[key] = _prune(tensor, sparsity)
        tensors[name] = done[key]
        sparse = done[key].layout != torch.strided
        changes.append(f"pruned {sparsity:.0%} of {name}" + (" (stored sparse CSR)" if sparse else ""))
    if not changes:
        return []
    torch.save(state, dst)
    return changes


def _prune(tensor, sparsity: float):
    import torch

    dense = tensor.detach().clone()
    count = int(round(sparsity * dense.numel()))
    if count > 0:
        magnitude = dense.abs().reshape(-1).float()
        threshold = magnitude.kthvalue(count).values
        dense[dense.abs() <= threshold.to(dense.dtype)] = 0
    if dense.dim() != 2:
        return dense
    nonzero = int(torch.count_nonzero(dense))
    sparse_bytes = nonzero * (dense.element_size() + 4) + (dense.shape[0] + 1) * 4
    if sparse_bytes >= dense.numel() * dense.element_size():
        return dense
    csr = dense.to_sparse_csr()
    return torch.sparse_csr_tensor(csr.crow_indices().to(torch.int32),
                                   csr.col_indices().to(torch.int32), csr.values(),
                                   size=dense.shape)


def compare_state_dicts(original: str, candidate: str) -> dict[str, Any]:
    """Weight fidelity of a pruned state dict (run in an isolated child): the same names,
    shapes and dtypes once densified, and per tensor the cosine similarity and the relative
    error ||w' - w|| / ||w||. Returns JSON-ready numbers."""
    import torch

    before = _tensors(load_state_dict(original))
    after = _tensors(load_state_dict(candidate))
    if set(before) != set(after):
        missing, extra = sorted(set(before) - set(after)), sorted(set(after) - set(before))
        return {"error": f"names differ (missing {missing[:5]}, added {extra[:5]})"}
    cosine, relative, sparse, changed = 1.0, 0.0, [], 0
    for name, old in before.items():
        new = after[name]
        if not isinstance(old, torch.Tensor):
            continue
        if new.layout != torch.strided:
            sparse.append(name)
            new = new.to_dense()
        if tuple(new.shape) != tuple(old.shape) or new.dtype != old.dtype:
            return {"error": f"{name}: {tuple(old.shape)} {old.dtype} became "
                             f"{tuple(new.shape)} {new.dtype}"}
        if not old.is_floating_point() or torch.equal(old, new):
            continue
        changed += 1
        a, b = old.double().reshape(-1), new.double().reshape(-1)
        norm = float(a.norm())
        cosine = min(cosine, float(a @ b / (norm * float(b.norm()))) if norm and float(b.norm()) else 0.0)
        relative = max(relative, float((a - b).norm()) / norm if norm else float("inf"))
    return {"min_cosine": cosine, "max_relative_error": relative, "sparse": sparse,
            "changed": changed}


# --- running in a fresh process -----------------------------------------------------------------

_CALLS: dict[str, Callable[..., Any]] = {
    "prune": lambda src, dst, params: prune_state_dict(Path(src), Path(dst), params),
    "compare": compare_state_dicts}


def run_in_subprocess(call: str, *args: Any, timeout: float, memory: int) -> Any:
    """Run one of _CALLS in a new interpreter (bloatguard.isolate.run_fresh), JSON in and out,
    with a timeout and an address-space cap.

    Not a fork: a process that has used torch (a test, a notebook) holds OpenMP thread pools
    that a forked child deadlocks on. Raises RuntimeError with a readable reason."""
    from bloatguard.isolate import IsolationError, run_fresh

    try:
        return run_fresh("bloatguard.fix.transforms_torch:_child_call", call, list(args),
                         timeout=timeout, memory=memory)
    except IsolationError as exc:
        message = str(exc)
        if message.startswith("NotAStateDict: "):
            message = message.removeprefix("NotAStateDict: ")
        raise RuntimeError(message + (f": {exc.stderr}" if exc.stderr and "status" in message
                                      else "")) from None


def _child_call(call: str, args: list[Any]) -> Any:
    """In the fresh child: one of _CALLS (bloatguard.isolate reports its exceptions)."""
    return _CALLS[call](*args)
