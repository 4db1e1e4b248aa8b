"""Where and how bouhekictl's results go: stdout for results, stderr for diagnostics."""

from __future__ import annotations

import sys
from typing import Any, Callable, Optional, TextIO

from . import render


class Output:
    def __init__(
        self, json_mode: bool, out: Optional[TextIO] = None, err: Optional[TextIO] = None
    ) -> None:
        self.json = json_mode
        # Resolved at call time, so a test's redirected sys.stdout is honoured.
        self.out = out or sys.stdout
        self.err = err or sys.stderr

    def result(self, data: Any, human: Callable[[Any], str]) -> None:
        print(render.to_json(data) if self.json else human(data), file=self.out)

    def line(self, text: str) -> None:
        """One line of a stream (monitor), flushed at once for pipes."""
        print(text, file=self.out, flush=True)

    def warn(self, message: str) -> None:
        print(f"warning: {message}", file=self.err)

    def note(self, message: str) -> None:
        print(message, file=self.err, flush=True)
