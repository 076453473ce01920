"""Where a command's cluster comes from, the same for every command that reads one (explain, tui, ...):
a saved snapshot (`--snapshot PATH`, `--demo`) or the live cluster (`--context`, `--kubeconfig`, the
current context by default), read through the one live collector (svctrace.collect.live) and its cache,
fresh for a minute (`--refresh` collects again).

The options are declared once here (typer `Annotated` types) and the commands use them, so that their
spelling, help and completion cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

import typer

from svctrace.cli import complete
from svctrace.errors import InputError

SnapshotOpt = Annotated[
    str | None,
    typer.Option(
        "--snapshot",
        help="A snapshot bundle (directory or .tar.gz), or `demo` for the bundled demo cluster.",
        show_default=False,
    ),
]
DemoOpt = Annotated[bool, typer.Option("--demo", help="Short for --snapshot demo.")]
ContextOpt = Annotated[
    str | None,
    typer.Option(
        "--context",
        help="kubeconfig context (live cluster; default: the current context).",
        autocompletion=complete.contexts,
        show_default=False,
    ),
]
KubeconfigOpt = Annotated[
    str | None,
    typer.Option(
        "--kubeconfig",
        help="kubeconfig file (live cluster; default: $KUBECONFIG, ~/.kube/config).",
        show_default=False,
    ),
]
RefreshOpt = Annotated[
    bool,
    typer.Option(
        "--refresh", help="Live cluster: collect again instead of using the snapshot cached for a minute."
    ),
]
NodeOpt = Annotated[
    str | None,
    typer.Option(
        "--node",
        help="The node whose rules decide (default: the one explain picks).",
        autocompletion=complete.nodes,
        show_default=False,
    ),
]


@dataclass(frozen=True)
class Source:
    """A snapshot path (`demo` included), or None for the live cluster of context/kubeconfig."""

    snapshot: str | None
    context: str | None = None
    kubeconfig: str | None = None
    refresh: bool = False

    @property
    def live(self) -> bool:
        return self.snapshot is None

    def describe(self) -> str:
        """How the TUI names a live source while it loads."""
        return f"context {self.context}" if self.context else "the current context"


def source(
    snapshot: str | None,
    demo: bool,
    context: str | None = None,
    kubeconfig: str | None = None,
    refresh: bool = False,
) -> Source:
    """The one reading of --snapshot/--demo/--context/--kubeconfig/--refresh; InputError (exit 2) for
    options that contradict each other."""
    if demo:
        if snapshot not in (None, "demo"):
            raise InputError("give --snapshot or --demo, not both")
        snapshot = "demo"
    if snapshot is not None and (context or kubeconfig):
        raise InputError(
            f"--{'context' if context else 'kubeconfig'} reads a live cluster; not with "
            f"{'--demo' if demo else '--snapshot'}"
        )
    return Source(snapshot, context, kubeconfig, refresh)


def progress() -> Callable[[str], None]:
    """Live collection's progress, dim on stderr (stdout carries data only)."""
    from rich.console import Console

    err = Console(stderr=True)
    return lambda m: err.print(f"[dim]{m}[/dim]", highlight=False)


def question_snapshot(
    src: Source, target: str, namespace: str | None, node: str | None, from_: str | None
) -> tuple[str, str | None]:
    """(snapshot path, namespace) for one question about `target`: the snapshot as given, or what the live
    cluster holds for it (only what the question needs, cached). Live, with no -n and a target that names
    no namespace, the namespace is the context's (kubectl's rule)."""
    if src.snapshot is not None:
        return src.snapshot, namespace
    from svctrace.collect import live
    from svctrace.explain import question

    if namespace is None and question.parse_target(target).namespace is None:
        namespace = live.context_namespace(src.context, src.kubeconfig)
    path = live.snapshot_for_question(
        target,
        namespace,
        node,
        source=from_,
        context=src.context,
        kubeconfig=src.kubeconfig,
        refresh=src.refresh,
        progress=progress(),
    )
    return path, namespace


def screen_opener(
    src: Source, namespace: str | None, node: str | None
) -> Callable[[Callable[[str], None], bool], str]:
    """For the TUI on a live cluster: (progress, refresh) -> the snapshot of what its screens need
    (collect.live.snapshot_for_screen: the same collector and cache as a question's)."""

    def open_(say: Callable[[str], None], refresh: bool) -> str:
        from svctrace.collect import live

        return live.snapshot_for_screen(
            namespace,
            node,
            context=src.context,
            kubeconfig=src.kubeconfig,
            refresh=refresh or src.refresh,
            progress=say,
        )

    return open_
