"""`svctrace completion bash|zsh|fish`: the shell completion script, printed like kubectl's
(`source <(svctrace completion bash)`), and `kubectl_complete-svctrace`, the completion kubectl asks of a
plugin.

Both are typer's own mechanism: the script calls svctrace back at each TAB (`_SVCTRACE_COMPLETE`), so the
completion is always the installed CLI's, with dynamic values (svctrace/cli/complete.py) — nothing to
install beside the package, and nothing to regenerate.
"""

from __future__ import annotations

import os
import sys
from enum import StrEnum

import typer

from svctrace.cli import app, complete_var


class Shell(StrEnum):
    bash = "bash"
    zsh = "zsh"
    fish = "fish"


@app.command("completion")
def completion_cmd(
    shell: Shell = typer.Argument(..., help="The shell: bash, zsh or fish.", show_default=False),
) -> None:
    """Print the shell completion script: `source <(svctrace completion bash)` (e.g. in ~/.bashrc), zsh
    likewise, fish: `svctrace completion fish | source`. It completes commands and options, and the names
    of namespaces, Services, pods, nodes and contexts from --snapshot/--demo or the cluster."""
    from typer._completion_shared import get_completion_script

    # The script names the command as it was run: `kubectl-svctrace completion bash` for the plugin binary.
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "svctrace"
    name = "kubectl-svctrace" if name.startswith("kubectl-svctrace") else "svctrace"
    typer.echo(get_completion_script(prog_name=name, complete_var=complete_var(name), shell=shell.value))


# kubectl (1.26+) completes `kubectl svctrace ...` by running `kubectl_complete-svctrace ARGS... INCOMPLETE`
# and reading cobra's answer: one candidate per line, then `:DIRECTIVE` (0: the shell may also offer file
# names, 4 ShellCompDirectiveNoFileComp: it may not). kubectl's cmd/kubectl/.../plugin_completion.go.
COBRA_DEFAULT, COBRA_NO_FILES = 0, 4


def kubectl_complete() -> None:
    """The `kubectl_complete-svctrace` entry point."""
    from svctrace.cli import load_commands

    words = sys.argv[1:]
    args, incomplete = (words[:-1], words[-1]) if words else ([], "")
    os.environ["COMP_WORDS"] = " ".join(["svctrace", *words])  # complete.py reads the whole line
    try:
        import typer.main
        from typer._completion_classes import BashComplete  # typer's own, whichever click it carries

        cli = typer.main.get_command(load_commands())
        items = BashComplete(cli, {}, "svctrace", complete_var("svctrace")).get_completions(args, incomplete)
        values = [i.value for i in items]
    except Exception:  # a completion never fails loudly
        values = []
    for v in values:
        sys.stdout.write(f"{v}\n")
    sys.stdout.write(f":{COBRA_NO_FILES if values else COBRA_DEFAULT}\n")
