"""The node's own network (svctrace.dataplane.host): its files parsed in one place, with errors that name the file
and line, and the kernel's route lookup over them."""

from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess

import pytest

from svctrace.collect import commands
from svctrace.dataplane.host import (
    load_host,
    lookup,
    parse_hairpin,
    parse_ip_addr_json,
    parse_ip_addr_text,
    parse_ip_route_json,
    parse_ip_route_text,
    parse_ip_rule_json,
    parse_ip_rule_text,
    parse_modules,
    parse_sysctl,
    select_source,
)
from svctrace.errors import InputError
from svctrace.model.host import HostNet
from svctrace.model.snapshot import NodeFiles

ip = ipaddress.ip_address

ADDR = [
    {
        "ifindex": 1,
        "ifname": "lo",
        "addr_info": [{"family": "inet", "local": "127.0.0.1", "prefixlen": 8, "scope": "host"}],
    },
    {
        "ifindex": 2,
        "ifname": "eth0",
        "addr_info": [
            {"family": "inet", "local": "192.168.56.11", "prefixlen": 24, "scope": "global"},
            {
                "family": "inet",
                "local": "192.168.56.99",
                "prefixlen": 24,
                "scope": "global",
                "secondary": True,
            },
        ],
    },
    {
        "ifindex": 3,
        "ifname": "eth1",
        "addr_info": [{"family": "inet", "local": "172.16.0.11", "prefixlen": 16, "scope": "global"}],
    },
    {
        "ifindex": 4,
        "ifname": "cni0",
        "addr_info": [{"family": "inet", "local": "10.244.1.1", "prefixlen": 24, "scope": "global"}],
    },
    {"ifindex": 5, "ifname": "veth1@if2", "master": "cni0", "addr_info": []},
]
ROUTES = [
    {"dst": "default", "gateway": "192.168.56.1", "dev": "eth0"},
    {"dst": "10.244.1.0/24", "dev": "cni0", "prefsrc": "10.244.1.1", "scope": "link"},
    {"dst": "10.244.2.0/24", "gateway": "192.168.56.12", "dev": "eth0"},
    {"dst": "172.16.0.0/16", "dev": "eth1", "prefsrc": "172.16.0.11", "scope": "link"},
    {"dst": "192.168.56.0/24", "dev": "eth0", "prefsrc": "192.168.56.11", "scope": "link"},
    {"dst": "203.0.113.0/24", "gateway": "172.16.0.1", "dev": "eth1", "table": "100"},
    {"type": "local", "dst": "192.168.56.11", "dev": "eth0", "table": "local", "prefsrc": "192.168.56.11"},
    {"type": "local", "dst": "10.244.1.1", "dev": "cni0", "table": "local"},
    {"type": "local", "dst": "127.0.0.0/8", "dev": "lo", "table": "local"},
    {"type": "broadcast", "dst": "192.168.56.255", "dev": "eth0", "table": "local"},
]
RULES = [
    {"priority": 0, "src": "all", "table": "local"},
    {"priority": 100, "src": "198.51.100.0", "srclen": 24, "table": "100"},
    {"priority": 200, "src": "all", "fwmark": "0x10", "fwmask": "0x10", "table": "100"},
    {"priority": 300, "src": "all", "ipproto": "tcp", "dport": 443, "table": "100"},
    {"priority": 32766, "src": "all", "table": "main"},
    {"priority": 32767, "src": "all", "table": "default"},
]


def host() -> HostNet:
    h = HostNet(
        sysctls=parse_sysctl(
            "net.ipv4.ip_forward = 1\nnet.ipv4.conf.all.rp_filter = 0\nnet.ipv4.conf.eth1.rp_filter = 1\n"
        )
    )
    h.addresses, h.links = parse_ip_addr_json(json.dumps(ADDR))
    h.routes = parse_ip_route_json(json.dumps(ROUTES))
    h.rules = parse_ip_rule_json(json.dumps(RULES))
    return h


def test_route_lookup_longest_prefix_local_table_and_policy_rules() -> None:
    h = host()
    assert lookup(h, ip("192.168.56.11")).local  # the local table comes first (rule 0)
    assert lookup(h, ip("127.0.0.5")).local
    hit = lookup(h, ip("10.244.1.7"))
    assert hit.route is not None and hit.route.dev == "cni0" and not hit.local
    assert lookup(h, ip("10.244.2.7")).route.gateway == ip("192.168.56.12")  # /24 beats the default
    assert lookup(h, ip("203.0.113.9")).route.dev == "eth0"  # main: table 100 is not asked
    assert lookup(h, ip("203.0.113.9"), src=ip("198.51.100.7")).route.dev == "eth1"  # rule 100: from
    assert lookup(h, ip("203.0.113.9"), mark=0x4010).route.dev == "eth1"  # rule 200: fwmark/mask
    hit = lookup(h, ip("203.0.113.9"), mark=0x4000)
    assert hit.route.dev == "eth0" and any("ipproto tcp" in n for n in hit.notes)  # rule 300 skipped, said so
    assert lookup(h, ip("fd00::1")) is None  # IPv6: unknown
    assert lookup(HostNet(), ip("10.0.0.1")) is None  # no routes collected: unknown


