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




def emit_json(doc: object, warnings: list) -> None:
    """-o json: the document on stdout and nothing else; warnings on stderr."""
    import json

    sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    for w in warnings:
        sys.stderr.write(f"svctrace: warning: {w}\n")


def error(message: str, code: int = 2) -> None:
    sys.stderr.write(f"svctrace: error: {message}\n")
    sys.exit(code)


def main() -> None:
    try:
        app(standalone_mode=True)
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


from svctrace.cli import collect as _collect  # noqa: E402,F401  (registers the commands)
from svctrace.cli import explain as _explain  # noqa: E402,F401
from svctrace.cli import learn as _learn  # noqa: E402,F401
from svctrace.cli import simulate as _simulate  # noqa: E402,F401
from svctrace.cli import trace as _trace  # noqa: E402,F401
from svctrace.cli import tui as _tui  # noqa: E402,F401
