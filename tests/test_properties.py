"""Property tests: the walker against a brute-force oracle, and the parser against garbage."""

from __future__ import annotations

import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from svctrace.dataplane.iptables import load_ruleset
from svctrace.dataplane.iptables.matches import kernel_probability
from svctrace.errors import SvctraceError
from svctrace.kubeproxy.walk import trace_iptables as trace
from svctrace.model.packet import NodeFacts, Packet

NODE = NodeFacts.make(local_ips=["192.168.0.2"])
PKT = Packet.make(src="10.0.0.2", dst="172.30.0.1", proto="tcp", dport=80)

probs = st.lists(st.floats(min_value=0.0, max_value=1.0, allow_nan=False), min_size=1, max_size=12)


@settings(max_examples=150, deadline=None)
@given(probs)
def test_statistic_chain_matches_the_product_formula(ps: list[float]) -> None:
    """Endpoint i of a chain of random matches gets prod_{j<i}(1-p_j) * p_i; the last one the rest."""
    lines = [f"-A SVC -m statistic --mode random --probability {p:.11f} -j DNAT --to-destination 10.0.{i}.1:80"
             for i, p in enumerate(ps)]
    lines.append(f"-A SVC -j DNAT --to-destination 10.0.{len(ps)}.1:80")
    dump = "*nat\n:PREROUTING ACCEPT [0:0]\n:SVC - [0:0]\n-A PREROUTING -j SVC\n" + "\n".join(lines) + "\nCOMMIT\n"
    result = trace(load_ruleset(dump, "p"), PKT, NODE)
    got = {o.dnat: o.probability for o in result.outcomes}
    rest = 1.0
    for i, p in enumerate(ps):
        eff = kernel_probability(float(f"{p:.11f}"))
        want = rest * eff
        assert math.isclose(got.get(f"10.0.{i}.1:80", 0.0), want, abs_tol=1e-12)
        rest *= 1 - eff
    assert math.isclose(got.get(f"10.0.{len(ps)}.1:80", 0.0), rest, abs_tol=1e-12)
    assert math.isclose(sum(o.probability for o in result.outcomes), 1.0, abs_tol=1e-12)


rule_parts = st.sampled_from([
    "-s 10.0.0.0/8", "! -s 10.0.0.0/8", "-d 172.30.0.1/32", "-p tcp", "-p udp", "-m tcp --dport 80",
    "-m statistic --mode random --probability 0.25", "-m statistic --mode random --probability 0.5",
    "-m mark --mark 0x4000/0x4000", "-m addrtype --dst-type LOCAL", "-i eth0", "-m physdev --physdev-is-in",
    "-m conntrack --ctstate NEW", "-m set --match-set S dst", "-m comment --comment \"x y\"",
])
targets = st.sampled_from(["-j ACCEPT", "-j DROP", "-j REJECT", "-j RETURN", "-j MARK --or-mark 0x4000",
                           "-j A", "-j B", "-g B", "-j LOG", ""])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(["FORWARD", "A", "B"]), st.lists(rule_parts, max_size=4), targets),
                max_size=14),
       st.sampled_from(["ACCEPT", "DROP"]))
def test_random_filter_rulesets_sum_to_one(rules: list, policy: str) -> None:
    lines = []
    for chain, parts, tgt in rules:
        if chain == "B" and tgt in ("-j A", "-j B", "-g B"):
            tgt = "-j RETURN"  # keep the graph acyclic: FORWARD -> A -> B
        if chain == "A" and tgt in ("-j A",):
            tgt = "-j B"
        lines.append(f"-A {chain} {' '.join(parts)} {tgt}".strip())
    dump = f"*filter\n:INPUT ACCEPT [0:0]\n:FORWARD {policy} [0:0]\n:OUTPUT ACCEPT [0:0]\n:A - [0:0]\n:B - [0:0]\n" + \
        "\n".join(lines) + "\nCOMMIT\n"
    result = trace(load_ruleset(dump, "p"), PKT, NODE)
    assert result.outcomes
    assert math.isclose(sum(o.probability for o in result.outcomes), 1.0, abs_tol=1e-9)
    for o in result.outcomes:
        assert 0.0 < o.probability <= 1.0 + 1e-12
        assert o.verdict in ("accept", "drop", "reject")
        assert (o.delivery is None) == (o.verdict != "accept")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_garbage_never_raises_anything_but_the_documented_error(text: str) -> None:
    try:
        rs = load_ruleset(text, "garbage")
        trace(rs, PKT, NODE)
    except SvctraceError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([
    "*nat", "*filter", "*mangle", "COMMIT", ":PREROUTING ACCEPT [0:0]", ":X - [0:0]", ":FORWARD DROP [1:2]",
    "-A PREROUTING -j X", "-A X -j X", "-A X -j DNAT --to-destination", "-A X -p tcp --dport",
    "-A FORWARD -m statistic --mode random --probability 0.3 -j DROP", "-A X -g PREROUTING", "-A", "-A X \"",
    "[1:2] -A X -s ! 1.2.3.4 -j RETURN", "-A X -m recent --rcheck --name Y -j ACCEPT", "-N Y", "-P X DROP",
    "-A Y -j Y", "garbage line", "# comment", "-A X -m comment --comment \"a\\\"b\" -j MARK --set-xmark 0x1/0x1",
]), max_size=20))
def test_mangled_dumps_never_crash(lines: list[str]) -> None:
    try:
        rs = load_ruleset("\n".join(lines), "mangled")
        trace(rs, PKT, NODE)
    except SvctraceError:
        pass


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=st.sampled_from(list('ab -"\\\t\'x')), max_size=40))
def test_fast_tokenizer_equals_the_reference(text: str) -> None:
    from svctrace.dataplane.iptables.parser import _tokenize_slow, tokenize

    assert tokenize(text) == _tokenize_slow(text)