def test_masquerade_source_is_the_outgoing_interfaces_primary_address() -> None:
    h = host()
    assert select_source(h, "eth0", ip("192.168.56.1")) == ip("192.168.56.11")  # never the secondary
    assert select_source(h, "eth1", ip("172.16.0.1")) == ip("172.16.0.11")
    assert select_source(h, "cni0", ip("10.244.1.7")) == ip("10.244.1.1")
    assert select_source(h, "veth1", ip("10.244.1.7")) == ip("192.168.56.11")  # no address: another device's
    assert select_source(HostNet(), "eth0", None) is None


def test_sysctls_per_interface_and_bridge_netfilter() -> None:
    h = host()
    assert h.rp_filter("eth1") == 1 and h.rp_filter("eth0") == 0
    assert h.sysctl_int("net.ipv4.ip_forward") == 1
    assert h.br_netfilter is False  # sysctl collected, no net.bridge.* keys: not loaded
    assert h.bridge_nf() is False
    h2 = HostNet(sysctls=parse_sysctl("net.bridge.bridge-nf-call-iptables = 0\n"))
    assert h2.br_netfilter is True and h2.bridge_nf() is False
    assert HostNet().br_netfilter is None and HostNet().bridge_nf() is None
    assert HostNet(modules=frozenset({"br_netfilter"})).br_netfilter is True
    dotted = HostNet(sysctls=parse_sysctl("net.ipv4.conf.eth0/100.rp_filter = 2\n"))
    assert dotted.rp_filter("eth0.100") == 2  # sysctl writes an interface's dots as slashes
    assert h.bridge_of("veth1") == "cni0" and h.bridge_of("eth0") is None


def test_text_forms_read_like_json() -> None:
    addrs, _links = parse_ip_addr_text(
        "1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever\n"
        "2: eth0    inet 192.168.56.11/24 brd 192.168.56.255 scope global eth0\\       valid_lft forever\n"
    )
    assert [str(a.ip) for a in addrs] == ["127.0.0.1", "192.168.56.11"] and addrs[0].scope == "host"
    routes = parse_ip_route_text(
        "default via 192.168.56.1 dev eth0 proto dhcp metric 100\n"
        "10.244.1.0/24 dev cni0 proto kernel scope link src 10.244.1.1\n"
        "local 192.168.56.11 dev eth0 table local proto kernel scope host src 192.168.56.11\n"
        "blackhole 10.9.0.0/16 proto bird\n"
    )
    assert [r.type for r in routes] == ["unicast", "unicast", "local", "blackhole"]
    assert routes[0].gateway == ip("192.168.56.1") and routes[0].metric == 100 and routes[2].table == "local"
    rules = parse_ip_rule_text(
        "0:\tfrom all lookup local\n100:\tfrom all fwmark 0x10/0x10 lookup 100\n"
        "32766:\tfrom all lookup main\n"
    )
    assert rules[1].fwmark == 0x10 and rules[1].fwmask == 0x10 and rules[1].table == "100"
    assert parse_hairpin("veth1 1\nveth2 0\n") == {"veth1": True, "veth2": False}
    assert parse_hairpin("/sys/class/net/veth1/brport/hairpin_mode:1\n") == {"veth1": True}
    assert parse_modules("br_netfilter 32768 0 - Live 0x0\nbridge 1 1 br_netfilter, Live 0x0\n") == {
        "br_netfilter",
        "bridge",
    }


