"""The node around kube-proxy's rules, judged by the kernel: ip_forward, the FORWARD policy, rp_filter, the
OUTPUT-path martian of a 127.0.0.1 NodePort, and the reply through a Linux bridge (br_netfilter,
hairpin_mode).

Each test sets the node namespace up, collects its network facts with the very commands `svctrace collect`
runs on a node (svctrace.collect.commands), lets svctrace predict, sends real packets, and compares. The
bridge tests open real TCP connections through a bridge with veth ports, so the reply's way back is
measured, not just the first packet.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from conftest import ORACLE, need_corpus
from kernellab import KernelLab, kernel_available

from svctrace.collect.commands import COMMANDS
from svctrace.dataplane.host import load_host
from svctrace.dataplane.iptables import load_ruleset
from svctrace.dataplane.kernel import reply_path
from svctrace.kubeproxy.walk import trace_iptables
from svctrace.model.host import HostNet
from svctrace.model.packet import NodeFacts, Packet, parse_ip
from svctrace.model.snapshot import NodeFiles

pytestmark = pytest.mark.kernel
_OK, _WHY = kernel_available()
needs_kernel = pytest.mark.skipif(not _OK, reason=_WHY or "kernel lab unavailable")
RULES = ORACLE / "kube-proxy-basic.iptables-save"
WEB = ("172.30.0.41", 80)  # default/web ClusterIP, 3 endpoints 10.180.x, cluster CIDR 10.0.0.0/8
NODE_IP = "192.168.0.2"

_HOST_KEYS = {
    "sysctl": "sysctl",
    "hairpin-mode": "hairpin-mode",
    "ip-addr": "ip-addr.json",
    "ip-route": "ip-route.json",
    "ip-rule": "ip-rule.json",
}


def collect_host(ns: str) -> HostNet:
    """The node facts of namespace `ns`, through the collect commands' first variants (as on a real node)."""
    by_key = {c.key: c for c in COMMANDS}
    files: dict[str, str] = {}
    for key, fname in _HOST_KEYS.items():
        argv = by_key[key].variants[0].argv
        out = subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, check=False)
        assert out.returncode == 0, (key, out.stderr)
        files[fname] = out.stdout
    warns: list[Any] = []
    host = load_host(NodeFiles("lab", files, source="lab"), warns)
    assert not warns, warns
    return host


def predict(
    rules: str,
    host: HostNet,
    *,
    src: str,
    dst: str,
    dport: int,
    origin: str = "forwarded",
    iif: str | None = None,
) -> Counter[str]:
    """svctrace's verdicts (accept/drop/reject, weighted by probability, in percent) for one packet."""
    rs = load_ruleset(rules, "lab")
    pkt = Packet.make(src=src, dst=dst, proto="tcp", dport=dport, origin=origin, iif=iif)  # type: ignore[arg-type]
    facts = NodeFacts.make(local_ips=[NODE_IP], host=host)
    res = trace_iptables(rs, pkt, facts)
    share: dict[str, float] = {}
    for o in res.outcomes:
        assert o.certain, (o.verdict, o.assumptions)
        share[o.verdict] = share.get(o.verdict, 0.0) + o.probability
    return Counter({k: round(v * 100) for k, v in share.items()})


def measured(lab: KernelLab, **probe: Any) -> str:
    r = lab.probe(proto="tcp", samples=20, **probe)
    assert len(r.verdicts) == 1, r.verdicts
    return next(iter(r.verdicts))


def sysctl(lab: KernelLab, **kv: str) -> None:
    for k, v in kv.items():
        lab.exec_node("sh", "-c", f"echo {v} > /proc/sys/{k.replace('.', '/')}")


@needs_kernel
def test_ip_forward_off_drops_forwarded_service_traffic() -> None:
    need_corpus()
    rules = RULES.read_text()
    with KernelLab([NODE_IP]) as lab:
        lab.load(rules)
        for fwd, verdict in ((1, "accept"), (0, "drop")):
            sysctl(lab, **{"net.ipv4.ip_forward": str(fwd)})
            host = collect_host(lab.node_ns)
            assert host.sysctl_int("net.ipv4.ip_forward") == fwd
            assert measured(lab, src="10.0.0.2", dst=WEB[0], dport=WEB[1]) == verdict
            assert predict(rules, host, src="10.0.0.2", dst=WEB[0], dport=WEB[1]) == Counter({verdict: 100})


