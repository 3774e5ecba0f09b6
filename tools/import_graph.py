#!/usr/bin/env python3
"""The package's import graph, imports inside functions and under TYPE_CHECKING included, and
the two rules it must keep (docs/architecture.md):

- no cycles: shared types live below the modules that share them;
- rules see facts, never a file format: no module under rules/ imports bloatguard.formats,
  bloatguard.graph (the ONNX graph questions: rules read bloatguard.opgraph instead), onnx,
  onnxruntime, torch or subprocess.

Usage: python tools/import_graph.py [--check] [--root DIR]
Prints the cycles and the forbidden imports; with --check, exits 1 if there is any.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

PACKAGES = {"bloatguard": "bloatguard", "rules": "bloatguard.rules"}
FORBIDDEN_IN_RULES = ("bloatguard.formats", "bloatguard.graph", "onnx", "onnxruntime", "torch",
                      "subprocess")


def modules(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for the package and its rules (installed as bloatguard.rules)."""
    found = {}
    for folder, package in PACKAGES.items():
        for path in sorted((root / folder).rglob("*.py")):
            parts = path.relative_to(root / folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join((package, *parts))] = path
    return found


def imported_names(path: Path, module: str, is_package: bool) -> list[str]:
    """Every dotted name a module imports, anywhere in it (relative imports resolved)."""
    package = module if is_package else module.rpartition(".")[0]
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            names.append(base)
            names += [f"{base}.{alias.name}" for alias in node.names]
    return names


def graph(root: Path) -> tuple[dict[str, set[str]], dict[str, list[str]]]:
    """(module -> project modules it imports, module -> every name it imports)."""
    found = modules(root)
    edges: dict[str, set[str]] = {name: set() for name in found}
    imports: dict[str, list[str]] = {}
    for name, path in found.items():
        imports[name] = imported_names(path, name, path.name == "__init__.py")
        for imported in imports[name]:
            target = imported
            while target and target not in found:
                target = target.rpartition(".")[0]
            # `from bloatguard.x import y` names the package too; importing a package from
            # inside it (its own __init__) is no edge.
            if target and target != name and not (name.startswith(target + ".") and imported == target):
                edges[name].add(target)
    return edges, imports


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for start in edges:
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return sorted(found)


def forbidden_rule_imports(imports: dict[str, list[str]]) -> list[tuple[str, str]]:
    return sorted({(module, name) for module, names in imports.items()
                   if module.startswith("bloatguard.rules") for name in names
                   if any(name == bad or name.startswith(bad + ".") for bad in FORBIDDEN_IN_RULES)})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 on any cycle or forbidden import")
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent)
    args = parser.parse_args(argv)
    edges, imports = graph(args.root)
    found = cycles(edges)
    for component in found:
        print("cycle: " + " <-> ".join(component))
    bad = forbidden_rule_imports(imports)
    for module, name in bad:
        print(f"rule imports a reader or runtime: {module} imports {name}")
    print(f"{len(found)} import cycle(s), {len(bad)} forbidden rule import(s) among {len(edges)} modules")
    return 1 if args.check and (found or bad) else 0


if __name__ == "__main__":
    sys.exit(main())
