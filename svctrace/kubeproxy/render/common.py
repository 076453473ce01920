"""What the renderers share beside the plan: iptables rules in kube-proxy's restore form and their
``iptables-save`` text (iptables and IPVS mode), the node's ``ip -j addr`` for a snapshot."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from svctrace.dataplane.iptables.parser import parse_rule
from svctrace.dataplane.iptables.printer import rule_as_loaded, xtables_save_string
from svctrace.dataplane.iptables.rules import BUILTIN_CHAINS, RawRule

__all__ = ["SAVE_TABLES", "IptRule", "SaveMemo", "ip_addr_json", "iptables_save", "quoted"]

#: The tables kube-proxy writes, in the order the dumps print them.
SAVE_TABLES: Final = ("filter", "nat")


def quoted(text: str) -> str:
    """kube-proxy's hand-quoted comment argument: ``"..."``."""
    return f'"{text}"'


@dataclass(frozen=True)
class IptRule:
    """One ``-A CHAIN args`` rule, ``args`` exactly as kube-proxy writes them (restore form)."""

    table: str
    chain: str
    args: tuple[str, ...]

    def restore_text(self) -> str:
        return " ".join(("-A", self.chain, *self.args))

    def save_text(self, ipv6: bool = False) -> str:
        """The rule as ``iptables-save`` (1.8.9) prints it once loaded."""
        family = 6 if ipv6 else 4
        (rule,) = parse_rule(self.table, self.chain, RawRule(0, self.restore_text()), family)
        return rule_as_loaded(rule, family)


def masquerade_rules(mark: str, random_fully: bool, *, clear_mark: bool = True) -> list[IptRule]:
    """KUBE-POSTROUTING (masquerade what KUBE-MARK-MASQ marked, clearing the mark) and KUBE-MARK-MASQ, as the
    iptables and IPVS proxiers both write them (``syncProxyRules`` / ``writeIptablesRules``: "Install the
    kubernetes-specific postrouting rules"). Before 1.19 (versions "postrouting-clear-mark") one rule matched
    the mark and masqueraded, leaving the mark set."""
    masq = ("-m", "comment", "--comment", quoted("kubernetes service traffic requiring SNAT"), "-j", "MASQUERADE",
            *(("--random-fully",) if random_fully else ()))
    if not clear_mark:
        old = (*masq[:4], "-m", "mark", "--mark", f"{mark}/{mark}", *masq[4:])
        return [IptRule("nat", "KUBE-POSTROUTING", old), IptRule("nat", "KUBE-MARK-MASQ", ("-j", "MARK", "--or-mark",
                                                                                            mark))]
    return [IptRule("nat", "KUBE-POSTROUTING", ("-m", "mark", "!", "--mark", f"{mark}/{mark}", "-j", "RETURN")),
            IptRule("nat", "KUBE-POSTROUTING", ("-j", "MARK", "--xor-mark", mark)),
            IptRule("nat", "KUBE-POSTROUTING", masq),
            IptRule("nat", "KUBE-MARK-MASQ", ("-j", "MARK", "--or-mark", mark))]


def forward_accept_rules(mark: str, *, one_conntrack_rule: bool = True) -> list[IptRule]:
    """KUBE-FORWARD's accepts of marked and of established traffic (a FORWARD policy of DROP aside); before 1.23
    (versions "forward-conntrack-one-rule") the established traffic had two rules, "pod source" and "pod
    destination", matching the same."""
    marked = IptRule("filter", "KUBE-FORWARD", ("-m", "comment", "--comment", quoted("kubernetes forwarding rules"),
                                                "-m", "mark", "--mark", f"{mark}/{mark}", "-j", "ACCEPT"))
    names = (["kubernetes forwarding conntrack rule"] if one_conntrack_rule else
             ["kubernetes forwarding conntrack pod source rule", "kubernetes forwarding conntrack pod destination rule"])
    return [marked, *(IptRule("filter", "KUBE-FORWARD", ("-m", "comment", "--comment", quoted(n), "-m", "conntrack",
                                                         "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"))
                      for n in names)]


def user_and_builtin_chains(table: str, chains: Iterable[str]) -> list[str]:
    """Built-in chains, then user chains sorted (iptables-save's order)."""
    builtin = BUILTIN_CHAINS[table]
    return list(builtin) + sorted(set(chains) - set(builtin))


class SaveMemo:
    """Rules already printed by :func:`iptables_save`: nodes of one cluster share most of their rules (the same
    :class:`IptRule` objects when rendered with a shared :class:`~svctrace.kubeproxy.plan.Shared`), so a caller
    rendering many nodes passes one of these to all of them and prints each shared rule once."""

    __slots__ = ("chains", "rules", "shapes")

    def __init__(self) -> None:
        #: (table, chain, ipv6) -> (the chain's rules, its text) as last printed: a chain with the same rules
        #: on the next node is the same text.
        self.chains: dict[tuple[str, str, bool], tuple[list[IptRule], str]] = {}
        #: id(rule) -> (the rule, ipv6, its text); the rule is held, so its id is not reused meanwhile.
        self.rules: dict[int, tuple[IptRule, bool, str]] = {}
        #: (shape, ipv6) -> [the shape's text as a format string (None: print every instance in full),
        #: instances checked].
        self.shapes: dict[tuple[object, bool], list[Any]] = {}


