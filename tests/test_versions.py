"""The kube-proxy feature table (svctrace.kubeproxy.versions): its answers, and that it is the only place
that knows a version number."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from svctrace.kubeproxy.versions import DEFAULT_VERSION, FEATURES, MODES, has
from svctrace.model.version import parse_version, version_text

SRC = Path(__file__).resolve().parents[1] / "svctrace"
TABLE = SRC / "kubeproxy" / "versions.py"

# `version >= (1, 29)`, `v < (1, 25)`, `(1, 26) <= v`: a version cut-off written inline.
INLINE_CUTOFF = re.compile(r"(?:<=?|(?<!-)>=?|[=!]=)\s*\(\s*1\s*,\s*\d+\s*\)|\(\s*1\s*,\s*\d+\s*\)\s*(?:[<>]=?|[=!]=)")


def _sources() -> dict[str, str]:
    return {p.relative_to(SRC).as_posix(): p.read_text() for p in SRC.rglob("*.py") if p != TABLE}


def _used_rows() -> set[str]:
    text = "\n".join(_sources().values())
    used = {name for name in FEATURES if re.search(rf"""["']{re.escape(name)}["']""", text)}
    return used | {f for m in MODES.values() for f in m.requires}


def test_every_row_is_asked_somewhere() -> None:
    used = _used_rows()
    dead = set(FEATURES) - used
    assert not dead, f"rows nobody asks (remove them or ask has()): {sorted(dead)}"


def test_no_version_comparison_outside_the_table() -> None:
    assert INLINE_CUTOFF.search("if version >= (1, 29):") and INLINE_CUTOFF.search("(1, 26) <= v")
    assert not INLINE_CUTOFF.search("for attempt in (1, 2):") and not INLINE_CUTOFF.search("(1, 26) -> (1, 26)")
    found = {f"{path}:{text[:m.start()].count(chr(10)) + 1}" for path, text in _sources().items()
             for m in INLINE_CUTOFF.finditer(text)}
    assert not found, f"ask has(version, feature) instead: {sorted(found)}"


@pytest.mark.parametrize(("version", "feature", "expected"), [
    ("1.23", "ext-svl-chains", False), ("v1.24.3", "ext-svl-chains", True), ((1, 25), "ext-svl-chains", True),
    ("1.29.4-gke.1", "lb-ipmode-proxy", False), ("1.30", "lb-ipmode-proxy", True),
    ("1.35", "nft-endpoint-chains", True), ("1.36", "nft-endpoint-chains", False),
])
def test_has_reads_since_and_until(version: str | tuple[int, int], feature: str, expected: bool) -> None:
    assert has(version, feature) is expected


def test_no_version_means_the_default() -> None:
    for name in FEATURES:
        assert has(None, name) == has(DEFAULT_VERSION, name)
    with pytest.raises(KeyError):
        has("1.30", "no-such-feature")
    with pytest.raises(ValueError, match="not a Kubernetes version"):
        has("latest", "ext-svl-chains")


def test_modes_say_what_they_model() -> None:
    nft = MODES["nftables"]
    assert nft.unmodelled("1.30") is FEATURES["nft-split-endpoints-check"]
    assert nft.unmodelled("1.36") is FEATURES["nft-endpoint-chains"]
    assert nft.unmodelled("1.31") is None and nft.unmodelled("1.35") is None
    assert MODES["ipvs"].unmodelled("1.25") is FEATURES["ipvs-filter-chain"]
    assert MODES["iptables"].unmodelled("1.10") is FEATURES["forward-invalid-drop"]
    assert MODES["iptables"].unmodelled("1.7") is FEATURES["forward-invalid-drop"]
    assert MODES["iptables"].unmodelled("1.14") is None and MODES["iptables"].unmodelled("1.35") is None
    for mode in MODES.values():
        assert mode.unmodelled(mode.default) is None, mode
        assert all(mode.mode in FEATURES[f].modes for f in mode.requires)


def test_rows_are_well_formed() -> None:
    for f in FEATURES.values():
        assert f.since is not None or f.until is not None, f.name
        assert f.since is None or f.until is None or f.since < f.until, f.name
        assert set(f.modes) <= set(MODES), f.name
        assert f.since is None or parse_version(f.since_text) == f.since
    assert version_text(parse_version("v1.31.2")) == "1.31"


def test_modes_name_the_range_they_model() -> None:
    # nftables: 1.31 split the endpoints-check chain, 1.36 dropped the endpoint chains; IPVS: KUBE-IPVS-FILTER (1.26)
    assert MODES["nftables"].range_text == "1.31 to 1.35"
    assert MODES["ipvs"].range_text == "1.26+"
    assert MODES["iptables"].range_text == "1.14+"
    from svctrace.kubeproxy.config import ProxyConfig

    with pytest.raises(ValueError, match=r"not modelled in nftables mode \(svctrace models 1\.31 to 1\.35\)"):
        ProxyConfig("n", kube_version="1.30").for_mode("nftables")
