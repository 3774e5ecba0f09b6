"""Progress on stderr.

On a terminal, one status line rewritten in place. In a CI log (not a terminal) that would be
one garbled line, so there each step gets a line of its own, but only once the run has lasted a
few seconds: a quick check prints nothing extra, a long latency run shows it is alive.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from bloatguard.untrusted import one_line


class Progress:
    def __init__(self, stream: TextIO | None = None, *, quiet_for: float = 3.0) -> None:
        self.stream = stream or sys.stderr
        self.terminal = self.stream.isatty()
        self.quiet_until = time.monotonic() + quiet_for

    def __call__(self, index: int, total: int, text: str) -> None:
        line = f"bloatguard: [{index + 1}/{total}] {one_line(text)}"
        if self.terminal:
            self.stream.write(f"\r\033[K{line}")
        elif time.monotonic() >= self.quiet_until:
            self.stream.write(line + "\n")
        else:
            return
        self.stream.flush()

    def done(self) -> None:
        if self.terminal:
            self.stream.write("\r\033[K")
            self.stream.flush()
