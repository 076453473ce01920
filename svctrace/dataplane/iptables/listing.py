"""Turn `iptables -L` listings back into iptables-save text.

People often paste `iptables [-t TABLE] -L [CHAIN] [-n] [-v] [-x] [--line-numbers]` (or `ip6tables -nL`)
instead of `iptables-save`. This module rewrites such a listing into iptables-save syntax, so the one
iptables-save parser can load it:

    *nat
    :PREROUTING ACCEPT [0:0]
    :KUBE-SERVICES - [0:0]
    -A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
    COMMIT

The columns (target, prot, opt, in, out, source, destination) become `-s/-d/-i/-o/-p/-f`; the match
summary, written in the -L vocabulary of each iptables extension (`tcp dpt:80`, `ADDRTYPE match dst-type
LOCAL`, `statistic mode random probability 0.5`, `/* comment */`, `DNAT ... to:10.0.3.16:8080`...), is
translated back to the save options of that extension, in the order it was printed (which is the rule's
match order). Anything the translator does not understand is left out of the rule, and the rule's input
line is recorded in `partial_lines` with a warning: a rule that lost a match matches more than the real
one did, so the caller must not trust a verdict that depends on it.

Spelling: the output is what iptables-save would print for the same rules (so the real
`iptables-restore --test` loads it, and loading it then saving gives back the original save text), except
that MARK/CONNMARK targets keep the -L wording: "MARK or 0x4000" becomes `--or-mark 0x4000` where
iptables-save would say `--set-xmark 0x4000/0x4000` (likewise --xor-mark, --and-mark, --set-mark;
"xset V/M" is `--set-xmark V/M`), and `-j NOTRACK`, listed as target CT with the text NOTRACK, comes back
as `-j CT --notrack`.

What -L cannot give back and this module does not invent:
- counters: chain policies are written `[0:0]`, rules carry no counters (-v figures are rounded anyway);
- interfaces, in a listing made without -v: there are no in/out columns at all, so `-i`/`-o` matches are
  silently missing; `ListingBlock.interfaces_known` is False and a warning says so;
- addresses and ports printed as names (a listing made without -n): ports are turned back into numbers
  from a built-in table and the local services database, host names are kept as they are, with a warning;
- chains jumped to but not listed (a `-L CHAIN` listing, an excerpt): they are declared empty so the text
  loads, named in `ListingBlock.unlisted_chains` and in a warning, since their rules are unknown;
- the table, when no command line says it: it is inferred from chain names and targets (and said so).

Shell prompts, command lines (whose `-t TABLE` and `ip6tables` are remembered), warning and error lines,
`...` elisions and rows before any chain header are skipped with a warning naming the line. Blank lines
are skipped silently: every listing has one between chains. Each pasted command starts a new section;
sections of the same table and family are merged into one `*table` block, IPv4 and IPv6 never are.

Stdlib only; nothing here does I/O except the services/protocols look-ups of the socket module.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache

from svctrace.dataplane.iptables.rules import BUILTIN_CHAINS
from svctrace.errors import shorten

__all__ = [
    "ListingBlock",
    "ListingConversion",
    "listing_to_save",
    "looks_like_listing",
    "save_string",
]



@dataclass
class ListingBlock:
    """One `*table` ... `COMMIT` block of the produced text."""

    table: str
    family: int  # 4 (iptables) or 6 (ip6tables)
    table_source: str  # "command" (-t in a command line), "argument", "default" (command without -t), "inferred"
    chains: list[str]  # chains listed in the input, in listing order
    unlisted_chains: list[str]  # chains jumped to but not listed: declared empty, contents unknown
    start: int  # index of the "*table" line in text.splitlines()
    end: int  # index one past its "COMMIT" line
    interfaces_known: bool = True  # False when listed without -v: -i/-o matches were not printed at all


@dataclass
class ListingConversion:
    """iptables-save text made from a listing, and where each of its lines came from."""

    text: str
    line_map: list[int]  # per line of text: 1-based input line, 0 for synthesised lines (COMMIT, ...)
    warnings: list[tuple[int, str]]  # (input line, message), sorted by line
    partial_lines: set[int] = field(default_factory=set)  # input lines whose rule lost part of its summary
    blocks: list[ListingBlock] = field(default_factory=list)

    @property
    def rule_count(self) -> int:
        return sum(1 for line in self.text.splitlines() if line.startswith("-A "))


# --------------------------------------------------------------------------- line classes

_CHAIN_RE = re.compile(r"^\s*Chain\s+(\S+)\s+\((?:policy\s+([A-Z]+)\b[^)]*|(\d+)\s+references?)\)\s*$")
_COLS_RE = re.compile(
    r"^\s*(num\s+)?(pkts\s+bytes\s+)?target\s+prot\s+opt\s+(in\s+out\s+)?source\s+destination\s*$"
)
_WARN_RE = re.compile(
    r"^\s*(?:#\s*)?(?:Warning:|WARNING:|Perhaps iptables|Try `|iptables: |ip6tables: |"
    r"ip6?tables(?:-legacy|-nft)?(?:-save|-restore)?\s+v\d[^:]*:)"
)
_CMD_RE = re.compile(
    r"^\s*(?:.*?[$#>%]\s*(?:.*?\s)?)?(?:sudo\s+(?:-\S+\s+)*)?(?:\S*/)?(ip6?tables(?:-legacy|-nft)?)(?:\s+(.*))?$"
)
_CMD_NO_PROMPT_RE = re.compile(r"(?:^|\s)(ip6?tables(?:-legacy|-nft)?)\s+(.*(?:\s-[a-zA-Z]*L|\s--list\b).*)$")
_ELISION_RE = re.compile(r"^\s*(?:\.{2,}|…|-{2,}|\[\.\.\.\])\s*$")
_TOKEN_RE = re.compile(r"\S+")
_COUNTER_RE = re.compile(r"^\d+[KMGTP]?$")
_OPT_RE = re.compile(r"^[-!][-f]$")
_IPV4_RE = re.compile(r"^\d{1,3}(?:\.\d{1,3}){3}$")
_EC2_RE = re.compile(r"^ip-(\d+)-(\d+)-(\d+)-(\d+)\.")

_KNOWN_HOSTS = {
    "loopback": "127.0.0.0",
    "localhost": "127.0.0.1",
    "base-address.mcast.net": "224.0.0.0",
    "link-local": "169.254.0.0",
}

TARGET_EXTENSIONS = frozenset(
    {
        "ACCEPT", "DROP", "RETURN", "QUEUE", "REJECT", "DNAT", "SNAT", "MASQUERADE", "REDIRECT", "NETMAP",
        "MARK", "CONNMARK", "LOG", "NFLOG", "ULOG", "CHECKSUM", "TCPMSS", "CT", "NOTRACK", "TRACE",
        "TPROXY", "TEE", "TOS", "DSCP", "TTL", "HL", "CLASSIFY", "NFQUEUE", "SET", "SECMARK", "CONNSECMARK",
        "AUDIT", "IDLETIMER", "LED", "RATEEST", "CLUSTERIP", "ECN", "SYNPROXY", "DNPT", "SNPT", "HMARK",
        "TCPOPTSTRIP"
    }
)

_PROTO_NAMES = frozenset(
    {
        "all", "tcp", "udp", "udplite", "icmp", "ipv6-icmp", "icmpv6", "icmp6", "sctp", "dccp", "esp", "ah",
        "gre", "igmp", "ipip", "ipencap", "ipv6", "mh", "ospf", "ospfigp", "pim", "vrrp", "l2tp"
    }
)

# The usual /etc/services names, so a listing made without -n converts the same on every machine.
_SERVICES = {
    "ftp-data": 20, "ftp": 21, "ssh": 22, "telnet": 23, "smtp": 25, "domain": 53, "bootps": 67,
    "bootpc": 68, "tftp": 69, "http": 80, "www": 80, "kerberos": 88, "pop3": 110, "sunrpc": 111,
    "ntp": 123, "netbios-ssn": 139, "imap2": 143, "imap": 143, "snmp": 161, "bgp": 179, "ldap": 389,
    "https": 443, "microsoft-ds": 445, "submission": 587, "ldaps": 636, "rsync": 873, "imaps": 993,
    "pop3s": 995, "openvpn": 1194, "mysql": 3306, "nfs": 2049, "etcd-client": 2379, "etcd-server": 2380,
    "postgresql": 5432, "amqp": 5672, "x11": 6000, "http-alt": 8080, "webcache": 8080, "bacula-fd": 9102,
    "mongodb": 27017, "redis": 6379, "memcache": 11211, "zabbix-agent": 10050, "zabbix-trapper": 10051,
}

_ICMP_TYPES: dict[str, tuple[int, int | None]] = {
    "any": (255, None), "echo-reply": (0, None), "pong": (0, None), "destination-unreachable": (3, None),
    "network-unreachable": (3, 0), "host-unreachable": (3, 1), "protocol-unreachable": (3, 2),
    "port-unreachable": (3, 3), "fragmentation-needed": (3, 4), "source-route-failed": (3, 5),
    "network-unknown": (3, 6), "host-unknown": (3, 7), "network-prohibited": (3, 9),
    "host-prohibited": (3, 10), "TOS-network-unreachable": (3, 11), "TOS-host-unreachable": (3, 12),
    "communication-prohibited": (3, 13), "host-precedence-violation": (3, 14),
    "precedence-cutoff": (3, 15), "source-quench": (4, None), "redirect": (5, None),
    "network-redirect": (5, 0), "host-redirect": (5, 1), "TOS-network-redirect": (5, 2),
    "TOS-host-redirect": (5, 3), "echo-request": (8, None), "ping": (8, None),
    "router-advertisement": (9, None), "router-solicitation": (10, None), "time-exceeded": (11, None),
    "ttl-exceeded": (11, None), "ttl-zero-during-transit": (11, 0), "ttl-zero-during-reassembly": (11, 1),
    "parameter-problem": (12, None), "ip-header-bad": (12, 0), "required-option-missing": (12, 1),
    "timestamp-request": (13, None), "timestamp-reply": (14, None), "address-mask-request": (17, None),
    "address-mask-reply": (18, None),
}
_ICMP6_TYPES: dict[str, tuple[int, int | None]] = {
    "destination-unreachable": (1, None), "no-route": (1, 0), "communication-prohibited": (1, 1),
    "beyond-scope": (1, 2), "address-unreachable": (1, 3), "port-unreachable": (1, 4),
    "failed-policy": (1, 5), "reject-route": (1, 6), "packet-too-big": (2, None), "time-exceeded": (3, None),
    "ttl-exceeded": (3, None), "ttl-zero-during-transit": (3, 0), "ttl-zero-during-reassembly": (3, 1),
    "parameter-problem": (4, None), "bad-header": (4, 0), "unknown-header-type": (4, 1),
    "unknown-option": (4, 2), "echo-request": (128, None), "ping": (128, None), "echo-reply": (129, None),
    "pong": (129, None), "mld-listener-query": (130, None), "mld-listener-report": (131, None),
    "mld-listener-done": (132, None), "mld-listener-reduction": (132, None),
    "router-solicitation": (133, None), "router-advertisement": (134, None),
    "neighbour-solicitation": (135, None), "neighbor-solicitation": (135, None),
    "neighbour-advertisement": (136, None), "neighbor-advertisement": (136, None), "redirect": (137, None),
}
_LOG_LEVELS = {
    "emerg": 0, "panic": 0, "alert": 1, "crit": 2, "error": 3, "err": 3, "warning": 4, "warn": 4,
    "notice": 5, "info": 6, "debug": 7,
}
_LOG_FLAG_WORDS = {
    "tcp-sequence": "--log-tcp-sequence", "tcp-options": "--log-tcp-options",
    "ip-options": "--log-ip-options", "uid": "--log-uid", "macdecode": "--log-macdecode",
}
_LOG_FLAG_BITS = ((0x01, "--log-tcp-sequence"), (0x02, "--log-tcp-options"), (0x04, "--log-ip-options"),
                  (0x08, "--log-uid"), (0x20, "--log-macdecode"))
_TCP_FLAGS = (("FIN", 0x01), ("SYN", 0x02), ("RST", 0x04), ("PSH", 0x08), ("ACK", 0x10), ("URG", 0x20))
_CT_KEYS = frozenset(
    {
        "ctstate", "ctproto", "ctorigsrc", "ctorigdst", "ctreplsrc", "ctrepldst", "ctorigsrcport",
        "ctorigdstport", "ctreplsrcport", "ctrepldstport", "ctstatus", "ctexpire", "ctdir"
    }
)
_CT_ADDR_KEYS = frozenset({"ctorigsrc", "ctorigdst", "ctreplsrc", "ctrepldst"})
_SET_EXTRAS = frozenset({"packets-eq", "packets-lt", "packets-gt", "bytes-eq", "bytes-lt", "bytes-gt"})
_PROTO_BY_NUMBER = {
    "1": "icmp", "2": "igmp", "4": "ipencap", "6": "tcp", "17": "udp", "33": "dccp", "41": "ipv6", "47": "gre",
    "50": "esp", "51": "ah", "58": "ipv6-icmp", "89": "ospf", "103": "pim", "112": "vrrp", "115": "l2tp",
    "132": "sctp", "135": "mh", "136": "udplite",
}
_NAT_ONLY_TARGETS = frozenset({"DNAT", "SNAT", "MASQUERADE", "REDIRECT", "NETMAP"})

_NO_QUOTE = frozenset("_-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def save_string(value: str) -> str:
    """Quote a value the way iptables-save does (xtables_save_string)."""
    if value and all(c in _NO_QUOTE for c in value):
        return value
    out = ['"']
    for c in value:
        if c in "\"\\'":
            out.append("\\")
        out.append(c)
    out.append('"')
    return "".join(out)


def looks_like_listing(text: str) -> bool:
    """True when text looks like `iptables -L` output: a "Chain X (policy ...)" / "Chain X (N references)"
    header or a "target prot opt source destination" column header. iptables-save, -S and nft text
    have neither."""
    for line in text.splitlines():
        if "Chain" in line and _CHAIN_RE.match(line):
            return True
        if "target" in line and _COLS_RE.match(line):
            return True
    return False


# --------------------------------------------------------------------------- small helpers


@lru_cache(maxsize=256)
def _is_proto(tok: str) -> bool:
    t = tok[1:] if tok.startswith("!") else tok
    if not t:
        return False
    if t.isdigit() or t in _PROTO_NAMES:
        return True
    if not re.fullmatch(r"[a-z][a-z0-9.+-]*", t):
        return False
    try:
        socket.getprotobyname(t)
    except OSError:
        return False
    return True


@lru_cache(maxsize=512)
def _service_port(name: str, proto: str) -> int | None:
    if name in _SERVICES:
        return _SERVICES[name]
    try:
        return socket.getservbyname(name, proto if proto in ("tcp", "udp") else "tcp")
    except OSError:
        return None


def _split_addr(value: str) -> tuple[str, str | None]:
    host, sep, mask = value.partition("/")
    return host, (mask if sep else None)


def _host_hint(host: str) -> str:
    m = _EC2_RE.match(host)
    if m:
        return ".".join(m.groups())
    return _KNOWN_HOSTS.get(host, "")


@dataclass
class _Layout:
    num: bool = False
    counters: bool = False
    iface: bool = False


@dataclass
class _Rule:
    line: int
    body: str  # everything after "-A CHAIN"
    target: str
    family_hint: int | None


@dataclass
class _Chain:
    name: str
    line: int
    policy: str | None
    rules: list[_Rule] = field(default_factory=list)


@dataclass
class _Section:
    cmd_line: int = 0
    table: str | None = None  # from -t
    has_command: bool = False
    family: int | None = None
    chains: dict[str, _Chain] = field(default_factory=dict)
    grep: bool = False
    no_iface_line: int = 0  # first column header without in/out (a listing made without -v)


class _Cursor:
    """Tokens of a match summary, with their positions in the summary text."""

    __slots__ = ("i", "s", "toks")

    def __init__(self, s: str) -> None:
        self.s = s
        self.toks = [(m.group(), m.start(), m.end()) for m in _TOKEN_RE.finditer(s)]
        self.i = 0

    def peek(self, k: int = 0) -> str:
        j = self.i + k
        return self.toks[j][0] if j < len(self.toks) else ""

    def take(self) -> str:
        tok = self.toks[self.i][0]
        self.i += 1
        return tok

    def done(self) -> bool:
        return self.i >= len(self.toks)

    def skip_to(self, pos: int) -> None:
        while self.i < len(self.toks) and self.toks[self.i][1] < pos:
            self.i += 1


# --------------------------------------------------------------------------- one rule row


class _RowConverter:
    """Converts the match summary and target text of one row."""

    def __init__(self, line: int, target: str, proto: str, family: int, warn: Callable[[int, str], None]):
        self.line = line
        self.target = target
        self.proto = proto.lstrip("!")
        self.family = family
        self.warn = warn
        self.goto = False

    # ---- value helpers

    def port(self, value: str) -> str:
        if value.isdigit():
            return value
        p = _service_port(value, self.proto)
        if p is None:
            self.warn(self.line, f"port name {value!r} is unknown here; kept as it is")
            return value
        return str(p)

    def port_range(self, value: str, sep: str = ":") -> str:
        return sep.join(self.port(v) for v in value.split(sep))

    def address(self, value: str, what: str) -> str:
        host, mask = _split_addr(value)
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            hint = _host_hint(host)
            extra = f" (probably {hint}{'/' + mask if mask else ''})" if hint else ""
            self.warn(self.line, f"{what} {value!r} is a host name (listing made without -n); "
                                 f"kept as it is{extra}")
            return value
        if mask is None:
            return f"{host}/{ip.max_prefixlen}"
        return value

    # ---- the summary

    def convert(self, summary: str) -> tuple[list[str], list[str], list[str]]:
        """(match options, target options, untranslated text spans)."""
        cur = _Cursor(summary)
        matches: list[str] = []
        topts: list[str] = []
        unparsed: list[tuple[int, int]] = []
        while not cur.done():
            start = cur.i
            got = self.match(cur)
            if got is not None:
                matches.extend(got)
                continue
            cur.i = start
            got = self.target_opt(cur)
            if got is not None:
                topts.extend(got)
                continue
            cur.i = start + 1
            if unparsed and unparsed[-1][1] == start:
                unparsed[-1] = (unparsed[-1][0], start + 1)
            else:
                unparsed.append((start, start + 1))
        spans = [summary[cur.toks[a][1]:cur.toks[b - 1][2]] for a, b in unparsed]
        return matches, topts, spans

    def match(self, cur: _Cursor) -> list[str] | None:
        tok = cur.peek()
        neg = False
        if tok == "!":
            neg = True
            cur.take()
            tok = cur.peek()
            if tok not in ("recent:", "state", "match-set", "owner") and tok not in _CT_KEYS:
                return None
        handler = _MATCHERS.get(tok)
        if handler is None and tok in ("icmptype", "ipv6-icmptype"):
            handler = _RowConverter.m_icmp
        if handler is None:
            return None
        return handler(self, cur, neg)

    # ---- matches (each consumes its tokens and returns save options, or None without a match)

    def m_comment(self, cur: _Cursor, neg: bool) -> list[str] | None:
        _, start, _ = cur.toks[cur.i]
        s = cur.s
        end = start + 2
        while True:
            end = s.find("*/", end)
            if end < 0:
                return None
            if end + 2 == len(s) or s[end + 2].isspace():
                break
            end += 2
        text = s[start + 3:end - 1] if end - 1 >= start + 3 else ""
        cur.skip_to(end + 2)
        return ["-m", "comment", "--comment", save_string(text)]

    def m_goto(self, cur: _Cursor, neg: bool) -> list[str] | None:
        cur.take()
        self.goto = True
        return []

    def m_ports(self, cur: _Cursor, neg: bool) -> list[str] | None:
        name = cur.take()
        out = ["-m", name]
        while not cur.done():
            tok = cur.peek()
            key, _, val = tok.partition(":")
            if key in ("spt", "dpt", "spts", "dpts") and val:
                cur.take()
                inv = val.startswith("!")
                val = val.lstrip("!")
                opt = "--sport" if key.startswith("s") else "--dport"
                if inv:
                    out.append("!")
                out += [opt, self.port_range(val)]
            elif name == "tcp" and tok.startswith("option="):
                cur.take()
                val = tok[len("option="):]
                if val.startswith("!"):
                    out.append("!")
                out += ["--tcp-option", val.lstrip("!")]
            elif name == "tcp" and tok.startswith("flags:") and "/" in tok:
                cur.take()
                val = tok[len("flags:"):]
                if val.startswith("!"):
                    out.append("!")
                mask, _, cmp = val.lstrip("!").partition("/")
                out += ["--tcp-flags", _tcp_flags(mask), _tcp_flags(cmp)]
            else:
                break
        return out

    def m_multiport(self, cur: _Cursor, neg: bool) -> list[str] | None:
        kind = cur.peek(1)
        if kind not in ("sports", "dports", "ports"):
            return None
        cur.take()
        cur.take()
        inv = False
        if cur.peek() == "!":
            cur.take()
            inv = True
        elif cur.peek().startswith("!"):
            inv = True
        plist = cur.take().lstrip("!") if not cur.done() else ""
        ports = ",".join(self.port_range(p) for p in plist.split(",") if p)
        return ["-m", "multiport"] + (["!"] if inv else []) + [f"--{kind}", ports]

    def m_statistic(self, cur: _Cursor, neg: bool) -> list[str] | None:
        if cur.peek(1) != "mode" or cur.peek(2) not in ("random", "nth"):
            return None
        cur.take()
        cur.take()
        mode = cur.take()
        out = ["-m", "statistic", "--mode", mode]
        if cur.peek() == "!":
            cur.take()
            out.append("!")
        while cur.peek() in ("probability", "every", "packet") and cur.peek(1):
            key = cur.take()
            out += [f"--{key}", cur.take()]
        return out

    def m_recent(self, cur: _Cursor, neg: bool) -> list[str] | None:
        cur.take()
        out = ["-m", "recent"] + (["!"] if neg else [])
        cmds = {"SET": "--set", "CHECK": "--rcheck", "UPDATE": "--update", "REMOVE": "--remove"}
        side = None
        while not cur.done():
            tok = cur.peek()
            if tok in cmds:
                out.append(cmds[cur.take()])
            elif tok == "reap":
                out.append("--reap")
                cur.take()
            elif tok == "TTL-Match":
                out.append("--rttl")
                cur.take()
            elif tok in ("seconds:", "hit_count:", "name:", "mask:") and cur.peek(1):
                cur.take()
                key = {"seconds:": "--seconds", "hit_count:": "--hitcount", "name:": "--name",
                       "mask:": "--mask"}[tok]
                out += [key, cur.take()]
            elif tok == "side:" and cur.peek(1) in ("source", "dest"):
                cur.take()
                side = "--rsource" if cur.take() == "source" else "--rdest"
            else:
                break
        if side:
            out.append(side)
        return out

    def m_addrtype(self, cur: _Cursor, neg: bool) -> list[str] | None:
        if cur.peek(1) != "match":
            return None
        cur.take()
        cur.take()
        out = ["-m", "addrtype"]
        while not cur.done():
            tok = cur.peek()
            if tok in ("src-type", "dst-type") and cur.peek(1):
                cur.take()
                val = cur.take()
            elif tok.startswith(("src-type", "dst-type")) and len(tok) > 8:  # revision 0: "dst-typeLOCAL"
                cur.take()
                val = tok[8:]
                tok = tok[:8]
            elif tok == "limit-in":
                cur.take()
                out.append("--limit-iface-in")
                continue
            elif tok == "limit-out":
                cur.take()
                out.append("--limit-iface-out")
                continue
            else:
                break
            if val == "!" and cur.peek():
                val = "!" + cur.take()
            if val.startswith("!"):
                out.append("!")
            out += [f"--{tok}", val.lstrip("!")]
        return out

    def m_mark(self, cur: _Cursor, neg: bool) -> list[str] | None:
        if cur.peek(1) != "match":
            return None
        name = "connmark" if cur.peek().lower() == "connmark" else "mark"
        cur.take()
        cur.take()
        out = ["-m", name]
        if cur.peek() == "!":
            cur.take()
            out.append("!")
        if not re.fullmatch(r"0x[0-9a-fA-F]+(?:/0x[0-9a-fA-F]+)?", cur.peek()):
            return None
        out += ["--mark", cur.take()]
        return out

    def m_conntrack(self, cur: _Cursor, neg: bool) -> list[str] | None:
        out = ["-m", "conntrack"]
        seen: set[str] = set()
        first = True
        while True:
            if not first:  # more options of the same match: [!] ctKEY VALUE, each key once
                j = 1 if cur.peek() == "!" else 0
                key = cur.peek(j)
                if key not in _CT_KEYS or key in seen or not cur.peek(j + 1):
                    break
                if j:
                    cur.take()
                    neg = True
            key = cur.peek()
            if not cur.peek(1):
                break
            cur.take()
            val = cur.take()
            seen.add(key)
            if key in _CT_ADDR_KEYS:
                if val == "anywhere":
                    val = "::/0" if self.family == 6 else "0.0.0.0/0"
                else:
                    val = self.address(val, key)
            if neg:
                out.append("!")
            out += [f"--{key}", val]
            neg = False
            first = False
        return out if len(out) > 2 else None

    def m_state(self, cur: _Cursor, neg: bool) -> list[str] | None:
        if not cur.peek(1):
            return None
        cur.take()
        return ["-m", "state"] + (["!"] if neg else []) + ["--state", cur.take()]

    def m_set(self, cur: _Cursor, neg: bool) -> list[str] | None:
        if not cur.peek(1) or not cur.peek(2):
            return None
        cur.take()
        out = ["-m", "set"] + (["!"] if neg else []) + ["--match-set", cur.take(), cur.take()]
        while not cur.done():
            j = 1 if cur.peek() == "!" else 0
            tok = cur.peek(j)
            if tok == "return-nomatch" and not j:
                cur.take()
                out.append("--return-nomatch")
            elif tok in ("update-counters", "update-subcounters") and j:
                cur.take()
                cur.take()
                out += ["!", f"--{tok}"]
            elif tok in _SET_EXTRAS and cur.peek(j + 1):
                if j:
                    cur.take()
                    out.append("!")
                cur.take()
                out += [f"--{tok}", cur.take()]
            else:
                break
        return out

    def m_physdev(self, cur: _Cursor, neg: bool) -> list[str] | None:
        if cur.peek(1) != "match":
            return None
        cur.take()
        cur.take()
        out = ["-m", "physdev"]
        while not cur.done():
            j = 1 if cur.peek() == "!" else 0
            tok = cur.peek(j)
            if tok in ("--physdev-is-in", "--physdev-is-out", "--physdev-is-bridged"):
                out += [cur.take() for _ in range(j + 1)]
            elif tok in ("--physdev-in", "--physdev-out") and cur.peek(j + 1):
                out += [cur.take() for _ in range(j + 2)]
            else:
                break
        return out

    def m_icmp(self, cur: _Cursor, neg: bool) -> list[str] | None:
        tok = cur.take()
        v6 = tok.startswith("ipv6-icmp")
        table = _ICMP6_TYPES if v6 else _ICMP_TYPES
        rest = tok[len("ipv6-icmp"):] if v6 else tok[len("icmp"):]
        inv = False
        ntype: int | None = None
        code: int | None = None
        if rest == "type":  # "icmptype 8": the numeric form glues "type" to the match name
            val = cur.take() if cur.peek().isdigit() else ""
            if not val:
                return None
            ntype = int(val)
        else:
            nxt = cur.peek()
            if nxt == "!":
                cur.take()
                inv = True
                nxt = cur.peek()
            if nxt.startswith("!"):
                inv = True
                nxt = nxt[1:]
            if nxt == "type" and cur.peek(1).isdigit():
                cur.take()
                ntype = int(cur.take())
            elif nxt in table:
                cur.take()
                ntype, code = table[nxt]
            else:
                return None
        if cur.peek() == "code" and cur.peek(1).isdigit():
            cur.take()
            code = int(cur.take())
        elif cur.peek() == "codes" and re.fullmatch(r"\d+-\d+", cur.peek(1)):
            cur.take()
            code = int(cur.take().split("-")[0])
        value = "any" if ntype == 255 and not v6 else str(ntype) + (f"/{code}" if code is not None else "")
        if v6:
            return ["-m", "icmp6"] + (["!"] if inv else []) + ["--icmpv6-type", value]
        return ["-m", "icmp"] + (["!"] if inv else []) + ["--icmp-type", value]

    def m_limit(self, cur: _Cursor, neg: bool) -> list[str] | None:
        if cur.peek(1) != "avg" or not cur.peek(2):
            return None
        cur.take()
        cur.take()
        out = ["-m", "limit", "--limit", cur.take()]
        if cur.peek() == "burst" and cur.peek(1).isdigit():
            cur.take()
            burst = cur.take()
            if burst != "5":
                out += ["--limit-burst", burst]
        return out

    def m_iprange(self, cur: _Cursor, neg: bool) -> list[str] | None:
        out = ["-m", "iprange"]
        while cur.peek() in ("source", "destination") and cur.peek(1) == "IP" and cur.peek(2) == "range":
            which = cur.take()
            cur.take()
            cur.take()
            if cur.peek() == "!":
                cur.take()
                out.append("!")
            out += ["--src-range" if which == "source" else "--dst-range", cur.take()]
        return out if len(out) > 2 else None

    def m_owner(self, cur: _Cursor, neg: bool) -> list[str] | None:
        out = ["-m", "owner"]
        while True:
            j = 1 if cur.peek() == "!" else 0
            if cur.peek(j) != "owner":
                break
            what, verb = cur.peek(j + 1), cur.peek(j + 2)
            if what == "socket" and verb == "exists":
                opt, n = ["--socket-exists"], 3
            elif what in ("UID", "GID") and verb == "match" and cur.peek(j + 3):
                opt, n = [f"--{what.lower()}-owner", cur.peek(j + 3)], 4
            else:
                break
            if j or neg:
                out.append("!")
            neg = False
            cur.i += j + n
            out += opt
        return out if len(out) > 2 else None

    def m_pkttype(self, cur: _Cursor, neg: bool) -> list[str] | None:
        op, val = cur.peek(1), cur.peek(2)
        if op not in ("=", "!=") or not val:
            return None
        cur.i += 3
        return ["-m", "pkttype"] + (["!"] if op == "!=" else []) + ["--pkt-type", val]

    # ---- target options

    def target_opt(self, cur: _Cursor) -> list[str] | None:
        t = self.target
        tok = cur.peek()
        if t in ("DNAT", "SNAT"):
            if tok.startswith("to:") and len(tok) > 3:
                cur.take()
                return ["--to-destination" if t == "DNAT" else "--to-source", tok[3:]]
            return self._nat_flag(cur)
        if t == "MASQUERADE":
            if tok == "masq" and cur.peek(1) == "ports:" and cur.peek(2):
                cur.i += 3
                return ["--to-ports", cur.toks[cur.i - 1][0]]
            return self._nat_flag(cur)
        if t == "REDIRECT":
            if tok == "redir" and cur.peek(1) == "ports" and cur.peek(2):
                cur.i += 3
                return ["--to-ports", cur.toks[cur.i - 1][0]]
            return self._nat_flag(cur)
        if t in ("MARK", "CONNMARK") and tok == t:
            return self._mark_target(cur)
        if t == "REJECT" and tok == "reject-with" and cur.peek(1):
            cur.take()
            return ["--reject-with", cur.take()]
        if t == "LOG" and tok == "LOG":
            return self._log(cur)
        if t == "NFLOG" and tok.startswith("nflog-"):
            return self._nflog(cur)
        if t == "CHECKSUM" and tok == "CHECKSUM":
            cur.take()
            if cur.peek() == "fill":
                cur.take()
                return ["--checksum-fill"]
            return []
        if t == "TCPMSS" and tok == "TCPMSS":
            if [cur.peek(1), cur.peek(2), cur.peek(3)] == ["clamp", "to", "PMTU"]:
                cur.i += 4
                return ["--clamp-mss-to-pmtu"]
            if cur.peek(1) == "set" and cur.peek(2).isdigit():
                cur.i += 3
                return ["--set-mss", cur.toks[cur.i - 1][0]]
            return None
        if t == "CT" and tok == "NOTRACK":  # -j NOTRACK is listed as target CT with the text NOTRACK
            cur.take()
            return ["--notrack"]
        if t == "CT" and tok == "CT":
            cur.take()
            out: list[str] = []
            while True:
                if cur.peek() == "notrack":
                    cur.take()
                    out.append("--notrack")
                elif cur.peek() in ("helper", "zone", "timeout") and cur.peek(1):
                    key = cur.take()
                    out += [f"--{key}", cur.take()]
                else:
                    return out
        if t == "NFQUEUE":
            if tok == "NFQUEUE" and cur.peek(1) in ("num", "balance") and cur.peek(2):
                kind = cur.peek(1)
                cur.i += 3
                return ["--queue-num" if kind == "num" else "--queue-balance", cur.toks[cur.i - 1][0]]
            if tok in ("bypass", "cpu-fanout"):
                cur.take()
                return ["--queue-bypass" if tok == "bypass" else "--queue-cpu-fanout"]
        return None

    def _nat_flag(self, cur: _Cursor) -> list[str] | None:
        tok = cur.peek()
        if tok in ("random", "random-fully", "persistent"):
            cur.take()
            return [f"--{tok}"]
        return None

    def _mark_target(self, cur: _Cursor) -> list[str] | None:
        name = cur.peek()
        op = cur.peek(1)
        val = cur.peek(2)
        hexval = r"0x[0-9a-fA-F]+"
        if op in ("or", "xor", "and", "set") and re.fullmatch(hexval, val):
            cur.i += 3
            return [f"--{op}-mark", val]
        if op == "xset" and re.fullmatch(hexval + "/" + hexval, val):
            cur.i += 3
            return ["--set-xmark", val]
        if name == "CONNMARK" and op in ("save", "restore"):
            cur.i += 2
            flag = f"--{op}-mark"
            nf = ct = "0xffffffff"
            if cur.peek() == "mask" and re.fullmatch(hexval, cur.peek(1)):
                nf = ct = cur.peek(1)
                cur.i += 2
            elif (cur.peek() in ("nfmask", "ctmask") and cur.peek(2) in ("nfmask", "ctmask")
                  and re.fullmatch("~?" + hexval, cur.peek(1)) and re.fullmatch("~?" + hexval, cur.peek(3))):
                vals = {cur.peek(): cur.peek(1).lstrip("~"), cur.peek(2): cur.peek(3).lstrip("~")}
                nf, ct = vals["nfmask"], vals["ctmask"]
                cur.i += 4
            return [flag, "--nfmask", nf, "--ctmask", ct]
        return None

    def _log(self, cur: _Cursor) -> list[str] | None:
        cur.take()
        level = 4
        flags: list[str] = []
        prefix: str | None = None
        while not cur.done():
            tok = cur.peek()
            if tok == "flags" and cur.peek(1).isdigit() and cur.peek(2) == "level" and cur.peek(3).isdigit():
                bits = int(cur.peek(1))
                level = int(cur.peek(3))
                cur.i += 4
                flags += [opt for bit, opt in _LOG_FLAG_BITS if bits & bit]
            elif tok == "level" and cur.peek(1) in _LOG_LEVELS:
                level = _LOG_LEVELS[cur.peek(1)]
                cur.i += 2
            elif tok in _LOG_FLAG_WORDS:
                flags.append(_LOG_FLAG_WORDS[cur.take()])
            elif tok == "prefix" and cur.peek(1).startswith('"'):
                start = cur.toks[cur.i + 1][1]
                end = cur.s.rfind('"')
                if end <= start:
                    break
                prefix = cur.s[start + 1:end]
                cur.skip_to(end + 1)
            else:
                break
        out: list[str] = []
        if prefix is not None:
            out += ["--log-prefix", save_string(prefix)]
        if level != 4:
            out += ["--log-level", str(level)]
        return out + flags

    def _nflog(self, cur: _Cursor) -> list[str] | None:
        tok = cur.peek()
        if tok == "nflog-prefix" and cur.peek(1):
            start = cur.toks[cur.i + 1][1]
            value, end = _unquote(cur.s, start)
            cur.skip_to(end)
            return ["--nflog-prefix", save_string(value)]
        if tok in ("nflog-group", "nflog-size", "nflog-range", "nflog-threshold") and cur.peek(1).isdigit():
            cur.i += 2
            return [f"--{tok}", cur.toks[cur.i - 1][0]]
        return None


def _unquote(s: str, start: int) -> tuple[str, int]:
    """A value printed by xtables_save_string at s[start:]: (value, end position)."""
    if s[start] != '"':
        end = start
        while end < len(s) and not s[end].isspace():
            end += 1
        return s[start:end], end
    out = []
    i = start + 1
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s):
            out.append(s[i + 1])
            i += 2
            continue
        if c == '"':
            return "".join(out), i + 1
        out.append(c)
        i += 1
    return "".join(out), len(s)


def _tcp_flags(value: str) -> str:
    if not value.startswith("0x"):
        return value
    bits = int(value, 16)
    names = [n for n, b in _TCP_FLAGS if bits & b]
    if bits & 0x3F == 0x3F:
        return "ALL"
    return ",".join(names) if names else "NONE"


_MATCHERS: dict[str, Callable[[_RowConverter, _Cursor, bool], list[str] | None]] = {
    "/*": _RowConverter.m_comment,
    "[goto]": _RowConverter.m_goto,
    "tcp": _RowConverter.m_ports,
    "udp": _RowConverter.m_ports,
    "udplite": _RowConverter.m_ports,
    "sctp": _RowConverter.m_ports,
    "dccp": _RowConverter.m_ports,
    "multiport": _RowConverter.m_multiport,
    "statistic": _RowConverter.m_statistic,
    "recent:": _RowConverter.m_recent,
    "ADDRTYPE": _RowConverter.m_addrtype,
    "mark": _RowConverter.m_mark,
    "MARK": _RowConverter.m_mark,
    "connmark": _RowConverter.m_mark,
    "CONNMARK": _RowConverter.m_mark,
    "state": _RowConverter.m_state,
    "match-set": _RowConverter.m_set,
    "PHYSDEV": _RowConverter.m_physdev,
    "icmp": _RowConverter.m_icmp,
    "ipv6-icmp": _RowConverter.m_icmp,
    "limit:": _RowConverter.m_limit,
    "source": _RowConverter.m_iprange,
    "destination": _RowConverter.m_iprange,
    "owner": _RowConverter.m_owner,
    "PKTTYPE": _RowConverter.m_pkttype,
    **{k: _RowConverter.m_conntrack for k in _CT_KEYS},
}


# --------------------------------------------------------------------------- the whole listing


_GUESS_LAYOUTS = (
    _Layout(num=True, counters=True, iface=True),
    _Layout(counters=True, iface=True),
    _Layout(num=True),
    _Layout(),
)
_ADDR_FIELD_RE = re.compile(r"^!?[\w.:-]+(?:/[\w.:]+)?$")


def _parse_row(line: str, lay: _Layout) -> tuple[str, str, str, list[str], str] | None:
    """(target, prot, opt, [in, out,] source, destination, match summary) of a rule row, or None."""
    it = _TOKEN_RE.finditer(line)
    if lay.num:
        num = next(it, None)
        if num is None or not num.group().isdigit():
            return None
    if lay.counters:
        for _ in range(2):
            cnt = next(it, None)
            if cnt is None or not _COUNTER_RE.match(cnt.group()):
                return None
    first = next(it, None)
    second = next(it, None)
    if first is None or second is None:
        return None
    after: re.Match[str] | None
    if _is_proto(first.group()) and not _is_proto(second.group()):
        target, proto, after = "", first.group(), second  # an empty target column
    else:
        target, proto, after = first.group(), second.group(), next(it, None)
    if not _is_proto(proto) or after is None:
        return None
    # after: the opt column (blank in ip6tables listings), or else the first column after it
    opt = ""
    cur: re.Match[str] | None = after
    if _OPT_RE.match(after.group()):
        opt = after.group()
        cur = next(it, None)
    need = 4 if lay.iface else 2
    fields: list[str] = []
    last = after
    while cur is not None:
        fields.append(cur.group())
        last = cur
        if len(fields) == need:
            break
        cur = next(it, None)
    if len(fields) < need or not all(_ADDR_FIELD_RE.match(f) for f in fields[-2:]):
        return None
    return target, proto, opt, fields, line[last.end():].strip()


class _Converter:
    def __init__(self, text: str, table: str | None) -> None:
        self.lines = text.splitlines()
        self.table_arg = table
        self.warnings: list[tuple[int, str]] = []
        self.partial: set[int] = set()
        self.sections: list[_Section] = []
        self.section: _Section | None = None
        self.chain: _Chain | None = None
        self.skipping_chain = False
        self.layout: _Layout | None = None

    def warn(self, line: int, message: str) -> None:
        self.warnings.append((line, message))

    def new_section(self, cmd_line: int = 0) -> _Section:
        if self.section is not None and not self.section.chains and self.section.has_command:
            self.sections.remove(self.section)
        sec = _Section(cmd_line=cmd_line)
        self.sections.append(sec)
        self.section = sec
        self.chain = None
        self.skipping_chain = False
        return sec

    # ---- pass 1: read lines

    def read(self) -> None:
        for n, raw in enumerate(self.lines, start=1):
            line = raw.rstrip()
            if not line.strip():
                continue  # blank lines separate chains in every -L listing
            if "Chain" in line:
                m = _CHAIN_RE.match(line)
                if m:
                    self.on_chain(n, m.group(1), m.group(2))
                    continue
            if "target" in line:
                m = _COLS_RE.match(line)
                if m:
                    self.layout = _Layout(num=bool(m.group(1)), counters=bool(m.group(2)), iface=bool(m.group(3)))
                    sec = self.section if self.section is not None else self.new_section()
                    if not self.layout.iface and not sec.no_iface_line:
                        sec.no_iface_line = n
                    continue
            if self.on_row(n, line):
                continue
            if _ELISION_RE.match(line):
                self.warn(n, f"skipped elision line {line.strip()!r}")
                continue
            if _WARN_RE.match(line):
                msg = line.strip()
                if "iptables-legacy tables present" in msg:
                    self.warn(n, "skipped warning line: iptables-legacy tables are present, so this nft-backend "
                                 "listing does not show the rules kube-proxy may have written with iptables-legacy")
                else:
                    self.warn(n, f"skipped warning/error line {msg!r}")
                continue
            m = _CMD_RE.match(line) or _CMD_NO_PROMPT_RE.search(line)
            if m:
                self.on_command(n, m.group(1), m.group(2) or "")
                continue
            self.warn(n, f"skipped line that is not part of an iptables -L listing: {line.strip()!r}")

    def on_command(self, n: int, prog: str, args: str) -> None:
        sec = self.new_section(n)
        sec.has_command = True
        sec.family = 6 if prog.startswith("ip6") else 4
        cmd, _, pipe = args.partition("|")
        if "grep" in pipe:
            sec.grep = True
        words = cmd.split()
        for i, w in enumerate(words):
            if w in ("-t", "--table") and i + 1 < len(words):
                sec.table = words[i + 1]
            elif w.startswith("--table="):
                sec.table = w.split("=", 1)[1]
            elif re.fullmatch(r"-[a-zA-Z]*t[a-z]+", w) and not w.startswith("--"):
                # "-tnat" (the t must be the last flag letter in a cluster to take a glued value)
                sec.table = w[w.index("t") + 1:]
        if sec.table is not None and sec.table not in BUILTIN_CHAINS:
            self.warn(n, f"unknown table {sec.table!r} in the command line")
        self.warn(n, f"skipped command line {(prog + ' ' + args.strip()).strip()!r}")

    def on_chain(self, n: int, name: str, policy: str | None) -> None:
        sec = self.section if self.section is not None else self.new_section()
        if name in sec.chains:
            self.warn(n, f"chain {name} is listed a second time in the same listing; the second copy is ignored")
            self.chain = None
            self.skipping_chain = True
            return
        self.chain = _Chain(name=name, line=n, policy=policy)
        self.skipping_chain = False
        sec.chains[name] = self.chain

    def on_row(self, n: int, line: str) -> bool:
        """Take a rule row; False when the line is not one (so other line classes get a try)."""
        if self.layout is not None:
            row = _parse_row(line, self.layout)
        else:  # no column header seen yet (an excerpt): try the layouts, most columns first
            row = next((r for lay in _GUESS_LAYOUTS if (r := _parse_row(line, lay)) is not None), None)
        if row is None:
            return False
        if self.chain is None:
            if not self.skipping_chain:
                self.warn(n, "skipped rule outside any chain (the excerpt starts in the middle of a chain): "
                             f"{shorten(repr(' '.join(line.split())), 80)}")
            return True
        self.add_rule(n, *row)
        return True

    def add_rule(self, n: int, target: str, proto: str, opt: str, fields: list[str], summary: str) -> None:
        assert self.chain is not None and self.section is not None
        if len(fields) == 4:
            iface_in, iface_out, src, dst = fields
        else:
            iface_in, iface_out, (src, dst) = "*", "*", fields
        family_hint = None
        for a in (src, dst):
            host = _split_addr(a.lstrip("!"))[0]
            if ":" in host:
                family_hint = 6
            elif _IPV4_RE.match(host):
                family_hint = family_hint or 4
        family = self.section.family or family_hint or 4
        conv = _RowConverter(n, target, _PROTO_BY_NUMBER.get(proto.lstrip("!"), proto), family, self.warn)
        parts: list[str] = []
        for flag, value in (("-s", src), ("-d", dst)):
            neg = value.startswith("!")
            v = value.lstrip("!")
            if v in ("anywhere", "0.0.0.0/0", "::/0") and not neg:
                continue
            if v == "anywhere":
                v = "::/0" if family == 6 else "0.0.0.0/0"
            parts += (["!"] if neg else []) + [flag, conv.address(v, "source" if flag == "-s" else "destination")]
        for flag, value in (("-i", iface_in), ("-o", iface_out)):
            neg = value.startswith("!")
            v = value.lstrip("!")
            if v in ("*", "any") and not neg:
                continue
            parts += (["!"] if neg else []) + [flag, v]
        p = proto.lstrip("!")
        p = _PROTO_BY_NUMBER.get(p, p)  # iptables >= 1.8.8 prints numbers with -n
        if p not in ("all", "0") or proto.startswith("!"):
            parts += (["!"] if proto.startswith("!") else []) + ["-p", p]
        if opt == "-f":
            parts.append("-f")
        elif opt == "!f":
            parts += ["!", "-f"]
        matches, topts, spans = conv.convert(summary)
        for span in spans:
            self.warn(n, f"could not translate {span!r}; the rule is kept without it")
        if spans:
            self.partial.add(n)
        parts += matches
        if target:
            parts += ["-g" if conv.goto else "-j", target, *topts]
        elif topts:
            self.warn(n, "target options without a target are ignored")
            self.partial.add(n)
        self.chain.rules.append(_Rule(n, " ".join(parts), target, family_hint))

    # ---- pass 2: tables and blocks

    def resolve(self, sec: _Section) -> tuple[str, str, int]:
        """(table, how it was found, line to attach a note to)."""
        first = next(iter(sec.chains.values())).line
        if sec.table is not None:
            if self.table_arg is not None and self.table_arg != sec.table:
                self.warn(sec.cmd_line, f"the command line says table {sec.table!r}, not {self.table_arg!r} "
                                        "as asked; using the command line's")
            return sec.table, "command", sec.cmd_line
        if self.table_arg is not None:
            return self.table_arg, "argument", first
        if sec.has_command:
            return "filter", "default", sec.cmd_line
        table, why = _infer_table(sec)
        self.warn(first, f"no command line names the table: inferred {table!r} from {why}")
        return table, "inferred", first

    def build(self) -> ListingConversion:
        self.read()
        groups: dict[tuple[str, int], list[tuple[_Section, str, int]]] = {}
        for sec in self.sections:
            if not sec.chains:
                continue
            table, how, note_line = self.resolve(sec)
            family = sec.family or next(
                (r.family_hint for c in sec.chains.values() for r in c.rules if r.family_hint), 4
            )
            if sec.grep:
                self.warn(sec.cmd_line, "the listing was filtered through grep: chains may be incomplete")
            if sec.no_iface_line:
                self.warn(sec.no_iface_line, "listing made without -v: it has no in/out columns, so a rule that "
                                             "matches an interface (-i/-o) looks as if it matched every interface")
            groups.setdefault((table, family), []).append((sec, how, note_line))

        out: list[str] = []
        line_map: list[int] = []
        blocks: list[ListingBlock] = []

        def emit(text: str, src: int) -> None:
            out.append(text)
            line_map.append(src)

        for (table, family), secs in groups.items():
            chains: dict[str, _Chain] = {}
            for sec, _, _ in secs:
                for name, ch in sec.chains.items():
                    if name in chains:
                        self.warn(ch.line, f"chain {name} was already listed for table {table}; this copy is ignored")
                        continue
                    chains[name] = ch
            builtins = BUILTIN_CHAINS.get(table, ())
            start = len(out)
            head_sec, how, _ = secs[0]
            emit(f"*{table}", head_sec.cmd_line)  # 0 when no command line was pasted
            for ch in chains.values():
                if ch.policy is not None and ch.name in builtins:
                    emit(f":{ch.name} {ch.policy} [0:0]", ch.line)
                else:
                    if ch.policy is not None:
                        self.warn(ch.line, f"{ch.name} has a policy but is not a built-in chain of table {table}")
                    elif ch.name in builtins:
                        self.warn(ch.line, f"{ch.name} is a built-in chain of table {table} but is listed "
                                           "without a policy")
                    emit(f":{ch.name} - [0:0]", ch.line)
            unlisted: list[str] = []
            for ch in chains.values():
                for r in ch.rules:
                    t = r.target
                    if t and t not in TARGET_EXTENSIONS and t not in chains and t not in unlisted:
                        if t in builtins:
                            self.warn(r.line, f"jump to built-in chain {t} cannot be loaded")
                            continue
                        unlisted.append(t)
                        self.warn(r.line, f"chain {t} is jumped to but not listed: declared empty so the text "
                                          "loads, but its rules are unknown")
                    if t in _NAT_ONLY_TARGETS and table != "nat":
                        self.warn(r.line, f"target {t} only exists in table nat, not {table}")
            for t in unlisted:
                emit(f":{t} - [0:0]", 0)
            for ch in chains.values():
                for r in ch.rules:
                    emit(f"-A {ch.name} {r.body}".rstrip(), r.line)
            emit("COMMIT", 0)
            blocks.append(ListingBlock(table=table, family=family, table_source=how, chains=list(chains),
                                       unlisted_chains=unlisted, start=start, end=len(out),
                                       interfaces_known=not any(sec.no_iface_line for sec, _, _ in secs)))
        if not blocks:
            self.warn(0, "no chain found in the listing")
        self.warnings.sort(key=lambda w: w[0])
        return ListingConversion(
            text="\n".join(out) + "\n" if out else "",
            line_map=line_map,
            warnings=self.warnings,
            partial_lines=self.partial,
            blocks=blocks,
        )


_NAT_CHAIN_PREFIXES = (
    "KUBE-SVC-", "KUBE-SVL-", "KUBE-SEP-", "KUBE-XLB-", "KUBE-FW-", "KUBE-EXT-", "KUBE-MARK-MASQ",
    "KUBE-MARK-DROP", "KUBE-POSTROUTING", "KUBE-PORTALS-", "KUBE-NODEPORT-CONTAINER", "KUBE-NODEPORT-HOST",
    "KUBE-HOSTPORTS", "KUBE-HP-", "KUBE-FIRE-WALL", "KUBE-LOAD-BALANCER", "KUBE-NODE-PORT", "KUBE-LOOP-BACK",
    "CNI-HOSTPORT-", "CNI-DN-", "cali-nat-", "AWS-SNAT-CHAIN-", "FLANNEL-POSTRTG", "KIND-MASQ-AGENT",
    "felix-POSTROUTING", "felix-PREROUTING",
)
_FILTER_CHAIN_PREFIXES = (
    "KUBE-FIREWALL", "KUBE-FORWARD", "KUBE-EXTERNAL-SERVICES", "KUBE-PROXY-FIREWALL", "KUBE-NWPLCY-",
    "KUBE-ROUTER-", "KUBE-IPVS-FILTER", "KUBE-IPVS-OUT-FILTER", "DOCKER-USER", "DOCKER-ISOLATION",
    "cali-fw-", "cali-tw-", "cali-from-", "cali-to-", "cali-pri-", "cali-pro-", "WEAVE-NPC", "FLANNEL-FWD",
    "LIBVIRT_INP", "LIBVIRT_OUT", "LIBVIRT_FW",
)
_MANGLE_TARGETS = frozenset({"CHECKSUM", "TOS", "TTL", "HL", "DSCP", "TPROXY", "ECN"})
_RAW_TARGETS = frozenset({"CT", "NOTRACK"})


def _infer_table(sec: _Section) -> tuple[str, str]:
    """Best guess of the table of a listing that does not name it, and why."""
    score = {t: 0 for t in BUILTIN_CHAINS}
    why: dict[str, list[str]] = {t: [] for t in BUILTIN_CHAINS}

    def vote(table: str, points: int, reason: str) -> None:
        score[table] += points
        if reason not in why[table]:
            why[table].append(reason)

    builtin = {c.name for c in sec.chains.values() if c.policy is not None}
    names = dict.fromkeys(sec.chains)  # ordered, so the reason given is the same on every run
    for c in sec.chains.values():
        for r in c.rules:
            names[r.target] = None
            if r.target in _NAT_ONLY_TARGETS:
                vote("nat", 10, f"{r.target} targets")
            elif r.target == "REJECT":
                vote("filter", 5, "REJECT targets")
            elif r.target in _MANGLE_TARGETS:
                vote("mangle", 5, f"{r.target} targets")
            elif r.target in _RAW_TARGETS:
                vote("raw", 5, f"{r.target} targets")
    for name in names:
        if name.startswith(_NAT_CHAIN_PREFIXES):
            vote("nat", 3, f"chain {name}")
        elif name.startswith(_FILTER_CHAIN_PREFIXES):
            vote("filter", 3, f"chain {name}")
    if "FORWARD" in builtin and builtin & {"PREROUTING", "POSTROUTING"}:
        vote("mangle", 8, "built-in chains FORWARD and PREROUTING/POSTROUTING")
    elif "FORWARD" in builtin:
        vote("filter", 4, "built-in chain FORWARD")
    elif "POSTROUTING" in builtin or ("PREROUTING" in builtin and "INPUT" in builtin):
        vote("nat", 4, "built-in chains " + ", ".join(sorted(builtin)))
    elif "PREROUTING" in builtin:
        vote("nat", 2, "built-in chain PREROUTING")
    elif builtin & {"INPUT", "OUTPUT"}:
        vote("filter", 1, "built-in chains " + ", ".join(sorted(builtin)))
    best = max(score, key=lambda t: (score[t], t == "filter"))
    if score[best] == 0:
        return "filter", "nothing (filter is what `iptables -L` shows by default)"
    return best, ", ".join(why[best][:4])


def listing_to_save(text: str, table: str | None = None) -> ListingConversion:
    """Convert `iptables -L` / `ip6tables -L` output into iptables-save text.

    `table` names the table when no `-t` in a command line of the text does; without either, the table is
    inferred from chain names and targets. Several commands pasted one after the other give one
    `*table` block each (blocks of the same table and family are merged).
    """
    if table is not None and table not in BUILTIN_CHAINS:
        raise ValueError(f"unknown table {table!r} (use one of {', '.join(BUILTIN_CHAINS)})")
    return _Converter(text, table).build()
