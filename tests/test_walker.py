"""The walker against hand-checked expectations: kernel order, marks, jumps, NAT, uncertainty."""

from __future__ import annotations

import pytest

from svctrace.dataplane.ipset import parse_ipset
from svctrace.dataplane.iptables import load_ruleset
from svctrace.dataplane.iptables.matches import kernel_probability
from svctrace.errors import WalkError, Warn
from svctrace.kubeproxy.walk import trace_iptables as trace
from svctrace.model.packet import NodeFacts, Packet

NODE = NodeFacts.make(local_ips=["192.168.0.2"])


def run(dump: str, src: str = "10.0.0.2", dst: str = "172.30.0.1", proto: str = "tcp", dport: int | None = 80,
        node: NodeFacts = NODE, **kw: object):
    rs = load_ruleset(dump, "t.dump")
    pkt = Packet.make(src=src, dst=dst, proto=proto, dport=dport if proto != "icmp" else None,
                      local_ips=node.local_ips, **kw)  # type: ignore[arg-type]
    return trace(rs, pkt, node)


def nat(*rules: str, chains: str = "") -> str:
    decl = "".join(f":{c} - [0:0]\n" for c in chains.split())
    return "*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n" + decl + \
        "\n".join(rules) + "\nCOMMIT\n"


def test_kernel_probability_rounding() -> None:
    # libxt_statistic stores lround(p * 2^31); iptables-save prints it back with 11 decimals.
    assert kernel_probability(1 / 3) == 715827883 / 2**31
    assert f"{kernel_probability(0.3333333333):.11f}" == "0.33333333349"
    assert f"{kernel_probability(0.33333):.11f}" == "0.33332999982"
    assert kernel_probability(0.5) == 0.5


def test_three_endpoints_get_a_third_each() -> None:
    dump = nat(
        "-A PREROUTING -d 172.30.0.1/32 -p tcp --dport 80 -j SVC",
        "-A SVC -m statistic --mode random --probability 0.33333333349 -j DNAT --to-destination 10.1.0.1:80",
        "-A SVC -m statistic --mode random --probability 0.50000000000 -j DNAT --to-destination 10.1.0.2:80",
        "-A SVC -j DNAT --to-destination 10.1.0.3:80",
        chains="SVC",
    )
    r = run(dump)
    got = {o.dnat: o.probability for o in r.outcomes}
    p1 = 715827883 / 2**31
    assert got == pytest.approx({"10.1.0.1:80": p1, "10.1.0.2:80": (1 - p1) / 2, "10.1.0.3:80": (1 - p1) / 2})
    first = next(o for o in r.outcomes if o.dnat == "10.1.0.1:80")
    step = next(s for s in first.path if s.branch is not None)
    assert step.probability == "0.33333333349" and step.branch == pytest.approx(p1)


def test_marks_or_xor_and_set() -> None:
    dump = nat(
        "-A PREROUTING -j MARK --or-mark 0x4000",
        "-A PREROUTING -j MARK --set-xmark 0x10/0xf0",
        "-A PREROUTING -j MARK --and-mark 0xfff0",
        "-A PREROUTING -m mark --mark 0x4010/0xffff -j DNAT --to-destination 10.9.9.9:80",
    )
    r = run(dump)
    assert [o.dnat for o in r.outcomes] == ["10.9.9.9:80"]
    assert r.outcomes[0].mark == 0x4010


def test_postrouting_masquerades_only_marked_packets() -> None:
    dump = nat(
        "-A PREROUTING ! -s 10.0.0.0/8 -j MARK --set-xmark 0x4000/0x4000",
        "-A POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN",
        "-A POSTROUTING -j MARK --set-xmark 0x4000/0x0",
        "-A POSTROUTING -j MASQUERADE",
    )
    assert not run(dump, src="10.0.0.2").outcomes[0].masquerade
    out = run(dump, src="192.168.5.5").outcomes[0]
    assert out.masquerade and out.mark == 0  # the xor cleared the bit
    assert out.snat is None  # MASQUERADE picks the outgoing interface's address


def test_goto_returns_to_the_caller_of_the_caller() -> None:
    dump = nat(
        "-A PREROUTING -j A",
        "-A PREROUTING -j DNAT --to-destination 10.0.0.9:80",
        "-A A -g B",
        "-A A -j DNAT --to-destination 10.0.0.7:80",
        "-A B -j RETURN",
        chains="A B",
    )
    # B's RETURN goes back to PREROUTING (A was left by goto), so A's DNAT never runs.
    assert [o.dnat for o in run(dump).outcomes] == ["10.0.0.9:80"]


