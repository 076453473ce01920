"""Shared test helpers. The corpora live in ../shared beside the repository."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
CORPUS = SHARED / "corpus"
KP_IPTABLES = CORPUS / "kube-proxy" / "iptables"
WILD = CORPUS / "wild"


def need_corpus() -> None:
    if not CORPUS.is_dir():
        pytest.skip("the shared corpus (../shared/corpus) is not beside this checkout")


def kube_proxy_cases() -> list[Path]:
    return sorted(p for p in KP_IPTABLES.iterdir() if p.is_dir()) if KP_IPTABLES.is_dir() else []


def kube_proxy_flows() -> list[tuple[Path, dict]]:
    out = []
    for case in kube_proxy_cases():
        for flow in json.loads((case / "flows.json").read_text()):
            out.append((case, flow))
    return out
