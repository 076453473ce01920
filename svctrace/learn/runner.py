"""Running lessons in a terminal or from a pipe: answers are read line by line, so
`printf 'b\\na\\n' | svctrace learn clusterip` works. End of input ends the lesson cleanly (progress is saved),
`q` quits, an answer that is not an option is asked again once and then the lesson moves on.

Pure: the output goes through a `View` (plain text here; `render.RichView` adds colour on a terminal).
"""

from __future__ import annotations

import shutil
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, TextIO

from svctrace.learn.lessons import LESSONS, find_lesson
from svctrace.learn.model import Command, Lesson, Question, Rules, Text
from svctrace.learn.progress import LessonRecord, Progress

QUIT = -1
EOF = -2
SKIPPED = -3
QUIT_WORDS = ("q", "quit", "exit")


class View(Protocol):
    def heading(self, text: str) -> None: ...
    def paragraph(self, text: str) -> None: ...
    def rules(self, caption: str, lines: Sequence[str]) -> None: ...
    def command(self, command: str, says: str) -> None: ...
    def question(self, number: int, total: int, q: Question) -> None: ...
    def prompt(self, text: str) -> None: ...
    def echo(self, text: str) -> None: ...
    def verdict(self, right: bool, q: Question, chosen: int | None) -> None: ...
    def note(self, text: str) -> None: ...
    def lesson_list(self, rows: Sequence[tuple[int, Lesson, LessonRecord | None]]) -> None: ...


