"""The user guide shows what the tool prints today (see tests/doctool.py), and every command has its page."""

from __future__ import annotations

import re

import pytest
import typer.main
from doctool import DOCS, blocks, run_command

from svctrace.cli import load_commands

PAGES = sorted(DOCS.glob("*.md"))
CASES = [(p, cmd, out) for p in PAGES for cmd, out in blocks(p)]
if not CASES:
    raise RuntimeError(f"no ```console example found in {DOCS}: the docs test would check nothing")

# The commands the CLI registers, read from the typer app itself (a new command is checked without editing
# this file).
COMMANDS = sorted(typer.main.get_command(load_commands()).commands)  # type: ignore[attr-defined]

# A command documented on a page not named after it; every other command `x` has docs/x.md.
PAGE_OF = {"learn": "cka-guide.md"}


@pytest.mark.slow
@pytest.mark.parametrize(("page", "cmd", "out"), CASES, ids=[f"{p.name}:{c[:60]}" for p, c, _ in CASES])
def test_documented_output_is_real(page: object, cmd: str, out: str) -> None:
    assert run_command(cmd) == out, f"{page}: `{cmd}` prints something else now: run python tests/doctool.py --write"


def test_every_console_block_is_an_example() -> None:
    """A ```console block the example pattern does not read (no `$ ` line, say) would go untested."""
    for page in PAGES:
        assert page.read_text().count("```console\n") == len(blocks(page)), page.name


def test_commands_are_read_from_the_app() -> None:
    assert {"trace", "explain"} <= set(COMMANDS), COMMANDS
    assert set(PAGE_OF) <= set(COMMANDS), f"PAGE_OF names a command the CLI lacks: {set(PAGE_OF) - set(COMMANDS)}"


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_a_page(command: str) -> None:
    page = DOCS / PAGE_OF.get(command, f"{command}.md")
    assert page in PAGES, f"`svctrace {command}` has no page: write docs/{command}.md"
    assert re.search(rf"^(\$ )?svctrace {command}\b", page.read_text(), re.M), \
        f"{page.name} never shows `svctrace {command}` being run"