def test_filter_policy_drop_and_reason() -> None:
    dump = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"
    r = run(dump)
    assert r.outcomes[0].verdict == "drop" and "policy is DROP" in r.outcomes[0].reason
    assert r.exit_code == 1
    # to the node itself: INPUT accepts
    r2 = run(dump, dst="192.168.0.2")
    assert r2.outcomes[0].verdict == "accept" and r2.outcomes[0].delivery == "local"


def test_reject_with() -> None:
    dump = "*filter\n:FORWARD ACCEPT [0:0]\n-A FORWARD -p tcp -j REJECT --reject-with tcp-reset\nCOMMIT\n"
    o = run(dump).outcomes[0]
    assert o.verdict == "reject" and o.reject_with == "tcp-reset"
    o = run(dump, proto="udp", dport=53).outcomes[0]
    assert o.verdict == "accept"


def test_loop_is_a_clear_error() -> None:
    dump = nat("-A PREROUTING -j A", "-A A -j B", "-A B -j A", chains="A B")
    with pytest.raises(WalkError, match="loop in the rules: PREROUTING -> A -> B -> A"):
        run(dump)


def test_absurd_depth_is_a_clear_error() -> None:
    names = [f"C{i}" for i in range(80)]
    rules = ["-A PREROUTING -j C0"] + [f"-A C{i} -j C{i + 1}" for i in range(79)]
    with pytest.raises(WalkError, match="deeper than"):
        run(nat(*rules, chains=" ".join(names)))


def test_missing_sep_chain_named_by_comment() -> None:
    dump = nat(
        '-A PREROUTING -d 172.30.0.1/32 -m comment --comment "ns/web:http -> 10.244.3.9:80" -j KUBE-SEP-GONE',
    )
    r = run(dump)
    o = r.outcomes[0]
    assert o.dnat == "10.244.3.9:80" and not o.certain
    assert any("KUBE-SEP-GONE" in w.message for w in r.warnings)


def test_unknown_interface_splits_and_is_consistent() -> None:
    dump = "*filter\n:FORWARD ACCEPT [0:0]\n-A FORWARD -i cali+ -j ACCEPT\n-A FORWARD -i caliabc -j DROP\n" \
           "-A FORWARD -i eth0 -j DROP\nCOMMIT\n"
    r = run(dump)
    # in on cali+ -> accepted; not cali+ -> caliabc impossible (it is a cali+ name) -> eth0 or not
    assert sorted((o.verdict, round(o.probability, 3)) for o in r.outcomes) == [("accept", 0.5), ("accept", 0.25),
                                                                               ("drop", 0.25)] or \
        sorted((o.verdict, round(o.probability, 3)) for o in r.outcomes) == [("accept", 0.75), ("drop", 0.25)]
    assert all(not o.certain for o in r.outcomes)
    # knowing the interface decides it
    r2 = run(dump, iif="caliabc")
    assert [(o.verdict, o.certain) for o in r2.outcomes] == [("accept", True)]
    r3 = run(dump, iif="eth0")
    assert [(o.verdict, o.certain) for o in r3.outcomes] == [("drop", True)]


def test_same_outcome_on_both_sides_of_an_assumption_is_certain() -> None:
    dump = "*filter\n:FORWARD ACCEPT [0:0]\n-A FORWARD -m physdev --physdev-is-in -j LOG\nCOMMIT\n"
    r = run(dump)
    assert len(r.outcomes) == 1 and r.outcomes[0].certain and r.outcomes[0].probability == pytest.approx(1)


