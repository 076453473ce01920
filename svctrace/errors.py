"""Errors and warnings that name where they come from. Stdlib only."""

from __future__ import annotations

from dataclasses import dataclass

from svctrace.limits import MAX_MESSAGE, MAX_QUOTE


def shorten(text: object, limit: int = MAX_QUOTE, *, one_line: bool = True) -> str:
    """`text` as it may appear in a message: one line (newlines shown as ⏎; kept with one_line=False), at
    most `limit` characters, the rest replaced by "…". Every message that quotes input goes through here, so
    a 10 MB line is never echoed."""
    s = str(text)
    if len(s) <= limit and (not one_line or ("\n" not in s and "\r" not in s)):
        return s
    if len(s) > 4 * limit:  # do not scan a huge string for newlines
        s = s[: 4 * limit]
        cut = True
    else:
        cut = False
    if one_line:
        s = s.replace("\r\n", "⏎").replace("\n", "⏎").replace("\r", "⏎")
    if len(s) > limit or cut:
        return s[: max(1, limit - 1)] + "…"
    return s


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
        return shorten(where + self.message, MAX_MESSAGE, one_line=False)


class WalkError(SvctraceError):
    """The rules cannot be walked (a loop, absurd depth, too many branches). Exit code 2."""


class Interrupted(KeyboardInterrupt):
    """An interruption (Ctrl-C, SIGTERM) with what was done about it, in one line: "2 debug pods deleted;
    nothing written". The CLI prints it and exits 130."""

    # The last one raised: typer turns a command's KeyboardInterrupt into a bare exit code 130 (typer.core._main:
    # `raise Exit(130) from e`, then returned when not standalone), so the CLI reads what was said here.
    last: Interrupted | None = None

    def __init__(self, *args: object) -> None:
        super().__init__(*args)
        Interrupted.last = self


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
            return shorten(self.message, MAX_MESSAGE, one_line=False)
        where = self.source if self.line is None else f"{self.source}:{self.line}"
        return shorten(f"{where}: {self.message}", MAX_MESSAGE, one_line=False)

    def to_json(self) -> dict[str, object]:
        return {"code": self.code, "message": self.message, "source": self.source, "line": self.line}
