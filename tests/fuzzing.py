"""Fuzzing svctrace's readers (issue 17): hypothesis strategies for every input svctrace reads, the targets
they feed, and the one property: a reader returns a result or raises svctrace's own error (SvctraceError),
never anything else.

tests/test_fuzz.py runs each target for a bounded number of examples (SVCTRACE_FUZZ_EXAMPLES, default 50:
the whole file costs well under 30 s) and replays tests/data/fuzz-regressions/. A longer session:

    SVCTRACE_FUZZ_EXAMPLES=5000 SVCTRACE_FUZZ_SAVE=tests/data/fuzz-regressions nice python -m pytest -q \\
        -m fuzz -p no:cacheprovider tests/test_fuzz.py

With SVCTRACE_FUZZ_SAVE set, every input that ends in another exception is written there (`<target>--<sha>`)
before the test fails, so that it becomes a regression input once the bug is fixed.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

from hypothesis import strategies as st

from svctrace.errors import SvctraceError

REGRESSIONS = Path(__file__).parent / "data" / "fuzz-regressions"
COUNTER = os.environ.get("SVCTRACE_FUZZ_COUNT")  # a file that gets one line per target run (long sessions)

# -- building blocks ---------------------------------------------------------------------------------------

CHAINS = ["PREROUTING", "OUTPUT", "POSTROUTING", "INPUT", "FORWARD", "KUBE-SERVICES", "KUBE-SVC-ABC",
          "KUBE-SEP-XYZ", "KUBE-MARK-MASQ", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "A", "B"]
ADDRS = ["10.96.0.10", "10.96.0.10/32", "0.0.0.0/0", "192.168.0.2", "10.244.1.5", "::1", "fd00::/8", "300.1.1.1",
         "10.0.0.0/33", "", "!"]
WORDS = ["-p", "tcp", "udp", "sctp", "icmp", "-m", "comment", "--comment", '"ns/svc:http cluster IP"', "-d", "-s",
         "--dport", "--sport", "80", "65535", "0", "99999", "-j", "-g", "DNAT", "SNAT", "MASQUERADE", "MARK",
         "--set-xmark", "0x4000/0x4000", "--to-destination", "10.244.1.5:8080", "statistic", "--mode", "random",
         "--probability", "0.33333333349", "nth", "--every", "3", "--packet", "0", "addrtype", "--dst-type",
         "LOCAL", "mark", "--mark", "recent", "--rcheck", "--seconds", "10800", "--name", "KUBE-SEP-XYZ",
         "--mask", "255.255.255.255", "--rsource", "set", "--match-set", "KUBE-CLUSTER-IP", "dst,dst", "!",
         "-i", "-o", "eth0", "lo", "conntrack", "--ctstate", "NEW,RELATED", "RETURN", "ACCEPT", "DROP", "REJECT",
         "--reject-with", "icmp-port-unreachable", "physdev", "--physdev-is-in", "multiport", "--dports",
         "80,443", "--random-fully", "CONNMARK", "NOTRACK", "CT", "--notrack", "'", '"', "\\", "--", "-x"]


def _line(parts: list[str]) -> str:
    return " ".join(parts)


words = st.lists(st.sampled_from(WORDS + ADDRS + CHAINS), max_size=14)
noise = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)


@st.composite
def iptables_save(draw: st.DrawFn) -> str:
    lines: list[str] = []
    for _ in range(draw(st.integers(0, 4))):
        table = draw(st.sampled_from(["nat", "filter", "mangle", "raw", "security", "bogus"]))
        lines.append(f"*{table}")
        for c in draw(st.lists(st.sampled_from(CHAINS), max_size=6, unique=True)):
            lines.append(f":{c} {draw(st.sampled_from(['ACCEPT', 'DROP', '-', 'X']))} "
                         f"[{draw(st.integers(0, 9))}:{draw(st.integers(0, 99))}]")
        for _ in range(draw(st.integers(0, 12))):
            op = draw(st.sampled_from(["-A", "-I", "-N", "-D", "-X", "[0:0] -A"]))
            lines.append(_line([op, draw(st.sampled_from(CHAINS)), *draw(words)]))
            if draw(st.integers(0, 9)) == 0:
                lines.append(draw(noise))
        if draw(st.booleans()):
            lines.append("COMMIT")
    return "\n".join(lines) + draw(st.sampled_from(["\n", "", "\r\n"]))


@st.composite
def iptables_s(draw: st.DrawFn) -> str:
    lines = [f"-P {c} {draw(st.sampled_from(['ACCEPT', 'DROP']))}" for c in
             draw(st.lists(st.sampled_from(CHAINS[:5]), max_size=3))]
    lines += [f"-N {c}" for c in draw(st.lists(st.sampled_from(CHAINS), max_size=5))]
    lines += [_line(["-A", draw(st.sampled_from(CHAINS)), *draw(words)]) for _ in range(draw(st.integers(0, 12)))]
    if draw(st.booleans()):
        lines.insert(0, draw(st.sampled_from(["# Warning: iptables-legacy tables present", "$ sudo iptables -S",
                                              draw(noise)])))
    return "\n".join(lines) + "\n"


@st.composite
def iptables_l(draw: st.DrawFn) -> str:
    out: list[str] = []
    for c in draw(st.lists(st.sampled_from(CHAINS), min_size=1, max_size=4)):
        head = draw(st.sampled_from([f"Chain {c} (policy ACCEPT)", f"Chain {c} (2 references)",
                                     f"Chain {c} (policy DROP 0 packets, 0 bytes)", f"Chain {c}"]))
        out.append(head)
        out.append(draw(st.sampled_from(["target     prot opt source               destination",
                                         "num  target     prot opt source               destination",
                                         " pkts bytes target     prot opt in     out     source               "
                                         "destination"])))
        for _ in range(draw(st.integers(0, 8))):
            cols = [draw(st.sampled_from([*CHAINS, "DNAT", "MARK", "ACCEPT", "RETURN", ""])),
                    draw(st.sampled_from(["tcp", "udp", "all", "0", "6", "--"])),
                    draw(st.sampled_from(["--", "-f", "!"])), draw(st.sampled_from(ADDRS)),
                    draw(st.sampled_from(ADDRS)), *draw(st.lists(st.sampled_from(
                        ["/* ns/svc:http */", "tcp dpt:80", "to:10.244.1.5:8080", "statistic mode random probability "
                         "0.5", "ADDRTYPE match dst-type LOCAL", "MARK or 0x4000", "dpts:1:2", "reject-with",
                         "ctstate NEW", "match-set KUBE-X dst,dst", "recent: CHECK seconds: 10800"]), max_size=3))]
            if draw(st.booleans()):
                cols.insert(0, str(draw(st.integers(0, 99))))
            out.append("  ".join(cols))
        out.append("")
    return "\n".join(out)


NFT_STMTS = ["ip daddr 10.96.0.10 tcp dport 80 jump svc", "goto a", "jump b", "return", "accept", "drop",
             "reject with icmp type port-unreachable", "meta mark set meta mark or 0x4000", "masquerade fully-random",
             "dnat to 10.244.1.5:8080", "dnat ip to 10.244.1.5 . 8080", "ip daddr . meta l4proto . th dport vmap "
             "@service-ips", "numgen random mod 2 vmap { 0 : goto ep1, 1 : goto ep2 }", "ct state new counter",
             "fib daddr type local jump nodeports", "ip saddr != 10.244.0.0/16 jump mark", "meta l4proto tcp",
             "ct status dnat masquerade", "ip daddr @nodeport-ips", "th dport 30000-32767 jump np", "counter packets "
             "0 bytes 0", "iifname \"eth0\"", "ip protocol icmp", "}", "{", ";", "((((", "@", "$x", "elements = {",
             "10.96.0.10 . tcp . 80 : goto svc"]


@st.composite
def nft_text(draw: st.DrawFn) -> str:
    out = []
    for _ in range(draw(st.integers(0, 3))):
        fam = draw(st.sampled_from(["ip", "ip6", "inet", "bridge", "x"]))
        out.append(f"table {fam} {draw(st.sampled_from(['kube-proxy', 't', 'nat', 'filter']))} {{")
        for _ in range(draw(st.integers(0, 3))):
            if draw(st.booleans()):
                out.append(f"  map {draw(st.sampled_from(['service-ips', 'm']))} {{ type ipv4_addr . inet_proto . "
                           f"inet_service : verdict; elements = {{ 10.96.0.10 . tcp . 80 : goto svc }} }}")
            out.append(f"  chain {draw(st.sampled_from(['pre', 'a', 'b', 'svc', 'ep1', 'ep2', 'nodeports']))} {{")
            if draw(st.booleans()):
                out.append(f"    type {draw(st.sampled_from(['nat', 'filter', 'route']))} hook "
                           f"{draw(st.sampled_from(['prerouting', 'output', 'input', 'postrouting', 'x']))} priority "
                           f"{draw(st.sampled_from(['-100', 'dstnat', 'srcnat', '0', 'filter - 1', 'zz']))}; "
                           f"policy {draw(st.sampled_from(['accept', 'drop']))};")
            out += ["    " + " ".join(draw(st.lists(st.sampled_from(NFT_STMTS), min_size=1, max_size=4)))
                    for _ in range(draw(st.integers(0, 6)))]
            if draw(st.booleans()):
                out.append("  }")
        out.append("}")
    return "\n".join(out) + "\n"


json_leaf = st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True) | st.text(max_size=12)
json_any = st.recursive(json_leaf, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c,
                                                                                        max_size=4), max_leaves=30)
NFT_KEYS = ["match", "left", "right", "op", "payload", "protocol", "field", "meta", "key", "jump", "goto", "target",
            "accept", "drop", "return", "vmap", "data", "set", "map", "elem", "concat", "prefix", "addr", "len",
            "range", "dnat", "snat", "masquerade", "counter", "numgen", "mode", "mod", "ct", "fib", "result",
            "flags", "family", "table", "name", "chain", "hook", "prio", "type", "policy", "expr", "handle", "rule"]
nft_json_any = st.recursive(json_leaf | st.sampled_from([*NFT_KEYS, "==", "!=", "ip", "tcp", "daddr", "dport", "nat"]),
                            lambda c: st.lists(c, max_size=4) | st.dictionaries(st.sampled_from(NFT_KEYS), c,
                                                                                max_size=3), max_leaves=40)


@st.composite
def nft_json(draw: st.DrawFn) -> str:
    items: list[object] = [{"metainfo": {"json_schema_version": 1}}]
    tname = draw(st.sampled_from(["kube-proxy", "t"]))
    fam = draw(st.sampled_from(["ip", "ip6", "inet", 7]))
    items.append({"table": {"family": fam, "name": tname}})
    for c in draw(st.lists(st.sampled_from(["pre", "a", "b", "svc"]), max_size=3)):
        ch: dict[str, object] = {"family": fam, "table": tname, "name": c}
        if draw(st.booleans()):
            ch.update({"type": "nat", "hook": draw(st.sampled_from(["prerouting", "output", 3])),
                       "prio": draw(st.sampled_from([-100, "dstnat", None])), "policy": "accept"})
        items.append({"chain": ch})
        for _ in range(draw(st.integers(0, 3))):
            items.append({"rule": {"family": fam, "table": tname, "chain": c,
                                   "expr": draw(st.lists(nft_json_any, max_size=4))}})
    if draw(st.booleans()):
        items.append(draw(nft_json_any))
    return json.dumps({"nftables": items}) if draw(st.integers(0, 9)) else json.dumps(items)


@st.composite
def ipvsadm(draw: st.DrawFn) -> str:
    lines = []
    if draw(st.booleans()):
        lines += ["IP Virtual Server version 1.2.1 (size=4096)", "Prot LocalAddress:Port Scheduler Flags",
                  "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn"]
        for _ in range(draw(st.integers(0, 5))):
            lines.append(f"{draw(st.sampled_from(['TCP', 'UDP', 'SCTP', 'FWM', 'XX']))}  "
                         f"{draw(st.sampled_from(['10.96.0.10:80', '[fd00::1]:443', '30', '1.2.3.4:99999']))} "
                         f"{draw(st.sampled_from(['rr', 'wrr', 'lc', 'sh', 'mh', '?']))} "
                         f"{draw(st.sampled_from(['', 'persistent 10800', 'persistent', 'mask 255.255.255.0']))}")
            for _ in range(draw(st.integers(0, 3))):
                lines.append(f"  -> {draw(st.sampled_from(['10.244.1.5:8080', '[fd00::5]:80', 'x']))}  "
                             f"{draw(st.sampled_from(['Masq', 'Route', 'Tunnel', 'Local']))} "
                             f"{draw(st.integers(-1, 2**33))} {draw(st.integers(0, 9))} {draw(st.integers(0, 9))}")
    else:
        for _ in range(draw(st.integers(0, 6))):
            lines.append(_line([draw(st.sampled_from(["-A", "-a", "-E", "-D", "-C"])),
                                draw(st.sampled_from(["-t", "-u", "-f", "--sctp-service"])),
                                draw(st.sampled_from(["10.96.0.10:80", "[::1]:80", "7", "1.2.3.4:0"])),
                                *draw(st.lists(st.sampled_from(["-s", "rr", "-p", "10800", "-r", "10.244.1.5:8080",
                                                                "-m", "-g", "-i", "-w", "1", "-1", "-x", "-M",
                                                                "255.255.255.255", "-b", "flag-1"]), max_size=8))]))
    return "\n".join(lines) + "\n"


@st.composite
def ipset(draw: st.DrawFn) -> str:
    lines = []
    for name in draw(st.lists(st.sampled_from(["KUBE-CLUSTER-IP", "KUBE-NODE-PORT-TCP", "KUBE-LOOP-BACK", "X"]),
                              max_size=3)):
        kind = draw(st.sampled_from(["hash:ip,port", "hash:ip,port,ip", "hash:ip,port,net", "bitmap:port",
                                     "hash:net", "list:set", "weird"]))
        lines.append(f"create {name} {kind} family {draw(st.sampled_from(['inet', 'inet6', 'x']))} hashsize 1024 "
                     f"maxelem 65536{draw(st.sampled_from(['', ' range 0-65535', ' comment']))}")
        for _ in range(draw(st.integers(0, 5))):
            lines.append(f"add {name} {draw(st.sampled_from(['10.96.0.10,tcp:80', '10.244.1.5,udp:53,10.244.1.5', '30080', '10.0.0.0/8', '1.2.3.4,tcp:99999', 'x,y', '::1,tcp:80']))}")
        if draw(st.booleans()):
            lines.append(draw(noise))
    if draw(st.booleans()):  # the `ipset list` form
        lines = [f"Name: {draw(st.sampled_from(['KUBE-X', '']))}", "Type: hash:ip,port", "Header: family inet",
                 "Members:", "10.96.0.10,tcp:80", draw(noise)]
    return "\n".join(lines) + "\n"


KINDS = ["Service", "EndpointSlice", "Endpoints", "Pod", "Node", "ConfigMap", "DaemonSet", "List", "X"]


def _kube_obj() -> st.SearchStrategy[object]:
    meta = st.fixed_dictionaries({}, optional={"name": json_any | st.text(max_size=8), "namespace": json_any,
                                               "labels": json_any, "deletionTimestamp": json_any})
    spec_keys = ["clusterIP", "clusterIPs", "ports", "selector", "type", "sessionAffinity", "externalIPs",
                 "sessionAffinityConfig", "externalTrafficPolicy", "internalTrafficPolicy", "nodeName",
                 "containers", "podCIDR", "podCIDRs", "hostNetwork", "loadBalancerSourceRanges", "template",
                 "healthCheckNodePort", "externalName"]
    port = st.fixed_dictionaries({}, optional={"port": json_leaf | st.integers(0, 70000) | st.just(10**400),
                                               "targetPort": json_leaf, "nodePort": json_leaf, "name": json_leaf,
                                               "protocol": st.sampled_from(["TCP", "UDP", "x"]),
                                               "containerPort": json_leaf})
    spec_val = json_any | st.lists(port, max_size=3) | st.text(max_size=15)
    return st.fixed_dictionaries(
        {"kind": st.sampled_from(KINDS)},
        optional={"metadata": meta | json_any, "spec": st.dictionaries(st.sampled_from(spec_keys), spec_val,
                                                                       max_size=6) | json_any,
                  "status": json_any, "endpoints": json_any | st.lists(st.dictionaries(st.sampled_from(
                      ["addresses", "conditions", "nodeName", "targetRef", "zone", "hints"]), json_any,
                      max_size=4), max_size=3), "ports": json_any | st.lists(port, max_size=2),
                  "subsets": json_any, "data": json_any, "addressType": json_leaf, "items": json_any})


@st.composite
def cluster_json(draw: st.DrawFn) -> str:
    items = draw(st.lists(_kube_obj(), max_size=6))
    if draw(st.booleans()):
        items.append({"kind": "Service", "metadata": {"name": "web", "namespace": "default"},
                      "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 80}]}})
    doc: object = {"kind": "List", "items": items} if draw(st.booleans()) else items
    if draw(st.integers(0, 19)) == 0:
        doc = draw(json_any)
    return json.dumps(doc)


def _tar(members: list[tuple[str, bytes, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data, kind in members:
            ti = tarfile.TarInfo(name)
            if kind == b"sym":
                ti.type, ti.linkname = tarfile.SYMTYPE, data.decode("utf-8", "replace")[:90] or "x"
                tf.addfile(ti)
            elif kind == b"dir":
                ti.type = tarfile.DIRTYPE
                tf.addfile(ti)
            else:
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


MEMBER_NAMES = ["cluster.json", "./cluster.json", "cluster.yaml", "meta.json", "snap/cluster.json",
                "nodes/n1/iptables-save", "nodes/n1/nft", "nodes/n1/nft.json", "nodes/n1/ipvsadm", "nodes/n1/ipset",
                "nodes/n1/ip-addr.json", "nodes/n1/proxy-mode", "nodes/n1/configz.json", "nodes/n2/iptables-save",
                "snap/nodes/n1/iptables-save", "../nodes/n1/iptables-save", "nodes/../x", "/etc/x", "nodes//n1/nft",
                "nodes/n1/", "a/b/c/d", "nodes/n1/errors.json", ".", ""]


def dump_text() -> st.SearchStrategy[str]:
    return st.one_of(iptables_save(), iptables_s(), iptables_l(), nft_text(), nft_json(), ipvsadm(), ipset())


@st.composite
def snapshot_archive(draw: st.DrawFn) -> bytes:
    members = []
    for _ in range(draw(st.integers(0, 7))):
        name = draw(st.sampled_from(MEMBER_NAMES) | st.text(max_size=20))
        if name.endswith("cluster.json"):
            data = draw(cluster_json()).encode()
        elif name.endswith(("meta.json", "configz.json", "ip-addr.json", "errors.json")):
            data = json.dumps(draw(json_any)).encode()
        elif name.endswith("proxy-mode"):
            data = draw(st.sampled_from([b"iptables", b"ipvs", b"nftables", b"", b"\xff\xfe"]))
        else:
            data = draw(dump_text()).encode()
        kind = draw(st.sampled_from([b"file"] * 6 + [b"sym", b"dir"]))
        members.append((name, data, kind))
    raw = _tar(members)
    if draw(st.integers(0, 9)) == 0:  # a damaged archive
        cut = draw(st.integers(0, len(raw)))
        raw = raw[:cut] + draw(st.binary(max_size=20))
    return raw


# -- targets: input -> svctrace's readers (and what comes right after them) --------------------------------

def _walk(text: str, name: str) -> None:
    from rich.console import Console

    from svctrace.cli.trace import trace_inputs
    from svctrace.model.packet import NodeFacts, Packet
    from svctrace.render.text import render_trace

    facts = NodeFacts.make(local_ips=["192.168.0.2"])
    for dst, dport in (("10.96.0.10", 80), ("192.168.0.2", 30080)):
        pkt = Packet.make(src="10.244.1.5", dst=dst, proto="tcp", dport=dport, local_ips=facts.local_ips)
        res = trace_inputs([(text, name)], pkt, facts)
        render_trace(res, Console(file=io.StringIO(), width=100))


def target_dump(data: bytes) -> None:
    """A dump as `svctrace trace` reads it: decoded, sniffed (iptables save/-S/-L, nft text/JSON, ipvsadm),
    parsed, walked for two packets, and drawn."""
    from svctrace.model.snapshot import decode_text

    _walk(decode_text(data, "fuzz", line=True), "fuzz")


def target_ipset(data: bytes) -> None:
    from svctrace.dataplane.ipset import parse_ipset
    from svctrace.model.snapshot import decode_text

    parse_ipset(decode_text(data, "fuzz.ipset"), "fuzz.ipset")


def _explain_all(snap: object) -> None:
    from svctrace.dataplane.node import load_dataplane
    from svctrace.explain import explain
    from svctrace.explain.question import Request

    for node in list(snap.nodes)[:2]:  # type: ignore[attr-defined]
        load_dataplane(snap, node, 4)  # type: ignore[arg-type]
    for key in list(snap.cluster.services)[:2]:  # type: ignore[attr-defined]
        ns, name = key.split("/", 1)
        explain(snap, Request(f"svc/{name}", ns))  # type: ignore[arg-type]


def target_snapshot(data: bytes) -> None:
    """A .tar.gz snapshot: read (names, links, caps), cluster.json parsed, each node's dataplane loaded, the
    first Services explained."""
    from svctrace.model.snapshot import load_snapshot

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "s.tgz"
        p.write_bytes(data)
        _explain_all(load_snapshot(str(p)))


def target_snapshot_dir(data: bytes) -> None:
    """The same members unpacked into a directory bundle (symlinks and all), read as a directory."""
    from svctrace.model.snapshot import load_snapshot

    with tempfile.TemporaryDirectory() as d:
        root = Path(d) / "snap"
        root.mkdir()
        try:
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tf:
                members = tf.getmembers()
                for m in members:
                    rel = os.path.normpath(m.name).lstrip("/")
                    if rel.startswith("..") or rel in (".", ""):
                        continue
                    dest = root / rel
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    if m.issym() and not dest.exists():
                        os.symlink(m.linkname, dest)
                    elif m.isfile() and not dest.exists():
                        f = tf.extractfile(m)
                        dest.write_bytes(f.read() if f else b"")
        except Exception:
            return  # not an archive to unpack: nothing to test here
        _explain_all(load_snapshot(str(root)))


def target_cluster(data: bytes) -> None:
    """cluster.json (and the same objects as cluster.yaml) read into a snapshot, the first Services explained."""
    from svctrace.model.snapshot import _build

    _explain_all(_build({"cluster.json": data}, "fuzz"))
    try:
        import yaml

        doc = json.loads(data)
        as_yaml = yaml.safe_dump(doc).encode()
    except (ValueError, RecursionError, yaml.YAMLError):
        return
    _explain_all(_build({"cluster.yaml": as_yaml}, "fuzz"))


CORPUS = Path(__file__).parent / "corpus"


def _corpus_dumps() -> list[Path]:
    """Real dumps (tests/corpus/wild: iptables save/-S/-L, nft, ipvsadm; kube-proxy's own nft ruleset), the
    seeds the `corpus` target mutates."""
    wild = CORPUS / "wild"
    found = sorted(p for d in ("iptables-save", "iptables-S", "iptables-L", "nft", "ipvsadm")
                   for p in (wild / d).glob("*") if p.is_file() and not p.name.endswith(".k8s.txt"))
    return found + sorted((CORPUS / "kube-proxy" / "nftables" / "overall").glob("*.nft"))


def corpus_seed() -> st.SearchStrategy[bytes]:
    files = _corpus_dumps()
    return st.sampled_from(files).map(lambda p: p.read_bytes()) if files else st.just(b"")


TARGETS: dict[str, tuple[Callable[[bytes], None], st.SearchStrategy[bytes]]] = {
    "corpus": (target_dump, corpus_seed()),
    "iptables-save": (target_dump, iptables_save().map(str.encode)),
    "iptables-S": (target_dump, iptables_s().map(str.encode)),
    "iptables-L": (target_dump, iptables_l().map(str.encode)),
    "nft": (target_dump, nft_text().map(str.encode)),
    "nft-json": (target_dump, nft_json().map(str.encode)),
    "ipvsadm": (target_dump, ipvsadm().map(str.encode)),
    "ipset": (target_ipset, ipset().map(str.encode)),
    "cluster": (target_cluster, cluster_json().map(str.encode)),
    "snapshot": (target_snapshot, snapshot_archive()),
    "snapshot-dir": (target_snapshot_dir, snapshot_archive()),
}


def mutated(base: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    """Byte-level mutations of a generated input: cut, spliced, duplicated, or a byte flipped."""
    @st.composite
    def mut(draw: st.DrawFn) -> bytes:
        data = draw(base)
        for _ in range(draw(st.integers(0, 3))):
            i = draw(st.integers(0, len(data)))
            op = draw(st.sampled_from(["cut", "insert", "dup", "flip"]))
            if op == "cut":
                data = data[:i] + data[i + draw(st.integers(0, 40)):]
            elif op == "insert":
                data = data[:i] + draw(st.binary(max_size=8) | st.sampled_from(
                    [b"\n", b"-g A", b"-j A", b"}", b"{", b'"', b"\\", b"goto a;", b"[", b"]"])) + data[i:]
            elif op == "dup":
                data = data[:i] + data[i:i + 200] * draw(st.integers(1, 5)) + data[i:]
            elif data:
                j = min(i, len(data) - 1)
                data = data[:j] + bytes([data[j] ^ (1 << draw(st.integers(0, 7)))]) + data[j + 1:]
        return data

    return mut()


def check(name: str, data: bytes) -> None:
    """The property: svctrace's own error or a result. Anything else is saved (SVCTRACE_FUZZ_SAVE) and raised."""
    fn = TARGETS[name][0]
    if COUNTER:
        with open(COUNTER, "a") as fh:
            fh.write(name + "\n")
    try:
        fn(data)
    except SvctraceError:
        pass
    except Exception:
        save = os.environ.get("SVCTRACE_FUZZ_SAVE")
        if save:
            Path(save).mkdir(parents=True, exist_ok=True)
            (Path(save) / f"{name}--{hashlib.sha256(data).hexdigest()[:16]}").write_bytes(data)
        raise