@pytest.mark.parametrize(
    ("parser", "text", "where"),
    [
        (parse_sysctl, "net.ipv4.ip_forward = 1\nthis is not a sysctl\n", "sysctl:2"),
        (parse_ip_addr_json, '[{"ifname": "eth0", "addr_info": [{"local": "300.1.1.1"}]}]', "ip-addr.json:1"),
        (parse_ip_addr_json, '[{"ifname": "eth0",\n "addr_info": [}]', "ip-addr.json:2"),
        (parse_ip_route_json, '{"dst": "default"}', "ip-route.json:1"),
        (parse_ip_route_json, '[{"dev": "eth0"}]', "ip-route.json:1"),
        (parse_ip_route_text, "default via 10.0.0.1 dev eth0\n10.0.0.0/33 dev eth0\n", "ip-route:2"),
        (parse_ip_rule_json, '[{"table": "main"}]', "ip-rule.json:1"),
        (parse_ip_rule_text, "0: from all lookup local\nnonsense\n", "ip-rule:2"),
        (parse_hairpin, "veth1 1\nveth2 maybe\n", "hairpin-mode:2"),
        (parse_modules, "br_netfilter 1 0 - Live\n!!! 1\n", "modules:2"),
    ],
)
def test_bad_files_name_the_file_and_line(parser, text: str, where: str) -> None:  # type: ignore[no-untyped-def]
    fname = where.split(":")[0]
    with pytest.raises(InputError) as e:
        parser(text, fname)
    assert e.value.one_line().startswith(where + ": "), e.value.one_line()


def test_a_damaged_file_is_a_warning_and_its_fact_unknown() -> None:
    nf = NodeFiles(
        "node01",
        {"sysctl": "net.ipv4.ip_forward = 0\n", "ip-route.json": "[{", "hairpin-mode": "x\n"},
        source="snap",
    )
    warns: list = []
    h = load_host(nf, warns)
    assert h.sysctl_int("net.ipv4.ip_forward") == 0 and h.routes is None and h.hairpin is None
    assert [f"{w.source}:{w.line}" for w in warns] == [
        "snap/nodes/node01/ip-route.json:1",
        "snap/nodes/node01/hairpin-mode:1",
    ]
    assert h.sources == {"sysctl": "snap/nodes/node01/sysctl"}


@pytest.mark.skipif(shutil.which("ip") is None, reason="needs iproute2's ip")
def test_collect_commands_output_parses_on_this_machine() -> None:
    """The node commands `collect` runs, run here, give files the parsers read (the real tools' output)."""
    by_key = {c.key: c for c in commands.COMMANDS}
    for key, parser in (
        ("sysctl", parse_sysctl),
        ("hairpin-mode", parse_hairpin),
        ("modules", parse_modules),
        ("ip-rule", parse_ip_rule_json),
        ("ip-route", parse_ip_route_json),
        ("ip-addr", parse_ip_addr_json),
    ):
        argv = by_key[key].variants[0].argv
        out = subprocess.run(argv, capture_output=True, text=True, check=False).stdout
        parser(out, key)
    sysctls = parse_sysctl(
        subprocess.run(by_key["sysctl"].variants[0].argv, capture_output=True, text=True).stdout
    )
    with open("/proc/sys/net/ipv4/ip_forward") as f:
        assert sysctls["net.ipv4.ip_forward"] == f.read().strip()
    assert "net.ipv4.conf.lo.rp_filter" in sysctls


def test_every_dataplane_shares_the_kernel_path() -> None:
    """ip_forward=0 ends a forwarded packet after PREROUTING whichever program wrote the rules (the kernel path is
    written once): iptables and nftables modes of the demo, with node facts saying the node does not forward."""
    from svctrace.dataplane.node import load_dataplane
    from svctrace.kubeproxy.walk import trace_dataplane
    from svctrace.model.packet import NodeFacts, Packet
    from svctrace.model.snapshot import load_snapshot

    snap = load_snapshot("demo")
    for node, mode in (("node01", "iptables"), ("node04", "nftables")):
        dp = load_dataplane(snap, node, 4)
        assert dp.mode == mode
        pkt = Packet.make(src="10.244.1.50", dst="10.96.10.10", dport=80)
        for fwd, verdicts in ((0, {("drop", "ip-forward-off")}), (1, {("accept", None)})):
            h = HostNet(sysctls=parse_sysctl(f"net.ipv4.ip_forward = {fwd}\n"), node=node)
            res = trace_dataplane(dp, pkt, NodeFacts.make(host=h))
            assert {(o.verdict, o.cause) for o in res.outcomes} == verdicts, (mode, fwd)
        res = trace_dataplane(dp, pkt, NodeFacts.make(host=HostNet(node=node)))
        assert (
            f"ip_forward=1 (the node forwards): no sysctl file for node {node} in the snapshot" in res.assumed
        )