def pass_mark(total: int) -> int:
    """Right answers a lesson needs to be done: two thirds of its questions, rounded up."""
    return -(-2 * total // 3)


def passes(score: int, total: int) -> bool:
    return score >= pass_mark(total)


def sentence(text: str) -> str:
    """`text` ending in one full stop: an answer that ends with a dot (a DNS name such as `web.default.svc.cluster.local.`)
    gets no second one."""
    return text if text.endswith((".", "!", "?")) else text + "."


def printable(text: str, limit: int = 60) -> str:
    """A line the learner typed, safe to print back (no control characters, not too long)."""
    out = "".join(c if c.isprintable() else "?" for c in text)
    return out if len(out) <= limit else out[: limit - 1] + "…"


class PlainView:
    """Plain text, wrapped to the terminal (at most 100 columns): for pipes, files and tests."""

    def __init__(self, out: TextIO, width: int | None = None) -> None:
        self.out = out
        self.width = width or max(40, min(shutil.get_terminal_size((100, 24)).columns, 100))

    def _w(self, text: str = "") -> None:
        self.out.write(text + "\n")

    def _wrap(self, text: str, indent: str = "", first: str | None = None) -> None:
        self._w(textwrap.fill(text, self.width, initial_indent=first if first is not None else indent,
                              subsequent_indent=indent, break_long_words=False, break_on_hyphens=False))

    def heading(self, text: str) -> None:
        self._w()
        self._w(f"== {text} ==")
        self._w()

    def paragraph(self, text: str) -> None:
        self._wrap(text)
        self._w()

    def rules(self, caption: str, lines: Sequence[str]) -> None:
        self._w(f"  {caption}:")
        for line in lines:
            self._w(f"    {line}")
        self._w()

    def command(self, command: str, says: str) -> None:
        self._w(f"  Try: {command}" + (f"   ({says})" if says else ""))
        self._w()

    def question(self, number: int, total: int, q: Question) -> None:
        self._w(f"Question {number} of {total}")
        self._wrap(q.prompt)
        for letter, option in zip(q.letters, q.options, strict=True):
            self._wrap(option, indent="     ", first=f"  {letter}) ")

    def prompt(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()

    def echo(self, text: str) -> None:
        self._w(text)

    def verdict(self, right: bool, q: Question, chosen: int | None) -> None:
        answer = f"{q.letters[q.answer]}) {q.correct}"
        if right:
            self._wrap(sentence(f"Right: {answer}"))
        else:
            self._wrap(sentence(f"Not quite. The answer is {answer}"))
        self._w("  Why (from the engine):")
        for line in q.explanation:
            if line.startswith("-A "):
                self._w(f"    {line}")  # a rule: whole, never wrapped
            else:
                self._wrap(line, indent="      ", first="    ")
        self._w()

    def note(self, text: str) -> None:
        self._wrap(text)

    def lesson_list(self, rows: Sequence[tuple[int, Lesson, LessonRecord | None]]) -> None:
        idw = max(len(le.id) for _, le, _ in rows)
        for n, le, rec in rows:
            mark = "✓" if rec is not None and rec.done else " "
            score = f"{rec.best}/{rec.total}" if rec is not None and rec.done else ""
            self._w(f" {mark} {n:>2} {le.id:<{idw}}  {le.title}" + (f"  [{score}]" if score else ""))
            self._w(f"        {' ' * idw}{le.summary}")


@dataclass
class Session:
    stdin: TextIO
    view: View
    progress: Progress
    echo_input: bool  # the terminal does not echo what a pipe feeds: print it after the prompt
    warned: bool = False  # a progress file that cannot be written is reported once

    def read(self) -> str | None:
        try:
            line = self.stdin.readline()
        except UnicodeDecodeError:
            return "\ufffd"
        except (OSError, ValueError):
            return None
        if line == "":
            return None
        return line.rstrip("\r\n")

    def save(self) -> None:
        if not self.progress.save() and self.progress.problem and not self.warned:
            self.view.note(f"svctrace: warning: {self.progress.problem}")
            self.warned = True
        self.progress.problem = None


def parse_answer(line: str, q: Question) -> int | None:
    s = line.strip().lower().rstrip(").:")
    if s in QUIT_WORDS:
        return QUIT
    if len(s) == 1 and s in q.letters:
        return q.letters.index(s)
    if s.isascii() and s.isdigit() and len(s) < 4 and 1 <= int(s) <= len(q.options):
        return int(s) - 1
    return None


def ask(session: Session, q: Question) -> int:
    """The learner's choice (an option index), or QUIT, EOF, SKIPPED after a second invalid answer."""
    letters = f"{q.letters[0]}-{q.letters[-1]}"
    for attempt in (1, 2):
        session.view.prompt(f"Your answer ({letters}, q to quit): ")
        line = session.read()
        if line is None:
            session.view.echo("")
            return EOF
        if session.echo_input:
            session.view.echo(printable(line))
        choice = parse_answer(line, q)
        if choice is not None:
            return choice
        if attempt == 1:
            session.view.note(f"'{printable(line.strip(), 30)}' is not one of {', '.join(q.letters)}: answer with a "
                              "letter (or q to quit).")
    session.view.note("Still not an option: moving on.")
    return SKIPPED


def run_lesson(session: Session, lesson: Lesson) -> str:
    """Teach one lesson and ask its questions: "done", "quit" or "eof"."""
    number = LESSONS.index(lesson) + 1
    content = lesson.build()
    v = session.view
    v.heading(f"Lesson {number} of {len(LESSONS)}: {lesson.title}")
    for b in content.blocks:
        if isinstance(b, Text):
            v.paragraph(b.text)
        elif isinstance(b, Rules):
            v.rules(b.caption, b.lines)
        elif isinstance(b, Command):
            v.command(b.command, b.says)
    total = len(content.questions)
    score = 0
    skipped = 0
    for i, q in enumerate(content.questions):
        v.question(i + 1, total, q)
        choice = ask(session, q)
        if choice in (QUIT, EOF):
            session.progress.answered(lesson.id, score, i, total)
            session.save()
            v.note("Quit: progress saved." if choice == QUIT else "End of input: progress saved.")
            return "quit" if choice == QUIT else "eof"
        right = choice == q.answer
        score += right
        skipped += choice == SKIPPED
        v.verdict(right, q, None if choice == SKIPPED else choice)
        session.progress.answered(lesson.id, score, i + 1, total)
        session.save()
    if skipped or not passes(score, total):
        # Not done: a question without an answer (two answers that were no option) is not answered, and a lesson
        # is done once its answers pass (two thirds right), not merely once its last question was seen.
        session.progress.answered(lesson.id, score, total - skipped, total)
        session.save()
        why = (f"{skipped} question(s) not answered" if skipped
               else f"{pass_mark(total)} of {total} right answers complete it")
        v.note(f"Lesson {lesson.id}: {score}/{total} — not done yet ({why}). Again: svctrace learn {lesson.id}")
        return "tried"
    session.progress.finished(lesson.id, score, total)
    session.save()
    nxt = LESSONS[number] if number < len(LESSONS) else None
    v.note(f"Lesson {lesson.id} done: {score}/{total}."
           + (f" Next: svctrace learn {nxt.id}" if nxt is not None else " That was the last lesson."))
    return "done"


def list_lessons(view: View, progress: Progress) -> None:
    done = sum(1 for le in LESSONS if (r := progress.lessons.get(le.id)) is not None and r.done)
    view.heading(f"svctrace learn: Kubernetes Services for the CKA, on real rules ({done} of {len(LESSONS)} done)")
    view.lesson_list([(i + 1, le, progress.lessons.get(le.id)) for i, le in enumerate(LESSONS)])
    view.note("")
    view.note("Run one with `svctrace learn LESSON` (an id, a number or a prefix); `svctrace learn` continues "
              "where you stopped; `--reset` forgets your progress.")


def run(lesson: str | None, *, list_only: bool, reset: bool, session: Session) -> int:
    from svctrace.errors import InputError

    chosen = None
    if lesson is not None:
        chosen = find_lesson(lesson)
        if chosen is None:
            raise InputError(f"no lesson {lesson!r}; lessons: {', '.join(le.id for le in LESSONS)} "
                             "(see svctrace learn --list)")
    if session.progress.problem:
        session.view.note(f"svctrace: warning: {session.progress.problem}")
        session.progress.problem = None
    if reset:
        if session.progress.reset():
            session.view.note(f"Progress cleared ({session.progress.path}).")
        elif session.progress.problem:
            session.view.note(f"svctrace: warning: {session.progress.problem}")
        if chosen is None and not list_only:
            return 0
    if list_only:
        list_lessons(session.view, session.progress)
        return 0
    if chosen is not None:
        run_lesson(session, chosen)
        return 0
    todo = [le for le in LESSONS if not ((r := session.progress.lessons.get(le.id)) is not None and r.done)]
    if not todo:
        list_lessons(session.view, session.progress)
        session.view.note("Every lesson is done. Repeat one with `svctrace learn LESSON`, or start over with "
                          "`svctrace learn --reset`.")
        return 0
    for le in todo:
        if run_lesson(session, le) != "done":
            break
    return 0


def lesson_json(lesson: Lesson) -> dict[str, object]:
    """A lesson's questions as a script sees them (no answers): id, prompt, options with their letters."""
    content = lesson.build()
    return {"lesson": lesson.id, "title": lesson.title, "questions": [
        {"id": q.id, "prompt": q.prompt, "options": [{"letter": q.letters[i], "text": o}
                                                     for i, o in enumerate(q.options)]}
        for q in content.questions]}


def answer_lesson(lesson: Lesson, answers: str, progress: Progress) -> tuple[int, list[dict[str, object]]]:
    """Grade `answers` (letters or numbers, one per question, separated by commas: `b,a,c`) for a lesson, record the
    result like a run in the terminal, and return (exit code 0 all right / 1 not, one verdict per question)."""
    from svctrace.errors import InputError

    content = lesson.build()
    given = [a.strip() for a in answers.split(",")]
    if len(given) != len(content.questions):
        raise InputError(f"--answer: lesson {lesson.id} has {len(content.questions)} questions; give one answer "
                         f"each, separated by commas (got {len(given)})")
    verdicts: list[dict[str, object]] = []
    score = 0
    for q, a in zip(content.questions, given, strict=True):
        choice = parse_answer(a, q)
        if choice is None or choice < 0:
            raise InputError(f"--answer: {printable(a, 20)!r} is not one of {', '.join(q.letters)} (question {q.id})")
        right = choice == q.answer
        score += right
        verdicts.append({"id": q.id, "answer": q.letters[choice], "right": right,
                         "correct": q.letters[q.answer], "explanation": list(q.explanation)})
    if passes(score, len(content.questions)):
        progress.finished(lesson.id, score, len(content.questions))
    else:
        progress.answered(lesson.id, score, len(content.questions), len(content.questions))
    return (0 if score == len(content.questions) else 1), verdicts
