"""Services and their rules, recovered from one node's parsed dataplane when the cluster's objects are absent.

Everything is read from parsed fields: an iptables `Ruleset`'s rules (their comment, `-d`, `-p`, `--dport`,
target), an nftables ruleset's chain names and map elements, an IPVS table's virtual servers and the
ipsets beside them. kube-proxy names what it writes (pkg/proxy/iptables/proxier.go: the comment of each
KUBE-SERVICES rule is the Service port name, `ns/name[:port]`, and what the rule is for; pkg/proxy/nftables
/proxier.go: each per-Service chain is named `service-HASH-ns/name/proto/port`), so the names tell whose
each rule is, and the jump graph gives the rest of a Service's rules.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from svctrace.dataplane.ipset import IPSetListing
from svctrace.dataplane.iptables.parser import tokenize
from svctrace.dataplane.iptables.rules import Chain, Opt, Rule, Ruleset
from svctrace.dataplane.ipvs import IPVSTable
from svctrace.dataplane.nftables import NftRuleset, ir
from svctrace.dataplane.nftables.printer import fmt_element
from svctrace.kubeproxy.names import CHAIN_PREFIXES, SEP_PREFIX, chain_family, nft_chain_owner
from svctrace.model.cluster import Service

_BASE32 = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")


def _hashed(name: str, prefix: str, length: int) -> str | None:
    """What follows `prefix` + a `length`-character base32 hash (kube-proxy's portProtoHash) and a `-`,
    or "" when the name ends at the hash; None when `name` is not of that shape."""
    if not name.startswith(prefix):
        return None
    h = name[len(prefix):len(prefix) + length]
    rest = name[len(prefix) + length:]
    if len(h) != length or not _BASE32.issuperset(h) or (rest and not rest.startswith("-")):
        return None
    return rest[1:]


# -- iptables ---------------------------------------------------------------------------------------

def per_service_chain(name: str) -> bool:
    """One of kube-proxy's per-Service-port chains: KUBE-SVC/SVL/EXT/FW/XLB/SEP- and a 16-character hash."""
    family = chain_family(name)
    if family is None:
        return False
    prefix = SEP_PREFIX if family == "SEP" else CHAIN_PREFIXES[family]
    return _hashed(name, prefix, 16) == ""


def names_service(comment: str | None, key: str, *, anywhere: bool = False) -> bool:
    """Whether a kube-proxy rule comment names the Service `key` (`ns/name`, or a Service port `ns/name:port`):
    `ns/name`, `ns/name:port`, each alone or followed by what the rule is for (`ns/name:http cluster IP`).
    `anywhere`: as any word of the comment, as the KUBE-EXT chains' comments have it (`masquerade traffic for
    ns/name:http external destinations`, pkg/proxy/iptables/proxier.go)."""
    if not comment:
        return False
    words = comment.split() if anywhere else [comment.split(" ", 1)[0].split("\t", 1)[0]]
    return any(w == key or w.startswith(key + ":") for w in words)


def _opt(rule: Rule, name: str) -> Opt | None:
    """The first option `name` (`-d`, `-p`, `--dport`, `--dst-type`...) among the rule's matches."""
    for m in rule.matches:
        for o in m.opts:
            if o.name == name:
                return o
    return None


def _address(o: Opt | None) -> str | None:
    """The address of `-d 10.96.0.10/32` (prefix dropped)."""
    if o is None:
        return None
    addr = o.arg.split("/", 1)[0]
    return addr if addr and all(c in "0123456789abcdefABCDEF.:" for c in addr) else None


def _proto(rule: Rule) -> str:
    p = _opt(rule, "-p")
    return p.arg.lower() if p is not None else "tcp"


def _dport(rule: Rule) -> int | None:
    o = _opt(rule, "--dport")
    return int(o.arg) if o is not None and o.arg.isdigit() else None


def _target(rule: Rule) -> str | None:
    return rule.target.name if rule.target is not None else None


@dataclass
class RecoveredPort:
    name: str  # the port name in the comment ("" for an unnamed port)
    port: int | None
    proto: str
    cluster_ip: str | None = None
    chain: str | None = None  # where the cluster-IP rule jumps
    node_port: int | None = None
    external_ips: list[str] = field(default_factory=list)
    lb_ips: list[str] = field(default_factory=list)
    endpoints: int = 0
    no_endpoints: bool = False
    no_local: bool = False


@dataclass
class RecoveredService:
    namespace: str
    name: str
    ports: list[RecoveredPort] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def port(self, name: str, port: int | None, proto: str) -> RecoveredPort:
        for p in self.ports:  # a Service's ports are unique by name and protocol
            if p.name == name and p.proto == proto:
                if p.port is None:
                    p.port = port
                return p
        p = RecoveredPort(name, port, proto)
        self.ports.append(p)
        return p


@dataclass
class Recovered:
    services: dict[str, RecoveredService]
    cluster_cidr: str | None  # the `! -s CIDR` of a KUBE-SVC chain's masquerade rule (kube-proxy's --cluster-cidr)


def _rules(rs: Ruleset, table: str, chain: str) -> list[Rule]:
    c = rs.chain(table, chain)
    return c.rules if c is not None else []


def recover_iptables(rs: Ruleset) -> Recovered:
    """The Services an iptables-mode node's rules name, with their ports, addresses and endpoint counts."""
    svcs: dict[str, RecoveredService] = {}

    def entry(r: Rule) -> tuple[RecoveredPort, str] | None:
        """The Service port a rule's comment names (`ns/name[:port] what`), and the `what`."""
        c = r.comment
        if not c or "/" not in c.split(" ", 1)[0]:
            return None
        spn, _, rest = c.partition(" ")
        key, _, pname = spn.partition(":")
        ns, _, name = key.partition("/")
        if not ns or not name:
            return None
        dst_type = _opt(r, "--dst-type")
        node_port = dst_type is not None and dst_type.arg == "LOCAL"  # --dport is the node port, not the Service's
        svc = svcs.setdefault(key, RecoveredService(ns, name))
        return svc.port(pname, None if node_port else _dport(r), _proto(r)), rest

    for r in _rules(rs, "nat", "KUBE-SERVICES"):
        got = entry(r)
        if got is None:
            continue
        port, rest = got
        ip = _address(_opt(r, "-d"))
        if rest.startswith("cluster IP"):
            port.cluster_ip = ip
            port.chain = _target(r)
        elif rest.startswith("external IP") and ip and ip not in port.external_ips:
            port.external_ips.append(ip)
        elif rest.startswith("loadbalancer IP") and ip and ip not in port.lb_ips:
            port.lb_ips.append(ip)
    for r in _rules(rs, "nat", "KUBE-NODEPORTS"):
        c = r.comment or ""
        if " " in c.strip():
            continue
        key, _, pname = c.partition(":")
        svc = svcs.get(key)
        dport = _dport(r)
        if svc is None or dport is None:
            continue
        for p in svc.ports:
            if p.name == pname and p.proto == _proto(r):
                p.node_port = dport
    for chain in ("KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES"):
        for r in _rules(rs, "filter", chain):
            got = entry(r)
            if got is None:
                continue
            port, rest = got
            if rest.startswith("has no endpoints"):
                port.no_endpoints = True
                ip = _address(_opt(r, "-d"))
                if chain == "KUBE-SERVICES" and ip and port.cluster_ip is None:
                    port.cluster_ip = ip
            elif rest.startswith("has no local endpoints"):
                port.no_local = True
    cidr: str | None = None
    for svc in svcs.values():
        for p in svc.ports:
            svc_rules = rs.chain("nat", p.chain) if p.chain else None
            if svc_rules is None or not svc_rules.raw:
                continue
            p.endpoints = sum(1 for t in _jumps(svc_rules) if t.startswith(SEP_PREFIX))
            if cidr is None:
                s = _opt(svc_rules.rules[0], "-s")
                if s is not None and s.neg and "/" in s.arg and _address(s):
                    cidr = s.arg
    return Recovered(svcs, cidr)


def _jumps(chain: Chain) -> Iterator[str]:
    """Where a chain's rules jump, from the parsed rules once parsed, else from each rule's words (the parser's
    own tokenizer): the Service list needs only the targets of every KUBE-SVC chain, and a 10k-Service dump
    has 50k rules there that a full parse would take seconds over."""
    if chain.parsed:
        yield from (r.target.name for r in chain.rules if r.target is not None and not r.target.goto)
        return
    for raw in chain.raw:
        words, _ = tokenize(raw.text)
        for i, w in enumerate(words[:-1]):
            if w in ("-j", "--jump"):
                yield words[i + 1]


def iptables_service_rules(rs: Ruleset, key: str, table_order: Sequence[str]) -> list[Rule]:
    """The rules of one Service on an iptables node: those whose comment names it, and every rule of the
    per-Service chains (KUBE-SVC/SVL/EXT/FW/XLB/SEP) they are in or jump to, followed through the jump
    graph. Tables in `table_order` (others after them), then chains by name, each chain's rules in order."""
    chains: set[tuple[str, str]] = set()
    picked: dict[tuple[str, str, int], Rule] = {}

    def each(table: str, chain: str) -> Iterator[tuple[int, Rule]]:
        prev: Rule | None = None
        for pos, r in enumerate(_rules(rs, table, chain)):
            if prev is None or r.line != prev.line:  # an address list's expansion is one rule of the dump
                yield pos, r
            prev = r

    for t in rs.tables.values():
        for name in t.chains:
            for pos, r in each(t.name, name):
                if names_service(r.comment, key):
                    picked[(t.name, name, pos)] = r
                    if per_service_chain(name):
                        chains.add((t.name, name))
                    tgt = _target(r)
                    if tgt is not None and per_service_chain(tgt):
                        chains.add((t.name, tgt))
    todo = list(chains)
    while todo:
        table, name = todo.pop()
        for pos, r in each(table, name):
            picked[(table, name, pos)] = r
            tgt = _target(r)
            if tgt is not None and per_service_chain(tgt) and (table, tgt) not in chains:
                chains.add((table, tgt))
                todo.append((table, tgt))

    def order(k: tuple[str, str, int]) -> tuple[int, str, int]:
        t, name, pos = k
        return (table_order.index(t) if t in table_order else len(table_order), name, pos)

    return [picked[k] for k in sorted(picked, key=order)]


# -- nftables -------------------------------------------------------------------------------------

def nft_service_lines(rs: NftRuleset, key: str, tables: Iterable[str]) -> list[str]:
    """The rules of the Service's chains and the map elements that lead to them or name it, as nft's
    `add rule` / `add element` commands."""
    lines: list[str] = []
    for t in tables:
        tb = rs.tables[t]
        mine = sorted((c for c in tb.chains if (n := nft_chain_owner(c)) and f"{n.namespace}/{n.name}" == key),
                      key=nft_chain_label)  # by what they are, not by hash: endpoints in address order
        chains = set(mine)
        for s in tb.sets.values():
            for el in s.elements:
                named = el.comment is not None and (el.comment == key or el.comment.startswith((key + ":",
                                                                                               key + " ")))
                leads = isinstance(el.data, ir.Verdict) and el.data.target in chains
                if named or leads:
                    lines.append(f"add element {t} {s.name} {{ {fmt_element(el)} }}")
        for c in mine:
            for r in tb.chains[c].rules:
                lines.append(f"add rule {t} {c} {r.text}")
    return lines


def nft_chain_label(chain: str, width: int = 40) -> str:
    """A per-Service chain without its hash, the namespace left out when it does not fit
    (`endpoint web/http 10.244.1.10/8080`, `service default/web/http`); "" for any other chain."""
    n = nft_chain_owner(chain)
    if n is None:
        return ""
    port = n.port_name or n.protocol
    tail = f" {n.endpoint}" if n.endpoint else ""
    full = f"{n.kind} {n.namespace}/{n.name}/{port}{tail}"
    return full if len(full) <= width else f"{n.kind} {n.name}/{port}{tail}"


def nft_service_chain(rs: NftRuleset, tables: Iterable[str], namespace: str, name: str, protocol: str,
                      port_name: str) -> tuple[str, str] | None:
    """(table, chain) of the Service port's first chain: service- (or local-, external-, firewall-)."""
    order = list(tables)
    for kind in ("service", "local", "external", "firewall"):
        for t in order:
            for c in rs.tables[t].chains:
                n = nft_chain_owner(c)
                if (n is not None and n.kind == kind and n.namespace == namespace and n.name == name
                        and n.protocol == protocol.lower() and n.port_name == port_name and not n.endpoint):
                    return t, c
    return None


# -- IPVS -----------------------------------------------------------------------------------------

def service_keys(svc: Service) -> tuple[set[tuple[str, str, int]], set[tuple[str, int]]]:
    """The (protocol, address, port) a Service's virtual servers listen on, and its (protocol, node port)s."""
    vips: set[tuple[str, str, int]] = set()
    node_ports: set[tuple[str, int]] = set()
    for p in svc.ports:
        proto = p.protocol.lower()
        for ip in [*svc.cluster_ips, *svc.external_ips, *svc.lb_ips]:
            if ip and ip != "None":
                vips.add((proto, ip, p.port))
        if p.node_port:
            node_ports.add((proto, p.node_port))
    return vips, node_ports


def ipvs_service_lines(table: IPVSTable, ipsets: dict[str, IPSetListing], svc: Service) -> list[str]:
    """An IPVS node's share of a Service: its virtual servers (and their real servers), as `ipvsadm -S`
    lines, and its members of kube-proxy's ipsets (pkg/proxy/ipvs/proxier.go fills them per Service port)."""
    lines: list[str] = []
    vips, node_ports = service_keys(svc)
    vip_addrs = {ip for _, ip, _ in vips}
    for vs in table.services:
        if vs.ip is None or vs.port is None:
            continue
        if (vs.protocol, str(vs.ip), vs.port) in vips or (
                (vs.protocol, vs.port) in node_ports and str(vs.ip) not in vip_addrs):
            lines.append(f"ipvs   {vs.text.strip()}")
            lines += [f"ipvs   {r.text.strip()}" for r in vs.reals]
    for s in sorted(ipsets.values(), key=lambda s: s.name):
        for dims in s.members:
            member = ",".join(dims)
            hit = any(dims[0] == ip and (len(dims) == 1 or dims[1] == f"{proto}:{port}") for proto, ip, port in vips)
            if not hit and "NODE-PORT" in s.name:  # bitmap:port (`30080`) or hash:ip,port (`ip,sctp:30080`)
                hit = any((f"-{proto.upper()}" in s.name and member in (str(np), f"{proto}:{np}"))
                          or (len(dims) > 1 and dims[1] == f"{proto}:{np}") for proto, np in node_ports)
            if not hit and s.name == "KUBE-HEALTH-CHECK-NODE-PORT":
                hit = member == str(svc.health_check_node_port)
            if hit:
                lines.append(f"ipset  add {s.name} {member}")
    return lines
