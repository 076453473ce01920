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
    from svctrace.tui import run_tui

    if demo and path and target is None:
        path, target = None, path  # `svctrace tui --demo svc/web`
    raise typer.Exit(run_tui("demo" if demo else path, target, namespace))