@needs_kernel
def test_forward_policy_drop_with_and_without_kube_forward() -> None:
    """filter FORWARD policy DROP (a container runtime's): kube-proxy's KUBE-FORWARD accepts the masqueraded
    (mark 0x4000) packet of an outside client, not a pod's; without its accept rules both are dropped. A Docker
    rule on another bridge (-i docker0) is decided by the collected interfaces: svctrace is certain."""
    need_corpus()
    base = RULES.read_text()
    filt = base.index("*filter")
    docker = base[:filt] + base[filt:].replace(":FORWARD ACCEPT [0:0]", ":FORWARD DROP [0:0]", 1).replace(
        '-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer',
        "-A FORWARD -i docker0 ! -o docker0 -j ACCEPT\n-A FORWARD -m conntrack --ctstate NEW -m "
        'comment --comment "kubernetes load balancer',
        1,
    )
    assert docker.count(":FORWARD DROP") == 1 and "-i docker0" in docker
    bare = (
        "\n".join(
            line
            for line in docker.splitlines()
            if not (line.startswith("-A KUBE-FORWARD") and line.endswith("-j ACCEPT"))
        )
        + "\n"
    )
    cases = [
        (docker, "10.0.0.2", "drop"),
        (docker, "198.18.0.2", "accept"),
        (bare, "10.0.0.2", "drop"),
        (bare, "198.18.0.2", "drop"),
    ]
    with KernelLab([NODE_IP]) as lab:
        host = collect_host(lab.node_ns)
        for rules, src, verdict in cases:
            lab.load(rules)
            assert measured(lab, src=src, dst=WEB[0], dport=WEB[1]) == verdict, (src, verdict)
            assert predict(rules, host, src=src, dst=WEB[0], dport=WEB[1]) == Counter({verdict: 100}), src


@needs_kernel
def test_rp_filter_strict_drops_an_asymmetric_source() -> None:
    """The route back to the client leaves by `out` (a policy rule, table 100) while it comes in on `in`."""
    need_corpus()
    rules = RULES.read_text()
    src = "198.18.0.9"
    with KernelLab([NODE_IP]) as lab:
        lab.load(rules)
        lab.exec_node(
            "ip", "route", "add", f"{src}/32", "via", "169.254.77.3", "dev", "out", "onlink", "table", "100"
        )
        lab.exec_node("ip", "rule", "add", "to", src, "lookup", "100", "priority", "100")
        for mode, verdict in ((1, "drop"), (2, "accept"), (0, "accept")):
            sysctl(lab, **{"net.ipv4.conf.all.rp_filter": str(mode), "net.ipv4.conf.in.rp_filter": str(mode)})
            host = collect_host(lab.node_ns)
            assert host.rp_filter("in") == mode
            assert measured(lab, src=src, dst=WEB[0], dport=WEB[1]) == verdict, mode
            assert predict(rules, host, src=src, dst=WEB[0], dport=WEB[1], iif="in") == Counter(
                {verdict: 100}
            )


@needs_kernel
def test_localhost_nodeport_martian_follows_route_localnet() -> None:
    """The node's own SYN to 127.0.0.1:30080, DNATed in OUTPUT to a pod off the node: the re-route refuses a
    loopback source unless route_localnet is on (then kube-proxy masquerades it)."""
    need_corpus()
    rules = RULES.read_text()
    for on, verdict in ((False, "drop"), (True, "accept")):
        with KernelLab([NODE_IP], route_localnet=on) as lab:
            lab.load(rules)
            host = collect_host(lab.node_ns)
            assert host.route_localnet() is on
            r = lab.probe(from_node=True, dst="127.0.0.1", proto="tcp", dport=30080, samples=10)
            assert r.verdicts == Counter({verdict: 10}), r.verdicts
            got = predict(rules, host, src="127.0.0.1", dst="127.0.0.1", dport=30080, origin="local")
            assert got == Counter({verdict: 100})


# -- the reply through a bridge ------------------------------------------------------------------------

SVC, POD_A, POD_B, GW = "10.96.0.10", "10.244.1.5", "10.244.1.10", "10.244.1.1"


