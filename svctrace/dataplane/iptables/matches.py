"""Evaluate iptables matches against the walker's state.

An evaluator returns True or False when the dump decides, a float in (0, 1) for a random match
(the probability that it matches), or an `Unknown` when the answer depends on something the dump
does not hold (an interface, a bridge port, an ipset that was not collected...). The walker
splits on floats and Unknowns.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable

from svctrace.dataplane.iptables.rules import Match, Opt
from svctrace.dataplane.kernel import State, Unknown, iface_match, iface_unknown
from svctrace.model.packet import NodeFacts

Result = bool | float | Unknown
Evaluator = Callable[["State", Match, NodeFacts], Result]

PROBABILITY_SCALE = 0x80000000


def kernel_probability(p: float) -> float:
    """What `-m statistic --mode random --probability p` really does.

    libxt_statistic stores lround(p * 2^31) and xt_statistic matches when
    (get_random_u32() & 0x7FFFFFFF) < that value, so the kernel's probability is
    round(p * 2^31) / 2^31 (iptables-save prints that back with %.11f: 1/3 -> 0.33333333349).
    """
    if p <= 0:
        return 0.0
    if p >= 1:
        return 1.0
    return round(p * PROBABILITY_SCALE) / PROBABILITY_SCALE


def _net(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(text, strict=False)


def _plain_v4(text: str) -> tuple[int, int, int] | None:
    """`a.b.c.d` or `a.b.c.d/N` as (4, network, mask) -- what `ip_network(text, strict=False)` means, read with
    inet_pton instead of building a network object (a question's endpoint chains each hold a new address)."""
    host, slash, plen = text.partition("/")
    if slash:
        if not (plen.isascii() and plen.isdigit()) or int(plen) > 32:  # ipaddress's prefix rule; masks: slow path
            return None
        bits = int(plen)
    else:
        bits = 32
    try:
        value = int.from_bytes(socket.inet_pton(socket.AF_INET, host), "big")
    except (OSError, ValueError):
        return None
    mask = (0xFFFFFFFF << (32 - bits)) & 0xFFFFFFFF
    return 4, value & mask, mask


def _addr(st: State, m: Match, which: str) -> Result:
    o = m.opts[0]
    net = m.cache
    if net is None:
        try:
            net = _plain_v4(o.arg) or _net(o.arg)
        except ValueError:
            net = _masked(o.arg)
            if net is None:
                return Unknown(f"addr:{which}:{o.arg}", f"the address {o.arg!r} matches")
        m.cache = net
    ip = st.pkt.src if which == "s" else st.pkt.dst
    if isinstance(net, tuple):  # (ip & mask) == (addr & mask): plain IPv4, or a non-contiguous mask as iptables takes
        version, value, mask = net
        return (ip.version == version and (int(ip) & mask) == value) != o.neg
    assert isinstance(net, ipaddress.IPv4Network | ipaddress.IPv6Network)
    if ip.version != net.version:
        return o.neg
    return (ip in net) != o.neg


def _masked(text: str) -> tuple[int, int, int] | None:
    """`10.9.0.0/255.255.0.255`: iptables accepts any mask, not only prefixes."""
    if "/" not in text:
        return None
    a, m = text.split("/", 1)
    try:
        addr, mask = ipaddress.ip_address(a), ipaddress.ip_address(m)
    except ValueError:
        return None
    if addr.version != mask.version:
        return None
    return addr.version, int(addr) & int(mask), int(mask)


def _src(st: State, m: Match, node: NodeFacts) -> Result:
    return _addr(st, m, "s")


def _dst(st: State, m: Match, node: NodeFacts) -> Result:
    return _addr(st, m, "d")


def _proto(st: State, m: Match, node: NodeFacts) -> Result:
    o = m.opts[0]
    want = o.arg
    if want in ("all", "0"):
        return not o.neg
    p = st.pkt.proto
    hit = want == p or (want in ("icmpv6", "ipv6-icmp", "icmp6") and p == "icmpv6")
    return hit != o.neg


# -- interfaces: the input/output interface is often unknown; treat it as a symbolic value ------------

def _iface(st: State, m: Match, which: str) -> Result:
    o = m.opts[0]
    name = st.iif if which == "i" else st.oif
    if name is not None:
        return iface_match(o.arg, name) != o.neg
    return iface_unknown(st.ifaces, which, o.arg, o.neg)


def _in(st: State, m: Match, node: NodeFacts) -> Result:
    return _iface(st, m, "i")


def _out(st: State, m: Match, node: NodeFacts) -> Result:
    return _iface(st, m, "o")


def _frag(st: State, m: Match, node: NodeFacts) -> Result:
    return m.opts[0].neg  # a first packet is never a non-first fragment


# -- ports --------------------------------------------------------------------------------------

def port_range(text: str) -> tuple[int, int]:
    t = text.strip()
    if ":" in t:
        a, b = t.split(":", 1)
        lo = int(a) if a else 0
        hi = int(b) if b else 65535
        return lo, hi
    if "-" in t:  # nft-ish or iptables -L spelling
        a, b = t.split("-", 1)
        return int(a), int(b)
    v = int(t)
    return v, v


def _port_ok(port: int | None, spec: str) -> bool:
    if port is None:
        return False
    for part in spec.split(","):
        lo, hi = port_range(part)
        if lo <= port <= hi:
            return True
    return False


TCP_FLAGS = {"FIN": 1, "SYN": 2, "RST": 4, "PSH": 8, "ACK": 16, "URG": 32, "ECE": 64, "CWR": 128}


def _flags(text: str) -> int:
    if text in ("ALL",):
        return 255
    if text in ("NONE",):
        return 0
    v = 0
    for f in text.split(","):
        v |= TCP_FLAGS.get(f.upper(), 0) if f.upper() != "ALL" else 255
    return v


def _l4(st: State, m: Match, node: NodeFacts, proto: str) -> Result:
    if st.pkt.proto != proto:
        return False
    for o in m.opts:
        if o.name in ("--sport", "--dport"):
            try:
                ok = _port_ok(st.pkt.sport if o.name == "--sport" else st.pkt.dport, o.arg)
            except ValueError:
                return Unknown(f"port:{o.arg}", f"port {o.arg!r} (a service name) matches")
            if o.name == "--sport" and st.pkt.sport is None:
                return Unknown(f"sport:{o.arg}", f"the source port is in {o.arg}")
            if ok == o.neg:
                return False
        elif o.name == "--tcp-flags":
            if len(o.args) < 2:
                return False
            mask, comp = _flags(o.args[0]), _flags(o.args[1])
            ok = (TCP_FLAGS["SYN"] & mask) == comp  # a first packet is a plain SYN
            if ok == o.neg:
                return False
        elif o.name == "--syn":
            if o.neg:
                return False
        elif o.name == "--tcp-option":
            return Unknown(f"tcp-option:{o.arg}", f"the SYN carries TCP option {o.arg}")
        elif o.name == "--chunk-types":
            return Unknown(f"sctp:{' '.join(o.args)}", "the SCTP chunk types match")
        else:
            return Unknown(f"{m.module}:{o.name}", f"{m.module} {o.name} matches")
    return True


def _tcp(st: State, m: Match, node: NodeFacts) -> Result:
    return _l4(st, m, node, "tcp")


def _udp(st: State, m: Match, node: NodeFacts) -> Result:
    return _l4(st, m, node, "udp")


def _sctp(st: State, m: Match, node: NodeFacts) -> Result:
    return _l4(st, m, node, "sctp")


def _multiport(st: State, m: Match, node: NodeFacts) -> Result:
    if not st.pkt.has_ports:
        return False
    for o in m.opts:
        try:
            if o.name == "--dports":
                ok = _port_ok(st.pkt.dport, o.arg)
            elif o.name == "--sports":
                if st.pkt.sport is None:
                    return Unknown(f"sport:{o.arg}", f"the source port is in {o.arg}")
                ok = _port_ok(st.pkt.sport, o.arg)
            else:
                ok = _port_ok(st.pkt.dport, o.arg) or (st.pkt.sport is not None and _port_ok(st.pkt.sport, o.arg))
        except ValueError:
            return Unknown(f"port:{o.arg}", f"ports {o.arg!r} match")
        if ok == o.neg:
            return False
    return True


ICMP_TYPES: dict[str, tuple[int, int | None]] = {
    "any": (255, None), "echo-reply": (0, None), "pong": (0, None), "destination-unreachable": (3, None),
    "network-unreachable": (3, 0), "host-unreachable": (3, 1), "protocol-unreachable": (3, 2),
    "port-unreachable": (3, 3), "fragmentation-needed": (3, 4), "source-quench": (4, None),
    "redirect": (5, None), "echo-request": (8, None), "ping": (8, None), "router-advertisement": (9, None),
    "router-solicitation": (10, None), "time-exceeded": (11, None), "ttl-exceeded": (11, None),
    "parameter-problem": (12, None), "timestamp-request": (13, None), "timestamp-reply": (14, None),
    "address-mask-request": (17, None), "address-mask-reply": (18, None),
}
ICMP6_TYPES: dict[str, tuple[int, int | None]] = {
    "destination-unreachable": (1, None), "packet-too-big": (2, None), "time-exceeded": (3, None),
    "parameter-problem": (4, None), "echo-request": (128, None), "ping": (128, None),
    "echo-reply": (129, None), "pong": (129, None), "router-solicitation": (133, None),
    "router-advertisement": (134, None), "neighbour-solicitation": (135, None),
    "neighbor-solicitation": (135, None), "neighbour-advertisement": (136, None),
    "neighbor-advertisement": (136, None), "redirect": (137, None),
}


def _icmp_generic(st: State, m: Match, proto: str, table: dict[str, tuple[int, int | None]]) -> Result:
    if st.pkt.proto != proto:
        return False
    for o in m.opts:
        spec = o.arg
        if spec in table:
            t, c = table[spec]
        else:
            try:
                if "/" in spec:
                    a, b = spec.split("/", 1)
                    t, c = int(a), int(b)
                else:
                    t, c = int(spec), None
            except ValueError:
                return Unknown(f"icmp:{spec}", f"ICMP type {spec} matches")
        ok = t == 255 or (st.pkt.icmp_type == t and (c is None or (st.pkt.icmp_code or 0) == c))
        if ok == o.neg:
            return False
    return True


def _icmp(st: State, m: Match, node: NodeFacts) -> Result:
    return _icmp_generic(st, m, "icmp", ICMP_TYPES)


def _icmp6(st: State, m: Match, node: NodeFacts) -> Result:
    return _icmp_generic(st, m, "icmpv6", ICMP6_TYPES)


def _comment(st: State, m: Match, node: NodeFacts) -> Result:
    return True


def _statistic(st: State, m: Match, node: NodeFacts) -> Result:
    mode = m.opt("--mode")
    if mode is None or mode.arg == "random":
        o = m.opt("--probability")
        if o is None:
            return Unknown("statistic", "the statistic match matches")
        try:
            p = kernel_probability(float(o.arg))
        except ValueError:
            return Unknown(f"statistic:{o.arg}", f"probability {o.arg!r} matches")
        if o.neg:
            p = 1.0 - p
        return p if 0.0 < p < 1.0 else p >= 1.0
    if mode.arg == "nth":
        every = m.opt("--every")
        try:
            n = int(every.arg) if every else 1
        except ValueError:
            return Unknown("nth", "the nth match matches")
        # The counter's phase is unknown for one packet: over many, 1 in n matches.
        p = 1.0 / n if n > 0 else 1.0
        if every is not None and every.neg:
            p = 1.0 - p
        return p if 0.0 < p < 1.0 else p >= 1.0
    return Unknown(f"statistic:{mode.arg}", f"statistic mode {mode.arg} matches")


def _recent(st: State, m: Match, node: NodeFacts) -> Result:
    name_opt = m.opt("--name")
    name = name_opt.arg if name_opt else "DEFAULT"
    neg = False
    action = "--rcheck"
    for o in m.opts:
        if o.name in ("--set", "--rcheck", "--update", "--remove"):
            action = o.name
            neg = o.neg
    if action == "--set":
        result = True  # adds the source and matches
        st.recent_set.append(name)
    elif action == "--remove":
        result = st.remembered == name
        if result:
            st.remembered = None
    else:
        # A new client (no entry in any list) never matches --rcheck/--update; a returning
        # client matches the list of the endpoint it was sent to the first time, while its entry is younger than
        # --seconds (xt_recent.c recent_mt: a stamp after `jiffies - seconds * HZ`; --reap drops older ones).
        result = st.remembered == name
        secs = m.opt("--seconds")
        if result and secs is not None and node.affinity_age is not None and secs.arg.isdigit():
            result = node.affinity_age < float(secs.arg)
    return result != neg


def _addr_type(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, node: NodeFacts) -> str:
    if node.is_local(ip):
        return "LOCAL"
    if ip.is_multicast:
        return "MULTICAST"
    if ip.version == 4 and int(ip) == 0xFFFFFFFF:
        return "BROADCAST"
    if ip.is_unspecified:
        return "UNSPEC"
    return "UNICAST"


def _addrtype(st: State, m: Match, node: NodeFacts) -> Result:
    for o in m.opts:
        if o.name in ("--src-type", "--dst-type"):
            ip = st.pkt.src if o.name == "--src-type" else st.pkt.dst
            types = {t.strip().upper() for t in o.arg.split(",")}
            ok = _addr_type(ip, node) in types
            if ok == o.neg:
                return False
    return True


def _mask_value(text: str) -> tuple[int, int]:
    if "/" in text:
        v, msk = text.split("/", 1)
        return int(v, 0), int(msk, 0)
    return int(text, 0), 0xFFFFFFFF


def _marked(value: int, m: Match) -> Result:
    for o in m.opts:
        try:
            v, msk = _mask_value(o.arg)
        except ValueError:
            return Unknown(f"{m.module}:{o.arg}", f"{m.module} {o.arg} matches")
        if ((value & msk) == v) == o.neg:
            return False
    return True


def _mark(st: State, m: Match, node: NodeFacts) -> Result:
    return _marked(st.mark, m)


def _connmark(st: State, m: Match, node: NodeFacts) -> Result:
    return _marked(st.ctmark, m)


_STATE_LISTS: dict[str, frozenset[str]] = {}  # `--ctstate NEW,ESTABLISHED` -> its words, read once per text


def _state_list(text: str) -> frozenset[str]:
    got = _STATE_LISTS.get(text)
    if got is None:
        got = _STATE_LISTS[text] = frozenset(x.strip().upper() for x in text.split(","))
    return got


def _ct_hit(st: State, wanted: frozenset[str], with_nat: bool) -> bool:
    """Whether the walked packet's connection is in one of the `wanted` states. A first packet's connection is
    NEW, or UNTRACKED after NOTRACK; `-m conntrack` (`with_nat`) also sees DNAT / SNAT once NAT changed its
    destination / source (`-m state` does not). Tested against those sets in test_walker."""
    if st.untracked:
        return "UNTRACKED" in wanted
    if "NEW" in wanted:
        return True
    return with_nat and (("DNAT" in wanted and st.dnat is not None and st.dnat_changed)
                         or ("SNAT" in wanted and st.snat_changed))


def _net_ok(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, text: str) -> bool:
    try:
        return ip in _net(text)
    except ValueError:
        return False


def _conntrack(st: State, m: Match, node: NodeFacts) -> Result:
    for o in m.opts:
        n = o.name
        if n == "--ctstate":
            ok = _ct_hit(st, _state_list(o.arg), True)
        elif n == "--ctstatus":
            bits = {"CONFIRMED"} if st.confirmed else set()
            ok = bool(bits & {x.strip().upper() for x in o.arg.split(",")})
        elif n == "--ctproto":
            ok = o.arg.lower() in (st.orig.proto, str(_proto_num(st.orig.proto)))
        elif n == "--ctorigsrc":
            ok = _net_ok(st.orig.src, o.arg)
        elif n == "--ctorigdst":
            ok = _net_ok(st.orig.dst, o.arg)
        elif n == "--ctreplsrc":
            ok = _net_ok(st.pkt.dst, o.arg)
        elif n == "--ctrepldst":
            ok = _net_ok(st.pkt.src, o.arg)
        elif n in ("--ctorigsrcport", "--ctorigdstport", "--ctreplsrcport", "--ctrepldstport"):
            port = {"--ctorigsrcport": st.orig.sport, "--ctorigdstport": st.orig.dport,
                    "--ctreplsrcport": st.pkt.dport, "--ctrepldstport": st.pkt.sport}[n]
            if port is None:
                return Unknown(f"ct:{n}:{o.arg}", f"conntrack {n} {o.arg} matches")
            ok = _port_ok(port, o.arg)
        elif n == "--ctdir":
            ok = o.arg.upper() == "ORIGINAL"
        else:
            return Unknown(f"ct:{n}:{o.arg}", f"conntrack {n} {o.arg} matches")
        if ok == o.neg:
            return False
    return True


def _proto_num(p: str) -> int:
    return {"icmp": 1, "tcp": 6, "udp": 17, "sctp": 132, "icmpv6": 58}.get(p, -1)


def _state(st: State, m: Match, node: NodeFacts) -> Result:
    for o in m.opts:
        ok = _ct_hit(st, _state_list(o.arg), False)
        if ok == o.neg:
            return False
    return True


def _set(st: State, m: Match, node: NodeFacts) -> Result:
    o = m.opt("--match-set")
    if o is None or len(o.args) < 2:
        return Unknown("set", "the ipset match matches")
    name, flags = o.args[0], o.args[1]
    s = node.ipsets.get(name)
    if s is None:
        return Unknown(f"set:{name}:{flags}", f"the packet's {flags} is in ipset {name} (not collected)", neg=o.neg)
    from svctrace.dataplane.ipset import member_of

    ok = member_of(s, st.pkt, flags.split(","))
    if ok is None:
        return Unknown(f"set:{name}:{flags}", f"the packet's {flags} is in ipset {name}")
    return ok != o.neg


def _iprange(st: State, m: Match, node: NodeFacts) -> Result:
    for o in m.opts:
        ip = st.pkt.src if o.name == "--src-range" else st.pkt.dst
        try:
            a, b = o.arg.split("-", 1)
            lo, hi = ipaddress.ip_address(a), ipaddress.ip_address(b)
        except ValueError:
            return Unknown(f"iprange:{o.arg}", f"the address is in {o.arg}")
        ok = lo.version == ip.version and lo <= ip <= hi  # type: ignore[operator]
        if ok == o.neg:
            return False
    return True


def _assumed_true(what: str) -> Evaluator:
    def ev(st: State, m: Match, node: NodeFacts) -> Result:
        return Unknown(f"{m.module}:{_opts_text(m.opts)}", what, split=False)

    return ev


def _split_unknown(what: str) -> Evaluator:
    def ev(st: State, m: Match, node: NodeFacts) -> Result:
        return Unknown(f"{m.module}:{_opts_text(m.opts)}", f"{what} ({m.module} {_opts_text(m.opts)})")

    return ev


def _opts_text(opts: list[Opt]) -> str:
    return " ".join(("! " if o.neg else "") + " ".join((o.name, *o.args)) for o in opts)


def _owner(st: State, m: Match, node: NodeFacts) -> Result:
    if st.pkt.origin != "local":
        return any(o.neg for o in m.opts)  # forwarded packets have no socket owner
    return Unknown(f"owner:{_opts_text(m.opts)}", f"the sending process matches owner {_opts_text(m.opts)}")


def _pkttype(st: State, m: Match, node: NodeFacts) -> Result:
    for o in m.opts:
        dst = st.pkt.dst
        kind = "multicast" if dst.is_multicast else ("broadcast" if dst.version == 4 and int(dst) == 0xFFFFFFFF
                                                   else "unicast")
        want = o.arg.lower()
        ok = want == kind or (want == "host" and kind == "unicast")
        if ok == o.neg:
            return False
    return True


def _policy(st: State, m: Match, node: NodeFacts) -> Result:
    pol = m.opt("--pol")
    if pol is None:
        return Unknown("policy", "the IPsec policy matches")
    ok = pol.arg == "none"  # no IPsec in play for a plain packet
    return ok != pol.neg


def _dscp(st: State, m: Match, node: NodeFacts) -> Result:
    for o in m.opts:
        try:
            ok = int(o.arg, 0) == 0 if o.name in ("--dscp", "--tos") else o.arg.upper() in ("CS0", "BE")
        except ValueError:
            return Unknown(f"{m.module}:{o.arg}", f"{m.module} {o.arg} matches")
        if ok == o.neg:
            return False
    return True


def _physdev(st: State, m: Match, node: NodeFacts) -> Result:
    """xt_physdev on a routed packet. With the node's interfaces known: a packet that came in on a device that is
    no bridge has no bridge input port, and a routed packet has no bridge output port yet at FORWARD (the
    bridge picks it later), and none of the walk's packets is bridged (svctrace walks the IP layer). Else, or
    when it came in on a bridge (which port is unknown), both cases are walked."""
    host = node.host
    if host is None or host.links is None:
        return Unknown(f"physdev:{_opts_text(m.opts)}", f"the packet crosses a bridge port (physdev {_opts_text(m.opts)})")
    iif_bridge = st.iif is not None and any(master == st.iif for master in host.links.values())
    for o in m.opts:
        if o.name in ("--physdev-in", "--physdev-is-in"):
            if st.iif is None or iif_bridge:
                return Unknown(f"physdev:{_opts_text(m.opts)}", f"the packet came in through a port of bridge "
                                                                f"{st.iif or '?'} ({_opts_text(m.opts)})")
            val = False
        elif o.name in ("--physdev-out", "--physdev-is-out", "--physdev-is-bridged"):
            val = False
        else:
            return Unknown(f"physdev:{_opts_text(m.opts)}", "the packet crosses a bridge port")
        if val != o.neg:
            continue
        return False
    return True


def _helper(st: State, m: Match, node: NodeFacts) -> Result:
    return Unknown(f"helper:{_opts_text(m.opts)}", "a conntrack helper is attached")


def _socket(st: State, m: Match, node: NodeFacts) -> Result:
    return Unknown(f"socket:{_opts_text(m.opts)}", "a local socket matches the packet")


EVALUATORS: dict[str, Evaluator] = {
    "-s": _src, "-d": _dst, "-p": _proto, "-i": _in, "-o": _out, "-f": _frag,
    "comment": _comment, "tcp": _tcp, "udp": _udp, "sctp": _sctp, "udplite": _udp, "multiport": _multiport,
    "icmp": _icmp, "icmp6": _icmp6, "statistic": _statistic, "recent": _recent, "addrtype": _addrtype,
    "mark": _mark, "connmark": _connmark, "conntrack": _conntrack, "state": _state, "set": _set,
    "iprange": _iprange, "owner": _owner, "pkttype": _pkttype, "policy": _policy, "dscp": _dscp, "tos": _dscp,
    "helper": _helper, "socket": _socket,
    "limit": _assumed_true("the packet is within the rate limit (a first packet usually is)"),
    "hashlimit": _assumed_true("the packet is within the hashlimit rate (a first packet usually is)"),
    "connlimit": _assumed_true("the connection limit is not reached"),
    "quota": _assumed_true("the quota is not used up"),
    "time": _assumed_true("the time window matches"),
    "physdev": _physdev,
    "devgroup": _split_unknown("the device group matches"),
    "rpfilter": _split_unknown("the reverse-path check passes"),
    "mac": _split_unknown("the source MAC matches"),
    "length": _split_unknown("the packet length matches"),
    "ttl": _split_unknown("the TTL matches"),
    "hl": _split_unknown("the hop limit matches"),
    "cgroup": _split_unknown("the sending cgroup matches"),
    "ipvs": _split_unknown("the packet belongs to an IPVS connection"),
    "connbytes": _split_unknown("the connection byte count matches"),
    "string": _split_unknown("the payload matches"),
    "u32": _split_unknown("the u32 expression matches"),
    "bpf": _split_unknown("the BPF program matches"),
    "cluster": _split_unknown("the cluster hash matches"),
    "ecn": _split_unknown("the ECN bits match"),
    "ipv6header": _split_unknown("the IPv6 extension headers match"),
    # xt_nfacct.c nfacct_mt: counts the packet and matches unless its accounting object is under a quota
    # (nfnl_acct_overquota: NFACCT_NO_QUOTA for an object made without one, as kube-proxy's counters are).
    "nfacct": lambda st, m, node: True,
    "cpu": _split_unknown("the packet is handled on that CPU"),
}


def evaluator_of(m: Match) -> Evaluator:
    """The function that decides `m` (what `evaluate` would call), looked up once per match by the walker."""
    ev = EVALUATORS.get(m.module)
    return ev if ev is not None and m.known else evaluate


def evaluate(st: State, m: Match, node: NodeFacts) -> Result:
    ev = EVALUATORS.get(m.module)
    if ev is None or not m.known:
        return Unknown(f"unknown:{m.module}:{_opts_text(m.opts)}",
                       f"the match {m.module} {_opts_text(m.opts)} (not understood by svctrace) matches")
    return ev(st, m, node)
