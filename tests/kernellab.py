"""Kernel lab: load iptables rules into a network namespace and ask the kernel what it does.

The kernel is the judge of svctrace's predictions.  ``KernelLab`` builds three network namespaces::

    client ns  --(c | in)--  node ns  --(out | s)--  sink ns

* The **node** namespace holds the rules (``load``), the node IPs (on ``in``), a /32 (/128) route back
  to the probe's client source via ``in`` and a default route via ``out``.  ``ip_forward`` is on,
  ``rp_filter`` off, ``route_localnet`` as asked, ICMP rate limiting off (so every REJECT answers).
* The **client** namespace owns the current probe's source address (only that one, so packets to
  earlier sources go to the sink like any other address) and routes everything to the node.
* The **sink** namespace is a black hole: no addresses, no forwarding, IPv6 disabled.  A packet the
  node forwards is never answered, so its conntrack entry stays UNREPLIED and its reply tuple tells
  where the packet went: reply source = destination after DNAT, reply destination != original
  source = masquerade/SNAT.

All link-layer neighbours are static, so no ARP/ND is ever needed.  An nftables table
``inet kernellab_ct`` (a ``ct state`` match, no verdicts) makes sure connection tracking runs in the
node namespace even when the loaded rules never mention it.

Verdict of a sample: a conntrack entry was confirmed for it -> ``accept`` (the packet passed the
node: forwarded, or delivered locally even if the node's stack then answers with a RST/ICMP error);
otherwise an ICMP destination-unreachable or a TCP RST came back for it -> ``reject``; otherwise
``drop``.  Filter verdicts are given before conntrack confirms an entry, so rejected and dropped
packets leave none.

Samples use distinct source ports (ICMP: echo identifiers) ``sport_base .. sport_base+samples-1`` and
are matched to conntrack entries by them.  One helper process per probe, run inside the client (or,
``from_node``, the node) namespace, sends all samples, listens for ICMP errors and RSTs on raw
sockets and for the node's conntrack NEW events on a ctnetlink socket opened in the node namespace.
Events are needed, not just the table: when the only answer to a SYN is a RST (the node's own
stack, or a hairpinned client), the kernel deletes the entry at once.  The table
(``/proc/<pid>/net/nf_conntrack`` of a keeper process in the node namespace, else ``conntrack -L``)
is read as well.  This file is that helper too (``python kernellab.py --helper``); standard library
only.

``from_node`` probes: on a real node a masquerade from the node's own address to the node's own
address is a null change.  To make it visible, the witness address ``KernelLab.WITNESS4`` (IPv6:
``WITNESS6``) is put on ``out`` during those probes, so MASQUERADE rewrites to it.  For packets from
the client namespace ``out`` has only a link-scope address and MASQUERADE picks the first node IP,
as on a node.

Destination keys: ``ip:port`` (IPv6 ``[ip]:port``) for TCP/UDP, ``ip`` for ICMP.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import ctypes
import errno
import functools
import ipaddress
import itertools
import json
import math
import os
import select
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["KernelLab", "KernelResult", "chi2_sf", "kernel_available"]

NS_PREFIX = "klab"
_COUNTER = itertools.count(1)
_OPEN_LABS: set[KernelLab] = set()

# Fixed link-layer addresses (each namespace is separate, so they never clash) and link-local
# next hops with permanent neighbour entries.
_MAC_IN, _MAC_C, _MAC_OUT, _MAC_S = (
    "02:6b:6c:00:00:01",
    "02:6b:6c:00:00:02",
    "02:6b:6c:00:00:03",
    "02:6b:6c:00:00:04",
)
_GW4_NODE, _GW4_CLIENT, _GW4_SINK = "169.254.77.1", "169.254.77.2", "169.254.77.3"
_OUT_LINK4 = "169.254.77.4"
_GW6_NODE, _GW6_CLIENT, _GW6_SINK = "fe80::6b:1", "fe80::6b:2", "fe80::6b:3"

_DEFAULT_SRC4 = "198.18.0.2"
_DEFAULT_SRC6 = "2001:db8:5::2"
_DEFAULT_SPORT_BASE = 20000

_CT_TABLE = """\
table inet kernellab_ct {}
flush table inet kernellab_ct
table inet kernellab_ct {
    chain pre { type filter hook prerouting priority -300; ct state new counter; }
    chain out { type filter hook output priority -300; ct state new counter; }
}
"""

_ICMP4_UNREACH = {
    0: "icmp-net-unreachable",
    1: "icmp-host-unreachable",
    2: "icmp-proto-unreachable",
    3: "icmp-port-unreachable",
    9: "icmp-net-prohibited",
    10: "icmp-host-prohibited",
    13: "icmp-admin-prohibited",
}
_ICMP6_UNREACH = {
    0: "icmp6-no-route",
    1: "icmp6-adm-prohibited",
    2: "icmp6-beyond-scope",
    3: "icmp6-addr-unreachable",
    4: "icmp6-port-unreachable",
    5: "icmp6-policy-fail",
    6: "icmp6-reject-route",
}
_L4_NAMES = {"tcp", "udp", "icmp", "icmpv6", "sctp", "udplite", "dccp", "gre", "unknown"}
_PROTO_NUM = {"tcp": 6, "udp": 17, "icmp": 1}


# --------------------------------------------------------------------------------------------------
# public API


@dataclass
class KernelResult:
    """What the kernel did with ``samples`` packets of one probe."""

    samples: int
    verdicts: collections.Counter[str] = field(default_factory=collections.Counter)
    destinations: collections.Counter[str] = field(default_factory=collections.Counter)
    dnat: int = 0
    masquerade: int = 0
    snat_to: collections.Counter[str] = field(default_factory=collections.Counter)
    delivery: collections.Counter[str] = field(default_factory=collections.Counter)
    reject_kinds: collections.Counter[str] = field(default_factory=collections.Counter)
    # extensions
    masquerade_destinations: collections.Counter[str] = field(default_factory=collections.Counter)
    """destinations of the masqueraded (source-rewritten) samples"""
    send_errors: collections.Counter[str] = field(default_factory=collections.Counter)
    """errno names of samples whose send call itself failed (e.g. EPERM from a DROP in OUTPUT)"""
    elapsed: float = 0.0
    """seconds spent in the helper process"""
    notes: list[str] = field(default_factory=list)
    """anything that makes the result less certain (e.g. conntrack events were unavailable)"""

    @property
    def accepted(self) -> int:
        return self.verdicts["accept"]

    def fractions(self) -> dict[str, float]:
        """Destination distribution over the accepted samples."""
        total = sum(self.destinations.values())
        return {k: v / total for k, v in self.destinations.items()} if total else {}


@functools.cache
def kernel_available() -> tuple[bool, str]:
    """(True, "") when network namespaces, iptables-restore and conntrack can be used here."""
    if not sys.platform.startswith("linux"):
        return False, "not Linux"
    if os.geteuid() != 0:
        return False, "needs root (network namespaces, iptables-restore, conntrack)"
    for tool in ("ip", "iptables-restore", "conntrack", "nft"):
        if shutil.which(tool) is None:
            return False, f"{tool} not found on PATH"
    name = f"{NS_PREFIX}-{os.getpid()}-check"
    try:
        res = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True, timeout=20)
        if res.returncode != 0:
            return False, f"cannot create a network namespace: {res.stderr.strip()}"
        res = subprocess.run(
            ["ip", "netns", "exec", name, "iptables-restore", "-w", "5"],
            input="*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n",
            capture_output=True,
            text=True,
            timeout=20,
        )
        if res.returncode != 0:
            return False, f"iptables-restore does not work in a namespace: {res.stderr.strip()}"
    except (OSError, subprocess.SubprocessError) as exc:
        return False, f"cannot use network namespaces: {exc}"
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
    return True, ""


def chi2_sf(x: float, dof: int) -> float:
    """Survival function (p-value) of the chi-square distribution, exact for integer ``dof``."""
    if dof < 1:
        raise ValueError("dof must be >= 1")
    if x <= 0:
        return 1.0
    half = x / 2.0
    if dof % 2 == 0:  # Q(m, h) = e^-h * sum_{i<m} h^i / i!
        term, total = 1.0, 1.0
        for i in range(1, dof // 2):
            term *= half / i
            total += term
        return min(1.0, total * math.exp(-half))
    # Q(1/2, h) = erfc(sqrt(h));  Q(s+1, h) = Q(s, h) + h^s e^-h / Gamma(s+1)
    total = math.erfc(math.sqrt(half))
    term = math.sqrt(half) * math.exp(-half) / math.gamma(1.5)
    for j in range((dof - 1) // 2):
        total += term
        term *= half / (1.5 + j)
    return min(1.0, total)


class KernelLab:
    """Three network namespaces (client, node, sink); rules go into the node namespace.

    Use as a context manager; the namespaces are deleted on exit, also on exceptions.
    """

    WITNESS4 = "192.0.2.1"
    WITNESS6 = "2001:db8:ffff::1"

    def __init__(self, node_ips: Sequence[str], *, route_localnet: bool = True, ipv6: bool = False) -> None:
        if isinstance(node_ips, str):
            node_ips = [node_ips]
        self.node_ips = [str(ipaddress.ip_address(ip)) for ip in node_ips]
        if any(":" in ip for ip in self.node_ips) and not ipv6:
            raise ValueError("IPv6 node IPs need KernelLab(..., ipv6=True)")
        self.route_localnet = route_localnet
        self.ipv6 = ipv6
        self.name = f"{NS_PREFIX}-{os.getpid()}-{next(_COUNTER)}"
        self.node_ns = f"{self.name}-node"
        self.client_ns = f"{self.name}-cli"
        self.sink_ns = f"{self.name}-sink"
        self._created: list[str] = []
        self._keeper: subprocess.Popen[bytes] | None = None
        self._client_src: str | None = None
        self._witness = False
        self._local_nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        self._open = False
        self._lockfile = os.path.join(tempfile.gettempdir(), f"{self.name}.xtables.lock")

    # -- lifecycle ---------------------------------------------------------------------------------

    def __enter__(self) -> KernelLab:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        if self._open:
            return
        _cleanup_stale_namespaces()
        self._open = True
        _OPEN_LABS.add(self)
        try:
            self._setup()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Delete the namespaces (idempotent)."""
        if not self._open:
            return
        self._open = False
        _OPEN_LABS.discard(self)
        if self._keeper is not None:
            with contextlib.suppress(OSError):
                self._keeper.kill()
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                self._keeper.wait(timeout=10)
            self._keeper = None
        for ns in reversed(self._created):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        self._created.clear()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._lockfile)

    # -- setup -------------------------------------------------------------------------------------

    def _setup(self) -> None:
        for ns in (self.node_ns, self.client_ns, self.sink_ns):
            _run(["ip", "netns", "add", ns])
            self._created.append(ns)
        v6 = "0" if self.ipv6 else "1"
        common = ["net.ipv6.conf.all.disable_ipv6=" + v6, "net.ipv6.conf.default.disable_ipv6=" + v6]
        if self.ipv6:
            common += [
                "net.ipv6.conf.default.accept_dad=0",
                "net.ipv6.conf.all.accept_dad=0",
                "net.ipv6.conf.default.accept_ra=0",
                "net.ipv6.conf.all.accept_ra=0",
                "net.ipv6.conf.default.router_solicitations=0",
            ]
        self._sysctl(
            self.client_ns,
            [
                *common,
                "net.ipv4.ip_forward=0",
                "net.ipv4.conf.all.rp_filter=0",
                "net.ipv4.conf.default.rp_filter=0",
            ],
        )
        self._sysctl(
            self.sink_ns,
            [
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
                "net.ipv4.ip_forward=0",
            ],
        )
        self._sysctl(self.node_ns, common)
        self._ip(
            self.node_ns,
            [
                f"link add in address {_MAC_IN} type veth peer name c address {_MAC_C} netns {self.client_ns}",
                f"link add out address {_MAC_OUT} type veth peer name s address {_MAC_S} netns {self.sink_ns}",
                "link set lo up",
                "link set in up",
                "link set out up",
                f"neigh replace {_GW4_CLIENT} lladdr {_MAC_C} dev in nud permanent",
                f"neigh replace {_GW4_SINK} lladdr {_MAC_S} dev out nud permanent",
                # a link-scope address keeps IPv4 (and its routes) up on ``out`` when the witness goes;
                # MASQUERADE skips it (it wants a universe-scope address) and picks the first node IP
                f"addr add {_OUT_LINK4}/32 dev out scope link",
                f"route replace default via {_GW4_SINK} dev out onlink",
                *(f"addr add {ip}/{32 if ':' not in ip else '128 nodad'} dev in" for ip in self.node_ips),
            ],
        )
        self._ip(
            self.client_ns,
            [
                "link set lo up",
                "link set c up",
                # keeps IPv4 (and the default route) up on ``c`` while probe sources come and go
                f"addr add {_GW4_CLIENT}/32 dev c scope link",
                f"neigh replace {_GW4_NODE} lladdr {_MAC_IN} dev c nud permanent",
                f"route replace default via {_GW4_NODE} dev c onlink",
            ],
        )
        self._ip(self.sink_ns, ["link set lo up", "link set s up"])
        if self.ipv6:
            self._ip(
                self.node_ns,
                [
                    f"neigh replace {_GW6_CLIENT} lladdr {_MAC_C} dev in nud permanent",
                    f"neigh replace {_GW6_SINK} lladdr {_MAC_S} dev out nud permanent",
                    f"route replace ::/0 via {_GW6_SINK} dev out",
                ],
            )
            self._ip(
                self.client_ns,
                [
                    f"neigh replace {_GW6_NODE} lladdr {_MAC_IN} dev c nud permanent",
                    f"route replace ::/0 via {_GW6_NODE} dev c",
                ],
            )
        rl = "1" if self.route_localnet else "0"
        node_sysctls = ["net.ipv4.ip_forward=1", "net.ipv4.icmp_ratemask=0", "net.ipv4.icmp_ratelimit=0"]
        for dev in ("all", "default", "lo", "in", "out"):
            node_sysctls += [
                f"net.ipv4.conf.{dev}.rp_filter=0",
                f"net.ipv4.conf.{dev}.route_localnet={rl}",
                f"net.ipv4.conf.{dev}.send_redirects=0",
            ]
        if self.ipv6:
            node_sysctls += ["net.ipv6.conf.all.forwarding=1", "net.ipv6.icmp.ratelimit=0"]
        self._sysctl(self.node_ns, node_sysctls)
        if self.ipv6:
            # not every kernel has it; rate limiting is already off through icmp.ratelimit=0
            self._sysctl(self.node_ns, ["net.ipv6.icmp.ratemask=255"], check=False)
        _run(["ip", "netns", "exec", self.node_ns, "nft", "-f", "-"], input=_CT_TABLE)
        # conntrack is loaded now; make sure it reports new entries (probes listen for them)
        self._sysctl(self.node_ns, ["net.netfilter.nf_conntrack_events=1"], check=False)
        self._keeper = subprocess.Popen(
            ["ip", "netns", "exec", self.node_ns, "sleep", "infinity"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._wait_keeper()
        self._refresh_local_nets()

    def _wait_keeper(self) -> None:
        assert self._keeper is not None
        want = os.stat(f"/run/netns/{self.node_ns}").st_ino
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                if os.stat(f"/proc/{self._keeper.pid}/ns/net").st_ino == want:
                    return
            if self._keeper.poll() is not None:
                break
            time.sleep(0.005)
        raise RuntimeError("could not start a process in the node namespace")

    def _ip(self, ns: str, commands: Iterable[str]) -> None:
        _run(["ip", "-n", ns, "-batch", "-"], input="\n".join(commands) + "\n")

    def _sysctl(self, ns: str, settings: list[str], check: bool = True) -> None:
        script = "".join(f"{_sysctl_path(k)}\t{v}\n" for k, v in (s.split("=", 1) for s in settings))
        code = (
            "import sys\n"
            "bad = []\n"
            "for line in sys.stdin.read().splitlines():\n"
            "    path, value = line.split('\\t')\n"
            "    try:\n"
            "        with open(path, 'w') as f: f.write(value)\n"
            "    except OSError as e: bad.append(f'{path}: {e}')\n"
            "if bad: sys.exit('\\n'.join(bad))\n"
        )
        _run(["ip", "netns", "exec", ns, sys.executable, "-c", code], input=script, check=check)

    def _refresh_local_nets(self) -> None:
        out = _run(["ip", "-n", self.node_ns, "-j", "addr", "show"]).stdout
        nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = [
            ipaddress.ip_network("127.0.0.0/8"),
            ipaddress.ip_network("::1/128"),
        ]
        for link in json.loads(out or "[]"):
            for addr in link.get("addr_info", []):
                with contextlib.suppress(ValueError, KeyError):
                    nets.append(ipaddress.ip_network(addr["local"]))
        self._local_nets = nets

    def _is_local(self, ip: str) -> bool:
        addr = ipaddress.ip_address(ip)
        return any(addr in net for net in self._local_nets)

    # -- rules -------------------------------------------------------------------------------------

    def load(self, dump: str, *, legacy: bool = False, ip6: bool = False) -> None:
        """``iptables-restore`` (``legacy``: ``iptables-legacy-restore``; ``ip6``: the ip6tables one)
        ``dump`` into the node namespace.  Raises RuntimeError with the tool's stderr on failure."""
        self._require_open()
        tool = ("ip6tables" if ip6 else "iptables") + ("-legacy" if legacy else "") + "-restore"
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} not found on PATH")
        # The legacy tools serialise on a host-wide lock file; the node namespace is ours alone, so
        # a private lock keeps a long iptables run elsewhere on the host from blocking the lab.
        env = {**os.environ, "XTABLES_LOCKFILE": self._lockfile}
        res = subprocess.run(
            ["ip", "netns", "exec", self.node_ns, tool, "-w", "30"],
            input=dump,
            capture_output=True,
            text=True,
            check=False,
            env=env,
        )
        if res.returncode != 0:
            raise RuntimeError(f"{tool} failed (exit {res.returncode}): {res.stderr.strip()}")

    def load_nft(self, ruleset: str) -> None:
        """``nft -f`` ``ruleset`` into the node namespace (extension; raises RuntimeError on failure)."""
        self._require_open()
        res = subprocess.run(
            ["ip", "netns", "exec", self.node_ns, "nft", "-f", "-"],
            input=ruleset,
            capture_output=True,
            text=True,
            check=False,
        )
        if res.returncode != 0:
            raise RuntimeError(f"nft -f failed (exit {res.returncode}): {res.stderr.strip()}")
        _run(["ip", "netns", "exec", self.node_ns, "nft", "-f", "-"], input=_CT_TABLE)

    def exec_node(self, *argv: str) -> str:
        """Run a command in the node namespace and return its stdout (extension, for debugging)."""
        self._require_open()
        return _run(["ip", "netns", "exec", self.node_ns, *argv]).stdout

    def clear_recent(self) -> None:
        """Empty every xt_recent list of the node namespace."""
        self._require_open()
        assert self._keeper is not None
        _clear_recent(f"/proc/{self._keeper.pid}/net/xt_recent")

    def flush_conntrack(self) -> None:
        self._require_open()
        families = ["ipv4", "ipv6"] if self.ipv6 else ["ipv4"]
        for fam in families:
            subprocess.run(
                ["ip", "netns", "exec", self.node_ns, "conntrack", "-F", "-f", fam],
                capture_output=True,
                check=False,
            )

    # -- probing -----------------------------------------------------------------------------------

    def probe(
        self,
        *,
        dst: str,
        proto: str,
        dport: int | None = None,
        src: str | None = None,
        from_node: bool = False,
        samples: int = 1,
        reset_recent: bool = False,
        sport_base: int | None = None,
        sequential: bool = False,
        timeout: float = 0.3,
    ) -> KernelResult:
        """Send ``samples`` packets and report what the node did with them.

        ``proto``: tcp (a SYN from a real connect), udp (one datagram) or icmp (an echo request).
        ``from_node``: send from the node namespace itself (OUTPUT path); ``src`` then defaults to
        the first node IP of the destination's family.  ``reset_recent``: empty the xt_recent lists
        before every sample (implies ``sequential``).  ``sequential``: wait for each sample's verdict
        before sending the next one (default: a burst).  ``timeout``: seconds without an answer
        after which a sample counts as dropped.  Conntrack is flushed before the probe.
        """
        self._require_open()
        assert self._keeper is not None
        proto = proto.lower()
        if proto in ("icmpv6", "icmp6", "ipv6-icmp"):
            proto = "icmp"
        if proto not in _PROTO_NUM:
            raise ValueError(f"unsupported protocol {proto!r} (tcp, udp, icmp)")
        if proto != "icmp" and (dport is None or not 0 < dport < 65536):
            raise ValueError(f"{proto} needs a dport in 1..65535")
        if samples < 1:
            raise ValueError("samples must be >= 1")
        dst_addr = ipaddress.ip_address(dst)
        v6 = dst_addr.version == 6
        if v6 and not self.ipv6:
            raise ValueError("IPv6 probe in a lab made without ipv6=True")
        dst = str(dst_addr)
        base = _DEFAULT_SPORT_BASE if sport_base is None else sport_base
        if base < 1 or base + samples - 1 > 65535:
            raise ValueError(f"sport_base {base} + {samples} samples exceeds the port range")

        if from_node:
            if src is None and dst_addr.is_loopback:
                src = dst  # what an unbound socket on the node would use
            elif src is None:
                fam_ips = [ip for ip in self.node_ips if (":" in ip) == v6]
                if not fam_ips:
                    raise ValueError("from_node needs a node IP of the destination's family, or src")
                src = fam_ips[0]
            src = str(ipaddress.ip_address(src))
            if (":" in src) != v6:
                raise ValueError("src and dst are of different address families")
            self._set_witness(True)
            if not self._is_local(src):
                raise ValueError(f"from_node source {src} is not an address of the node")
            self._use_client_src(None)  # no route into the client: everything not local goes out
            ns = self.node_ns
        else:
            src = str(ipaddress.ip_address(src or (_DEFAULT_SRC6 if v6 else _DEFAULT_SRC4)))
            if (":" in src) != v6:
                raise ValueError("src and dst are of different address families")
            if dst_addr.is_loopback or dst == src:
                raise ValueError(
                    f"a packet from {src} to {dst} never leaves the client (its own stack answers); "
                    "use from_node=True for loopback destinations"
                )
            self._set_witness(False)
            if self._is_local(src):
                raise ValueError(f"client source {src} is an address of the node; use from_node=True")
            self._use_client_src(src)
            ns = self.client_ns

        self.flush_conntrack()
        cfg = {
            "v6": v6,
            "proto": proto,
            "src": src,
            "dst": dst,
            "dport": dport,
            "samples": samples,
            "base": base,
            "sequential": bool(sequential or reset_recent),
            "reset_recent": reset_recent,
            "timeout": timeout,
            "node_proc": f"/proc/{self._keeper.pid}/net",
            "node_ns": self.node_ns,
        }
        res = subprocess.run(
            ["ip", "netns", "exec", ns, sys.executable, os.path.abspath(__file__), "--helper"],
            input=json.dumps(cfg),
            capture_output=True,
            text=True,
            check=False,
        )
        if res.returncode != 0:
            raise RuntimeError(f"probe helper failed (exit {res.returncode}): {res.stderr.strip()}")
        result = self._summarise(cfg, json.loads(res.stdout))
        if result.send_errors and not from_node:
            # the client namespace only routes to the node; a failing send there is a lab fault
            raise RuntimeError(f"sending from the client namespace failed: {dict(result.send_errors)}")
        return result

    def _summarise(self, cfg: dict[str, Any], out: dict[str, Any]) -> KernelResult:
        result = KernelResult(samples=cfg["samples"], elapsed=out["elapsed"], notes=out.get("notes", []))
        v6, proto, src, dst, dport = cfg["v6"], cfg["proto"], cfg["src"], cfg["dst"], cfg["dport"]
        for sample in out["results"]:
            if "ct" in sample:
                rsrc, rsport, rdst = sample["ct"]
                result.verdicts["accept"] += 1
                if proto == "icmp":
                    key = rsrc
                    natted = rsrc != dst
                else:
                    key = f"[{rsrc}]:{rsport}" if v6 else f"{rsrc}:{rsport}"
                    natted = rsrc != dst or rsport != dport
                result.destinations[key] += 1
                result.dnat += natted
                if rdst != src:
                    result.masquerade += 1
                    result.snat_to[rdst] += 1
                    result.masquerade_destinations[key] += 1
                result.delivery["local" if self._is_local(rsrc) else "forward"] += 1
            elif "reject" in sample:
                result.verdicts["reject"] += 1
                result.reject_kinds[sample["reject"]] += 1
            else:
                result.verdicts["drop"] += 1
            if "send_error" in sample:
                result.send_errors[sample["send_error"]] += 1
        return result

    def _set_witness(self, on: bool) -> None:
        if on == self._witness:
            return
        verb = "add" if on else "del"
        cmds = [f"addr {verb} {self.WITNESS4}/32 dev out"]
        if self.ipv6:
            cmds.append(f"addr {verb} {self.WITNESS6}/128 dev out" + (" nodad" if on else ""))
        self._ip(self.node_ns, cmds)
        self._witness = on
        self._refresh_local_nets()

    def _use_client_src(self, src: str | None) -> None:
        """Give the client namespace exactly this one source address (none: no address), with the
        node's route back, so that packets to any other address are routed to the sink."""
        old = self._client_src
        if old == src:
            return
        if old is not None:
            plen = 128 if ":" in old else 32
            self._ip(self.client_ns, [f"addr del {old}/{plen} dev c"])
            self._ip(self.node_ns, [f"route del {old}/{plen}"])
            self._client_src = None
        if src is None:
            return
        if ":" in src:
            self._ip(self.client_ns, [f"addr add {src}/128 dev c nodad"])
            self._ip(self.node_ns, [f"route replace {src}/128 via {_GW6_CLIENT} dev in"])
        else:
            self._ip(self.client_ns, [f"addr add {src}/32 dev c"])
            self._ip(self.node_ns, [f"route replace {src}/32 via {_GW4_CLIENT} dev in onlink"])
        self._client_src = src

    def _require_open(self) -> None:
        if not self._open:
            raise RuntimeError("KernelLab is not open (use it as a context manager)")


# --------------------------------------------------------------------------------------------------
# host-side helpers


def _run(
    argv: list[str], *, input: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(argv, input=input, capture_output=True, text=True, check=False)
    if check and res.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed (exit {res.returncode}): {res.stderr.strip()}")
    return res


def _sysctl_path(key: str) -> str:
    return "/proc/sys/" + key.replace(".", "/")


def _cleanup_stale_namespaces() -> None:
    """Delete namespaces left by kernellab processes that no longer exist (e.g. after SIGKILL)."""
    res = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    for line in res.stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        parts = name.split("-")
        if len(parts) < 3 or parts[0] != NS_PREFIX or not parts[1].isdigit():
            continue
        pid = int(parts[1])
        if pid == os.getpid() or os.path.exists(f"/proc/{pid}"):
            continue
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


@atexit.register
def _close_all_labs() -> None:
    for lab in list(_OPEN_LABS):
        lab.close()


def _clear_recent(directory: str) -> None:
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return
    for name in names:
        with open(os.path.join(directory, name), "w") as f:
            f.write("/\n")


# --------------------------------------------------------------------------------------------------
# the helper process (runs inside the client or node namespace; standard library only)


class _Prober:
    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.v6: bool = cfg["v6"]
        self.fam = socket.AF_INET6 if self.v6 else socket.AF_INET
        self.proto: str = cfg["proto"]
        self.src: str = cfg["src"]
        self.dst: str = cfg["dst"]
        self.dport: int | None = cfg["dport"]
        self.n: int = cfg["samples"]
        self.base: int = cfg["base"]
        self.src_bytes = socket.inet_pton(self.fam, self.src)
        self.ct_path = os.path.join(cfg["node_proc"], "nf_conntrack")
        self.recent_dir = os.path.join(cfg["node_proc"], "xt_recent")
        self.use_proc = os.path.exists(self.ct_path)
        self.ct: dict[int, tuple[str, int | None, str]] = {}
        self.reject: dict[int, str] = {}
        self.send_errors: dict[int, str] = {}
        self.ct_proto = {"tcp": "tcp", "udp": "udp", "icmp": "icmpv6" if self.v6 else "icmp"}[self.proto]
        self.l4num = {"tcp": 6, "udp": 17, "icmp": 58 if self.v6 else 1}[self.proto]
        self.sniffers: list[socket.socket] = []
        self.icmp_sock: socket.socket | None = None
        self.events: socket.socket | None = None
        self.events_lost = False

    # sockets

    def open_events(self) -> None:
        """Subscribe to the node namespace's conntrack NEW events.

        They carry both tuples at confirmation time.  Reading the table alone is not enough: when
        the only answer to a SYN is a RST (the node's own stack, or a hairpinned client), the
        kernel deletes the entry at once ("If only reply is a RST, we can consider ourselves not
        to have an established connection").
        """
        try:
            sock = _socket_in_netns(
                self.cfg["node_ns"], socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_NETFILTER
            )
        except OSError:
            return
        try:
            sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, 64 << 20)
        except OSError:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 20)
        sock.bind((0, 1 << (_NFNLGRP_CONNTRACK_NEW - 1)))
        sock.setblocking(False)
        self.events = sock

    def open_sniffers(self) -> None:
        icmp_proto = socket.IPPROTO_ICMPV6 if self.v6 else socket.IPPROTO_ICMP
        self.icmp_sock = socket.socket(self.fam, socket.SOCK_RAW, icmp_proto)
        self.sniffers.append(self.icmp_sock)
        if self.proto == "tcp":
            self.sniffers.append(socket.socket(self.fam, socket.SOCK_RAW, socket.IPPROTO_TCP))
        for s in self.sniffers:
            s.setblocking(False)
            with contextlib.suppress(OSError):
                s.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, 32 << 20)
        if self.proto == "icmp":
            self.icmp_sock.bind((self.src, 0))

    def addr(self, ip: str, port: int) -> tuple[Any, ...]:
        return (ip, port, 0, 0) if self.v6 else (ip, port)

    def send(self, i: int) -> None:
        key = self.base + i
        try:
            if self.proto == "icmp":
                assert self.icmp_sock is not None
                payload = b"kernellab"
                if self.v6:
                    pkt = struct.pack("!BBHHH", 128, 0, 0, key, 1) + payload
                else:
                    pkt = struct.pack("!BBHHH", 8, 0, 0, key, 1) + payload
                    pkt = pkt[:2] + struct.pack("!H", _checksum(pkt)) + pkt[4:]
                self.icmp_sock.sendto(pkt, self.addr(self.dst, 0))
                return
            kind = socket.SOCK_STREAM if self.proto == "tcp" else socket.SOCK_DGRAM
            with socket.socket(self.fam, kind) as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(self.addr(self.src, key))
                assert self.dport is not None
                if self.proto == "tcp":
                    s.setblocking(False)
                    rc = s.connect_ex(self.addr(self.dst, self.dport))
                    if rc not in (0, errno.EINPROGRESS):
                        self.send_errors[i] = errno.errorcode.get(rc, str(rc))
                else:
                    s.sendto(b"kernellab", self.addr(self.dst, self.dport))
        except OSError as exc:
            self.send_errors[i] = errno.errorcode.get(exc.errno or 0, str(exc))

    # answers

    def drain(self) -> None:
        if self.events is not None:
            while True:
                try:
                    data = self.events.recv(1 << 16)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as exc:
                    if exc.errno != errno.ENOBUFS:
                        raise
                    self.events_lost = True  # overflow: read the table as well from now on
                    continue
                for l4num, orig, reply in _parse_ct_events(data):
                    self.note_ct(l4num, orig, reply)
        for s in self.sniffers:
            while True:
                try:
                    data = s.recv(65535)
                except (BlockingIOError, InterruptedError):
                    break
                self.classify(s, data)

    def classify(self, s: socket.socket, data: bytes) -> None:
        try:
            if s is self.icmp_sock:
                self._classify_icmp(data)
            else:
                self._classify_tcp(data)
        except (IndexError, struct.error):
            pass

    def _record(self, key: int, kind: str) -> None:
        i = key - self.base
        if 0 <= i < self.n and i not in self.reject:
            self.reject[i] = kind

    def _classify_icmp(self, data: bytes) -> None:
        if self.v6:
            icmp = data
            if icmp[0] != 1:
                return
            kind = _ICMP6_UNREACH.get(icmp[1], f"icmp6-unreachable-code{icmp[1]}")
            inner = icmp[8:]
            inner_proto, inner_src, l4 = inner[6], inner[8:24], inner[40:]
            want = {"tcp": 6, "udp": 17, "icmp": 58}[self.proto]
        else:
            icmp = data[(data[0] & 0x0F) * 4 :]
            if icmp[0] != 3:
                return
            kind = _ICMP4_UNREACH.get(icmp[1], f"icmp-unreachable-code{icmp[1]}")
            inner = icmp[8:]
            inner_proto, inner_src, l4 = inner[9], inner[12:16], inner[(inner[0] & 0x0F) * 4 :]
            want = _PROTO_NUM[self.proto]
        if inner_proto != want or inner_src != self.src_bytes:
            return
        (key,) = struct.unpack("!H", l4[4:6] if self.proto == "icmp" else l4[0:2])
        self._record(key, kind)

    def _classify_tcp(self, data: bytes) -> None:
        if self.v6:
            tcp = data
        else:
            if data[16:20] != self.src_bytes:
                return
            tcp = data[(data[0] & 0x0F) * 4 :]
        sport, dport = struct.unpack("!HH", tcp[0:4])
        if tcp[13] & 0x04 and sport == self.dport:
            self._record(dport, "tcp-reset")

    def read_ct(self) -> None:
        if self.use_proc:
            try:
                with open(self.ct_path) as f:
                    text = f.read()
            except OSError:
                self.use_proc = False
                return self.read_ct()
        else:
            text = subprocess.run(
                [
                    "ip",
                    "netns",
                    "exec",
                    self.cfg["node_ns"],
                    "conntrack",
                    "-L",
                    "-f",
                    "ipv6" if self.v6 else "ipv4",
                ],
                capture_output=True,
                text=True,
                check=False,
            ).stdout
        l4nums = {"tcp": 6, "udp": 17, "icmp": 1, "icmpv6": 58}
        for line in text.splitlines():
            entry = _parse_ct_line(line)
            if entry is None or entry[0] != self.ct_proto:
                continue
            l4, orig, reply = entry
            try:
                okey = int(orig["id"] if self.proto == "icmp" else orig["sport"])
                odport = 0 if self.proto == "icmp" else int(orig["dport"])
                rsport = 0 if self.proto == "icmp" else int(reply["sport"])
                o = (orig["src"], orig["dst"], okey, odport)
                r = (reply["src"], reply["dst"], rsport, 0)
            except (KeyError, ValueError):
                continue
            self.note_ct(l4nums[l4], o, r)
        return None

    def note_ct(self, l4num: int, orig: _Tuple, reply: _Tuple) -> None:
        """Record a conntrack entry (orig/reply: src, dst, sport or ICMP id, dport) if it is ours."""
        if l4num != self.l4num:
            return
        osrc, odst, okey, odport = orig
        i = okey - self.base
        if not 0 <= i < self.n or i in self.ct:
            return
        rsrc, rdst, rsport, _ = reply
        if self.v6:
            osrc, odst, rsrc, rdst = (str(ipaddress.ip_address(a)) for a in (osrc, odst, rsrc, rdst))
        if osrc != self.src or odst != self.dst:
            return
        if self.proto == "icmp":
            self.ct[i] = (rsrc, None, rdst)
        elif odport == self.dport:
            self.ct[i] = (rsrc, rsport, rdst)

    def wait(self, pending: set[int], deadline: float) -> None:
        poll = 0.002 if self.use_proc or self.events is not None else 0.02
        watch = [*self.sniffers, *([self.events] if self.events is not None else [])]
        while True:
            self.drain()
            pending -= self.ct.keys() | self.reject.keys()
            if pending and (self.events is None or self.events_lost):
                self.read_ct()
                pending -= self.ct.keys()
            if not pending or time.monotonic() >= deadline:
                return
            select.select(watch, [], [], poll)

    def run(self) -> dict[str, Any]:
        start = time.monotonic()
        self.open_events()
        self.open_sniffers()
        timeout = float(self.cfg["timeout"])
        if self.cfg["sequential"]:
            for i in range(self.n):
                if self.cfg["reset_recent"]:
                    _clear_recent(self.recent_dir)
                self.send(i)
                self.wait({i}, time.monotonic() + timeout)
        else:
            for i in range(self.n):
                self.send(i)
                if i % 64 == 63:
                    self.drain()
            self.wait(set(range(self.n)), time.monotonic() + timeout)
        self.drain()
        self.read_ct()
        results: list[dict[str, Any]] = []
        for i in range(self.n):
            item: dict[str, Any] = {}
            if i in self.ct:
                item["ct"] = self.ct[i]
            elif i in self.reject:
                item["reject"] = self.reject[i]
            if i in self.send_errors:
                item["send_error"] = self.send_errors[i]
            results.append(item)
        notes = []
        if self.events is None:
            notes.append(
                "conntrack events unavailable: a TCP sample answered only by a RST "
                "(local delivery without listener, hairpin) loses its entry and shows as reject"
            )
        elif self.events_lost:
            notes.append("conntrack events overflowed; the table was read instead")
        return {"results": results, "elapsed": round(time.monotonic() - start, 4), "notes": notes}


