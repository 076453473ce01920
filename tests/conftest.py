"""Shared test helpers. The corpora live in tests/corpus (see its README): one constant, CORPUS, says where.

A missing or emptied corpus fails loudly: `need_corpus()` fails the test instead of skipping it, and
`corpus_files()` / `kube_proxy_cases()` raise at collection rather than give a parametrization no cases.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO / "tests" / "corpus"
KP_IPTABLES = CORPUS / "kube-proxy" / "iptables"
KP_NFT_OVERALL = CORPUS / "kube-proxy" / "nftables" / "overall"
ORACLE = CORPUS / "oracle"
WILD = CORPUS / "wild"

# Every corpus test reads one of these; tests/test_corpus.py checks each exists and holds files.
CORPUS_DIRS = (KP_IPTABLES, KP_NFT_OVERALL, ORACLE, WILD)


class CorpusMissing(RuntimeError):
    """The test corpus (tests/corpus) is missing or has lost files: corpus tests must not pass vacuously."""


def need_corpus() -> None:
    """Fail (never skip) a test that reads the corpus when the corpus is not there."""
    missing = [str(d.relative_to(REPO)) for d in CORPUS_DIRS if not d.is_dir() or not any(d.iterdir())]
    if missing:
        pytest.fail(f"the test corpus is missing or empty: {', '.join(missing)} (it ships in tests/corpus)")


# A marker form of need_corpus for tests that read the corpus at collection time through a helper.
needs_corpus = pytest.mark.usefixtures("_corpus_present")


@pytest.fixture
def _corpus_present() -> None:
    need_corpus()


def corpus_files(under: Path, *patterns: str, exclude_k8s: bool = True) -> list[Path]:
    """The files under `under` matching any glob pattern, sorted; raises when there are none.

    Parametrizations built from this cannot collapse to zero cases when the corpus goes missing.
    `.k8s.txt` files (the Service/Endpoints output beside some wild dumps) are left out unless asked for.
    """
    found = sorted({p for pat in patterns for p in under.glob(pat)
                    if p.is_file() and not (exclude_k8s and p.name.endswith(".k8s.txt"))})
    if not found:
        raise CorpusMissing(f"no corpus file matches {patterns} under {under}")
    return found


def kube_proxy_cases() -> list[Path]:
    if not KP_IPTABLES.is_dir():
        raise CorpusMissing(f"{KP_IPTABLES} is missing")
    cases = sorted(p for p in KP_IPTABLES.iterdir() if p.is_dir())
    if not cases:
        raise CorpusMissing(f"{KP_IPTABLES} holds no case")
    return cases


def kube_proxy_flows() -> list[tuple[Path, dict]]:
    out = []
    for case in kube_proxy_cases():
        for flow in json.loads((case / "flows.json").read_text()):
            out.append((case, flow))
    return out