def test_session_affinity_new_and_returning_client() -> None:
    dump = nat(
        "-A PREROUTING -d 172.30.0.1/32 -j SVC",
        "-A SVC -m recent --rcheck --seconds 10800 --reap --name SEP1 --mask 255.255.255.255 --rsource -j SEP1",
        "-A SVC -m recent --rcheck --seconds 10800 --reap --name SEP2 --mask 255.255.255.255 --rsource -j SEP2",
        "-A SVC -m statistic --mode random --probability 0.5 -j SEP1",
        "-A SVC -j SEP2",
        "-A SEP1 -p tcp -m recent --set --name SEP1 --mask 255.255.255.255 --rsource -j DNAT --to-destination 10.1.0.1:80",
        "-A SEP2 -p tcp -m recent --set --name SEP2 --mask 255.255.255.255 --rsource -j DNAT --to-destination 10.1.0.2:80",
        chains="SVC SEP1 SEP2",
    )
    new = run(dump)
    assert {o.dnat: o.probability for o in new.outcomes} == pytest.approx({"10.1.0.1:80": 0.5, "10.1.0.2:80": 0.5})
    assert all(not any("rcheck" in s.text and s.chain == "SVC" and s.action.startswith("jump") and s.rule in (1, 2)
                       for s in o.path) for o in new.outcomes)
    back = run(dump, node=NodeFacts.make(local_ips=["192.168.0.2"], returning_client=True))
    assert {o.dnat: o.probability for o in back.outcomes} == pytest.approx({"10.1.0.1:80": 0.5, "10.1.0.2:80": 0.5})
    for o in back.outcomes:
        first_svc = next(s for s in o.path if s.chain == "SVC")
        assert first_svc.rule in (1, 2)  # the affinity (--rcheck) rule, not the random one


def test_node_origin_goes_through_output_and_back_in_over_lo() -> None:
    dump = nat("-A OUTPUT -d 192.168.0.2/32 -p tcp --dport 8080 -j REDIRECT --to-ports 80") + \
        "*filter\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n-A INPUT -i lo -p tcp --dport 80 -j ACCEPT\n" \
        "-A INPUT -j DROP\nCOMMIT\n"
    r = run(dump, src="192.168.0.2", dst="192.168.0.2", dport=8080)
    assert r.packet.origin == "local"
    o = r.outcomes[0]
    assert o.verdict == "accept" and o.delivery == "local" and o.dnat == "127.0.0.1:80"
    assert next(s.hook for s in o.path) == "OUTPUT"


def test_martian_loopback_destination_depends_on_route_localnet() -> None:
    dump = "*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n"
    off = run(dump, dst="127.0.0.1", node=NodeFacts.make(local_ips=["192.168.0.2"], route_localnet=False))
    assert off.outcomes[0].verdict == "drop" and "route_localnet" in off.outcomes[0].reason
    on = run(dump, dst="127.0.0.1", node=NodeFacts.make(local_ips=["192.168.0.2"], route_localnet=True))
    assert on.outcomes[0].verdict == "accept"


def test_notrack_skips_nat() -> None:
    dump = "*raw\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -j NOTRACK\nCOMMIT\n" + \
        nat("-A PREROUTING -j DNAT --to-destination 10.0.0.9:80")
    o = run(dump).outcomes[0]
    assert o.dnat is None


def test_ctstate_dnat_after_prerouting() -> None:
    dump = nat("-A PREROUTING -j DNAT --to-destination 10.0.0.9:80") + \
        "*filter\n:FORWARD DROP [0:0]\n-A FORWARD -m conntrack --ctstate DNAT -j ACCEPT\nCOMMIT\n"
    o = run(dump).outcomes[0]
    assert o.verdict == "accept" and o.dnat == "10.0.0.9:80"


def test_icmp_has_no_port_and_is_not_dnated_by_tcp_rules() -> None:
    dump = nat("-A PREROUTING -d 172.30.0.1/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination 10.0.0.9:80")
    o = run(dump, proto="icmp").outcomes[0]
    assert o.verdict == "accept" and o.dnat is None and o.delivery == "forward"
    d2 = "*filter\n:FORWARD ACCEPT [0:0]\n-A FORWARD -p icmp --icmp-type echo-request -j DROP\nCOMMIT\n"
    assert run(d2, proto="icmp").outcomes[0].verdict == "drop"


def test_multiport_and_ranges() -> None:
    d = "*filter\n:FORWARD ACCEPT [0:0]\n-A FORWARD -p tcp -m multiport --dports 22,8000:8100 -j DROP\nCOMMIT\n"
    assert run(d, dport=8080).outcomes[0].verdict == "drop"
    assert run(d, dport=22).outcomes[0].verdict == "drop"
    assert run(d, dport=80).outcomes[0].verdict == "accept"


