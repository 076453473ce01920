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


__all__ = ["run_learn"]
