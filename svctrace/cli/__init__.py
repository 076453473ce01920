"""The `svctrace` command line (also installed as `kubectl-svctrace`, so `kubectl svctrace` works).

stdout carries data only; errors and warnings go to stderr. Exit codes (see docs/cli.md):
0 answered and every outcome reaches a destination, 1 answered but some outcome is dropped or
rejected, 2 bad usage or bad input, 3 collection failed.
"""

from __future__ import annotations

import os
import sys

import typer

from svctrace import __version__
from svctrace.errors import Interrupted, SvctraceError, shorten
from svctrace.limits import MAX_MESSAGE

app = typer.Typer(
    name="svctrace",
    help="Where does a packet sent to a Kubernetes Service really go? svctrace rebuilds a node's "
    "netfilter rules and walks them like the kernel, over every branch at once.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"svctrace {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """svctrace: trace packets through kube-proxy's rules."""




def emit_json(doc: object, warnings: list) -> None:
    """-o json: the document on stdout and nothing else; warnings on stderr."""
    import json

    sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    for w in warnings:
        sys.stderr.write(f"svctrace: warning: {w}\n")


def error(message: str, code: int = 2) -> None:
    sys.stderr.write(f"svctrace: error: {shorten(message, MAX_MESSAGE, one_line=False)}\n")
    sys.exit(code)


# Each command lives in the module of its name and registers itself on `app` when imported; in this order
# (the order of `svctrace --help`).  A run imports only its command's module, so `svctrace trace` never loads
# the kubernetes client, paramiko or Textual (issue 13: start-up is part of what a user pays).
COMMANDS = ("collect", "explain", "learn", "simulate", "trace", "tui")


def load_commands(*names: str) -> typer.Typer:
    """Register the named commands (every command when none is named) on `app`, and return it."""
    import importlib

    for name in names or COMMANDS:
        importlib.import_module(f"svctrace.cli.{name}")
    return app


def _command_of(argv: list[str]) -> str | None:
    """The command a command line runs, when it names one of ours before anything else (else None: --help,
    --version, a typo, ... which need every command)."""
    first = next((a for a in argv if not a.startswith("-")), None)
    if first is None or first not in COMMANDS or argv.index(first) != 0:
        return None
    return first


def _interruption_of(e: BaseException) -> KeyboardInterrupt | None:
    seen: BaseException | None = e
    for _ in range(4):
        seen = seen.__cause__ or seen.__context__ if seen is not None else None
        if isinstance(seen, KeyboardInterrupt):
            return seen
    return None


def _interrupted(e: KeyboardInterrupt) -> None:
    """One line, exit 130: `svctrace: interrupted`, and what was done about it when a command says (collect:
    the debug pods deleted, nothing written)."""
    said = str(e) if isinstance(e, Interrupted) and str(e) else ""
    sys.stderr.write("svctrace: interrupted" + (f"; {said}" if said else "") + "\n")
    sys.exit(130)


def prepare(argv: list[str]) -> str | None:
    """Load what a command line needs (its command, or every command) and return the command's name."""
    command = _command_of(argv)
    load_commands(*([command] if command else []))
    return command


def main(command: str | None = None, *, prepared: bool = False) -> None:
    """Run the command line: svctrace's errors as one line and their exit code, an interruption as 130."""
    try:
        if not prepared and command is None:
            prepare(sys.argv[1:])
        app(standalone_mode=True)
    except SvctraceError as e:
        error(str(e), e.exit_code)
    except KeyboardInterrupt as e:
        _interrupted(e)
    except SystemExit as e:
        # typer turns a command's KeyboardInterrupt into a silent exit 130 (Exit(130) from the interrupt)
        cause = _interruption_of(e)
        if cause is None:
            raise
        _interrupted(cause)
    except BrokenPipeError:
        # `svctrace ... | head`: the reader went away; that is not an error of ours.
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115
        finally:
            sys.exit(0)
    except RecursionError:  # a structure nested deeper than a reader bounds: still the input's fault
        if os.environ.get("SVCTRACE_DEBUG"):
            raise
        error("the input nests deeper than svctrace can follow (RecursionError; please report it with the input, "
              "see docs/limits.md)", 2)
    except Exception as e:  # never a traceback for a user; SVCTRACE_DEBUG=1 shows it
        if os.environ.get("SVCTRACE_DEBUG"):
            raise
        error(f"internal error: {type(e).__name__}: {shorten(e, 300)} (run with SVCTRACE_DEBUG=1 for details, and "
              "please report it with the input that caused it)", 70)
