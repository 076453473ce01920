"""Partial evidence answered honestly: pastes without kube-proxy's wiring, dumps cut short, addresses no rule knows.

The whole dump (the bundled example) is the reference: a paste of some of its chains, walked with kube-proxy's
assumed wiring, must give the same destinations and shares as the whole dump, with every outcome uncertain and the
assumption named; a dump cut short must never be certain (nor diagnosed rules-missing / rules-stale by explain).
"""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from svctrace.data import build_demo
from svctrace.dataplane.iptables import load_ruleset
from svctrace.errors import InputError
from svctrace.explain import Request, explain
from svctrace.kubeproxy.versions import MODES
from svctrace.kubeproxy.walk import trace_iptables
from svctrace.model.packet import NodeFacts, Packet
from svctrace.model.snapshot import load_snapshot

EXAMPLE = Path(build_demo.__file__).parent / "examples" / "kube-proxy-basic.iptables-save"
NODE = NodeFacts.make(local_ips=["192.168.0.2"])


def _lines(pattern: str) -> list[str]:
    return [x for x in EXAMPLE.read_text().splitlines() if re.search(pattern, x)]


def _walk(
    text: str,
    dst: str,
    dport: int,
    src: str = "10.180.9.9",
    *,
    table: str | None = "nat",
    version: str | None = None,
    chain: str | None = None,
    proto: str = "tcp",
) -> Any:
    rs = load_ruleset(text, "paste.txt", table)
    pkt = Packet.make(src=src, dst=dst, proto=proto, dport=dport, local_ips=NODE.local_ips)
    return trace_iptables(rs, pkt, NODE, kube_version=version, chain=chain)


def _dests(result: Any) -> dict[str, float]:
    out: dict[str, float] = {}
    for o in result.outcomes:
        key = o.dnat or o.verdict
        out[key] = out.get(key, 0.0) + o.probability
    return {k: round(v, 9) for k, v in out.items()}


def test_the_whole_dump_is_certain_and_the_reference() -> None:
    whole = _walk(EXAMPLE.read_text(), "172.30.0.41", 80, table=None)
    assert all(o.certain for o in whole.outcomes) and whole.cut is None
    assert _dests(whole) == {
        "10.180.0.1:80": 0.333333333,
        "10.180.1.2:80": 0.333333333,
        "10.180.2.3:80": 0.333333333,
    }


def test_grep_paste_with_a_shell_prompt_gets_the_wiring_of_the_version_and_says_so() -> None:
    # `iptables -t nat -S | grep KUBE`: the Service's chains, KUBE-SERVICES, a prompt on the first line; no
    # PREROUTING/OUTPUT jumps, no KUBE-POSTROUTING.
    # (KUBE-SERVICES' Service rules only: its last rule, the jump to KUBE-NODEPORTS, is not in the paste)
    lines = _lines(
        r"^-A (KUBE-SERVICES -d|KUBE-SVC-QKFP|KUBE-SEP-(2XG|7YJ|DSS)|KUBE-MARK-MASQ|KUBE-NODEPORTS|"
        r"KUBE-EXT-QKFP)"
    )
    paste = "root@node:~# iptables -t nat -S | grep KUBE\n" + "\n".join(lines) + "\n"
    before = _walk(paste, "172.30.0.41", 80)
    whole = _walk(EXAMPLE.read_text(), "172.30.0.41", 80, table=None)
    assert _dests(before) == _dests(whole)
    assert all(not o.certain for o in before.outcomes)
    for o in before.outcomes:
        assert any(
            f"kube-proxy {MODES['iptables'].default}'s wiring" in a and "PREROUTING -> KUBE-SERVICES" in a
            for a in o.assumptions
        )
    # the version at hand names the wiring
    v = _walk(paste, "172.30.0.41", 80, version="1.30")
    assert all(any("kube-proxy 1.30's wiring" in a for a in o.assumptions) for o in v.outcomes)
    # a NodePort through the assumed last KUBE-SERVICES rule, masqueraded by the assumed KUBE-POSTROUTING
    np = _walk(paste, "192.168.0.2", 30080, src="203.0.113.7")
    whole_np = _walk(EXAMPLE.read_text(), "192.168.0.2", 30080, src="203.0.113.7", table=None)
    assert _dests(np) == _dests(whole_np)
    assert all(o.masquerade for o in np.outcomes) and all(o.masquerade for o in whole_np.outcomes)
    assert all(any("KUBE-NODEPORTS last in KUBE-SERVICES" in a for a in o.assumptions) for o in np.outcomes)