def test_physdev_is_decided_by_the_nodes_interfaces() -> None:
    """A routed packet that came in on an interface that is no bridge crosses no bridge port: physdev matches are
    decided (certain); from a bridge, which port is unknown, so both cases are walked."""
    from svctrace.dataplane.iptables import load_ruleset
    from svctrace.kubeproxy.walk import trace_iptables
    from svctrace.model.packet import NodeFacts, Packet

    rs = load_ruleset(
        "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
        "-A FORWARD -m physdev --physdev-is-in -j DROP\n"
        "-A FORWARD -m physdev ! --physdev-is-bridged -j ACCEPT\nCOMMIT\n",
        "rules",
    )
    h = host()
    for src, want in (
        ("192.168.56.50", {("accept", True)}),
        ("10.244.1.7", {("accept", False), ("drop", False)}),
    ):
        res = trace_iptables(rs, Packet.make(src=src, dst="10.244.2.7", dport=80), NodeFacts.make(host=h))
        assert {(o.verdict, o.certain) for o in res.outcomes} == want, src
    res = trace_iptables(rs, Packet.make(src="192.168.56.50", dst="10.244.2.7", dport=80))  # no node facts
    assert not all(o.certain for o in res.outcomes)


def test_route_lookup_is_indexed_and_agrees_with_a_scan() -> None:
    """A node with a route per node (5000, host-gw style) and per local pod: each lookup costs a dict probe per
    prefix length, and gives what a scan of every route for the longest prefix (lowest metric) gives."""
    import random
    import time

    routes = [{"dst": "default", "gateway": "192.168.0.1", "dev": "eth0"}]
    routes += [
        {"dst": f"10.{i // 256}.{i % 256}.0/24", "gateway": "192.168.0.2", "dev": "eth0"} for i in range(5000)
    ]
    routes += [{"dst": f"10.1.1.{i}", "dev": f"cali{i}", "scope": "link"} for i in range(1, 200)]
    routes += [
        {"dst": "10.200.1.0/24", "dev": "eth1", "metric": 5},
        {"dst": "10.200.1.0/24", "dev": "eth2", "metric": 1},
    ]
    h = HostNet(routes=parse_ip_route_json(json.dumps(routes)))
    rnd = random.Random(7)
    probes = [ip(f"10.{rnd.randrange(30)}.{rnd.randrange(256)}.{rnd.randrange(256)}") for _ in range(2000)]
    t0 = time.perf_counter()
    got = [lookup(h, d).route for d in probes]
    assert time.perf_counter() - t0 < 1.0
    for d, rt in zip(probes[:300], got[:300], strict=True):
        cands = [r for r in h.routes if d in r.dst]
        best = max(cands, key=lambda r: (r.dst.prefixlen, -r.metric))
        assert rt == best, d
    assert lookup(h, ip("10.200.1.250")).route.dev == "eth2"  # the lower metric
    assert lookup(h, ip("10.1.1.7")).route.dev == "cali7"


def test_trace_reads_a_node_directorys_facts(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`svctrace trace snap/nodes/NAME` walks with the directory's node facts: interfaces in the JSON, the FORWARD
    policy DROP certain, and the same facts for every --batch line (also one with its own local_ip)."""
    import io
    import os
    import sys
    import tarfile
    from pathlib import Path

    src = Path(__file__).parent / "fixtures" / "nodefacts" / "forward-policy-drop.tar.gz"
    with tarfile.open(fileobj=io.BytesIO(src.read_bytes())) as tf:
        tf.extractall(tmp_path, filter="data")
    node = tmp_path / "nodes" / "node01"
    exe = str(Path(sys.executable).parent / "svctrace")
    env = {k: v for k, v in os.environ.items() if k != "SVCTRACE_DEBUG"}
    r = subprocess.run(
        [
            exe,
            "trace",
            str(node),
            "--src",
            "10.244.1.50",
            "--dst",
            "10.96.10.10",
            "--dport",
            "80",
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert r.returncode == 1, r.stderr
    doc = json.loads(r.stdout)
    assert [(o["verdict"], o["certain"]) for o in doc["outcomes"]] == [("drop", True)]
    assert any(f.startswith("in on cni0") for f in doc["node_facts"]) and "assumed" not in doc
    batch = tmp_path / "q.jsonl"
    batch.write_text(
        '{"src": "10.244.1.50", "dst": "10.96.10.10", "dport": 80}\n'
        '{"src": "10.244.1.50", "dst": "10.96.10.10", "dport": 80, "local_ip": "192.168.56.11"}\n'
    )
    r = subprocess.run(
        [exe, "trace", str(node), "--batch", str(batch)], capture_output=True, text=True, env=env, timeout=60
    )
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert [[(o["verdict"], o["certain"]) for o in d["outcomes"]] for d in lines] == [[("drop", True)]] * 2
