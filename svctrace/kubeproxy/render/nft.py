"""What kube-proxy in nftables mode programs on one node, recomputed from Kubernetes objects.

:func:`generate_nft` takes Services, EndpointSlices (or v1 Endpoints) and Nodes as plain dicts (what
``kubectl get -o json`` prints) and a :class:`~svctrace.kubeproxy.config.ProxyConfig`, and returns
:class:`NftRules`:

* :meth:`NftRules.nft_input`: the transaction kube-proxy's full sync feeds ``nft -f`` on a node where its
  table does not exist yet, each command as knftables writes it (numeric base-chain priorities,
  ``add element`` one element a line), in kube-proxy's order (the table first, every chain and set before
  the rules and elements that use it), so a plain ``nft -f`` loads it. Services are processed sorted by
  Service port name (kube-proxy walks a Go map). ``nft_input(full=True)`` adds the commands that change
  nothing on a fresh table: the once-per-restart ``add`` + ``delete`` of every base chain, the ``flush``
  after every chain it ensures, and ``add`` + ``delete`` of ``nodeport-ips`` when NodePorts match every
  address.
* :meth:`NftRules.ruleset_text` / :meth:`NftRules.ruleset_json`: what ``nft list ruleset`` and
  ``nft -j list ruleset`` (nft 1.0.6) print after that input is loaded into an empty network namespace:
  objects in creation order, set elements sorted as nft sorts them, single-element anonymous sets folded,
  anonymous interval sets merged, named priorities, handles from the table's one counter (anonymous sets
  take one too).
* :meth:`NftRules.snapshot_files`: ``proxy-mode``, ``nft``, ``nft.json`` and ``ip-addr.json`` for a
  svctrace snapshot.

The code follows ``pkg/proxy/nftables/proxier.go`` (``setupNFTables``, ``syncProxyRules``,
``writeServiceToEndpointRules``, ``servicePortChainNameBase``, ``servicePortEndpointChainNameBase``,
``hashAndTruncate``) at kubernetes commit 81810de635aa13aa0a32992f6def3aa9d6025ebc, the commit whose
``TestOverallNFTablesRules`` the ``kube-proxy/nftables/overall`` corpus holds. Its layout is that of
PR #132456 ("nftables short-circuit local traffic to external addresses", merged June 2025): first
released in v1.34.0 and cherry-picked to release-1.33 in September 2025. ``kube_version`` selects:

* **1.31 - 1.33**: filter chains before DNAT. ``filter-prerouting``, ``filter-input``, ``filter-forward``
  and ``filter-output`` at ``dstnat - 10`` (-110), ``filter-output-post-dnat`` at ``dstnat + 10`` (-90,
  jumps to ``cluster-ips-check``); ``filter-output`` also jumps to ``firewall-check``. On the output hook
  the no-endpoint check runs before ``nat-output``, on the destination the node's own process used, so
  the node's connection to an externalTrafficPolicy Local external or load-balancer IP without a local
  endpoint is dropped before its short-circuit DNAT (kubernetes issue #131765). Forwarded pod traffic
  reaches the forward hook after DNAT in both layouts.
* **1.34 - 1.35**: ``filter-prerouting-pre-dnat`` and ``filter-output-pre-dnat`` at -110 (firewall only),
  ``filter-input``, ``filter-forward`` and ``filter-output`` at ``filter`` (0), after DNAT, so
  short-circuited node traffic passes; ``cluster-ips-check`` is jumped to from ``filter-output``. The 1.33
  patch releases with the backport are not told apart (``kube_version`` ignores patch levels).

Refused: 1.29 and 1.30 (the alpha layouts: one ``endpoints-check`` chain) and 1.36+ (no endpoint chains:
``dnat ip to numgen ... map``, a ``hairpin-connections`` set, no ``mark-for-masquerade``; PRs #135800 and
#136499). Where exactly 1.31 split ``endpoints-check`` is read from forks of the 1.31 tree, not a release
tag.

What the rules do not depend on, and is left out: the stale-chain and stale-element bookkeeping of
partial syncs (a full sync on a fresh node has none), health-check node ports (served by a socket, no
rule), conntrack cleanup.

Inputs modelled:

* ``--nodeport-addresses``: empty means ``primary`` (the nftables-mode default since 1.29: the node IP of
  the family, ``/32`` or ``/128``); a zero CIDR matches every address (no ``nodeport-ips`` set, NodePorts
  on ``fib daddr type local`` except loopback).
* The local-traffic detector ``--cluster-cidr`` (``ip saddr [!=] CIDR``); without it the ClusterIP
  masquerade rule and the pod short-circuit rule are left out, as kube-proxy does.
* ``--masquerade-all``, ``--masquerade-bit``.
* Service CIDRs (``ServiceCIDR`` objects, the drop rule for unallocated ClusterIPs; none by default, as
  when kube-proxy does not watch them).

Endpoint selection is :mod:`svctrace.kubeproxy.endpoints` (``CategorizeEndpoints`` with topology hints,
terminating fallback); ``trafficDistribution: PreferSameNode`` node hints and the 1.31+ duplicate-endpoint
rule are not modelled there.

Pure standard library.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property, lru_cache
from typing import Any, Final, Literal

from svctrace.dataplane.nftables.ir import (
    AnonSet,
    Binop,
    Concat,
    Const,
    Ct,
    Dynset,
    Expr,
    Fib,
    Mangle,
    Match,
    Meta,
    Nat,
    Numgen,
    Payload,
    Prefix,
    Range,
    Reject,
    SetRef,
    Stmt,
    Verdict,
    VerdictStmt,
    Vmap,
)
from svctrace.dataplane.nftables.ir import Element as NftElement
from svctrace.dataplane.nftables.printer import fmt_stmt, stmt_json
from svctrace.kubeproxy.config import IPAddr, ProxyConfig, nodeport_addresses
from svctrace.kubeproxy.endpoints import (
    EndpointInfo,
    EndpointSelection,
    KubeObject,
    ServicePortInfo,
)
from svctrace.kubeproxy.names import endpoint_chain_name_base, join_host_port, service_chain_name_base
from svctrace.kubeproxy.plan import PortPlan, Shared, collect_ports, node_context, plan_ports
from svctrace.kubeproxy.render.common import ip_addr_json
from svctrace.kubeproxy.versions import has

__all__ = [
    "NftRules",
    "generate_nft",
]

TABLE: Final = "kube-proxy"
NFT_VERSION: Final = ("1.0.6", "Lester Gooch #5")  # what ruleset_json's metainfo says

# pkg/proxy/nftables/proxier.go constants
SERVICES: Final = "services"
SERVICE_IPS: Final = "service-ips"
SERVICE_NODEPORTS: Final = "service-nodeports"
NODEPORT_IPS: Final = "nodeport-ips"
CLUSTER_IPS: Final = "cluster-ips"
SERVICE_ENDPOINTS_CHECK: Final = "service-endpoints-check"
NODEPORT_ENDPOINTS_CHECK: Final = "nodeport-endpoints-check"
NO_ENDPOINT_SERVICES: Final = "no-endpoint-services"
NO_ENDPOINT_NODEPORTS: Final = "no-endpoint-nodeports"
REJECT_CHAIN: Final = "reject-chain"
CLUSTER_IPS_CHECK: Final = "cluster-ips-check"
FIREWALL_IPS: Final = "firewall-ips"
FIREWALL_CHECK: Final = "firewall-check"
MARK_MASQ: Final = "mark-for-masquerade"
MASQUERADING: Final = "masquerading"


_PROTO_NUMBERS: Final = {"tcp": 6, "udp": 17, "sctp": 132}

Layout = Literal["pre-dnat-filter", "post-dnat-filter"]

# (name, type, hook, priority): nftablesBaseChains. The priorities are knftables' numbers.
_BASE_1_31: Final = (
    ("filter-prerouting", "filter", "prerouting", -110),
    ("filter-input", "filter", "input", -110),
    ("filter-forward", "filter", "forward", -110),
    ("filter-output", "filter", "output", -110),
    ("filter-output-post-dnat", "filter", "output", -90),
    ("nat-prerouting", "nat", "prerouting", -100),
    ("nat-output", "nat", "output", -100),
    ("nat-postrouting", "nat", "postrouting", 100),
)
_BASE_1_34: Final = (
    ("filter-prerouting-pre-dnat", "filter", "prerouting", -110),
    ("filter-output-pre-dnat", "filter", "output", -110),
    ("filter-input", "filter", "input", 0),
    ("filter-forward", "filter", "forward", 0),
    ("filter-output", "filter", "output", 0),
    ("nat-prerouting", "nat", "prerouting", -100),
    ("nat-output", "nat", "output", -100),
    ("nat-postrouting", "nat", "postrouting", 100),
)
# (dst, src, extra): nftablesJumpChains.
_JUMPS_1_31: Final = (
    (NODEPORT_ENDPOINTS_CHECK, "filter-input", "ct state new"),
    (SERVICE_ENDPOINTS_CHECK, "filter-input", "ct state new"),
    (SERVICE_ENDPOINTS_CHECK, "filter-forward", "ct state new"),
    (SERVICE_ENDPOINTS_CHECK, "filter-output", "ct state new"),
    (FIREWALL_CHECK, "filter-prerouting", "ct state new"),
    (FIREWALL_CHECK, "filter-output", "ct state new"),
    (SERVICES, "nat-output", ""),
    (SERVICES, "nat-prerouting", ""),
    (MASQUERADING, "nat-postrouting", ""),
    (CLUSTER_IPS_CHECK, "filter-forward", "ct state new"),
    (CLUSTER_IPS_CHECK, "filter-output-post-dnat", "ct state new"),
)
_JUMPS_1_34: Final = (
    (NODEPORT_ENDPOINTS_CHECK, "filter-input", "ct state new"),
    (SERVICE_ENDPOINTS_CHECK, "filter-input", "ct state new"),
    (SERVICE_ENDPOINTS_CHECK, "filter-forward", "ct state new"),
    (SERVICE_ENDPOINTS_CHECK, "filter-output", "ct state new"),
    (FIREWALL_CHECK, "filter-prerouting-pre-dnat", "ct state new"),
    (FIREWALL_CHECK, "filter-output-pre-dnat", "ct state new"),
    (SERVICES, "nat-output", ""),
    (SERVICES, "nat-prerouting", ""),
    (MASQUERADING, "nat-postrouting", ""),
    (CLUSTER_IPS_CHECK, "filter-forward", "ct state new"),
    (CLUSTER_IPS_CHECK, "filter-output", "ct state new"),
)


# --------------------------------------------------------------------------- names


def layout(cfg: ProxyConfig) -> Layout:
    """``pre-dnat-filter`` (1.31-1.33: filter chains at -110) or ``post-dnat-filter`` (1.34+)."""
    return "post-dnat-filter" if has(cfg.kube_version, "nft-post-dnat-filter") else "pre-dnat-filter"


# --------------------------------------------------------------------------- nft values



@dataclass(frozen=True)
class _Val:
    """One component of a set key: an address, a protocol name or a port."""

    type: str  # ipv4_addr / ipv6_addr / inet_proto / inet_service / integer
    value: str | int

    def text(self) -> str:
        return str(self.value)

    def json(self) -> str | int:
        return self.value

    def raw(self) -> bytes:
        """The bytes nft exports for the sort (``concat_expr_msort_value``)."""
        if self.type in ("ipv4_addr", "ipv6_addr"):
            return _ip(str(self.value)).packed
        if self.type == "inet_proto":
            return bytes([_PROTO_NUMBERS[str(self.value)]])
        if self.type == "inet_service":
            return int(self.value).to_bytes(2, "big")
        return int(self.value).to_bytes(4, "little")

    def number(self) -> int:
        if self.type in ("ipv4_addr", "ipv6_addr"):
            return int(_ip(str(self.value)))
        if self.type == "inet_proto":
            return _PROTO_NUMBERS[str(self.value)]
        return int(self.value)


def _sort_key(key: tuple[_Val, ...]) -> int:
    """nft's ``expr_msort_value``: a plain value sorts by its number; a concatenation by its exported bytes
    read as one host-endian (little-endian) number."""
    if len(key) == 1:
        return key[0].number()
    return int.from_bytes(b"".join(v.raw() for v in key), "little")


@dataclass(frozen=True)
class _Verdict:
    kind: str  # goto / jump / drop / return / reject
    target: str = ""

    def text(self) -> str:
        return f"{self.kind} {self.target}" if self.target else self.kind

    def json(self) -> dict[str, Any]:
        return {self.kind: {"target": self.target}} if self.target else {self.kind: None}


def _parse_verdict(text: str) -> _Verdict:
    kind, _, target = text.partition(" ")
    return _Verdict(kind, target)


@dataclass(frozen=True)
class _Element:
    set: str
    key: tuple[_Val, ...]
    value: _Verdict | None = None
    comment: str | None = None

    def key_text(self) -> str:
        return " . ".join(v.text() for v in self.key)

    def input_body(self) -> str:
        out = self.key_text()
        if self.comment is not None:
            out += f" comment {json.dumps(self.comment)}"
        if self.value is not None:
            out += " : " + self.value.text()
        return out

    def list_text(self) -> str:
        return self.input_body()

    def json(self) -> Any:
        key: Any = self.key[0].json() if len(self.key) == 1 else {"concat": [v.json() for v in self.key]}
        if self.comment is not None:
            key = {"elem": {"val": key, "comment": self.comment}}
        return [key, self.value.json()] if self.value is not None else key


# --------------------------------------------------------------------------- rule parts


@dataclass(frozen=True)
class _Part:
    """One statement of a rule: as kube-proxy writes it (knftables' input) and as nft holds it (the dataplane's
    IR, printed by its printer for ``nft list`` and ``nft -j``)."""

    inp: str
    stmt: Stmt
    anon: bool = False  # creates an anonymous set (takes a handle)

    @cached_property
    def text(self) -> str:  # a part is printed once however many nodes list it (generate_nft's shared blocks)
        return fmt_stmt(self.stmt)

    def json(self, fam: str) -> dict[str, Any]:
        return stmt_json(self.stmt, fam)


# A node's rules name each address several times (its map elements, sorted; its rules), and every node names
# them again: each is parsed once.
_ip = lru_cache(maxsize=1 << 17)(ipaddress.ip_address)


@lru_cache(maxsize=1 << 17)
def _addr_expr(text: str) -> Expr:
    """An address or CIDR as nft holds it (a full-length prefix is an address)."""
    if "/" not in text:
        return Const(str(ipaddress.ip_address(text)))
    net = ipaddress.ip_network(text, strict=False)
    if net.prefixlen == net.max_prefixlen:
        return Const(str(net.network_address))
    return Prefix(str(net.network_address), net.prefixlen)


def _match_addr(fam: str, fld: str, value: str, neg: bool = False) -> _Part:
    """``ip daddr 1.2.3.4``, ``ip saddr != 10.0.0.0/8``, ``ip daddr @set``."""
    right = SetRef(value[1:]) if value.startswith("@") else _addr_expr(value)
    return _Part(f"{fam} {fld} {'!= ' if neg else ''}{value}", Match(Payload(fam, fld), "!=" if neg else "==", right))


def _interval(text: str) -> tuple[int, int, bool]:
    if "/" in text:
        net = ipaddress.ip_network(text, strict=False)
        return int(net.network_address), int(net.broadcast_address), True
    ip = int(ipaddress.ip_address(text))
    return ip, ip, False


def _interval_expr(lo: int, hi: int, v6: bool) -> Expr:
    make = ipaddress.IPv6Address if v6 else ipaddress.IPv4Address
    if lo == hi:
        return Const(str(make(lo)))
    size = hi - lo + 1
    if size & (size - 1) == 0 and lo % size == 0:
        return Prefix(str(make(lo)), (128 if v6 else 32) - (size.bit_length() - 1))
    return Range(str(make(lo)), str(make(hi)))


def _match_anon(fam: str, fld: str, items: Sequence[str], inp_items: str, neg: bool = False) -> _Part:
    """``ip saddr != { a , b }``. One element written: nft folds the set into a plain comparison. Otherwise an
    anonymous set, an interval one (merged, adjacent ranges joined) when an element is a prefix."""
    inp = f"{fam} {fld} {'!= ' if neg else ''}{{ {inp_items} }}"
    op = "!=" if neg else "=="
    if len(items) == 1:
        return _Part(inp, Match(Payload(fam, fld), op, _addr_expr(items[0])))
    v6 = fam == "ip6"
    spans = sorted(_interval(i) for i in items)
    if any(is_range for _, _, is_range in spans):
        merged: list[list[int]] = []
        for lo, hi, _ in spans:
            if merged and lo <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], hi)
            else:
                merged.append([lo, hi])
        shown = [_interval_expr(lo, hi, v6) for lo, hi in merged]
    else:
        shown = [_interval_expr(lo, lo, v6) for lo in sorted({lo for lo, _, _ in spans})]
    return _Part(inp, Match(Payload(fam, fld), op, AnonSet(tuple(NftElement(e) for e in shown))), anon=True)


def _ct_new() -> _Part:
    return _Part("ct state new", Match(Ct("state"), "implicit", Const("new")))


def _fib_local(fld: str) -> _Part:
    return _Part(f"fib {fld} type local", Match(Fib((fld,), "type"), "==", Const("local")))


def _l4proto(proto: str) -> _Part:
    return _Part(f"meta l4proto {proto}", Match(Meta("l4proto"), "==", Const(proto)))


def _verdict(v: str) -> _Part:
    if v == "reject":
        return _Part("reject", Reject())
    kind, _, target = v.partition(" ")
    return _Part(v, VerdictStmt(Verdict(kind, target or None)))


def _vmap(fam: str | None, name: str) -> _Part:
    """``ip daddr . meta l4proto . th dport vmap @name`` (``fam`` None: ``meta l4proto . th dport``)."""
    keys: tuple[Expr, ...] = (Meta("l4proto"), Payload("th", "dport"))
    if fam is not None:
        keys = (Payload(fam, "daddr"), *keys)
    part = _Part("", Vmap(Concat(keys), SetRef(name)))
    return replace(part, inp=part.text)


def _mark_set(op: str, mark: str) -> _Part:
    sym = {"or": "|", "xor": "^"}[op]
    return _Part(f"mark set mark {op} {mark}", Mangle(Meta("mark"), Binop(sym, Meta("mark"), Const(int(mark, 0)))))


def _mark_clear_check(mark: str) -> _Part:
    return _Part(f"mark and {mark} == 0", Match(Binop("&", Meta("mark"), Const(int(mark, 0))), "==", Const(0)))


def _masquerade() -> _Part:
    return _Part("masquerade fully-random", Nat("masquerade", flags=("fully-random",)))


def _dnat(ip: str, port: int) -> _Part:
    return _Part(f"dnat to {join_host_port(ip, port)}", Nat("dnat", addr=Const(ip), port=Const(port)))


def _update(fam: str, set_name: str) -> _Part:
    return _Part(f"update @{set_name} {{ {fam} saddr }}", Dynset("update", set_name, Payload(fam, "saddr")))


def _numgen_vmap(chains: Sequence[str]) -> _Part:
    inp = " , ".join(f"{i} : goto {c}" for i, c in enumerate(chains))
    elements = tuple(NftElement(Const(i), Verdict("goto", c)) for i, c in enumerate(chains))
    return _Part(f"numgen random mod {len(chains)} vmap {{ {inp} }}",
                 Vmap(Numgen("random", len(chains)), AnonSet(elements)), anon=True)


# --------------------------------------------------------------------------- transaction


@dataclass(frozen=True)
class _SetSpec:
    name: str
    key_types: tuple[str, ...]
    map_type: str | None = None  # "verdict" for a verdict map
    flags: tuple[str, ...] = ()
    timeout: int | None = None  # seconds
    comment: str | None = None

    @property
    def type_text(self) -> str:
        out = " . ".join(self.key_types)
        return out + (f" : {self.map_type}" if self.map_type else "")


@dataclass(frozen=True)
class _Cmd:
    """One command of the transaction. ``noop``: changes nothing on a fresh table (left out unless full)."""

    verb: str  # add / delete / flush
    kind: str  # table / chain / set / rule / element
    name: str = ""  # chain or set name; the chain of a rule; the set of an element
    base: tuple[str, str, int] | None = None  # (type, hook, priority) of a base chain
    comment: str | None = None
    spec: _SetSpec | None = None
    parts: tuple[_Part, ...] = ()
    element: _Element | None = None
    noop: bool = False

    def line(self, fam: str) -> str:
        head = f"{self.verb} {self.kind} {fam} {TABLE}"
        if self.kind == "table":
            if self.verb == "add" and self.comment:
                return head + f" {{ comment {json.dumps(self.comment)} ; }}"
            return head
        if self.kind == "chain":
            out = f"{head} {self.name}"
            if self.verb == "add" and (self.base or self.comment):
                out += " {"
                if self.base:
                    out += f" type {self.base[0]} hook {self.base[1]} priority {self.base[2]} ;"
                if self.comment:
                    out += f" comment {json.dumps(self.comment)} ;"
                out += " }"
            return out
        if self.kind in ("set", "map"):
            out = f"{head} {self.name}"
            if self.verb == "add" and self.spec is not None:
                s = self.spec
                out += f" {{ type {s.type_text} ;"
                if s.flags:
                    out += f" flags {','.join(s.flags)} ;"
                if s.timeout is not None:
                    out += f" timeout {s.timeout}s ;"
                if s.comment:
                    out += f" comment {json.dumps(s.comment)} ;"
                out += " }"
            return out
        if self.kind == "rule":
            out = f"{head} {self.name} " + " ".join(p.inp for p in self.parts)
            return out + (f" comment {json.dumps(self.comment)}" if self.comment else "")
        assert self.element is not None
        return f"{head} {self.name} {{ {self.element.input_body()} }}"


class _Tx:
    """knftables.Transaction, recording kube-proxy's commands in order."""

    def __init__(self, fam: str) -> None:
        self.fam = fam
        #: When a list: each call of ensure_chain, rule, set and element is noted in it (a block to replay).
        self.record: list[tuple[str, tuple[Any, ...], dict[str, Any]]] | None = None
        self.cmds: list[_Cmd] = []
        self.created: set[str] = set()
        self.elements: dict[tuple[str, str], int] = {}  # (set, key text) -> index in cmds
        self.notes: list[str] = []

    def add(self, cmd: _Cmd) -> None:
        self.cmds.append(cmd)

    def chain(self, name: str, *, base: tuple[str, str, int] | None = None, comment: str | None = None) -> None:
        self.add(_Cmd("add", "chain", name, base=base, comment=comment))
        self.add(_Cmd("flush", "chain", name, noop=True))

    def ensure_chain(self, name: str) -> None:
        """``ensureChain``: add and flush a chain once per transaction."""
        if self.record is not None:
            self.record.append(("ensure_chain", (name,), {}))
        if name in self.created:
            return
        self.created.add(name)
        self.chain(name)

    def rule(self, chain: str, *parts: _Part, comment: str | None = None) -> None:
        if self.record is not None:
            self.record.append(("rule", (chain, *parts), {"comment": comment}))
        self.add(_Cmd("add", "rule", chain, parts=tuple(parts), comment=comment))

    def set(self, spec: _SetSpec) -> None:
        if self.record is not None:
            self.record.append(("set", (spec,), {}))
        self.add(_Cmd("add", "map" if spec.map_type else "set", spec.name, spec=spec))

    def element(self, el: _Element, service: str) -> None:
        """``nftElementStorage.ensureElem``: a key added again with another value is deleted and re-added (the
        later Service port wins); with the same value (comments are not compared) it is left alone."""
        if self.record is not None:
            self.record.append(("element", (el, service), {}))
        ident = (el.set, el.key_text())
        old = self.elements.get(ident)
        if old is not None:
            prev = self.cmds[old].element
            if prev is not None and prev.value == el.value:
                return
            self.notes.append(f"{el.set} {el.key_text()}: claimed again by {service}; kube-proxy's later Service "
                              "port wins (Go map order)")
            self.cmds[old] = replace(self.cmds[old], noop=True, verb="skip")
        self.elements[ident] = len(self.cmds)
        self.add(_Cmd("add", "element", el.set, element=el))

    def text(self, full: bool) -> str:
        lines = [c.line(self.fam) for c in self.cmds if c.verb != "skip" and (full or not c.noop)]
        return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- result


