"""The user guide shows what the tool prints today (see tests/doctool.py)."""

from __future__ import annotations

import pytest
from doctool import DOCS, blocks, run_command

PAGES = sorted(DOCS.glob("*.md"))
CASES = [(p, cmd, out) for p in PAGES for cmd, out in blocks(p)]


@pytest.mark.parametrize(("page", "cmd", "out"), CASES, ids=[f"{p.name}:{c[:60]}" for p, c, _ in CASES])
def test_documented_output_is_real(page: object, cmd: str, out: str) -> None:
    assert run_command(cmd) == out, f"{page}: `{cmd}` prints something else now: run python tests/doctool.py --write"


def test_every_command_has_a_page() -> None:
    names = {p.stem for p in PAGES}
    assert "trace" in names
