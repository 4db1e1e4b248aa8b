"""Problems found in configuration files, reported as `file:line: message`.

Loading is all-or-nothing: every problem is collected, then one ConfigError
carries them all, so a reload either applies a whole valid policy or keeps
the running one and tells the operator everything that is wrong at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ..common.api import Problem


def _escape(char: str) -> str:
    return char.encode("unicode_escape").decode("ascii")


def printable(text: str) -> str:
    """`text` with every non-printable character written as an escape.

    Messages quote keys and values from the files, and go to the journal, to
    terminals and over D-Bus: a NUL or a lone surrogate (YAML's "\\ud800")
    would make the D-Bus message invalid, a newline would forge a line of
    output and a bidi override would hide text from the operator.
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escape(c) for c in text)


class ConfigError(Exception):
    """The configuration is invalid; `problems` lists everything found."""

    def __init__(self, problems: Sequence[Problem], warnings: Sequence[Problem] = ()) -> None:
        self.problems = list(problems)
        self.warnings = list(warnings)
        super().__init__("\n".join(str(p) for p in self.problems))


@dataclass
class Report:
    """Collects errors and warnings while a configuration is read."""

    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)

    def error(self, file: str, line: int, message: str) -> None:
        self.errors.append(Problem(file, line, printable(message)))

    def warn(self, file: str, line: int, message: str) -> None:
        self.warnings.append(Problem(file, line, printable(message)))

    def raise_if_errors(self) -> None:
        if self.errors:
            raise ConfigError(self.errors, self.warnings)