@dataclass
class _StateSet:
    spec: _SetSpec
    handle: int
    elements: list[_Element] = field(default_factory=list)
    size: int | None = None


@dataclass
class _StateRule:
    parts: tuple[_Part, ...]
    comment: str | None
    handle: int


@dataclass
class _StateChain:
    name: str
    base: tuple[str, str, int] | None
    comment: str | None
    handle: int
    rules: list[_StateRule] = field(default_factory=list)


@dataclass
class _State:
    sets: dict[str, _StateSet] = field(default_factory=dict)
    chains: dict[str, _StateChain] = field(default_factory=dict)
    table_comment: str | None = None


# nft's std_prios and the hooks where their names are allowed (std_prio_family_hook_compat, ip/ip6 family)
_STD_PRIOS: Final = (("raw", -300), ("mangle", -150), ("dstnat", -100), ("filter", 0), ("security", 50),
                     ("srcnat", 100))


def _prio_text(hook: str, prio: int) -> str:
    """``prio2str`` of nft 1.0.6: a standard priority within 10, if its name is allowed at the hook."""
    for name, value in _STD_PRIOS:
        if abs(prio - value) <= 10:
            if (name == "dstnat" and hook != "prerouting") or (name == "srcnat" and hook != "postrouting"):
                break
            off = prio - value
            return name + (f" + {off}" if off > 0 else f" - {-off}" if off < 0 else "")
    return str(prio)


