"""`svctrace learn`: an offline course for the CKA exam, checked by the engine."""

from __future__ import annotations

import sys

import typer

from svctrace.cli import app


@app.command("learn")
def learn_cmd(
    lesson: str | None = typer.Argument(None, help="A lesson (id, number, alias or unique prefix); default: the "
                                        "next one not done.", show_default=False),
    list_: bool = typer.Option(False, "--list", help="List the lessons and what is done."),
    reset: bool = typer.Option(False, "--reset", help="Forget the progress."),
) -> None:
    """Short lessons on Services and kube-proxy, each ending with questions the engine checks."""
    from svctrace.learn import run_learn

    raise typer.Exit(run_learn(lesson, list_only=list_, reset=reset, stdin=sys.stdin, stdout=sys.stdout,
                               state_dir=None))
