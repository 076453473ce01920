"""The test corpus ships with the repository: every part the tests read is here and holds what it should.

Without this, a lost corpus would show up only as errors in other files; here it is one clear failure.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import CORPUS, CORPUS_DIRS, KP_IPTABLES, KP_NFT_OVERALL, ORACLE, REPO, WILD, kube_proxy_flows


@pytest.mark.parametrize("path", CORPUS_DIRS, ids=lambda p: str(p.relative_to(CORPUS)))
def test_corpus_part_is_present_and_not_empty(path: Path) -> None:
    assert path.is_dir(), f"{path} is missing: the test corpus ships in tests/corpus"
    assert any(path.iterdir()), f"{path} is empty"


def test_corpus_inside_the_repository() -> None:
    assert CORPUS.resolve().is_relative_to(REPO), "tests must not read a corpus from outside the checkout"
    assert (CORPUS / "README.md").is_file()


def test_corpus_holds_what_its_readme_counts() -> None:
    """The counts the corpus README states (19 kube-proxy cases, 62 flows, 62 wild dumps, 17 nft kernel flows)."""
    cases = [p for p in KP_IPTABLES.iterdir() if p.is_dir()]
    assert len(cases) == 19
    for case in cases:
        assert {p.name for p in case.iterdir()} >= {"flows.json", "meta.json", "rules.iptables-save",
                                                    "rules.restore-input"}, case.name
    assert len(kube_proxy_flows()) == 62
    index = json.loads((WILD / "INDEX.json").read_text())
    dumps = sorted(f"{p.parent.name}/{p.name}" for p in WILD.glob("*/*.txt") if not p.name.endswith(".k8s.txt"))
    assert len(dumps) == 62 and sorted(e["file"] for e in index) == dumps
    assert len(json.loads((KP_NFT_OVERALL / "kernel-flows.json").read_text())) == 17
    for name in ("kube-proxy-basic.iptables-save", "kube-proxy-basic.nft", "probes-basic.iptables.jsonl",
                 "probes-basic.nft.jsonl", "measured-results.jsonl"):
        assert (ORACLE / name).stat().st_size > 0, name
