"""What a lesson is made of: text, real rules, commands to try, and questions. Stdlib only."""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

LETTERS = "abcdefgh"


@dataclass(frozen=True)
class Text:
    """A paragraph of prose."""

    text: str


@dataclass(frozen=True)
class Rules:
    """Real rule lines (or YAML, or resolv.conf): printed as they are, never re-wrapped."""

    caption: str
    lines: tuple[str, ...]


@dataclass(frozen=True)
class Command:
    """A command the student can run to see the same thing with svctrace or kubectl."""

    command: str
    says: str = ""


Block = Text | Rules | Command


@dataclass(frozen=True)
class Question:
    id: str  # "lesson.kind", stable: the tests find their oracle by it
    kind: str
    prompt: str
    options: tuple[str, ...]
    answer: int  # index into options, computed by the engine when the question was built
    explanation: tuple[str, ...]  # shown after the answer: the engine's hop sentences and diagnostics

    @property
    def letters(self) -> str:
        return LETTERS[: len(self.options)]

    @property
    def correct(self) -> str:
        return self.options[self.answer]


@dataclass(frozen=True)
class LessonContent:
    blocks: tuple[Block, ...]
    questions: tuple[Question, ...]


@dataclass(frozen=True)
class Lesson:
    id: str
    title: str
    summary: str  # one line for --list
    build: Callable[[], LessonContent] = field(repr=False, compare=False)


def make_question(qid: str, prompt: str, correct: str, distractors: Sequence[str],
                  explanation: Sequence[str], *, max_options: int = 4) -> Question:
    """A multiple-choice question: the engine's answer plus distractors from the same data, deduplicated and put
    in an order that depends only on the question's id (the same on every run, not always `a`)."""
    seen = {correct}
    others: list[str] = []
    for d in distractors:
        if d and d not in seen:
            seen.add(d)
            others.append(d)
    others = others[: max_options - 1]
    if not others:
        raise ValueError(f"question {qid}: no distractor differs from the answer {correct!r}")
    options = [correct, *others]
    random.Random(zlib.crc32(qid.encode())).shuffle(options)
    kind = qid.split(".", 1)[-1]
    return Question(qid, kind, prompt, tuple(options), options.index(correct),
                    tuple(line for line in explanation if line))
