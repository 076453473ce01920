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
from svctrace.errors import SvctraceError

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




def error(message: str, code: int = 2) -> None:
    sys.stderr.write(f"svctrace: error: {message}\n")
    sys.exit(code)


def usage_error(e: Exception, command: str | None = None) -> None:
    """A usage error (a missing argument, an unknown option or command, a bad value) as one line, exit 2:
    `svctrace: error: svctrace explain: No such option: --bogus (see svctrace explain -h)`."""
    ctx = getattr(e, "ctx", None)
    path = ctx.command_path if ctx is not None else " ".join(["svctrace", *([command] if command else [])])
    fmt = getattr(e, "format_message", None)
    message = " ".join((fmt() if callable(fmt) else str(e)).split())
    error(f"{path}: {message} (see {path} -h)", 2)


# Each command lives in the module of its name and registers itself on `app` when imported; in this order
# (the order of `svctrace --help`).  A run imports only its command's module, so `svctrace trace` never loads
# the kubernetes client, paramiko or Textual (issue 13: start-up is part of what a user pays).
COMMANDS = ("check", "collect", "explain", "learn", "simulate", "trace", "tui")


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


def main() -> None:
    try:
        command = _command_of(sys.argv[1:])
        load_commands(*([command] if command else []))
        # Not standalone: typer would draw usage errors in a box; they are one line here, like svctrace's own.
        exceptions = sys.modules[typer.BadParameter.__module__]  # click's (typer may vendor it)
        try:
            rc = app(standalone_mode=False)
        except exceptions.UsageError as e:
            if not " ".join(e.format_message().split()):  # no arguments at all: the help was printed
                sys.exit(e.exit_code)
            usage_error(e, command)
        except typer.Abort:
            sys.stderr.write("svctrace: aborted\n")
            sys.exit(1)
        except exceptions.ClickException as e:
            error(" ".join(e.format_message().split()), e.exit_code or 2)
        sys.exit(rc if isinstance(rc, int) else 0)
    except SvctraceError as e:
        error(str(e), e.exit_code)
    except KeyboardInterrupt:
        sys.stderr.write("svctrace: interrupted\n")
        sys.exit(130)
    except BrokenPipeError:
        # `svctrace ... | head`: the reader went away; that is not an error of ours.
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115
        finally:
            sys.exit(0)
    except Exception as e:  # never a traceback for a user; SVCTRACE_DEBUG=1 shows it
        if os.environ.get("SVCTRACE_DEBUG"):
            raise
        error(f"internal error: {type(e).__name__}: {e} (run with SVCTRACE_DEBUG=1 for details, and please "
              "report it with the input that caused it)", 70)
