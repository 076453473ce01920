"""svctrace's prediction against what the kernel did (tests/kernellab.py), for every kernel agreement test.

The same comparison for iptables, nftables, simulated and generated rulesets: verdicts, reject kinds,
DNAT destinations, masquerade per destination and, where svctrace predicts several destinations or
verdicts, their distribution (chi-square at ALPHA: a correct prediction fails about once in 1/ALPHA runs).
"""

from __future__ import annotations

from typing import Any

from kernellab import KernelResult, chi2_sf

from svctrace.dataplane.contract import TraceResult
from svctrace.model.packet import format_endpoint

ALPHA = 1e-5


def predicted(result: TraceResult) -> dict[str, Any]:
    """svctrace's answer in the kernel lab's terms."""
    pkt = result.packet
    verdicts: dict[str, float] = {}
    dests: dict[str, float] = {}
    masq: dict[str, bool] = {}
    for o in result.outcomes:
        verdicts[o.verdict] = verdicts.get(o.verdict, 0.0) + o.probability
        if o.verdict == "accept":
            d = o.dnat or format_endpoint(pkt.dst, pkt.dport if pkt.has_ports else None)
            dests[d] = dests.get(d, 0.0) + o.probability
            masq[d] = masq.get(d, False) or o.masquerade
    return {"verdicts": verdicts, "dests": dests, "masq": masq}


def compare(result: TraceResult, k: KernelResult, label: str) -> None:
    p = predicted(result)
    assert all(o.certain for o in result.outcomes), label
    assert set(k.verdicts) == {v for v, pr in p["verdicts"].items() if pr > 0}, (label, k.verdicts, p)
    rejects = {o.reject_with for o in result.outcomes if o.verdict == "reject"}
    if rejects:
        assert set(k.reject_kinds) == rejects, (label, k.reject_kinds, rejects)
    if "accept" not in p["verdicts"]:
        return
    assert set(k.destinations) == set(p["dests"]), (label, k.destinations, p["dests"])
    for d, masq in p["masq"].items():
        got = k.masquerade_destinations.get(d, 0)
        assert (got == k.destinations[d]) if masq else (got == 0), (label, d, masq, got, k.destinations[d])
    if len(p["verdicts"]) > 1:  # a mixture of verdicts: their shares
        names = sorted(v for v, pr in p["verdicts"].items() if pr > 0)
        observed = [k.verdicts[v] for v in names]
        n = sum(observed)
        chi2 = sum((obs - n * p["verdicts"][v]) ** 2 / (n * p["verdicts"][v]) for obs, v in zip(observed, names,
                                                                                             strict=True))
        pval = chi2_sf(chi2, len(observed) - 1)
        assert pval > ALPHA, (label, dict(zip(names, observed, strict=True)), p["verdicts"], pval)
    if len(p["dests"]) > 1:
        total = p["verdicts"]["accept"]
        names = sorted(p["dests"])
        observed = [k.destinations[d] for d in names]
        n = sum(observed)
        chi2 = sum((obs - n * p["dests"][d] / total) ** 2 / (n * p["dests"][d] / total)
                   for obs, d in zip(observed, names, strict=True))
        pval = chi2_sf(chi2, len(observed) - 1)
        assert pval > ALPHA, (label, dict(zip(names, observed, strict=True)), p["dests"], pval)
