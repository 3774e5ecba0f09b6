"""Keep the one safe-loading path: no unpickling, no torch.load without weights_only=True, no
torch.jit.load, anywhere in the package (docs/architecture.md, "Security")."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SOURCES = sorted([*(REPO / "bloatguard").rglob("*.py"), *(REPO / "rules").rglob("*.py")])

FORBIDDEN = [
    (re.compile(r"\bpickle\.loads?\s*\("), "pickle.load"),
    (re.compile(r"\bjit\.load\s*\("), "torch.jit.load"),
    (re.compile(r"\bdill\b|\bjoblib\.load\b|\bcloudpickle\b"), "another unpickler"),
    (re.compile(r"allow_pickle\s*=\s*True"), "numpy allow_pickle"),
    (re.compile(r"(?<![.\w])(eval|exec)\s*\("), "eval/exec"),
]


def _code_lines(path: Path):
    in_docstring = False
    for number, line in enumerate(path.read_text().splitlines(), 1):
        stripped = line.strip()
        if stripped.count('"""') == 1:
            in_docstring = not in_docstring
            continue
        if in_docstring or stripped.startswith("#"):
            continue
        yield number, line.split("#", 1)[0]


def test_no_unpickling_anywhere():
    offences = [f"{path.relative_to(REPO)}:{number}: {name}"
                for path in SOURCES for number, line in _code_lines(path)
                for pattern, name in FORBIDDEN if pattern.search(line)]
    assert offences == []


def test_every_torch_load_is_weights_only_and_explicit():
    """Allowed only as torch.load(path, map_location="cpu", weights_only=True, mmap=True), with
    weights_only passed explicitly so TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD cannot flip it."""
    for path in SOURCES:
        code = "\n".join(line for _, line in _code_lines(path))
        for match in re.finditer(r"torch\.load\s*\(", code):
            call = code[match.start():code.index(")", match.start()) + 1]
            assert "weights_only=True" in call and 'map_location="cpu"' in call, (path, call)
