"""`svctrace tui`: the interactive chain browser (Textual), on whatever explain reads: a snapshot, the
demo, one node's dump, or a live cluster (through the same collector and cache as live explain)."""

from __future__ import annotations

import typer

from svctrace.cli import app, complete
from svctrace.cli.source import ContextOpt, DemoOpt, KubeconfigOpt, NodeOpt, RefreshOpt, SnapshotOpt, source

SERVICE = complete.SERVICE_PREFIXES  # a first argument that is a Service, not a file


@app.command("tui")
def tui_cmd(
    path: str | None = typer.Argument(None, help="A snapshot (directory, .tar.gz, or `demo`) or one node's dump "
                                      "(the same as --snapshot).", show_default=False,
                                      autocompletion=complete.path_or_service),
    target: str | None = typer.Argument(None, help="svc/NAME to open its trace at once.", show_default=False,
                                        autocompletion=complete.services),
    namespace: str | None = typer.Option(None, "--namespace", "-n", help="Only this namespace's Services (live: "
                                         "only this namespace is read).", autocompletion=complete.namespaces),
    snapshot: SnapshotOpt = None,
    demo: DemoOpt = False,
    context: ContextOpt = None,
    kubeconfig: KubeconfigOpt = None,
    refresh: RefreshOpt = False,
    node: NodeOpt = None,
) -> None:
    """Browse Services, chains and rules; trace a packet and watch its paths light up. Without a snapshot,
    on the live cluster (ctrl+r collects again)."""
    import sys
    from pathlib import Path

    from svctrace.errors import InputError
    from svctrace.tui import run_tui

    if path and target is None and not Path(path).exists() and (demo or snapshot or path.startswith(SERVICE)):
        path, target = None, path  # `svctrace tui --demo svc/web`, `svctrace tui svc/web` (live)
    if path is not None:
        if snapshot not in (None, path):
            raise InputError(f"give the snapshot once: {path} or --snapshot {snapshot}")
        snapshot = path
    src = source(snapshot, demo, context, kubeconfig, refresh)
    if src.snapshot is not None and src.snapshot not in ("demo", "demo:") and not Path(src.snapshot).exists():
        raise InputError("no such snapshot or dump (a directory, a .tar.gz, one node's dump, or `demo`)",
                         source=src.snapshot)
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise InputError("the TUI needs a terminal; for scripts use `svctrace explain ... -o json`")
    if src.live:
        from svctrace.cli.source import screen_opener

        raise typer.Exit(run_tui(None, target, namespace, opener=screen_opener(src, namespace, node),
                                 source_title=src.describe(), node=node))
    raise typer.Exit(run_tui(src.snapshot, target, namespace, node=node))