@contextmanager
def bridge_lab(brnf: int, hairpin: int, masquerade: str) -> Iterator[dict[str, str]]:
    """node namespace with bridge br0 (10.244.1.1/24) and two pod namespaces on veth ports (A 10.244.1.5 on
    vetha, B 10.244.1.10 on vethb); a ClusterIP 10.96.0.10:80 DNATed to B:8080; `masquerade`: a nat POSTROUTING
    rule (or "")."""
    p = f"i14k{os.getpid()}"
    ns = {"node": f"{p}-node", "a": f"{p}-a", "b": f"{p}-b"}
    made: list[str] = []

    def sh(*argv: str) -> None:
        subprocess.run(argv, check=True, capture_output=True, text=True)

    try:
        for n in ns.values():
            sh("ip", "netns", "add", n)
            made.append(n)
        node = ns["node"]
        sh("ip", "-n", node, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", node, "link", "set", "br0", "up")
        sh("ip", "-n", node, "link", "set", "lo", "up")
        sh("ip", "-n", node, "addr", "add", f"{GW}/24", "dev", "br0")
        for x, ip in (("a", POD_A), ("b", POD_B)):
            sh(
                "ip",
                "-n",
                node,
                "link",
                "add",
                f"veth{x}",
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                ns[x],
            )
            sh("ip", "-n", node, "link", "set", f"veth{x}", "master", "br0", "up")
            sh("ip", "-n", ns[x], "link", "set", "eth0", "up")
            sh("ip", "-n", ns[x], "link", "set", "lo", "up")
            sh("ip", "-n", ns[x], "addr", "add", f"{ip}/24", "dev", "eth0")
            sh("ip", "-n", ns[x], "route", "add", "default", "via", GW)
        settings = {
            "net/ipv4/ip_forward": 1,
            "net/bridge/bridge-nf-call-iptables": brnf,
            "net/ipv4/conf/all/rp_filter": 0,
            "net/ipv4/conf/br0/rp_filter": 0,
        }
        for k, v in settings.items():
            sh("ip", "netns", "exec", node, "sh", "-c", f"echo {v} > /proc/sys/{k}")
        sh(
            "ip",
            "netns",
            "exec",
            node,
            "sh",
            "-c",
            f"echo {hairpin} > /sys/class/net/vethb/brport/hairpin_mode",
        )
        rules = (
            "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
            ":POSTROUTING ACCEPT [0:0]\n"
            f"-A PREROUTING -d {SVC}/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination {POD_B}:8080\n"
            + (masquerade + "\n" if masquerade else "")
            + "COMMIT\n"
        )
        subprocess.run(
            ["ip", "netns", "exec", node, "iptables-restore"],
            input=rules,
            text=True,
            check=True,
            capture_output=True,
        )
        ns["rules"] = rules
        yield ns
    finally:
        for n in reversed(made):
            subprocess.run(["ip", "netns", "del", n], capture_output=True, check=False)


_SERVER = (
    "import socket\ns=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "s.bind(('0.0.0.0', 8080)); s.listen(8); s.settimeout(6)\n"
    "try:\n  c, a = s.accept(); c.sendall(b'hi'); c.close()\nexcept OSError: pass\n"
)
_CLIENT = (
    "import socket, sys\ns=socket.socket(); s.settimeout(2)\n"
    f"try:\n  s.connect(('{SVC}', 80)); print(s.recv(2).decode())\nexcept OSError as e: print('failed', e)\n"
)


def connects(ns: dict[str, str], client: str) -> bool:
    server = subprocess.Popen(
        ["ip", "netns", "exec", ns["b"], sys.executable, "-c", _SERVER],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.3)
        out = subprocess.run(
            ["ip", "netns", "exec", ns[client], sys.executable, "-c", _CLIENT],
            capture_output=True,
            text=True,
            timeout=20,
        ).stdout.strip()
    finally:
        server.kill()
        server.wait()
    return out == "hi"


def svctrace_reply(ns: dict[str, str], client_ip: str) -> tuple[bool | None, str | None]:
    """svctrace's walk of the request on the collected node, then its reply_path."""
    host = collect_host(ns["node"])
    pkt = Packet.make(src=client_ip, dst=SVC, proto="tcp", dport=80)
    res = trace_iptables(load_ruleset(ns["rules"], "lab"), pkt, NodeFacts.make(local_ips=[GW], host=host))
    (o,) = res.outcomes
    assert o.verdict == "accept" and o.dnat is not None and o.dnat.addr == parse_ip(POD_B), o
    assert (o.iif, o.oif) == ("br0", "br0")
    rp = reply_path(
        host,
        client=parse_ip(client_ip),
        client_iif=o.iif,
        endpoint=o.dnat.addr,
        endpoint_oif=o.oif,
        masquerade=o.masquerade,
        endpoint_remote=False,
        client_behind_node=True,
    )
    return rp.through, rp.code


needs_bridge = pytest.mark.skipif(
    not os.path.exists("/proc/sys/net/bridge/bridge-nf-call-iptables") or shutil.which("ip") is None,
    reason="br_netfilter is not available in this kernel (no net.bridge sysctls)",
)

MASQ_SUBNET = f"-A POSTROUTING -s 10.244.1.0/24 -d {POD_B}/32 -j MASQUERADE"
MASQ_HAIRPIN = f"-A POSTROUTING -s {POD_B}/32 -d {POD_B}/32 -j MASQUERADE"  # kube-proxy's hairpin masquerade


@needs_kernel
@needs_bridge
@pytest.mark.parametrize(
    ("brnf", "masq", "ok"),
    [(1, "", True), (0, "", False), (0, MASQ_SUBNET, True)],
    ids=["br_netfilter", "no-br_netfilter", "no-br_netfilter+masquerade"],
)
def test_reply_on_the_same_bridge(brnf: int, masq: str, ok: bool) -> None:
    """Pod A calls the Service, whose endpoint B is on A's bridge: without bridge-nf-call-iptables and
    without masquerade B's reply goes to A over the bridge, untranslated, and the connection fails."""
    with bridge_lab(brnf, 0, masq) as ns:
        assert connects(ns, "a") is ok
        through, code = svctrace_reply(ns, POD_A)
        assert through is ok
        assert code == (None if ok else "reply-bypasses-conntrack")


@needs_kernel
@needs_bridge
@pytest.mark.parametrize(
    ("brnf", "hairpin", "ok"),
    [(1, 0, False), (1, 1, True), (0, 0, True), (0, 1, True)],
    ids=["br_netfilter-hairpin-off", "br_netfilter-hairpin-on", "plain-bridge-off", "plain-bridge-on"],
)
def test_hairpin_through_a_bridge(brnf: int, hairpin: int, ok: bool) -> None:
    """Pod B calls the Service that picks B itself (kube-proxy masquerades it): with br_netfilter the DNATed frame
    is bridged back out B's own port, which needs hairpin_mode; without it the node routes it and it works."""
    with bridge_lab(brnf, hairpin, MASQ_HAIRPIN) as ns:
        # only vethb's hairpin_mode is set: make veth a's the same, as a bridge CNI sets every port alike
        subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                ns["node"],
                "sh",
                "-c",
                f"echo {hairpin} > /sys/class/net/vetha/brport/hairpin_mode",
            ],
            check=True,
        )
        assert connects(ns, "b") is ok
        through, code = svctrace_reply(ns, POD_B)
        assert through is ok
        assert code == (None if ok else "hairpin-mode-off")