_Tuple = tuple[str, str, int, int]
_CLONE_NEWNET = 0x40000000
_NETLINK_NETFILTER = 12
_NFNLGRP_CONNTRACK_NEW = 1
_SO_RCVBUFFORCE = 33


def _socket_in_netns(ns_name: str, family: int, kind: int, proto: int) -> socket.socket:
    """Create a socket in the named network namespace (a socket keeps the namespace it was made in)."""
    libc = ctypes.CDLL(None, use_errno=True)
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(f"/run/netns/{ns_name}", os.O_RDONLY)
        try:
            if libc.setns(target, _CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"setns({ns_name}): {os.strerror(err)}")
            try:
                return socket.socket(family, kind, proto)
            finally:
                if libc.setns(own, _CLONE_NEWNET) != 0:  # cannot go on in the wrong namespace
                    os._exit(70)
        finally:
            os.close(target)
    finally:
        os.close(own)


def _nlattrs(buf: bytes, start: int = 0, end: int | None = None) -> dict[int, bytes]:
    attrs: dict[int, bytes] = {}
    end = len(buf) if end is None else end
    while start + 4 <= end:
        alen, atype = struct.unpack_from("=HH", buf, start)
        if alen < 4:
            break
        attrs[atype & 0x3FFF] = buf[start + 4 : start + alen]
        start += (alen + 3) & ~3
    return attrs