def test_ipset_membership_decides_when_given() -> None:
    sets, _ = parse_ipset("create KUBE-CLUSTER-IP hash:ip,port family inet\nadd KUBE-CLUSTER-IP 172.30.0.1,tcp:80\n")
    d = nat("-A PREROUTING -m set --match-set KUBE-CLUSTER-IP dst,dst -j DNAT --to-destination 10.0.0.9:80")
    node = NodeFacts.make(local_ips=["192.168.0.2"], ipsets=sets)
    assert run(d, node=node).outcomes[0].dnat == "10.0.0.9:80"
    assert run(d, dport=81, node=node).outcomes[0].dnat is None
    unknown = run(d)  # no ipset dump: both cases, uncertain
    assert {o.dnat for o in unknown.outcomes} == {"10.0.0.9:80", None}
    assert all(not o.certain for o in unknown.outcomes)


def test_ipset_save_read_whole_and_members_by_text_answer_as_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    """`ipset save` read by one regular expression gives the sets the line reader gives; a set's members written in
    the one way of writing their value are looked up by text, the others (leading zeros, no protocol, networks)
    parsed: the same answers either way."""
    import ipaddress
    import re

    from svctrace.dataplane import ipset as m

    save = ("create C hash:ip,port family inet hashsize 1024\nadd C 10.0.0.1,tcp:80\nadd C 10.0.0.2,udp:53\n"
            "add C 10.0.0.3,443\nadd C 10.0.0.4,tcp:080\nadd C 10.0.0.6,sctp:9\n"
            "create L hash:ip,port,ip family inet\nadd L 10.0.0.5,tcp:80,10.0.0.5\n"
            "create E hash:ip family inet6\ncreate N hash:ip,port,net family inet\n"
            "add N 10.0.0.7,tcp:80,10.1.0.0/16")
    fast = m.parse_ipset(save, "s")
    odd = [save.replace("add C 10.0.0.2", "add  C 10.0.0.2"), save.replace("add L", "add C"), save + "\nadd X 1.2.3.4",
           save.replace("\ncreate L", "\n\ncreate L"), save.replace("inet6", "inet6 ")]
    assert m._parse_save(save, "s") is not None and not any(m._parse_save(t, "s") for t in odd)
    odd_sets = [m.parse_ipset(t, "s") for t in odd]
    asks = [("10.0.0.1", "tcp", 80, ["dst", "dst"]), ("10.0.0.1", "udp", 80, ["dst", "dst"]),
            ("10.0.0.3", "tcp", 443, ["dst", "dst"]), ("10.0.0.4", "tcp", 80, ["dst", "dst"]),
            ("10.0.0.6", "sctp", 9, ["dst", "dst"]), ("10.0.0.9", "tcp", 80, ["dst", "dst"])]

    def answers(sets: dict[str, m.IPSetListing]) -> list[object]:
        out: list[object] = []
        for dst, proto, port, flags in asks:
            pkt = Packet(4, proto, ipaddress.ip_address("10.0.0.5"), ipaddress.ip_address(dst), 4000, port)
            out.append(m.member_of(sets["C"], pkt, flags))
            out.append(m.member_of(sets["L"], pkt, ["dst", "dst", "src"]))
            out.append(m.member_of(sets["N"], pkt.with_(src=ipaddress.ip_address("10.1.2.3")), ["dst", "dst", "src"]))
        return out

    got = answers(fast[0])
    assert got[:3] == [True, False, False] and got[9] is True and got[12] is True and got[15] is False
    monkeypatch.setattr(m, "_CREATE", re.compile(r"(?!)"))
    monkeypatch.setattr(m, "_DIM_TEXT", {})

    def shown(parsed: tuple[dict[str, m.IPSetListing], list[Warn]]) -> list[object]:
        return [[(s.name, s.type, s.family, s.members, s.member_lines, s.line, s.text, s.typed)
                 for s in parsed[0].values()], [str(w) for w in parsed[1]]]

    slow = m.parse_ipset(save, "s")
    assert shown(slow) == shown(fast)
    assert [shown(m.parse_ipset(t, "s")) for t in odd] == [shown(p) for p in odd_sets]
    assert answers(slow[0]) == got


def test_long_chain_index_gives_the_same_answer_as_a_scan() -> None:
    rules = [f"-A KUBE-SERVICES -d 172.30.{i // 250}.{i % 250 + 1}/32 -p tcp --dport 80 -j DNAT "
             f"--to-destination 10.{i // 250}.{i % 250}.1:80" for i in range(300)]
    rules.insert(150, "-A KUBE-SERVICES -p tcp --dport 80 -m addrtype --dst-type LOCAL -j DNAT --to-destination 10.99.0.1:80")
    dump = nat("-A PREROUTING -j KUBE-SERVICES", *rules, chains="KUBE-SERVICES")
    assert run(dump, dst="172.30.0.7").outcomes[0].dnat == "10.0.6.1:80"
    assert run(dump, dst="172.30.1.7").outcomes[0].dnat == "10.1.6.1:80"  # after the LOCAL rule: not local
    assert run(dump, dst="192.168.0.2").outcomes[0].dnat == "10.99.0.1:80"