def test_a_service_chain_alone_answers_if_a_packet_reaches_it() -> None:
    alone = "\n".join(_lines(r"^-A KUBE-SVC-QKFP")) + "\n"
    r = _walk(alone, "172.30.0.41", 80)
    assert _dests(r) == {
        "10.180.0.1:80": 0.333333333,
        "10.180.1.2:80": 0.333333333,
        "10.180.2.3:80": 0.333333333,
    }
    assert all(
        not o.certain and any("if a packet reaches KUBE-SVC-QKFPVVJNZO3DKTF4" in a for a in o.assumptions)
        for o in r.outcomes
    )
    # with its endpoint chains, the endpoints come from their DNAT rules, not from comments
    with_seps = "\n".join(_lines(r"^-A (KUBE-SVC-QKFP|KUBE-SEP-(2XG|7YJ|DSS))")) + "\n"
    r2 = _walk(with_seps, "172.30.0.41", 80)
    assert _dests(r2) == _dests(r)
    assert not any("not in the dump" in s.action for o in r2.outcomes for s in o.path)


def test_chain_option_names_the_chain_and_unknown_chains_are_refused() -> None:
    two = "\n".join(_lines(r"^-A (KUBE-SVC-QKFP|KUBE-SVC-TCOU)")) + "\n"
    dns = _walk(two, "172.30.0.10", 53, proto="udp", chain="KUBE-SVC-TCOU7JCQXEZGVUNU")
    assert _dests(dns) == {"10.180.0.10:53": 0.5, "10.180.1.11:53": 0.5}
    assert all(any("(--chain)" in a for a in o.assumptions) for o in dns.outcomes)
    with pytest.raises(InputError, match="--chain KUBE-SVC-NOPE"):
        _walk(two, "172.30.0.10", 53, proto="udp", chain="KUBE-SVC-NOPE")
    # several roots without --chain: each is reached by the address its own masquerade rule names
    web = _walk(two, "172.30.0.41", 80)
    assert set(_dests(web)) == {"10.180.0.1:80", "10.180.1.2:80", "10.180.2.3:80"}
    assert all(not o.certain for o in web.outcomes)


def test_a_paste_that_is_a_whole_table_is_not_rewired() -> None:
    # A real node whose nat PREROUTING lacks the jump (kube-proxy not running right) is not a paste: no wiring
    # is assumed, and the answer is certain.
    text = EXAMPLE.read_text().replace(
        '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES\n', ""
    )
    r = _walk(text, "172.30.0.41", 80, table=None)
    assert [o.dnat for o in r.outcomes] == [None] and r.outcomes[0].certain


@pytest.mark.parametrize("cut", ["commit", "mid-rule", "mid-chain"])
def test_a_dump_cut_short_is_uncertain_and_names_its_last_line(cut: str) -> None:
    lines = EXAMPLE.read_text().splitlines()
    nat_start = lines.index("*nat")
    svc = next(i for i, x in enumerate(lines) if x.startswith("-A KUBE-SVC-QKFP"))
    if cut == "commit":
        text, end = "\n".join(lines[:-2]) + "\n", len(lines) - 2  # the nat table without COMMIT
    elif cut == "mid-rule":
        text, end = "\n".join([*lines[: svc + 1], lines[svc + 1][:60]]), svc + 2
    else:
        text, end = "\n".join(lines[: nat_start + 30]) + "\n", nat_start + 30
    r = _walk(text, "172.30.0.41", 80, table=None)
    assert r.cut is not None and f"line {end}" in r.cut
    assert r.outcomes and all(not o.certain and o.assumptions[0] == r.cut for o in r.outcomes)
    assert r.exit_code == 1
    assert r.to_json()["cut"] == r.cut


