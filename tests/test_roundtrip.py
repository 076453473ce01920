"""Parse -> print gives back each rule's meaning; the kernel agrees that the printed rules are the same."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
from conftest import KP_IPTABLES, WILD, corpus_files, kube_proxy_cases, need_corpus

from svctrace.dataplane.iptables import load_ruleset
from svctrace.dataplane.iptables.parser import RawRule, parse_rule
from svctrace.dataplane.iptables.printer import meaning, rule_to_save, ruleset_to_save

SOURCES = [c / f for c in kube_proxy_cases() for f in ("rules.iptables-save", "rules.restore-input")]
SOURCES += corpus_files(WILD, "iptables-save/*.txt") + corpus_files(WILD, "iptables-S/*.txt")
SOURCES = [p for p in SOURCES if not p.name.endswith(".k8s.txt")]


@pytest.mark.parametrize("path", SOURCES, ids=[f"{p.parent.name}/{p.name[:40]}" for p in SOURCES])
def test_parse_print_parse_keeps_meaning(path: Path) -> None:
    need_corpus()
    rs = load_ruleset(path.read_text(errors="replace"), path.name)
    n = 0
    for r in rs.iter_rules():
        if r.problems:
            continue
        printed = rule_to_save(r)
        again = parse_rule(r.table, r.chain, RawRule(r.line, printed), rs.family)
        assert len(again) == 1
        assert meaning(again[0]) == meaning(r), (r.text, printed)
        assert rule_to_save(again[0]) == printed  # printing is a fixed point
        n += 1
    assert n > 0


def _netns_ok() -> str | None:
    if os.geteuid() != 0:
        return "needs root to make a network namespace"
    if not shutil.which("ip") or not shutil.which("iptables-restore"):
        return "needs iproute2 and iptables"
    return None


def _kernel_save(dump: str) -> list[str]:
    ns = f"svt-rt-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        p = subprocess.run(["ip", "netns", "exec", ns, "iptables-restore"], input=dump, text=True,
                           capture_output=True)
        assert p.returncode == 0, p.stderr
        out = subprocess.run(["ip", "netns", "exec", ns, "iptables-save"], capture_output=True, text=True,
                             check=True).stdout
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
    return [line for line in out.splitlines() if line.startswith(("-A", ":", "*"))]


@pytest.mark.kernel
@pytest.mark.parametrize("case", kube_proxy_cases(), ids=[c.name for c in kube_proxy_cases()])
def test_kernel_loads_the_printed_rules_to_the_same_ruleset(case: Path) -> None:
    need_corpus()
    why = _netns_ok()
    if why:
        pytest.skip(why)
    original = (case / "rules.restore-input").read_text()
    printed = ruleset_to_save(load_ruleset(original, "x"))
    assert _kernel_save(printed) == _kernel_save(original)


def test_corpus_present_for_roundtrip() -> None:
    need_corpus()
    assert KP_IPTABLES.is_dir() and len(SOURCES) > 50
