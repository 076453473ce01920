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
    add_completion=True,  # typer's --install-completion / --show-completion; `svctrace completion SHELL` too
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
    sys.stderr.write(f"svctrace: error: {shorten(message, MAX_MESSAGE, one_line=False)}\n")
    sys.exit(code)


def usage_error(e: Exception, command: str | None = None) -> None:
    """A usage error (a missing argument, an unknown option or command, a bad value) as one line, exit 2:
    `svctrace: error: svctrace explain: No such option: --bogus (see svctrace explain -h)`."""
    ctx = getattr(e, "ctx", None)
    path = ctx.command_path if ctx is not None else " ".join([prog_name(), *([command] if command else [])])
    fmt = getattr(e, "format_message", None)
    message = " ".join((fmt() if callable(fmt) else str(e)).split())
    error(f"{path}: {message} (see {path} -h)", 2)


# Each command lives in the module of its name and registers itself on `app` when imported; in this order
# (the order of `svctrace --help`).  A run imports only its command's module, so `svctrace trace` never loads
# the kubernetes client, paramiko or Textual (issue 13: start-up is part of what a user pays).
COMMANDS = ("check", "collect", "explain", "learn", "simulate", "trace", "tui", "completion")


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


PLUGIN = "kubectl-svctrace"  # the binary kubectl runs for `kubectl svctrace` (a console script)


def prog_name(argv0: str | None = None) -> str:
    """How the user typed the command: `kubectl svctrace` when kubectl ran the plugin binary (kubectl execs
    it as kubectl-svctrace), for usage lines and help; else `svctrace`."""
    name = os.path.basename(argv0 if argv0 is not None else (sys.argv[0] if sys.argv else ""))
    return "kubectl svctrace" if name.startswith(PLUGIN) else "svctrace"


def complete_var(name: str) -> str:
    """The environment variable typer's completion scripts set: _SVCTRACE_COMPLETE, _KUBECTL_SVCTRACE_COMPLETE."""
    return "_" + name.replace("-", "_").replace(" ", "_").upper() + "_COMPLETE"


def _completing(name: str) -> list[str] | None:
    """While the shell completes (typer's protocol): the words of the line after the program's name."""
    if not os.environ.get(complete_var(name)):
        return None
    import shlex

    line = os.environ.get("COMP_WORDS") or os.environ.get("_TYPER_COMPLETE_ARGS") or ""
    try:
        words = shlex.split(line)
    except ValueError:
        words = line.split()
    cword = os.environ.get("COMP_CWORD")
    if cword is not None and cword.isdigit():
        words = words[: int(cword)]  # the word being completed may be a half-typed command name
    elif words and not line.endswith(" "):
        words = words[:-1]
    return words[1:]


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
    """Load what a command line needs (its command, or every command) and return the command's name. While the
    shell completes, the words being completed name the command (a TAB pays for that command only)."""
    completing = _completing(prog_name())
    command = _command_of(argv if completing is None else completing)
    load_commands(*([command] if command else []))
    return command


def main(command: str | None = None, *, prepared: bool = False) -> None:
    """Run the command line: svctrace's errors as one line and their exit code, usage errors as one line (exit 2),
    an interruption as 130."""
    try:
        if not prepared and command is None:
            command = prepare(sys.argv[1:])
        name = prog_name()
        # Not standalone: typer would draw usage errors in a box; they are one line here, like svctrace's own.
        exceptions = sys.modules[typer.BadParameter.__module__]  # click's (typer may vendor it)
        try:
            rc = app(prog_name=name, complete_var=complete_var(name), standalone_mode=False)
        except exceptions.UsageError as e:
            if not " ".join(e.format_message().split()):  # no arguments at all: the help was printed
                sys.exit(e.exit_code)
            usage_error(e, command)
        except typer.Abort as e:
            cause = _interruption_of(e)  # click turns a Ctrl-C into Abort: an interruption, said as one
            if cause is not None:
                raise cause from None
            sys.stderr.write("svctrace: aborted\n")
            sys.exit(1)
        except exceptions.ClickException as e:
            error(" ".join(e.format_message().split()), e.exit_code or 2)
        if rc == 130:  # a command's KeyboardInterrupt, which typer returns as its exit code (errors.Interrupted)
            _interrupted(Interrupted.last or KeyboardInterrupt())
        sys.exit(rc if isinstance(rc, int) else 0)
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