@pytest.mark.slow
def test_cli_cut_dump_verdict_is_uncertain_and_exit_1(tmp_path: Path) -> None:
    lines = EXAMPLE.read_text().splitlines()
    f = tmp_path / "cut.txt"
    f.write_text("\n".join(lines[:100]) + "\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "COLUMNS": "200"}
    p = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from svctrace.cli import main; sys.argv[0] = 'svctrace'; main()",
            "trace",
            str(f),
            "--src",
            "10.180.9.9",
            "--dst",
            "172.30.0.41",
            "--dport",
            "80",
            "--local-ip",
            "192.168.0.2",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert p.returncode == 1, p.stderr
    verdict = next(x for x in p.stdout.splitlines() if x.startswith("Verdict:"))
    assert "UNCERTAIN" in verdict and "line 100" in verdict


def test_an_address_no_rule_mentions_gets_the_known_service_addresses() -> None:
    r = _walk(EXAMPLE.read_text(), "172.30.0.99", 80, table=None)
    assert r.exit_code == 0 and not r.nowhere
    note = " ".join(r.notes)
    assert "No kube-proxy rule of this dump mentions 172.30.0.99" in note
    assert "172.30.0.41 (default/web:http)" in note and "172.30.0.10 (kube-system/dns:dns)" in note
    # a Service address on a port it does not serve keeps its own note (goes nowhere)
    r2 = _walk(EXAMPLE.read_text(), "172.30.0.41", 81, table=None)
    assert r2.nowhere and "is a Service address in these rules" in r2.notes[0]


def test_explain_does_not_diagnose_rules_missing_or_stale_from_a_cut_dump(tmp_path: Path) -> None:
    from test_explain import codes, write_snapshot

    objs = copy.deepcopy(build_demo.objects())
    whole = build_demo.node_dump(objs, "node01")
    lines = whole.splitlines()
    cut_at = next(i for i, x in enumerate(lines) if x.startswith("-A KUBE-SERVICES"))
    dumps = {"node01": "\n".join(lines[:cut_at]) + "\n"}
    root = write_snapshot(tmp_path / "s", objs, dumps)
    exp = explain(load_snapshot(str(root)), Request(target="svc/web", node="node01", source="pod/client"))
    assert not {"rules-missing", "rules-stale"} & codes(exp)
    assert exp.outcomes and all(not o.certain for o in exp.outcomes)
    # the same dump whole: certain, and a truly missing Service is still diagnosed from a whole dump
    root2 = write_snapshot(tmp_path / "w", objs, {"node01": whole})
    exp2 = explain(load_snapshot(str(root2)), Request(target="svc/web", node="node01", source="pod/client"))
    assert all(o.certain for o in exp2.outcomes)


def test_a_pod_address_gets_no_service_hint() -> None:
    # 10.180.0.1 is in the cluster CIDR the masquerade rules name (! -s 10.0.0.0/8): a pod, not a mistaken Service
    r = _walk(EXAMPLE.read_text(), "10.180.0.1", 80, table=None)
    assert r.notes == [] and r.exit_code == 0


# -- nftables ---------------------------------------------------------------------------------------------

NFT = Path(__file__).parent / "corpus" / "kube-proxy" / "nftables" / "overall" / "ruleset.nft"


def _nft(text: str, dst: str, dport: int, src: str = "10.0.0.2") -> Any:
    from svctrace.dataplane.nftables import load_nft
    from svctrace.kubeproxy.walk import trace_nft

    node = NodeFacts.make(local_ips=["192.168.0.2"])
    pkt = Packet.make(src=src, dst=dst, proto="tcp", dport=dport, local_ips=node.local_ips)
    return trace_nft(load_nft(text, "paste.nft"), pkt, node)


def test_nft_service_chain_alone_answers_if_a_packet_reaches_it() -> None:
    whole = _nft(NFT.read_text(), "172.30.0.41", 80)
    assert all(o.certain for o in whole.outcomes)
    lines = NFT.read_text().splitlines()
    start = next(i for i, x in enumerate(lines) if x.strip().startswith("chain service-ULMVA6XW"))
    end = next(i for i in range(start, len(lines)) if lines[i].strip() == "}")
    paste = "table ip kube-proxy {\n" + "\n".join(lines[start : end + 1]) + "\n}\n"
    r = _nft(paste, "172.30.0.41", 80)
    assert _dests(r) == _dests(whole)
    assert all(
        not o.certain and any("if a packet reaches service-ULMVA6XW" in a for a in o.assumptions)
        for o in r.outcomes
    )


def test_nft_text_with_a_brace_left_open_is_cut_and_uncertain() -> None:
    lines = NFT.read_text().splitlines()
    svc = next(i for i, x in enumerate(lines) if x.strip().startswith("chain service-ULMVA6XW"))
    text = "\n".join(lines[: svc + 3]) + "\n"  # ends inside the service chain: braces unbalanced
    r = _nft(text, "172.30.0.41", 80)
    assert r.cut is not None and f"line {svc + 3}" in r.cut
    assert r.outcomes and all(not o.certain and o.assumptions[0] == r.cut for o in r.outcomes)
    assert r.exit_code == 1


def test_a_paste_with_prompt_lines_and_no_kube_services() -> None:
    # Two commands pasted with their prompts (`$ ...`, `root@node:~# ...`, a bare `$ `), no -t nat given: the
    # chains are placed by name, KUBE-SVC is the one root, and a packet that reaches it is answered.
    text = "\n".join(
        [
            "$ sudo iptables -t nat -S | grep KUBE-SVC-QKFP",
            *_lines(r"^-A KUBE-SVC-QKFP"),
            "$ ",
            "root@node:~# iptables -t nat -S KUBE-SEP-2XGSBOOHVUAVTSZF",
            *_lines(r"^-A KUBE-SEP-2XG"),
            "root@node:~# ",
        ]
    )
    r = _walk(text, "172.30.0.41", 80, table=None)
    assert r.cut is None
    assert _dests(r) == {
        "10.180.0.1:80": 0.333333333,
        "10.180.1.2:80": 0.333333333,
        "10.180.2.3:80": 0.333333333,
    }
    assert all(not o.certain for o in r.outcomes)
    assert any("skipped a shell command line" in w.message for w in r.warnings)
