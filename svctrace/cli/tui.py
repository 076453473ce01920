"""`svctrace tui`: the interactive chain browser (Textual)."""

from __future__ import annotations

import typer

from svctrace.cli import app


@app.command("tui")
def tui_cmd(
    path: str | None = typer.Argument(None, help="A snapshot (directory, .tar.gz, or `demo`) or one node's dump.",
                                      show_default=False),
    target: str | None = typer.Argument(None, help="svc/NAME to open its trace at once.", show_default=False),
    namespace: str | None = typer.Option(None, "--namespace", "-n", help="Only this namespace's Services."),
    demo: bool = typer.Option(False, "--demo", help="Open the bundled demo cluster."),
) -> None:
    """Browse Services, chains and rules; trace a packet and watch its paths light up."""
    import sys
    from pathlib import Path

    from svctrace.errors import InputError
    from svctrace.tui import run_tui

    if demo and path and target is None:
        path, target = None, path  # `svctrace tui --demo svc/web`
    if path is not None and path not in ("demo", "demo:") and not Path(path).exists():
        raise InputError("no such snapshot or dump (a directory, a .tar.gz, one node's dump, or `demo`)", source=path)
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise InputError("the TUI needs a terminal; for scripts use `svctrace explain ... -o json`")
    raise typer.Exit(run_tui("demo" if demo else path, target, namespace))