@needs_kernel
def test_localhost_dnat_off_the_node_fails_the_send_with_einval() -> None:
    """What the sender sees of the OUTPUT-path martian (svctrace's reason says it): with route_localnet 0 a UDP
    sendto to 127.0.0.1 that OUTPUT's DNAT sends off the node fails at once with EINVAL; with 1 it is sent."""
    ns = f"i14e{os.getpid()}"
    code = (
        "import errno, socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "try:\n    s.sendto(b'x', ('127.0.0.1', 9999)); print('sent')\n"
        "except OSError as e:\n    print(errno.errorcode[e.errno])\n"
    )
    try:
        for cmd in (
            ["ip", "netns", "add", ns],
            ["ip", "-n", ns, "link", "set", "lo", "up"],
            ["ip", "-n", ns, "link", "add", "d0", "type", "veth", "peer", "name", "d1"],
            ["ip", "-n", ns, "link", "set", "d0", "up"],
            ["ip", "-n", ns, "link", "set", "d1", "up"],
            ["ip", "-n", ns, "addr", "add", "10.1.0.2/24", "dev", "d0"],
            ["ip", "-n", ns, "route", "add", "default", "via", "10.1.0.1", "dev", "d0", "onlink"],
            [
                "ip",
                "-n",
                ns,
                "neigh",
                "replace",
                "10.1.0.1",
                "lladdr",
                "02:00:00:00:00:01",
                "dev",
                "d0",
                "nud",
                "permanent",
            ],
        ):
            subprocess.run(cmd, check=True, capture_output=True)
        subprocess.run(
            ["ip", "netns", "exec", ns, "iptables-restore"],
            check=True,
            capture_output=True,
            text=True,
            input="*nat\n:OUTPUT ACCEPT [0:0]\n-A OUTPUT -d 127.0.0.1/32 -p udp --dport 9999 "
            "-j DNAT --to-destination 10.9.9.9:53\nCOMMIT\n",
        )
        for rl, want in (("0", "EINVAL"), ("1", "sent")):
            subprocess.run(
                [
                    "ip",
                    "netns",
                    "exec",
                    ns,
                    "sh",
                    "-c",
                    f"echo {rl} > /proc/sys/net/ipv4/conf/all/route_localnet",
                ],
                check=True,
            )
            out = subprocess.run(
                ["ip", "netns", "exec", ns, sys.executable, "-c", code],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            assert out == want, (rl, out)
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
