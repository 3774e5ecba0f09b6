r"""Printing names that a model file or a pull request chose (file names, tensor, input and
pickle global names): one rule for every line bloatguard writes.

Control characters, newlines included, would let such a name start a line of its own, and in a
CI log a line such as `::error ...` is a GitHub workflow command. They are printed escaped, and
so is the first colon of a name that starts with `::` (a report line that begins with the name
must not begin a command). A file name that is not UTF-8 reaches Python as surrogate escapes
(os.fsdecode), which no UTF-8 stream or XML parser accepts: every report prints those bytes as
`\xNN` (`printable`), JSON as its own `\udcNN` escapes.
"""

from __future__ import annotations

from typing import Any

_ESCAPES = {code: f"\\x{code:02x}" for code in (*range(0x20), 0x7F)}
_ESCAPES.update({ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"})
# Bidirectional controls reorder how the rest of a line reads ("Trojan source"): a name holding
# U+202E shows its tail reversed in a log or a PR comment. Escaped like control characters.
_ESCAPES.update({code: f"\\u{code:04x}" for code in (0x200E, 0x200F, *range(0x202A, 0x202F),
                                                     *range(0x2066, 0x206A))})
# os.fsdecode's surrogate escapes of the bytes 0x80-0xFF of a name that is not UTF-8.
_SURROGATES = {code: f"\\x{code - 0xDC00:02x}" for code in range(0xDC80, 0xDD00)}
_ESCAPES.update(_SURROGATES)


def one_line(text: str) -> str:
    """`text` with every control character escaped, so it prints as part of one line, and
    never as the start of a workflow command."""
    text = text.translate(_ESCAPES)
    return "\\x3a" + text[1:] if text.startswith("::") else text


class CommandGuard:
    """A text stream that never carries a GitHub runner's legacy command. The runner takes
    `##[command]data` (`##[error]`, `##[add-mask]`, `##[stop-commands]`) from *anywhere* in a
    log line, not only from its start, so a name holding one would act wherever it is printed:
    in a text report, a JSON report, a `show` table or an error message. `##[` is written as
    `#\u0023[`, which JSON reads back as the same name and people read as an escape."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        return self._stream.write(text.replace("##[", "#\\u0023["))

    def __getattr__(self, name: str) -> Any:  # flush, fileno, isatty, encoding, buffer, ...
        return getattr(self._stream, name)


def printable(text: str) -> str:
    """A whole report with the bytes of non-UTF-8 names as `\\xNN`: valid UTF-8 on any stream."""
    return text.translate(_SURROGATES)