# -- printing by shape ------------------------------------------------------------------------------------------
# Parsing a rule and printing it back as iptables-save does costs ~100 µs; a 20k-Service cluster has ~200k
# distinct rules but only a few dozen shapes (the KUBE-SEP DNAT rule, the KUBE-SVC probability rule, ...). A rule's
# shape is its text with the values that iptables-save prints unchanged -- chain names, host addresses, comments
# of plain characters, NodePorts -- replaced by placeholders; the shape is printed once and the values put back.
# Each shape is checked against the full parse-and-print on its first instances, and a shape whose check fails
# (a value iptables-save would rewrite) is never printed by shape again.

_PLACEHOLDER = re.compile(r'KUBE-Q\d+Q|240\.77\.\d+\.\d+(?![\d])|"svctrace C\d+"|(?<![\d.:/])650\d\d(?![\d.:/])')
_PORT = re.compile(r"[1-9]\d{0,4}")
_HOST = re.compile(r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}")
# A comment argument as kube-proxy writes it: hand-quoted ("ns/svc:port cluster IP") or bare (ns/svc:port).
_SAFE_COMMENT = re.compile(r'"[A-Za-z0-9 ./:_>-]*"|[A-Za-z0-9./:_>-]+')
_OPAQUE_CHAIN = ("KUBE-SVC-", "KUBE-SEP-", "KUBE-EXT-", "KUBE-FW-", "KUBE-SVL-")
_HOLD_AFTER = frozenset(("-j", "-g", "--name", "--comment", "--dport", "-s", "-d", "--to-destination"))
_CHECKS = 2  # instances of each shape printed both ways before the shape is trusted


def _shape(r: IptRule) -> tuple[tuple[str, str, tuple[str, ...]], list[str], list[str]]:
    """(the rule's shape, the values held out as iptables-save prints them, their placeholders). A comment's
    placeholder has a space, so it is printed quoted; its value goes back as iptables-save prints it (bare when
    it can be: xtables_save_string)."""
    values: list[str] = []
    holders: list[str] = []
    chain = r.chain
    if chain.startswith(_OPAQUE_CHAIN):
        values.append(chain)
        holders.append("KUBE-Q0Q")
        chain = "KUBE-Q0Q"
    args: list[str] = []
    prev = ""
    for a in r.args:
        if prev in _HOLD_AFTER:
            n = len(values)
            if prev == "--comment":
                if _SAFE_COMMENT.fullmatch(a) and "  " not in a:
                    values.append(xtables_save_string(a[1:-1] if a.startswith('"') else a))
                    a = f'"svctrace C{n}"'
                    holders.append(a)
            elif prev == "--dport":
                if _PORT.fullmatch(a) and int(a) < 65536 and n < 100:  # a NodePort: printed as given
                    values.append(a)
                    a = str(65000 + n)
                    holders.append(a)
            elif prev in ("-j", "-g", "--name"):
                if a.startswith(_OPAQUE_CHAIN):
                    values.append(a)
                    a = f"KUBE-Q{n}Q"
                    holders.append(a)
            else:  # -s, -d, --to-destination
                m = _HOST.match(a)
                # A host (bare, /32 or ip:port); a network stays in the shape (iptables-save prints its base).
                if m is not None and (a[m.end():m.end() + 1] in ("", ":") or a[m.end():] == "/32"):
                    values.append(m.group())
                    ph = f"240.77.{n // 250}.{n % 250 + 1}"
                    holders.append(ph)
                    a = ph + a[m.end():]
        args.append(a)
        prev = a
    return (r.table, chain, tuple(args)), values, holders


def _shape_format(shape: tuple[str, str, tuple[str, ...]], holders: list[str], ipv6: bool) -> str | None:
    """The shape as iptables-save prints it, each placeholder made ``{i}`` (i: its value's position)."""
    printed = IptRule(shape[0], shape[1], shape[2]).save_text(ipv6)
    if not printed:
        return None
    index = {ph: i for i, ph in enumerate(holders)}
    return _PLACEHOLDER.sub(lambda m: f"{{{index[m.group()]}}}" if m.group() in index else m.group(),
                            printed.replace("{", "{{").replace("}", "}}"))


