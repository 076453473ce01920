"""The committed completion scripts are what the CLI generates today."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from svctrace.cli.completions import SCRIPTS

COMPLETIONS = Path(__file__).resolve().parents[1] / "completions"


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_completions_are_in_sync_with_the_cli(name: str) -> None:
    committed = (COMPLETIONS / name).read_text()
    assert committed == SCRIPTS[name](), (
        f"completions/{name} is stale: run `python -m svctrace.cli.completions completions` and commit")


def test_completions_mention_every_trace_option() -> None:
    text = (COMPLETIONS / "svctrace.bash").read_text()
    for opt in ("--src", "--dst", "--proto", "--dport", "--local-ip", "--from-node", "--returning-client", "--demo"):
        assert opt in text


def test_bash_script_is_valid_and_completes() -> None:
    if not shutil.which("bash"):
        pytest.skip("no bash")
    script = COMPLETIONS / "svctrace.bash"
    probe = (f"source {script}; COMP_WORDS=(svctrace trace --pro); COMP_CWORD=2; _svctrace; "
             'echo "${COMPREPLY[@]}"; COMP_WORDS=(svctrace trace --proto ""); COMP_CWORD=3; _svctrace; '
             'echo "${COMPREPLY[@]}"')
    out = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[0].split() == ["--proto"]
    assert out[1].split() == ["tcp", "udp", "sctp", "icmp"]