def test_family_mismatch_is_a_usage_error() -> None:
    from svctrace.errors import InputError

    with pytest.raises(InputError, match="IPv6"):
        run(nat("-A PREROUTING -j RETURN"), src="fd00::1", dst="fd00::2")


def test_non_contiguous_mask() -> None:
    d = "*filter\n:FORWARD ACCEPT [0:0]\n-A FORWARD -s 10.9.0.5/255.255.0.255 -j DROP\nCOMMIT\n"
    assert run(d, src="10.9.77.5").outcomes[0].verdict == "drop"
    assert run(d, src="10.9.77.6").outcomes[0].verdict == "accept"


def test_ipset_list_format_and_bitmap_ports() -> None:
    listing = """Name: KUBE-CLUSTER-IP
Type: hash:ip,port
Header: family inet hashsize 1024 maxelem 65536
Members:
10.100.49.21,tcp:80
...
Name: KUBE-NODE-PORT-UDP
Type: bitmap:port
Members:
31000
"""
    sets, warns = parse_ipset(listing)
    assert sets["KUBE-CLUSTER-IP"].members == [("10.100.49.21", "tcp:80")]
    assert any("elided" in w.message for w in warns)
    node = NodeFacts.make(local_ips=["192.168.0.2"], ipsets=sets)
    d = "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -m set --match-set KUBE-NODE-PORT-UDP dst -j DROP\nCOMMIT\n"
    assert run(d, dst="192.168.0.2", proto="udp", dport=31000, node=node).outcomes[0].verdict == "drop"
    assert run(d, dst="192.168.0.2", proto="udp", dport=31001, node=node).outcomes[0].verdict == "accept"


def test_outcome_dnat_is_typed_and_prints_as_before() -> None:
    import ipaddress
    import json
    import pickle

    dump = nat("-A PREROUTING -d 172.30.0.1/32 -p tcp --dport 80 -j DNAT --to-destination 10.1.0.1:8080",
               "-A PREROUTING -d 172.30.0.2/32 -p tcp --dport 80 -j DNAT --to-destination 10.1.0.1-10.1.0.4:80")
    (o,) = run(dump).outcomes
    assert o.dnat == "10.1.0.1:8080" and o.dnat.addr == ipaddress.ip_address("10.1.0.1") and o.dnat.port == 8080
    assert json.dumps(o.to_json()["dnat"]) == '"10.1.0.1:8080"'
    back = pickle.loads(pickle.dumps(o.dnat))
    assert (back, back.addr, back.port) == (o.dnat, o.dnat.addr, o.dnat.port)
    (r,) = run(dump, dst="172.30.0.2").outcomes
    assert r.dnat == "10.1.0.1-10.1.0.4:80" and r.dnat.addr is None  # a range names no single address


def test_path_step_comment_and_target_come_from_the_parsed_rule() -> None:
    dump = nat('-A PREROUTING -m comment --comment "ns/svc:http \\"quoted\\"" -j SVC',
               "-A SVC -j DNAT --to-destination 10.1.0.1:80", chains="SVC")
    (o,) = run(dump).outcomes
    first, dnat = o.path
    assert (first.comment, first.target, first.action) == ('ns/svc:http "quoted"', "SVC", "jump SVC")
    assert (dnat.comment, dnat.target) == (None, None)