def iptables_save(chains: Mapping[str, Iterable[str]], rules: Iterable[IptRule], ipv6: bool,
                  memo: SaveMemo | None = None) -> str:
    """What ``iptables-save`` (1.8.9) prints for the filter and nat tables holding ``chains`` and ``rules``
    (the rules of a chain in the order given)."""
    memo = SaveMemo() if memo is None else memo
    done = memo.rules
    shapes = memo.shapes

    def text(r: IptRule) -> str:
        shape, values, holders = _shape(r)
        entry = shapes.get((shape, ipv6))
        if entry is None:
            entry = shapes[(shape, ipv6)] = [_shape_format(shape, holders, ipv6), 0]
        fmt, checked = entry
        fast = fmt.format(*values) if fmt is not None else None
        if fast is None or checked < _CHECKS:
            found = r.save_text(ipv6)
            if fast is not None and fast != found:
                entry[0] = None  # this shape's values are rewritten when printed: always the full path
            elif fast is not None:
                entry[1] = checked + 1
        else:
            found = fast
        done[id(r)] = (r, ipv6, found)
        return found

    by_chain: dict[tuple[str, str], list[IptRule]] = {}
    for r in rules:
        key = (r.table, r.chain)
        got = by_chain.get(key)
        if got is None:
            by_chain[key] = [r]
        else:
            got.append(r)
    out: list[str] = []
    get = done.get
    last = memo.chains
    for table in SAVE_TABLES:
        out.append(f"*{table}")
        names = user_and_builtin_chains(table, chains.get(table, ()))
        builtin = BUILTIN_CHAINS[table]
        for c in names:
            out.append(f":{c} ACCEPT [0:0]" if c in builtin else f":{c} - [0:0]")
        for c in names:
            rs = by_chain.get((table, c))
            if not rs:
                continue
            before = last.get((table, c, ipv6))
            if before is not None and before[0] == rs:  # the same rule objects, mostly: compared by identity
                out.append(before[1])
                continue
            lines = []
            for r in rs:
                hit = get(id(r))
                lines.append(hit[2] if hit is not None and hit[0] is r and hit[1] is ipv6 else text(r))
            joined = "\n".join(lines)
            last[(table, c, ipv6)] = (rs, joined)
            out.append(joined)
        out.append("COMMIT")
    return "\n".join(out) + "\n"


def ip_addr_json(node_name: str, node_ips: Iterable[str], extra: Iterable[dict[str, object]] = ()) -> str:
    """An ``ip -j addr`` of the node: ``lo`` and ``eth0`` carrying ``node_ips`` (``ip`` or ``ip/prefix``; /24
    and /64 by default), then the links of ``extra`` (made with :func:`link`)."""
    lo = link(1, "lo", ["LOOPBACK", "UP", "LOWER_UP"], 65536, "noqueue", "UNKNOWN", "loopback",
              "00:00:00:00:00:00", "00:00:00:00:00:00", [
                  addr("inet", "127.0.0.1", 8, "host", "lo"), addr("inet6", "::1", 128, "host", None)])
    eth_addrs = []
    for text in node_ips:
        iface = ipaddress.ip_interface(text if "/" in text else f"{text}/{64 if ':' in text else 24}")
        if iface.version == 6:
            eth_addrs.append(addr("inet6", str(iface.ip), iface.network.prefixlen, "global", None))
        else:
            plen = iface.network.prefixlen
            eth_addrs.append(addr("inet", str(iface.ip), plen, "global", "eth0",
                                  str(iface.network.broadcast_address) if plen < 31 else None))
    eth = link(2, "eth0", ["BROADCAST", "MULTICAST", "UP", "LOWER_UP"], 1500, "fq_codel", "UP", "ether",
               mac(node_name, "eth0"), "ff:ff:ff:ff:ff:ff", eth_addrs)
    return json.dumps([lo, eth, *extra], separators=(",", ":")) + "\n"


def link(index: int, name: str, flags: list[str], mtu: int, qdisc: str, state: str, link_type: str,
         mac_address: str, broadcast: str, addrs: list[dict[str, object]]) -> dict[str, object]:
    return {"ifindex": index, "ifname": name, "flags": flags, "mtu": mtu, "qdisc": qdisc, "operstate": state,
            "group": "default", "txqlen": 1000, "link_type": link_type, "address": mac_address,
            "broadcast": broadcast, "addr_info": addrs}


def addr(family: str, local: str, prefixlen: int, scope: str, label: str | None,
         broadcast: str | None = None) -> dict[str, object]:
    a: dict[str, object] = {"family": family, "local": local, "prefixlen": prefixlen}
    if broadcast is not None:
        a["broadcast"] = broadcast
    a["scope"] = scope
    if label is not None:
        a["label"] = label
    a |= {"valid_life_time": 4294967295, "preferred_life_time": 4294967295}
    return a


def mac(node: str, iface: str) -> str:
    """A stable, locally administered MAC address for the node's interface."""
    digest = hashlib.sha256(f"{node}/{iface}".encode()).digest()
    return ":".join(f"{b:02x}" for b in (0x02, *digest[:5]))
