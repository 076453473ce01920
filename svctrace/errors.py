"""Errors and warnings that name where they come from. Stdlib only."""

from __future__ import annotations

from dataclasses import dataclass


class SvctraceError(Exception):
    """Base class: every error the CLI turns into a one-line message and an exit code."""

    exit_code = 2


class InputError(SvctraceError):
    """Bad input: unreadable file, malformed dump, unknown object. Exit code 2."""

    def __init__(self, message: str, *, source: str | None = None, line: int | None = None) -> None:
        self.message = message
        self.source = source
        self.line = line
        super().__init__(self.one_line())

    def one_line(self) -> str:
        where = ""
        if self.source is not None:
            where = self.source if self.line is None else f"{self.source}:{self.line}"
            where += ": "
        return where + self.message


class WalkError(SvctraceError):
    """The rules cannot be walked (a loop, absurd depth, too many branches). Exit code 2."""


class CollectError(SvctraceError):
    """Collection failed. Exit code 3."""

    exit_code = 3


@dataclass(frozen=True)
class Warn:
    """A warning tied to a place in the input (or to none)."""

    message: str
    source: str | None = None
    line: int | None = None
    code: str = "warning"

    def __str__(self) -> str:
        if self.source is None:
            return self.message
        where = self.source if self.line is None else f"{self.source}:{self.line}"
        return f"{where}: {self.message}"

    def to_json(self) -> dict[str, object]:
        return {"code": self.code, "message": self.message, "source": self.source, "line": self.line}
