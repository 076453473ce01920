"""docs/limits.md is svctrace/limits.py's user view: every limit is documented with the value in force, and
nothing documented is missing from the module."""

from __future__ import annotations

import re
from pathlib import Path

from svctrace import limits

DOC = Path(__file__).resolve().parents[1] / "docs" / "limits.md"


def _shown(name: str, v: float) -> str:
    if name.endswith("TIMEOUT"):
        return f"{v:g} s"
    if isinstance(v, int) and v >= limits.MiB and v % limits.MiB == 0:
        return f"{v // limits.MiB} MiB"
    return f"{v:,}"


def test_every_limit_is_documented_with_its_value() -> None:
    text = DOC.read_text()
    rows = dict(re.findall(r"^\| `([A-Z_]+)` \| ([^|]+?) \|", text, re.M))
    mine = {k: v for k, v in vars(limits).items() if k.isupper() and k != "MiB"}
    assert set(rows) == set(mine), (set(rows) ^ set(mine))
    for name, value in mine.items():
        assert rows[name] == _shown(name, value), (name, rows[name], _shown(name, value))


def test_limits_page_is_linked() -> None:
    docs = DOC.parent
    for page in ("snapshots.md", "cli.md"):
        assert "(limits.md)" in (docs / page).read_text(), page
