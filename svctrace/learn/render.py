"""The lessons on a terminal, with rich: headings, rules in colour, right and wrong answers marked."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TextIO

from rich.console import Console
from rich.rule import Rule
from rich.text import Text

from svctrace.learn.model import Lesson, Question
from svctrace.learn.progress import LessonRecord
from svctrace.learn.runner import sentence

_CODE = re.compile(r"`([^`]+)`")


def _prose(text: str, style: str = "") -> Text:
    """`code` spans in cyan, the rest plain (never rich markup: the text is data)."""
    t = Text(style=style)
    pos = 0
    for m in _CODE.finditer(text):
        t.append(text[pos:m.start()])
        t.append(m.group(1), style="cyan")
        pos = m.end()
    t.append(text[pos:])
    return t


class RichView:
    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.console = Console(file=out, highlight=False, emoji=False)
        self.width = min(self.console.width, 100)

    def _print(self, obj: object = "", **kw: object) -> None:
        self.console.print(obj, width=self.width, **kw)  # type: ignore[arg-type]

    def heading(self, text: str) -> None:
        self._print()
        self._print(Rule(Text(text, style="bold"), align="left", style="blue"))
        self._print()

    def paragraph(self, text: str) -> None:
        self._print(_prose(text))
        self._print()

    def rules(self, caption: str, lines: Sequence[str]) -> None:
        self._print(Text(f"  {caption}", style="dim"))
        for line in lines:
            # Real rule lines are never re-wrapped: the terminal folds them, a copy gets them whole.
            self.console.print(Text(f"    {line}", style="green"), soft_wrap=True)
        self._print()

    def command(self, command: str, says: str) -> None:
        t = Text("  Try: ", style="dim")
        t.append(command, style="bold cyan")
        if says:
            t.append(f"   ({says})", style="dim")
        self._print(t)
        self._print()

    def question(self, number: int, total: int, q: Question) -> None:
        self._print(Text(f"Question {number} of {total}", style="bold magenta"))
        self._print(_prose(q.prompt, "bold"))
        for letter, option in zip(q.letters, q.options, strict=True):
            t = Text(f"  {letter}) ", style="bold")
            t.append_text(_prose(option))
            self._print(t)

    def prompt(self, text: str) -> None:
        self.console.print(Text(text, style="bold"), end="")
        self.out.flush()

    def echo(self, text: str) -> None:
        self.console.print(Text(text), soft_wrap=True)

    def verdict(self, right: bool, q: Question, chosen: int | None) -> None:
        answer = f"{q.letters[q.answer]}) {q.correct}"
        if right:
            self._print(Text(sentence(f"✓ Right: {answer}"), style="bold green"))
        else:
            self._print(Text(sentence(f"✗ Not quite. The answer is {answer}"), style="bold red"))
        self._print(Text("  Why (from the engine):", style="dim"))
        for line in q.explanation:
            if line.startswith("-A "):
                self.console.print(Text(f"    {line}", style="green"), soft_wrap=True)
            else:
                self._print(Text.assemble("    ", _prose(line)))
        self._print()

    def note(self, text: str) -> None:
        self._print(_prose(text, "yellow" if text.startswith("svctrace: warning") else ""))

    def lesson_list(self, rows: Sequence[tuple[int, Lesson, LessonRecord | None]]) -> None:
        idw = max(len(le.id) for _, le, _ in rows)
        for n, le, rec in rows:
            done = rec is not None and rec.done
            t = Text(f" {'✓' if done else ' '} ", style="bold green")
            t.append(f"{n:>2} ")
            t.append(f"{le.id:<{idw}}", style="bold cyan")
            t.append(f"  {le.title}")
            if done and rec is not None:
                t.append(f"  [{rec.best}/{rec.total}]", style="green" if rec.best == rec.total else "yellow")
            t.append(f"\n        {' ' * idw}{le.summary}", style="dim")
            self._print(t)
