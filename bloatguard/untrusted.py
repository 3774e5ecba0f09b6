"""Printing names that a model file or a pull request chose (file names, tensor, input and
pickle global names): one rule for every line bloatguard writes.

Control characters, newlines included, would let such a name start a line of its own, and in a
CI log a line such as `::error ...` is a GitHub workflow command. They are printed escaped.
"""

from __future__ import annotations

_ESCAPES = {code: f"\\x{code:02x}" for code in (*range(0x20), 0x7F)}
_ESCAPES.update({ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"})


def one_line(text: str) -> str:
    """`text` with every control character escaped, so it prints as part of one line."""
    return text.translate(_ESCAPES)