def _time_text(seconds: int) -> str:
    """nft's ``time_print``: ``3h``, ``1d1h1m1s``."""
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    return "".join(f"{n}{u}" for n, u in ((days, "d"), (hours, "h"), (minutes, "m"), (secs, "s")) if n)


def _elements_text(s: _StateSet) -> str:
    """``set_expr_print`` with ``calculate_delim``: IPv4 addresses two a line, other keys one a line."""
    items = sorted(s.elements, key=lambda e: _sort_key(e.key))
    per_line = 2 if s.spec.key_types == ("ipv4_addr",) else 1
    out = "{ "
    for i, el in enumerate(items):
        if i:
            out += ", " if i % per_line else ",\n\t\t\t     "
        out += el.list_text()
    return out + " }"


@dataclass(frozen=True)
class NftRules:
    """The result of :func:`generate_nft`."""

    config: ProxyConfig
    tx: _Tx = field(repr=False)
    #: The addresses in ``nodeport-ips`` (empty when NodePorts match every address).
    node_port_ips: tuple[str, ...] = ()
    #: Whether NodePorts match every local address (no ``nodeport-ips`` set).
    node_ports_match_all: bool = False
    #: The endpoint selection of each Service port, in processing order.
    selections: tuple[EndpointSelection, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def family(self) -> str:
        return "ip6" if self.config.is_ipv6 else "ip"

    @property
    def layout(self) -> Layout:
        return layout(self.config)

    # -- nft -f ----------------------------------------------------------------------------
    def nft_input(self, *, full: bool = False) -> str:
        """kube-proxy's full-sync transaction on a fresh node. ``full``: with the commands that change nothing
        there (base chain add+delete, flushes, the add+delete of an unused ``nodeport-ips``)."""
        return self.tx.text(full)

    # -- the loaded state ------------------------------------------------------------------
    def _state(self, full: bool) -> _State:
        st = _State()
        handle = 0

        def take() -> int:
            nonlocal handle
            handle += 1
            return handle

        for c in self.tx.cmds:
            if c.verb == "skip" or (c.noop and not full):
                continue
            if c.kind == "table":
                st.table_comment = c.comment
            elif c.kind == "chain" and c.verb == "add":
                if c.name not in st.chains:
                    st.chains[c.name] = _StateChain(c.name, c.base, c.comment, take())
            elif c.kind == "chain" and c.verb == "delete":
                st.chains.pop(c.name, None)
            elif c.kind in ("set", "map") and c.verb == "add":
                assert c.spec is not None
                if c.name not in st.sets:
                    st.sets[c.name] = _StateSet(c.spec, take())
            elif c.kind in ("set", "map") and c.verb == "delete":
                st.sets.pop(c.name, None)
            elif c.kind == "rule":
                for p in c.parts:
                    if p.anon:
                        take()
                st.chains[c.name].rules.append(_StateRule(c.parts, c.comment, take()))
                for p in c.parts:
                    if isinstance(p.stmt, Dynset):
                        target = st.sets[p.stmt.set]
                        target.size = target.size or 65535  # nft_dynset_init
            elif c.kind == "element":
                assert c.element is not None
                st.sets[c.name].elements.append(c.element)
        return st

    def ruleset_text(self, *, full: bool = False, state: _State | None = None) -> str:
        """What ``nft list ruleset`` (nft 1.0.6) prints once :meth:`nft_input` is loaded into an empty netns."""
        st = state if state is not None else self._state(full)
        out = [f"table {self.family} {TABLE} {{"]
        if st.table_comment:
            out.append(f"\tcomment {json.dumps(st.table_comment)}")
        blocks: list[list[str]] = []
        for s in st.sets.values():
            spec = s.spec
            b = [f"\t{'map' if spec.map_type else 'set'} {spec.name} {{", f"\t\ttype {spec.type_text}"]
            if s.size:
                b.append(f"\t\tsize {s.size}")
            if spec.flags:
                b.append(f"\t\tflags {','.join(spec.flags)}")
            if spec.timeout is not None:
                b.append(f"\t\ttimeout {_time_text(spec.timeout)}")
            if spec.comment:
                b.append(f"\t\tcomment {json.dumps(spec.comment)}")
            if s.elements:
                b.append(f"\t\telements = {_elements_text(s)}")
            blocks.append([*b, "\t}"])
        for ch in st.chains.values():
            b = [f"\tchain {ch.name} {{"]
            if ch.comment:
                b.append(f"\t\tcomment {json.dumps(ch.comment)}")
            if ch.base:
                b.append(f"\t\ttype {ch.base[0]} hook {ch.base[1]} priority {_prio_text(ch.base[1], ch.base[2])}; "
                         "policy accept;")
            for r in ch.rules:
                line = " ".join(p.text for p in r.parts)
                b.append("\t\t" + line + (f" comment {json.dumps(r.comment)}" if r.comment else ""))
            blocks.append([*b, "\t}"])
        for i, b in enumerate(blocks):
            if i:
                out.append("")
            out.extend(b)
        out.append("}")
        return "\n".join(out) + "\n"

    def ruleset_data(self, *, full: bool = False, table_handle: int = 1,
                     state: _State | None = None) -> dict[str, Any]:
        """:meth:`ruleset_json` as Python data."""
        st = state if state is not None else self._state(full)
        fam = self.family
        items: list[dict[str, Any]] = [
            {"metainfo": {"version": NFT_VERSION[0], "release_name": NFT_VERSION[1], "json_schema_version": 1}},
            {"table": {"family": fam, "name": TABLE, "handle": table_handle}}]
        for s in st.sets.values():
            spec = s.spec
            obj: dict[str, Any] = {"family": fam, "name": spec.name, "table": TABLE,
                                   "type": spec.key_types[0] if len(spec.key_types) == 1 else list(spec.key_types),
                                   "handle": s.handle}
            if spec.comment:
                obj["comment"] = spec.comment
            if spec.map_type:
                obj["map"] = spec.map_type
            if s.size:
                obj["size"] = s.size
            flags = [f for f in spec.flags if f != "dynamic"]  # nft 1.0.6 leaves "dynamic" out of JSON
            if flags:
                obj["flags"] = flags
            if spec.timeout is not None:
                obj["timeout"] = spec.timeout
            if s.elements:
                obj["elem"] = [e.json() for e in sorted(s.elements, key=lambda e: _sort_key(e.key))]
            items.append({"map" if spec.map_type else "set": obj})
        for ch in st.chains.values():
            cobj: dict[str, Any] = {"family": fam, "table": TABLE, "name": ch.name, "handle": ch.handle}
            if ch.base:
                cobj |= {"type": ch.base[0], "hook": ch.base[1], "prio": ch.base[2], "policy": "accept"}
            items.append({"chain": cobj})
        for ch in st.chains.values():
            for r in ch.rules:
                robj: dict[str, Any] = {"family": fam, "table": TABLE, "chain": ch.name, "handle": r.handle}
                if r.comment:
                    robj["comment"] = r.comment
                robj["expr"] = [p.json(fam) for p in r.parts]
                items.append({"rule": robj})
        return {"nftables": items}

    def ruleset_json(self, *, full: bool = False, table_handle: int = 1, state: _State | None = None) -> str:
        """What ``nft -j list ruleset`` (nft 1.0.6) prints once :meth:`nft_input` is loaded into an empty netns
        (the table handle is the netns' count of tables created, 1 in a fresh one)."""
        return json.dumps(self.ruleset_data(full=full, table_handle=table_handle, state=state)) + "\n"

    # -- the node --------------------------------------------------------------------------
    def ip_addr_json(self, node_ips: Iterable[str] | None = None) -> str:
        """An ``ip -j addr`` of the node: ``lo`` and ``eth0`` carrying ``node_ips`` (``ip`` or ``ip/prefix``;
        /24 and /64 by default). nftables mode puts no address on any device of its own."""
        return ip_addr_json(self.config.node_name, node_ips if node_ips is not None else self.config.node_ips)

    def snapshot_files(self) -> dict[str, str]:
        """The node's files of a svctrace snapshot (``nodes/<name>/``) in nftables mode."""
        st = self._state(False)  # the loaded state once, for both listings (it does not change between them)
        return {"proxy-mode": "nftables\n", "nft": self.ruleset_text(state=st), "nft.json": self.ruleset_json(state=st),
                "ip-addr.json": self.ip_addr_json()}


# --------------------------------------------------------------------------- generation


def _node_port_ips(cfg: ProxyConfig) -> tuple[bool, list[IPAddr]]:
    """``NewNodePortAddresses`` + ``GetNodeIPs``: (match all, the interface addresses inside the CIDRs, loopback
    left out as setupNFTables does). ``primary`` (and the empty default) is the node IP of the family."""
    addresses = nodeport_addresses(cfg, "nftables")
    if addresses.match_all:
        return True, []
    addrs = cfg.interface_addresses if cfg.interface_addresses is not None else cfg.node_ips
    return False, [ip for ip in addresses.node_ips(addrs) if not ip.is_loopback]


def _setup(tx: _Tx, cfg: ProxyConfig, fam: str, match_all: bool, np_ips: Sequence[IPAddr]) -> None:
    """``setupNFTables``."""
    addr_type = "ipv6_addr" if cfg.is_ipv6 else "ipv4_addr"
    no_localhost = _match_addr(fam, "daddr", "::1" if cfg.is_ipv6 else "127.0.0.0/8", neg=True)
    base = _BASE_1_34 if layout(cfg) == "post-dnat-filter" else _BASE_1_31
    jumps = _JUMPS_1_34 if layout(cfg) == "post-dnat-filter" else _JUMPS_1_31
    mark = cfg.mark

    tx.add(_Cmd("add", "table", comment="rules for kube-proxy"))
    # The first sync after a restart adds and deletes every base chain, to recreate them.
    for name, _, _, _ in base:
        tx.add(_Cmd("add", "chain", name, noop=True))
        tx.add(_Cmd("delete", "chain", name, noop=True))
    for name, typ, hook, prio in base:
        tx.chain(name, base=(typ, hook, prio))
    for dst, src, extra in jumps:
        tx.ensure_chain(dst)
        tx.rule(src, *([_ct_new()] if extra else []), _verdict(f"jump {dst}"))
    for name in (SERVICES, CLUSTER_IPS_CHECK, MASQUERADING, MARK_MASQ):
        tx.ensure_chain(name)
    tx.rule(MARK_MASQ, _mark_set("or", mark))
    tx.rule(MASQUERADING, _mark_clear_check(mark), _verdict("return"))
    tx.rule(MASQUERADING, _mark_set("xor", mark))
    tx.rule(MASQUERADING, _masquerade())

    tx.set(_SetSpec(CLUSTER_IPS, (addr_type,), comment="Active ClusterIPs"))
    tx.rule(CLUSTER_IPS_CHECK, _match_addr(fam, "daddr", "@" + CLUSTER_IPS), _verdict("reject"),
            comment="Reject traffic to invalid ports of ClusterIPs")
    cidrs = [str(ipaddress.ip_network(c.strip(), strict=False)) for c in cfg.service_cidrs
             if (ipaddress.ip_network(c.strip(), strict=False).version == 6) == cfg.is_ipv6]
    if cidrs:
        tx.rule(CLUSTER_IPS_CHECK, _match_anon(fam, "daddr", cidrs, ",".join(cidrs)), _verdict("drop"),
                comment="Drop traffic to unallocated ClusterIPs")

    np_spec = _SetSpec(NODEPORT_IPS, (addr_type,), comment="IPs that accept NodePort traffic")
    if match_all:
        tx.add(_Cmd("add", "set", NODEPORT_IPS, spec=np_spec, noop=True))
        tx.add(_Cmd("delete", "set", NODEPORT_IPS, noop=True))
    else:
        tx.set(np_spec)
        tx.add(_Cmd("flush", "set", NODEPORT_IPS, noop=True))
        for ip in np_ips:
            tx.element(_Element(NODEPORT_IPS, (_Val(addr_type, str(ip)),)), "nodePortAddresses")

    concat3 = (addr_type, "inet_proto", "inet_service")
    tx.set(_SetSpec(NO_ENDPOINT_SERVICES, concat3, "verdict",
                    comment="vmap to drop or reject packets to services with no endpoints"))
    tx.set(_SetSpec(NO_ENDPOINT_NODEPORTS, ("inet_proto", "inet_service"), "verdict",
                    comment="vmap to drop or reject packets to service nodeports with no endpoints"))
    tx.add(_Cmd("add", "chain", REJECT_CHAIN, comment="helper for @no-endpoint-services / @no-endpoint-nodeports"))
    tx.add(_Cmd("flush", "chain", REJECT_CHAIN, noop=True))
    tx.rule(REJECT_CHAIN, _verdict("reject"))
    tx.rule(SERVICE_ENDPOINTS_CHECK, _vmap(fam, NO_ENDPOINT_SERVICES))
    if match_all:
        tx.rule(NODEPORT_ENDPOINTS_CHECK, no_localhost, _vmap(None, NO_ENDPOINT_NODEPORTS))
    else:
        tx.rule(NODEPORT_ENDPOINTS_CHECK, _match_addr(fam, "daddr", "@" + NODEPORT_IPS),
                _vmap(None, NO_ENDPOINT_NODEPORTS))

    tx.set(_SetSpec(FIREWALL_IPS, concat3, "verdict",
                    comment="destinations that are subject to LoadBalancerSourceRanges"))
    tx.ensure_chain(FIREWALL_CHECK)
    tx.rule(FIREWALL_CHECK, _vmap(fam, FIREWALL_IPS))

    tx.set(_SetSpec(SERVICE_IPS, concat3, "verdict", comment="ClusterIP, ExternalIP and LoadBalancer IP traffic"))
    tx.set(_SetSpec(SERVICE_NODEPORTS, ("inet_proto", "inet_service"), "verdict", comment="NodePort traffic"))
    tx.rule(SERVICES, _vmap(fam, SERVICE_IPS))
    if match_all:
        tx.rule(SERVICES, _fib_local("daddr"), no_localhost, _vmap(None, SERVICE_NODEPORTS))
    else:
        tx.rule(SERVICES, _match_addr(fam, "daddr", "@" + NODEPORT_IPS), _vmap(None, SERVICE_NODEPORTS))


@dataclass(frozen=True)
class _Names:
    cluster: str
    local: str
    external: str
    firewall: str


def _names(sp: ServicePortInfo) -> _Names:
    base = service_chain_name_base(sp.namespace, sp.name, sp.port_name, sp.protocol)
    return _Names("service-" + base, "local-" + base, "external-" + base, "firewall-" + base)


def _ep_base(sp: ServicePortInfo, ep: EndpointInfo) -> str:
    return endpoint_chain_name_base(sp.namespace, sp.name, sp.port_name, sp.protocol, ep.ip, ep.port)


_NO_ENDPOINT_VERDICT: Final = {"reject": f"goto {REJECT_CHAIN}", "drop": "drop"}


def _sync_service(tx: _Tx, cfg: ProxyConfig, fam: str, plan: PortPlan) -> None:
    """The body of ``syncProxyRules``' loop for one Service port (a full sync: nothing skipped)."""
    sp = plan.service_port
    addr_type = "ipv6_addr" if cfg.is_ipv6 else "ipv4_addr"
    proto = sp.protocol.lower()
    name = sp.service_port_name()
    n = _names(sp)
    reachable = plan.selection.all_reachable_endpoints
    affinity = sp.session_affinity_seconds

    for ep in reachable:
        tx.ensure_chain("endpoint-" + _ep_base(sp, ep))
    if plan.uses_cluster_chain:
        tx.ensure_chain(n.cluster)
    if plan.uses_local_chain:
        tx.ensure_chain(n.local)
    internal_chain = n.local if plan.internal_local else n.cluster
    external_policy_chain = n.local if plan.external_local else n.cluster
    if plan.uses_external_chain:
        tx.ensure_chain(n.external)
    internal_verdict = _NO_ENDPOINT_VERDICT.get(plan.internal_no_endpoints or "", "")
    external_verdict = _NO_ENDPOINT_VERDICT.get(plan.external_no_endpoints or "", "")

    def key3(ip: str, port: int) -> tuple[_Val, ...]:
        return (_Val(addr_type, ip), _Val("inet_proto", proto), _Val("inet_service", port))

    def elem(set_name: str, key: tuple[_Val, ...], verdict: str, comment: str | None = None) -> None:
        tx.element(_Element(set_name, key, _parse_verdict(verdict), comment), name)

    tx.element(_Element(CLUSTER_IPS, (_Val(addr_type, sp.cluster_ip),)), name)
    if plan.has_internal:
        elem(SERVICE_IPS, key3(sp.cluster_ip, sp.port), f"goto {internal_chain}")
    else:
        elem(NO_ENDPOINT_SERVICES, key3(sp.cluster_ip, sp.port), internal_verdict, name)
    for eip in sp.external_ips:
        if plan.has_endpoints:
            elem(SERVICE_IPS, key3(eip, sp.port), f"goto {n.external}")
        if not plan.has_external:
            elem(NO_ENDPOINT_SERVICES, key3(eip, sp.port), external_verdict, name)
    # nftables writes the firewall chain whether or not the port has endpoints (iptables: only with).
    uses_fw = plan.filters_sources
    if uses_fw:
        tx.ensure_chain(n.firewall)
    for lbip in sp.load_balancer_vips:
        if plan.has_endpoints:
            elem(SERVICE_IPS, key3(lbip, sp.port), f"goto {n.external}")
        if uses_fw:
            elem(FIREWALL_IPS, key3(lbip, sp.port), f"goto {n.firewall}")
    if not plan.has_external:
        for lbip in sp.load_balancer_vips:
            elem(NO_ENDPOINT_SERVICES, key3(lbip, sp.port), external_verdict, name)
    if sp.node_port:
        np_key = (_Val("inet_proto", proto), _Val("inet_service", sp.node_port))
        if plan.has_endpoints:
            elem(SERVICE_NODEPORTS, np_key, f"goto {n.external}")
        if not plan.has_external:
            elem(NO_ENDPOINT_NODEPORTS, np_key, external_verdict, name)

    # Internal traffic: masquerade off-cluster traffic to the ClusterIP.
    if plan.has_internal:
        if cfg.masquerade_all:
            tx.rule(internal_chain, _match_addr(fam, "daddr", sp.cluster_ip), _verdict(f"jump {MARK_MASQ}"))
        elif cfg.cluster_cidr:
            tx.rule(internal_chain, _match_addr(fam, "daddr", sp.cluster_ip),
                    _match_addr(fam, "saddr", _cidr(cfg.cluster_cidr), neg=True), _verdict(f"jump {MARK_MASQ}"))
    # External traffic.
    if plan.uses_external_chain:
        if not plan.external_local:
            tx.rule(n.external, _verdict(f"jump {MARK_MASQ}"))
        else:
            if cfg.cluster_cidr:
                tx.rule(n.external, _match_addr(fam, "saddr", _cidr(cfg.cluster_cidr)), _verdict(f"goto {n.cluster}"),
                        comment="short-circuit pod traffic")
            tx.rule(n.external, _fib_local("saddr"), _verdict(f"jump {MARK_MASQ}"), comment="masquerade local traffic")
            tx.rule(n.external, _fib_local("saddr"), _verdict(f"goto {n.cluster}"),
                    comment="short-circuit local traffic")
        if plan.has_external:
            tx.rule(n.external, _verdict(f"goto {external_policy_chain}"))
    if uses_fw:
        sources = list(plan.allowed_sources)
        tx.rule(n.firewall, _match_anon(fam, "saddr", sources, " , ".join(sources), neg=True), _verdict("drop"))
    if affinity is not None:
        for ep in reachable:
            tx.set(_SetSpec("affinity-" + _ep_base(sp, ep), (addr_type,), flags=("dynamic", "timeout"),
                            timeout=affinity))
    if plan.uses_cluster_chain:
        _service_to_endpoints(tx, fam, sp, n.cluster, plan.cluster_endpoints)
    if plan.uses_local_chain:
        _service_to_endpoints(tx, fam, sp, n.local, plan.local_endpoints)
    for ep in reachable:
        chain = "endpoint-" + _ep_base(sp, ep)
        tx.rule(chain, _match_addr(fam, "saddr", ep.ip), _verdict(f"jump {MARK_MASQ}"))
        if affinity is not None:
            tx.rule(chain, _update(fam, "affinity-" + _ep_base(sp, ep)))
        tx.rule(chain, _l4proto(proto), _dnat(ep.ip, ep.port))


def _service_to_endpoints(tx: _Tx, fam: str, sp: ServicePortInfo, chain: str, eps: Sequence[EndpointInfo]) -> None:
    """``writeServiceToEndpointRules``: the affinity checks, then ``numgen random mod N vmap``."""
    if sp.session_affinity_seconds is not None:
        for ep in eps:
            base = _ep_base(sp, ep)
            tx.rule(chain, _match_addr(fam, "saddr", "@affinity-" + base), _verdict(f"goto endpoint-{base}"))
    tx.rule(chain, _numgen_vmap(["endpoint-" + _ep_base(sp, ep) for ep in eps]))


def _cidr(text: str) -> str:
    return str(ipaddress.ip_network(text.strip(), strict=False))


def generate_nft(
    services: Iterable[KubeObject],
    endpoint_slices: Iterable[KubeObject] | None,
    cfg: ProxyConfig,
    *,
    nodes: Iterable[KubeObject] = (),
    endpoints: Iterable[KubeObject] | None = None,
    shared: Shared | None = None,
) -> NftRules:
    """kube-proxy's nftables table on ``cfg.node_name``.

    A Service's endpoints come from its EndpointSlices. A Service without any slice falls back to its v1
    Endpoints in ``endpoints``. The Node named ``cfg.node_name`` in ``nodes`` gives the node's labels (unless
    ``cfg.node_labels`` is set) and, when ``cfg.node_ips`` is empty, its InternalIP/ExternalIP addresses.
    ``shared``: several nodes of one cluster rendered from the same objects share their endpoint choices
    (:class:`~svctrace.kubeproxy.plan.Shared`).
    """
    cfg, labels = node_context(cfg.for_mode("nftables"), nodes)
    fam = "ip6" if cfg.is_ipv6 else "ip"
    plans = plan_ports(collect_ports(services, endpoint_slices, endpoints, cfg, shared), cfg, labels, shared)
    match_all, np_ips = _node_port_ips(cfg)
    tx = _Tx(fam)
    _setup(tx, cfg, fam, match_all, np_ips)
    # A Service port's commands are the same on every node where its plan is (PortPlan.key) and what else
    # _sync_service reads is: made once, then replayed into the node's transaction (which still decides what an
    # element claimed twice does).
    layout = ("nft", fam, cfg.is_ipv6, cfg.masquerade_all, cfg.cluster_cidr)
    for plan in plans:
        if shared is None:
            _sync_service(tx, cfg, fam, plan)
            continue
        blocks = shared.blocks
        key = (layout, shared.key_of(plan))
        calls = blocks.get(key)
        if calls is None:
            tx.record = []
            _sync_service(tx, cfg, fam, plan)
            blocks[key], tx.record = tx.record, None
        else:
            for method, args, kwargs in calls:
                getattr(tx, method)(*args, **kwargs)
    return NftRules(config=cfg, tx=tx, node_port_ips=tuple(str(ip) for ip in np_ips), node_ports_match_all=match_all,
                    selections=tuple(p.selection for p in plans), notes=tuple(tx.notes))