def test_kube_proxy_knowledge_comes_from_the_hints() -> None:
    import ipaddress

    from svctrace.dataplane.iptables import trace as bare_trace
    from svctrace.kubeproxy.walk import HINTS, MASQUERADE_MARK, missing_endpoint

    dump = nat('-A PREROUTING -d 172.30.0.1/32 -p tcp --dport 80 -j KUBE-MARK-MASQ',
               '-A PREROUTING -m comment --comment "ns/svc:http -> 10.1.0.9:8080" -j KUBE-SEP-ABC')
    rs = load_ruleset(dump, "t.dump")
    pkt = Packet.make(src="10.0.0.2", dst="172.30.0.1", dport=80, local_ips=NODE.local_ips)
    (bare,) = bare_trace(rs, pkt, NODE).outcomes  # the dataplane alone knows no kube-proxy chain
    assert (bare.dnat, bare.mark) == (None, 0) and not bare.certain
    (kube,) = bare_trace(rs, pkt, NODE, HINTS).outcomes
    assert (kube.dnat, kube.mark) == ("10.1.0.9:8080", MASQUERADE_MARK)
    assert missing_endpoint("KUBE-SEP-ABC", "x -> [fd00::1]:80") == (ipaddress.ip_address("fd00::1"), 80)
    assert missing_endpoint("endpoint-5OJB2KTY-ns1/svc1/tcp/p80__fd00.1..2/80", None) == (
        ipaddress.ip_address("fd00:1::2"), 80)
    assert missing_endpoint("KUBE-SVC-ABC", "x -> 10.0.0.1:80") is None


def test_index_everywhere_equals_scanning_everywhere_on_every_corpus_dump(monkeypatch: pytest.MonkeyPatch) -> None:
    """The destination index is exact: with every chain indexed (threshold 1) and with none (a full scan),
    every corpus and demo dump answers every probe the same — for each address and port its rules name, from a
    pod and from outside, and for the node's own address."""
    import json
    import re
    from pathlib import Path

    from svctrace.dataplane.iptables import walker as W
    from svctrace.errors import InputError
    from svctrace.kubeproxy.walk import trace_iptables

    root = Path(__file__).resolve().parent
    dumps = sorted(p for p in root.glob("corpus/**/*iptables-save*") if p.is_file()) + sorted(
        root.glob("corpus/wild/iptables-save/*.txt")) + sorted(
        (root.parent / "svctrace" / "data" / "demo" / "nodes").glob("*/iptables-save"))
    assert len(dumps) >= 20
    probes = 0
    for path in dumps:
        text = path.read_text()
        addrs = [*sorted(set(re.findall(r"-d (\d+\.\d+\.\d+\.\d+)/32", text)))[:12], "192.168.0.2"]
        ports = sorted({int(p) for p in re.findall(r"--dport (\d+)\b", text)})[:6] or [80]
        answers = {}
        for threshold in (1, 10**9):
            monkeypatch.setattr(W, "INDEX_MIN_RULES", threshold)
            try:
                rs = load_ruleset(text, str(path))  # a fresh ruleset: no index left from the other threshold
            except InputError:
                break  # a wild excerpt that is no dump (its own tests say how it is read)
            if rs.family != 4:
                break
            got = []
            for dst in addrs:
                for dport in ports:
                    for src in ("10.244.0.5", "203.0.113.9"):
                        pkt = Packet.make(src=src, dst=dst, proto="tcp", dport=dport, local_ips=NODE.local_ips)
                        r = trace_iptables(rs, pkt, NODE)
                        got.append(json.dumps([o.to_json() for o in r.outcomes], sort_keys=True, default=str))
            answers[threshold] = got
        if not answers.get(1):
            continue
        assert answers[1] == answers[10**9], path
        probes += len(answers[1])
    assert probes > 1000


def test_conntrack_states_of_a_first_packet() -> None:
    """-m conntrack --ctstate / -m state: a first packet's connection is NEW (UNTRACKED after NOTRACK), and
    conntrack also says DNAT / SNAT once NAT changed the destination / source; every combination."""
    import itertools

    from svctrace.dataplane.contract import Dnat
    from svctrace.dataplane.iptables.matches import _ct_hit
    from svctrace.dataplane.kernel import State

    words = ("NEW", "DNAT", "SNAT", "UNTRACKED", "ESTABLISHED")
    pkt = Packet.make(src="10.0.0.2", dst="10.96.0.1", proto="tcp", dport=80)
    for untracked, dnat, dnat_changed, snat_changed, with_nat in itertools.product((False, True), repeat=5):
        st = State(pkt)
        st.untracked, st.dnat_changed, st.snat_changed = untracked, dnat_changed, snat_changed
        st.dnat = Dnat("10.244.1.5:80") if dnat else None
        states = {"UNTRACKED"} if untracked else {"NEW"} | (
            ({"DNAT"} if with_nat and dnat and dnat_changed else set()) | ({"SNAT"} if with_nat and snat_changed
                                                                            else set()))
        for n in range(len(words) + 1):
            for wanted in itertools.combinations(words, n):
                assert _ct_hit(st, frozenset(wanted), with_nat) == bool(states & set(wanted))