def _ct_tuple(raw: bytes) -> tuple[int, _Tuple]:
    """CTA_TUPLE_* -> (l4 protocol number, (src, dst, sport or ICMP id, dport))."""
    attrs = _nlattrs(raw)
    ip, proto = _nlattrs(attrs[1]), _nlattrs(attrs[2])
    if 1 in ip:
        src, dst = socket.inet_ntop(socket.AF_INET, ip[1]), socket.inet_ntop(socket.AF_INET, ip[2])
    else:
        src, dst = socket.inet_ntop(socket.AF_INET6, ip[3]), socket.inet_ntop(socket.AF_INET6, ip[4])
    l4num = proto[1][0]

    def u16(key: int) -> int:
        return struct.unpack("!H", proto[key])[0] if key in proto else 0

    if l4num == 1:
        return l4num, (src, dst, u16(4), 0)
    if l4num == 58:
        return l4num, (src, dst, u16(7), 0)
    return l4num, (src, dst, u16(2), u16(3))


def _parse_ct_events(data: bytes) -> list[tuple[int, _Tuple, _Tuple]]:
    """ctnetlink messages -> [(l4 protocol number, original tuple, reply tuple)] for new entries."""
    out: list[tuple[int, _Tuple, _Tuple]] = []
    off = 0
    while off + 16 <= len(data):
        length, mtype = struct.unpack_from("=IH", data, off)
        if length < 16:
            break
        if mtype == 0x100:  # NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_NEW
            attrs = _nlattrs(data, off + 20, off + length)  # after nlmsghdr (16) and nfgenmsg (4)
            with contextlib.suppress(KeyError, IndexError, ValueError, struct.error):
                l4num, orig = _ct_tuple(attrs[1])
                _, reply = _ct_tuple(attrs[2])
                out.append((l4num, orig, reply))
        off += (length + 3) & ~3
    return out


def _parse_ct_line(line: str) -> tuple[str, dict[str, str], dict[str, str]] | None:
    """Parse a /proc/net/nf_conntrack or ``conntrack -L`` line into (l4 name, original, reply)."""
    tokens = line.split()
    l4 = next((t for t in tokens[:4] if t in _L4_NAMES), None)
    if l4 is None:
        return None
    orig: dict[str, str] = {}
    reply: dict[str, str] = {}
    for tok in tokens:
        key, sep, value = tok.partition("=")
        if not sep:
            continue
        if key not in orig and not reply:
            orig[key] = value
        elif key not in reply:
            reply[key] = value
    return l4, orig, reply


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _helper_main() -> None:
    cfg = json.loads(sys.stdin.read())
    out = _Prober(cfg).run()
    sys.stdout.write(json.dumps(out))


if __name__ == "__main__" and sys.argv[1:] == ["--helper"]:
    _helper_main()
