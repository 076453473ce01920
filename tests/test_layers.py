"""The import contracts in pyproject.toml ([tool.importlinter]) hold: `lint-imports` passes.

The layers (faces -> explain/browse -> kubeproxy -> dataplane -> model -> errors), a headless core and the
independence of the dataplanes are stated once, as import-linter contracts; this test runs the checker. The
control below shows the checker does fail on a broken contract, so a green run is not vacuous.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from conftest import REPO

LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
CONTRACTS = {c["id"]: c["name"] for c in
             tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]}


def lint_imports(tree: Path, *contracts: str) -> subprocess.CompletedProcess[str]:
    """`lint-imports` over the svctrace package in `tree`, with the pyproject.toml found there."""
    assert LINT_IMPORTS.exists(), f"{LINT_IMPORTS} is missing: install the dev extra (pip install -e '.[dev]')"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree), os.environ.get("PYTHONPATH", "")])}
    argv = [str(LINT_IMPORTS), "--no-cache", "--no-logo", *(a for c in contracts for a in ("--contract", c))]
    return subprocess.run(argv, cwd=tree, env=env, capture_output=True, text=True, timeout=300)


def test_import_contracts_hold() -> None:
    assert {"layers", "core-headless", "dataplanes-independent"} <= set(CONTRACTS), CONTRACTS
    p = lint_imports(REPO)
    assert p.returncode == 0, p.stdout + p.stderr
    for name in CONTRACTS.values():
        assert f"{name} KEPT" in p.stdout, p.stdout


def test_a_broken_contract_fails(tmp_path: Path) -> None:
    """Control: a model module importing explain (up the layers) and rich (a UI) breaks two contracts."""
    shutil.copytree(REPO / "svctrace", tmp_path / "svctrace", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    checked = ("layers", "core-headless")

    clean = lint_imports(tmp_path, *checked)  # the copy as it is keeps both
    assert clean.returncode == 0, clean.stdout + clean.stderr

    (tmp_path / "svctrace" / "model" / "leak.py").write_text(
        '"""A model that reaches up into explain and out to a UI library."""\n\n'
        "import rich\n\nimport svctrace.explain\n\n__all__ = ['rich', 'svctrace']\n")
    broken = lint_imports(tmp_path, *checked)
    assert broken.returncode != 0, broken.stdout
    for cid in checked:
        assert f"{CONTRACTS[cid]} BROKEN" in broken.stdout, broken.stdout
    assert "svctrace.model.leak -> svctrace.explain" in broken.stdout
    assert "svctrace.model.leak -> rich" in broken.stdout
