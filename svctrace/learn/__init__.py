"""`svctrace learn`: an offline course on Kubernetes Services for the CKA exam, in the terminal.

Each lesson shows the real rules of its example (the bundled demo cluster's node dumps, or what `simulate()`
makes of a small YAML) and ends with multiple-choice questions whose answers the engine computes at run time.

The CLI wraps `run_learn` as `svctrace learn [LESSON] [--list] [--reset]`. The lessons and the question logic
(`lessons`, `engine`, `model`, `progress`, `runner`) import no UI library; only `render` uses rich, for terminals.
"""

from __future__ import annotations

from pathlib import Path
from typing import TextIO


def _isatty(stream: object) -> bool:
    try:
        return bool(stream.isatty())  # type: ignore[attr-defined]
    except (AttributeError, ValueError, OSError):
        return False


def run_learn(lesson: str | None, *, list_only: bool = False, reset: bool = False, stdin: TextIO,
              stdout: TextIO, state_dir: Path | None = None) -> int:
    """Run the course (no `lesson`: from the first lesson not done), one lesson (an id, a number or a unique
    prefix), or with `list_only` the list of lessons with a done mark. `reset` forgets the progress first.

    Answers are read line by line from `stdin`; end of input ends the lesson (progress saved). Progress lives in
    `state_dir/learn.json`, by default `$XDG_STATE_HOME/svctrace/learn.json` (`~/.local/state/svctrace/...`).
    Returns the exit code (0); an unknown lesson raises `svctrace.errors.InputError` (exit code 2).
    """
    from svctrace.learn.progress import Progress
    from svctrace.learn.runner import PlainView, Session, View, run

    view: View
    if _isatty(stdout):
        from svctrace.learn.render import RichView

        view = RichView(stdout)
    else:
        view = PlainView(stdout)
    session = Session(stdin, view, Progress.load(state_dir), echo_input=not _isatty(stdin))
    return run(lesson, list_only=list_only, reset=reset, session=session)


def run_answer(lesson: str, answers: str | None, *, as_json: bool, stdout: TextIO,
               state_dir: Path | None = None) -> int:
    """`svctrace learn LESSON --answer b,a,c` (grade, exit 0 right / 1 wrong) and `svctrace learn LESSON -o json`
    (the questions, no answers): a lesson taken by a script."""
    import json

    from svctrace.errors import InputError
    from svctrace.learn.lessons import LESSONS, find_lesson
    from svctrace.learn.progress import Progress
    from svctrace.learn.runner import answer_lesson, lesson_json

    chosen = find_lesson(lesson)
    if chosen is None:
        raise InputError(f"no lesson {lesson!r}; lessons: {', '.join(le.id for le in LESSONS)}")
    if answers is None:
        stdout.write(json.dumps(lesson_json(chosen), indent=2) + "\n")
        return 0
    progress = Progress.load(state_dir)
    code, verdicts = answer_lesson(chosen, answers, progress)
    progress.save()
    if as_json:
        stdout.write(json.dumps({"lesson": chosen.id, "passed": code == 0, "questions": verdicts}, indent=2) + "\n")
    else:
        for v in verdicts:
            stdout.write(f"{v['id']}: {v['answer']} — {'right' if v['right'] else 'wrong, the answer is ' + str(v['correct'])}\n")
        right = sum(1 for v in verdicts if v["right"])
        stdout.write(f"{right}/{len(verdicts)} right.\n")
    return code


def run_drill(*, seed: int | None, cls: str | None, directory: str | None, timed: bool, answer: str | None,
              fix: str | None, list_only: bool, as_json: bool, stdin: TextIO, stdout: TextIO,
              state_dir: Path | None = None) -> int:
    """`svctrace learn drill`: start a drill (no --answer/--fix), or grade one. Exit 0 right, 1 wrong."""
    from svctrace.learn import drill_run
    from svctrace.learn.progress import Progress

    progress = Progress.load(state_dir)
    if list_only:
        drill_run.list_classes(progress, stdout)
        return 0
    if answer is None and fix is None:
        d = drill_run.start(seed, cls, directory, timed, progress, stdout, as_json)
        progress.save()
        if as_json or not (_isatty(stdin) and _isatty(stdout)):
            return 0
        cause, fix = drill_run.ask_interactively(d, stdin, stdout)
        if cause is None:
            return 0
        code = drill_run.answer(None, None, cause, fix, progress, stdout, stdin, False)
        progress.save()
        return code
    code = drill_run.answer(seed, cls, answer, fix, progress, stdout, stdin, as_json)
    progress.save()
    return code


def run_show(what: str, namespace: str | None, all_namespaces: bool, snapshot: str, output: str,
             stdout: TextIO) -> int:
    """`svctrace learn show KIND[/NAME] [-n NS | -A] --snapshot DIR [-o yaml|json]`: kubectl get on a snapshot."""
    from svctrace.learn import drill_run

    return drill_run.show(what, None if all_namespaces else (namespace or "default"), snapshot, output, stdout)


__all__ = ["run_answer", "run_drill", "run_learn", "run_show"]
