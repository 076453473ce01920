"""Read `ipvsadm` output: `-Ln` / `-L` listings (plain, `--stats`, `--rate`, `--thresholds`,
`--persistent-conn`) and `-Sn` / `-S` save (restore) syntax, as people paste them.

The listing layout is ipvsadm.c's `print_title()` / `print_service_entry()`:

    IP Virtual Server version 1.2.1 (size=4096)
    Prot LocalAddress:Port Scheduler Flags
      -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
    TCP  10.96.0.1:443 rr persistent 10800
      -> 192.168.0.10:6443            Masq    1      0          0

Without `-n` ipvsadm resolves addresses and ports to names and cuts an IPv4 `host:port` to 28
characters (`svc_name[33]`, `dname[28]`), so `ip-10-0-62-121.ec2.internal:` has lost its port and
`ip-10-0-62-92.ec2.internal:9` part of it. What can be kept is kept (an EC2 host name spells its
address; well-known service names map to ports) and the rest is reported. Shell prompts, author
`#` comments, `...` elisions, blank lines and trailing spaces are skipped; a line that is none of
these is reported with its line number. Only input with no virtual service at all, or values no
ipvsadm can print (a port above 65535, a negative weight), raises `InputError`.
"""

from __future__ import annotations

import ipaddress
import re

from svctrace.dataplane.addr import ip_of
from svctrace.dataplane.ipvs.model import FORWARD_METHODS, IPVSTable, RealServer, VirtualService
from svctrace.errors import InputError, Warn, shorten
from svctrace.model.loading import keeps_objects
from svctrace.model.packet import IPAddress

SCHEDULERS = ("rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "mh", "fo", "ovf", "twos")
# /etc/services names ipvsadm -L prints instead of numbers (IANA, plus the Debian/RHEL aliases seen).
SERVICE_PORTS: dict[str, int] = {
    "ftp-data": 20, "ftp": 21, "ssh": 22, "telnet": 23, "smtp": 25, "domain": 53, "tftp": 69, "http": 80,
    "www": 80, "www-http": 80, "kerberos": 88, "pop3": 110, "sunrpc": 111, "ntp": 123, "imap": 143,
    "imap2": 143, "snmp": 161, "bgp": 179, "ldap": 389, "https": 443, "microsoft-ds": 445, "syslog": 514,
    "submission": 587, "ldaps": 636, "rsync": 873, "imaps": 993, "pop3s": 995, "socks": 1080,
    "openvpn": 1194, "ms-sql-s": 1433, "mqtt": 1883, "nfs": 2049, "eforward": 2181, "etcd-client": 2379,
    "etcd-server": 2380, "mysql": 3306, "postgresql": 5432, "postgres": 5432, "amqp": 5672, "sip": 5060,
    "x11": 6000, "redis": 6379, "sun-sr-https": 6443, "irdmi": 8000, "http-alt": 8080, "webcache": 8080,
    "tproxy": 8081, "us-cli": 8082, "us-srv": 8083, "pcsync-https": 8443, "secure-mqtt": 8883,
    "websm": 9090, "zeus-admin": 9090, "jetdirect": 9100, "hp-pdl-datastr": 9100, "bacula-dir": 9101,
    "bacula-fd": 9102, "bacula-sd": 9103, "git": 9418, "amanda": 10080, "memcache": 11211,
    "mongodb": 27017, "mongod": 27017,
}
# ipvsadm cuts an IPv4 `host:port` to 28 characters when it is not numeric.
TRUNCATED_AT = 28

_HEADER = re.compile(r"^IP Virtual Server version (\S+)\s*\(size=(\d+)\)")
_TITLE = re.compile(r"^Prot\s+LocalAddress:Port\b(.*)$")
_DEST_TITLE = re.compile(r"^->\s*RemoteAddress:Port\b")
_SERVICE = re.compile(r"^(TCP|UDP|SCTP)\s+(\S+)(?:\s+(.*))?$")
_FWM = re.compile(r"^FWM\s+(\d+)(\s+IPv6)?(?:\s+(.*))?$")
_REAL = re.compile(r"^->\s*(\S+)(?:\s+(.*))?$")
_ELISION = re.compile(r"^(?:\.{2,}|…+|-{3,}|\[\.\.\.\]|<snip>|\(\.\.\.\)|\(snip\)|\(truncated\))$", re.I)
_COMMAND = re.compile(r"(?:^|[\s#$>%(])(?:sudo\s+)?(?:/\S*/)?ipvsadm(?:\s|$)")
_PROMPT = re.compile(r"^(?:\S+@\S+)?(?:[\w.~/-]*)?\s*[#$%>]\s*\S")
_CONNS = re.compile(r"^(?:IPVS connection entries|pro\s+expire\s+state\s+source)")
_EC2 = re.compile(r"^ip-(\d{1,3})-(\d{1,3})-(\d{1,3})-(\d{1,3})(?:\.|$)")
_NUMBER = re.compile(r"^(\d+)([KMGT]?)$")
_SAVE = re.compile(r"^-[Aa]\s+-")
# kube-proxy's real-server line as `ipvsadm -Sn` prints it (most lines of a big table): read without the general
# option scanner below, to the same RealServer (what does not fit this exact shape takes the general path).
_SAVE_REAL = re.compile(r"-a -([tu]) (\S+) -r (\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}):(\d{1,5}) -([mgi]) -w (\d{1,5})")
_FORWARD = {"m": "Masq", "i": "Tunnel", "g": "Route"}
# and its virtual service line: `-A -t VIP:PORT -s SCHED [-p TIMEOUT]`.
_SAVE_SERVICE = re.compile(r"-A -([tu]) ((\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}):(\d{1,5})) -s (\S+)(?: -p (\d{1,10}))?")
# A whole `ipvsadm -Sn` of kube-proxy's, one virtual service at a time: its line and the real-server lines under it,
# every address a dotted IPv4 address inet_pton reads as written (0-255, no leading zero: the text is the address's
# own, so equal texts are equal addresses) and every port and weight 0-65535 without a leading zero. Such a text
# reads to what the line-by-line reader gives (`_save_service`, `_save_real`); the real servers are parsed when
# first asked for (`VirtualService.reals`). Any other text (a listing, a paste, comments) takes the line reader.
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4 = rf"{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}"
_U16 = r"(?:6553[0-5]|655[0-2]\d|65[0-4]\d\d|6[0-4]\d{3}|[1-5]\d{4}|[1-9]\d{0,3}|0)"
_KUBE_SAVE = re.compile(rf"-A -([tu]) (({_IPV4}):({_U16})) -s (\S+)(?: -p (\d{{1,10}}))?\n"
                        rf"((?:-a -\1 \2 -r {_IPV4}:{_U16} -[mgi] -w {_U16}\n)*)")
_KUBE_REAL = re.compile(r"-a -[tu] \S+ -r ([^:]+):(\d+) -([mgi]) -w (\d+)")  # a line _KUBE_SAVE checked


def looks_like_ipvsadm(text: str) -> bool:
    """True when the text is an ipvsadm listing or save output rather than iptables or nft rules."""
    head = text[:200000]
    ipvs = 3 * len(re.findall(r"(?m)^\s*IP Virtual Server version\b", head))
    ipvs += len(re.findall(r"(?m)^\s*(?:TCP|UDP|SCTP)\s+\S+:\S*\s+(?:" + "|".join(SCHEDULERS) + r")\b", head))
    ipvs += len(re.findall(r"(?m)^\s*(?:TCP|UDP|SCTP)\s+\S+:\S*\s+\d+[KMGT]?\s+\d+[KMGT]?\s", head))
    ipvs += len(re.findall(r"(?m)^\s*FWM\s+\d+\b", head))
    ipvs += 2 * len(re.findall(r"(?m)^\s*-A\s+(?:-[tuf]|--(?:tcp|udp|sctp)-service|--fwmark-service)\s+\S", head))
    ipvs += len(re.findall(r"(?m)^\s*->\s*\S+:\S*\s+(?:Masq|Route|Tunnel|Local)\s+-?\d+", head))
    if ipvs == 0:
        return False
    other = len(re.findall(r"(?m)^\s*(?:\[\d+:\d+\]\s*)?-[AIN]\s+[A-Za-z][\w.@-]*(?:\s|$)", head))
    other += len(re.findall(r"(?m)^\s*\*(?:nat|filter|mangle|raw|security)\b|^\s*:[\w-]+\s+(?:ACCEPT|DROP|-)\s", head))
    other += len(re.findall(r"(?m)^\s*Chain \S+ \((?:policy \w+|\d+ references?)", head))
    other += len(re.findall(r"(?m)^\s*table (?:ip|ip6|inet|arp|bridge|netdev) \S+ \{", head))
    return ipvs > other


# ipvsadm options that take a value (the others are flags)
_TAKES_VALUE = frozenset({"-t", "-u", "-f", "-s", "-r", "-w", "-x", "-y", "-M", "-b", "--tcp-service", "--udp-service",
                          "--sctp-service", "--fwmark-service", "--scheduler", "--real-server", "--weight",
                          "--netmask", "--sched-flags", "--pe", "pe", "--u-threshold", "--l-threshold", "--tun-type",
                          "--tun-port", "--tun-nocsum", "--tun-csum", "--tun-remcsum"})


class _Loader:
    def __init__(self, text: str, source: str) -> None:
        self.text = text
        self.source = source
        self.table = IPVSTable(source)
        self.warns: list[Warn] = []
        self.columns = "plain"  # plain | stats | rate | thresholds | persistent-conn
        self.seen_title = False
        self.saw_save = False
        self.saw_listing = False
        self.current: VirtualService | None = None
        self.by_key: dict[str, VirtualService] = {}
        self.exact: set[tuple[object, ...]] = set()  # (protocol, ip, port, fwmark) of the exact services listed
        self.ips: dict[str, IPAddress] = {}  # addresses read so far, by their text
        self.numeric: bool | None = None  # from the command line, when pasted
        self.orphans = 0
        self.connections = 0
        self.hosts: dict[str, IPAddress | None] = {}

    def warn(self, msg: str, line: int | None, code: str = "ipvsadm") -> None:
        self.warns.append(Warn(msg, self.source, line, code))

    def error(self, msg: str, line: int | None) -> InputError:
        return InputError(msg, source=self.source, line=line)

    # -- the whole text ---------------------------------------------------------------------
    def load(self) -> IPVSTable:
        if "\x00" in self.text[:65536]:
            at = self.text[: self.text.index("\x00")].count("\n") + 1
            raise self.error("this is binary data, not ipvsadm output", at)
        if self.text.startswith("-A -") and self._kube_save():
            return self.table
        for no, raw in enumerate(self.text.splitlines(), 1):
            line = raw.replace("\t", " ").strip()
            if not line:
                continue
            self.line(no, raw.rstrip(), line)
        t = self.table
        if not t.services:
            if self.connections:
                raise self.error("this is `ipvsadm -Lc` (the connection table), not the virtual servers: "
                                 "use `ipvsadm -Ln` or `ipvsadm -Sn`", 1)
            if not (self.seen_title or t.version):
                raise self.error("no IPVS virtual service found: expected `ipvsadm -Ln` or `ipvsadm -Sn` output", 1)
            self.warn("the IPVS table is empty: kube-proxy is not in IPVS mode here, or has not synced yet", None,
                      "empty")
        if t.services and not t.services[-1].reals and not self.saw_save:
            t.services[-1].maybe_cut = True
            self.warn(f"the paste ends right after {t.services[-1].label}, which has no real server listed: "
                      "they may have been cut off", t.services[-1].line, "truncated")
        if self.orphans:
            self.warn(f"{self.orphans} real server line(s) come before any virtual service (the paste starts "
                      "in the middle of a listing); they were skipped", None)
            t.partial = True
        if self.saw_save and self.saw_listing:
            self.warn("the text mixes ipvsadm -S (save) and -L (listing) output", None)
        if self.numeric is None:
            self.numeric = self._numeric_from_content()
        t.numeric = self.numeric
        if self.saw_save and not self.saw_listing:
            t.format = "ipvsadm -Sn" if self.numeric else "ipvsadm -S"
        else:
            t.format = "ipvsadm -L" + ("n" if self.numeric else "") + {
                "plain": "", "stats": " --stats", "rate": " --rate", "thresholds": " --thresholds",
                "persistent-conn": " --persistent-conn"}[self.columns]
        for s in t.services:
            for i, r in enumerate(s.reals, 1):
                r.position = i
        t.warnings = self.warns
        return t

    def _kube_save(self) -> bool:
        """The whole text in kube-proxy's `ipvsadm -Sn` shape (`_KUBE_SAVE`), read to the table the line reader would
        give; False (nothing kept) for any other text."""
        text = self.text if self.text.endswith("\n") else self.text + "\n"
        end = len(text)
        services: list[VirtualService] = []
        warns: list[Warn] = []
        by_key: dict[str, VirtualService] = {}
        ips = self.ips
        match = _KUBE_SAVE.match
        pos, no = 0, 1
        while pos < end:
            m = match(text, pos)
            if m is None:
                return False
            proto_flag, addr, host, port_text, scheduler, pers, reals = m.groups()
            if pers is not None and int(pers) > 2**32 - 1:
                return False
            ip = ips.get(host)
            if ip is None:
                ip = ips[host] = ip_of(host)
            proto = "tcp" if proto_flag == "t" else "udp"
            line = f"-A -{proto_flag} {addr} -s {scheduler}" + (f" -p {pers}" if pers is not None else "")
            vs = VirtualService(proto, host, ip, int(port_text), port_text, no, line, scheduler, family=4)
            if pers is not None:
                vs.persistent = int(pers)
            if scheduler not in SCHEDULERS:
                warns.append(Warn(f"unknown IPVS scheduler {scheduler!r}", self.source, no, "ipvsadm"))
            key = f"{proto}:{addr}"
            if key in by_key:
                warns.append(Warn(f"virtual service {vs.label} listed twice (two pastes?); the first one is used",
                                  self.source, no, "ipvsadm"))
            by_key[key] = vs
            if reals:
                vs._pending = (_kube_reals, reals, no + 1)
                no += reals.count("\n")
            services.append(vs)
            no += 1
            pos = m.end()
        if not services:
            return False
        t = self.table
        t.services = services
        t.warnings = warns
        t.numeric = True
        t.format = "ipvsadm -Sn"
        return True

    def _numeric_from_content(self) -> bool:
        for s in self.table.services:
            if s.fwmark is None and (s.ip is None or s.port is None) and s.port_text and not s.port_text.isdigit():
                return False
            if s.fwmark is None and s.port is None:
                return False
            for r in s.reals:
                if r.ip is None or not r.port_text.isdigit():
                    return False
        return True

    # -- one line ---------------------------------------------------------------------------
    def line(self, no: int, raw: str, line: str) -> None:
        if line.startswith("-a -") and self._save_real(no, raw, line):
            return
        if line.startswith("-A -") and self._save_service(no, raw, line):
            return
        if _ELISION.match(line):
            self.table.partial = True
            if self.current is not None:
                self.current.maybe_cut = True
            self.warn("the author elided part of the listing here: virtual servers may be missing", no, "elided")
            return
        if line.startswith("#"):
            if _COMMAND.search(line):
                self._command(no, line)
            return  # an author's annotation (`# calico.vxlan`) or a root prompt without a command
        m = _HEADER.match(line)
        if m:
            self.table.version = m.group(1)
            self.saw_listing = True
            return
        m = _TITLE.match(line)
        if m:
            cols = m.group(1)
            self.seen_title = True
            self.saw_listing = True
            if "Conns" in cols or "InPkts" in cols:
                self.columns = "stats"
            elif "CPS" in cols:
                self.columns = "rate"
            elif "Uthreshold" in cols:
                self.columns = "thresholds"
            elif "PersistConn" in cols:
                self.columns = "persistent-conn"
            else:
                self.columns = "plain"
            return
        if _DEST_TITLE.match(line):
            return
        if _SAVE.match(line):
            self._save(no, raw, line)
            return
        if _CONNS.match(line) or re.match(r"^(?:TCP|UDP|SCTP)\s+\d\d:\d\d\s+[A-Z_]+\s", line):
            self.connections += 1
            if self.connections == 1:
                self.warn("connection-table lines (ipvsadm -Lc) skipped: only virtual servers are modelled", no)
            return
        m = _SERVICE.match(line)
        if m:
            self._service(no, raw, m.group(1).lower(), m.group(2), m.group(3) or "")
            return
        m = _FWM.match(line)
        if m:
            self._fwm(no, raw, int(m.group(1)), bool(m.group(2)), m.group(3) or "")
            return
        m = _REAL.match(line)
        if m:
            self._real(no, raw, m.group(1), m.group(2) or "")
            return
        if _COMMAND.search(line) or (_PROMPT.match(line) and "ipvsadm" in line):
            self._command(no, line)
            return
        if re.match(r"^\S+@\S+[:~][^\s]*[#$]\s*$", line) or re.match(r"^\$\s*$", line):
            return  # a bare shell prompt
        self.warn(f"not ipvsadm output, skipped: {shorten(line, 80)}", no, "unknown-line")

    def _command(self, no: int, line: str) -> None:
        """A pasted command line: note what it asked ipvsadm for."""
        m = _COMMAND.search(line)
        args = line[m.end():] if m else ""
        args = args.split("#", 1)[0]
        words = args.split()
        short = "".join(w[1:] for w in words if w.startswith("-") and not w.startswith("--"))
        if "n" in short or "--numeric" in words:
            self.numeric = True
        elif ("L" in short or "l" in short or "S" in short or "--list" in words or "--save" in words):
            self.numeric = False
        self.warn(f"command line skipped: {shorten(line, 80)}", no, "pasted-text")

    # -- listing lines ----------------------------------------------------------------------
    def _service(self, no: int, raw: str, proto: str, addr: str, rest: str) -> None:
        self.saw_listing = True
        host, ip, port, port_text = self._addrport(addr, no, proto, "virtual service")
        words = rest.split()
        vs = VirtualService(proto, host, ip, port, port_text, no, raw.strip(),
                            family=ip.version if ip is not None else (6 if addr.startswith("[") else 4))
        if words and (self.columns in ("stats", "rate") or _NUMBER.match(words[0])):
            vs.scheduler = None
            vs.stats = self._numbers(words, ("conns", "inpkts", "outpkts", "inbytes", "outbytes")
                                     if self.columns != "rate" else ("cps", "inpps", "outpps", "inbps", "outbps"),
                                     no)
            if self.columns == "plain" and not self.seen_title:
                self.columns = "stats"
        elif words:
            self._service_flags(vs, words, no)
        else:
            vs.scheduler = None
            self.warn("virtual service without a scheduler", no)
        self._add_service(vs, no)

    def _fwm(self, no: int, raw: str, mark: int, v6: bool, rest: str) -> None:
        self.saw_listing = True
        vs = VirtualService("fwm", "", None, None, "", no, raw.strip(), fwmark=mark, family=6 if v6 else 4)
        words = rest.split()
        if words and not _NUMBER.match(words[0]):
            self._service_flags(vs, words, no)
        else:
            vs.scheduler = None
        self._add_service(vs, no)

    def _service_flags(self, vs: VirtualService, words: list[str], no: int) -> None:
        vs.scheduler = words[0]
        if vs.scheduler not in SCHEDULERS:
            self.warn(f"unknown IPVS scheduler {vs.scheduler!r}", no)
        flags: list[str] = []
        i = 1
        while i < len(words):
            w = words[i]
            if w == "persistent" and i + 1 < len(words):
                vs.persistent = self._int(words[i + 1], no, "persistence timeout", 0, 2**32 - 1)
                i += 2
            elif w == "mask" and i + 1 < len(words):
                vs.netmask = words[i + 1]
                i += 2
            elif w == "pe" and i + 1 < len(words):
                flags.append(f"pe {words[i + 1]}")
                i += 2
            else:
                flags.extend(w.strip("()").split(","))
                i += 1
        vs.flags = tuple(f for f in flags if f)

    def _real(self, no: int, raw: str, addr: str, rest: str) -> None:
        self.saw_listing = True
        vs = self.current
        if vs is None:
            self.orphans += 1
            return
        proto = vs.protocol if vs.protocol != "fwm" else "tcp"
        host, ip, port, port_text = self._addrport(addr, no, proto, "real server")
        rs = RealServer(host, ip, port, port_text, no, raw.strip())
        words = rest.split()
        cols = self.columns
        if cols == "plain" and words and _NUMBER.match(words[0]) and not self.seen_title:
            cols = "stats"
        if cols == "plain":
            if len(words) < 2:
                self.warn(f"real server line without Forward/Weight columns: {shorten(raw.strip(), 80)}", no)
                rs.forward, rs.weight = None, None
            else:
                if words[0] not in FORWARD_METHODS:
                    self.warn(f"unknown forwarding method {words[0]!r}", no)
                rs.forward = words[0]
                rs.weight = self._int(words[1], no, "weight", 0, 65535)
                if len(words) > 2:
                    rs.active = self._int(words[2], no, "ActiveConn", 0, None)
                if len(words) > 3:
                    rs.inactive = self._int(words[3], no, "InActConn", 0, None)
                if len(words) > 4:
                    self.warn(f"extra columns after InActConn ignored: {shorten(' '.join(words[4:]), 60)}", no)
        elif cols in ("stats", "rate"):
            rs.forward, rs.weight = None, None
            rs.stats = self._numbers(words, ("conns", "inpkts", "outpkts", "inbytes", "outbytes") if cols == "stats"
                                     else ("cps", "inpps", "outpps", "inbps", "outbps"), no)
        elif cols == "thresholds":
            rs.forward, rs.weight = None, None
            nums = [self._int(w, no, "column", 0, None) for w in words[:4]]
            if len(nums) == 4:
                rs.stats = {"uthreshold": nums[0], "lthreshold": nums[1]}
                rs.active, rs.inactive = nums[2], nums[3]
        else:  # persistent-conn: Weight PersistConn ActiveConn InActConn
            rs.forward = None
            nums = [self._int(w, no, "column", 0, None) for w in words[:4]]
            if len(nums) == 4:
                rs.weight, rs.persistent_conns, rs.active, rs.inactive = nums
        vs.reals.append(rs)

    def _numbers(self, words: list[str], names: tuple[str, ...], no: int) -> dict[str, int]:
        out: dict[str, int] = {}
        for name, w in zip(names, words, strict=False):
            m = _NUMBER.match(w)
            if not m:
                self.warn(f"not a number in a --stats/--rate column: {w!r}", no)
                break
            out[name] = int(m.group(1)) * {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}[m.group(2)]
        return out

    # -- save syntax ------------------------------------------------------------------------
    def _save(self, no: int, raw: str, line: str) -> None:
        self.saw_save = True
        words = line.split()
        cmd = words[0]
        opts = self._options(words[1:], no)
        proto, addr = None, None
        for flag, p in (("-t", "tcp"), ("--tcp-service", "tcp"), ("-u", "udp"), ("--udp-service", "udp"),
                        ("--sctp-service", "sctp")):
            if flag in opts:
                proto, addr = p, opts[flag]
        mark = opts.get("-f", opts.get("--fwmark-service"))
        if proto is None and mark is None:
            raise self.error(f"`{cmd}` without -t/-u/--sctp-service/-f: no virtual service named", no)
        v6 = "-6" in opts or "--ipv6" in opts
        key = f"{proto}:{addr}" if proto else f"fwm:{mark}:{v6}"
        if cmd == "-A":
            if mark is not None and proto is None:
                vs = VirtualService("fwm", "", None, None, "", no, raw.strip(),
                                    fwmark=self._int(mark, no, "firewall mark", 0, 2**32 - 1), family=6 if v6 else 4)
            else:
                assert proto is not None and addr is not None
                host, ip, port, port_text = self._addrport(addr, no, proto, "virtual service")
                vs = VirtualService(proto, host, ip, port, port_text, no, raw.strip(),
                                    family=ip.version if ip is not None else (6 if addr.startswith("[") else 4))
            vs.scheduler = opts.get("-s", opts.get("--scheduler", "wlc"))  # ipvsadm's default is wlc
            if vs.scheduler not in SCHEDULERS:
                self.warn(f"unknown IPVS scheduler {vs.scheduler!r}", no)
            pers = opts.get("-p", opts.get("--persistent"))
            if pers is not None:
                vs.persistent = self._int(pers, no, "persistence timeout", 0, 2**32 - 1) if pers else 300
            vs.netmask = opts.get("-M", opts.get("--netmask"))
            flags = []
            if "-b" in opts or "--sched-flags" in opts:
                flags.extend(opts.get("-b", opts.get("--sched-flags", "")).split(","))
            if "pe" in opts or "--pe" in opts:
                flags.append(f"pe {opts.get('pe', opts.get('--pe'))}")
            if "ops" in opts or "-o" in opts or "--ops" in opts:
                flags.append("ops")
            vs.flags = tuple(f for f in flags if f)
            self.by_key[key] = vs
            self._add_service(vs, no, key)
            return
        # -a: a real server of a service declared above
        vs2 = self.by_key.get(key)
        if vs2 is None:
            self.warn(f"`-a` for a virtual service with no `-A` line ({addr or mark}); assumed one "
                      "(scheduler unknown)", no)
            if proto is not None and addr is not None:
                host, ip, port, port_text = self._addrport(addr, no, proto, "virtual service")
                vs2 = VirtualService(proto, host, ip, port, port_text, no, raw.strip(), scheduler=None,
                                     family=ip.version if ip is not None else 4)
            else:
                vs2 = VirtualService("fwm", "", None, None, "", no, raw.strip(), scheduler=None,
                                     fwmark=self._int(mark or "0", no, "firewall mark", 0, 2**32 - 1))
            self.by_key[key] = vs2
            self._add_service(vs2, no, key)
        rtext = opts.get("-r", opts.get("--real-server"))
        if not rtext:
            raise self.error("`-a` without -r/--real-server", no)
        if rtext.startswith("["):
            has_port = "]:" in rtext
        else:
            has_port = rtext.count(":") == 1
        if not has_port:  # no port given: the real server takes the virtual service's port
            bare = rtext.strip("[]")
            rtext = f"[{bare}]:{vs2.port_text or 0}" if ":" in bare else f"{bare}:{vs2.port_text or 0}"
        host, ip, port, port_text = self._addrport(rtext, no, vs2.protocol if vs2.protocol != "fwm" else "tcp",
                                                   "real server")
        fwd = "Masq" if ("-m" in opts or "--masquerading" in opts) else (
            "Tunnel" if ("-i" in opts or "--ipip" in opts) else "Route")  # -g (gatewaying) is ipvsadm's default
        w = opts.get("-w", opts.get("--weight", "1"))
        rs = RealServer(host, ip, port, port_text, no, raw.strip(), forward=fwd,
                        weight=self._int(w, no, "weight", 0, 65535))
        if "-x" in opts or "-y" in opts:
            rs.stats = {"uthreshold": self._int(opts.get("-x", "0"), no, "threshold", 0, None),
                        "lthreshold": self._int(opts.get("-y", "0"), no, "threshold", 0, None)}
        vs2.reals.append(rs)
        self.current = None

    def _save_real(self, no: int, raw: str, line: str) -> bool:
        """`-a -t VIP:PORT -r RIP:PORT -m -w N` of a virtual service declared above, as `_save` reads it; False
        (nothing done) for any other line."""
        m = _SAVE_REAL.fullmatch(line)
        if m is None:
            return False
        proto, vaddr, host, port_text, fwd, weight = m.groups()
        vs = self.by_key.get(f"{'tcp' if proto == 't' else 'udp'}:{vaddr}")
        port, w = int(port_text), int(weight)
        if vs is None or port > 65535 or w > 65535:
            return False
        ip = self._ip(host)
        if ip is None:
            return False
        self.saw_save = True
        vs.reals.append(RealServer(host, ip, port, port_text, no, raw.strip(), forward=_FORWARD[fwd], weight=w))
        self.current = None
        return True

    def _ip(self, host: str) -> IPAddress | None:
        """A save line's address, parsed once per distinct text (kube-proxy repeats node and pod addresses);
        None when it is no address."""
        ip = self.ips.get(host)
        if ip is None:
            try:
                ip = self.ips[host] = ip_of(host)
            except ValueError:
                return None
        return ip

    def _save_service(self, no: int, raw: str, line: str) -> bool:
        """`-A -t VIP:PORT -s SCHED [-p N]`, as `_save` reads it; False (nothing done) for any other line."""
        m = _SAVE_SERVICE.fullmatch(line)
        if m is None:
            return False
        proto_flag, addr, host, port_text, scheduler, pers = m.groups()
        port = int(port_text)
        if port > 65535 or (pers is not None and int(pers) > 2**32 - 1):
            return False
        ip = self._ip(host)
        if ip is None:
            return False
        self.saw_save = True
        proto = "tcp" if proto_flag == "t" else "udp"
        vs = VirtualService(proto, host, ip, port, port_text, no, raw.strip(), family=ip.version)
        vs.scheduler = scheduler
        if scheduler not in SCHEDULERS:
            self.warn(f"unknown IPVS scheduler {scheduler!r}", no)
        if pers is not None:
            vs.persistent = int(pers)
        vs.netmask = None
        vs.flags = ()
        key = f"{proto}:{addr}"
        self.by_key[key] = vs
        self._add_service(vs, no, key)
        return True

    def _options(self, words: list[str], no: int) -> dict[str, str]:
        """`-t 10.0.0.1:80 -s rr -p 300 -m -w 1` -> {"-t": "10.0.0.1:80", "-s": "rr", ...}."""
        opts: dict[str, str] = {}
        i = 0
        while i < len(words):
            w = words[i]
            if "=" in w and w.startswith("--"):
                k, v = w.split("=", 1)
                opts[k] = v
            elif w in ("-p", "--persistent"):
                if i + 1 < len(words) and words[i + 1].isdigit():
                    opts[w] = words[i + 1]
                    i += 1
                else:
                    opts[w] = ""
            elif w in _TAKES_VALUE:
                if i + 1 >= len(words):
                    raise self.error(f"option {w} without a value", no)
                opts[w] = words[i + 1]
                i += 1
            elif w.startswith("-") or w == "ops":
                opts[w] = ""
            else:
                self.warn(f"unexpected word {w!r} in an ipvsadm rule", no)
            i += 1
        return opts

    # -- shared -----------------------------------------------------------------------------
    def _add_service(self, vs: VirtualService, no: int, key: str | None = None) -> None:
        k = key or f"{vs.protocol}:{vs.fwmark if vs.fwmark is not None else vs.address}:{vs.family}"
        if vs.exact:
            exact = (vs.protocol, vs.ip, vs.port, vs.fwmark)
            if exact in self.exact:
                self.warn(f"virtual service {vs.label} listed twice (two pastes?); the first one is used", no)
            self.exact.add(exact)
        self.by_key.setdefault(k, vs)
        self.table.services.append(vs)
        self.current = vs

    def _int(self, text: str, no: int, what: str, lo: int, hi: int | None) -> int:
        try:
            v = int(text)
        except ValueError:
            raise self.error(f"{what} {text!r} is not a number", no) from None
        if v < lo or (hi is not None and v > hi):
            raise self.error(f"{what} {v} is out of range", no)
        return v

    def _addrport(self, text: str, no: int, proto: str, what: str) -> tuple[str, IPAddress | None, int | None, str]:
        """Split `host:port` / `[v6]:port`. Returns (host as printed, address or None, port or None, port text)."""
        if text.startswith("["):
            end = text.find("]")
            if end < 0:
                self.warn(f"{what} {text!r}: unterminated IPv6 bracket", no)
                return text, None, None, ""
            host, rest = text[1:end], text[end + 1:]
            port_text = rest[1:] if rest.startswith(":") else ""
            truncatable = False
        else:
            host, sep, port_text = text.rpartition(":")
            if not sep:
                host, port_text = text, ""
            truncatable = len(text) >= TRUNCATED_AT
        ip = self._host_ip(host, no, what)
        port: int | None = None
        if port_text.isdigit():
            port = int(port_text)
            if port > 65535:
                raise self.error(f"{what} port {port} is out of range", no)
            if truncatable and self.numeric is not True and (ip is None or str(ip) != host):
                # `-L` without -n cuts `host:port` at 28 characters: the digits may be the start of the port
                self.warn(f"{what} {text!r}: the listing cut this field at {TRUNCATED_AT} characters, so the "
                          f"port may be longer than {port_text!r} (list with ipvsadm -Ln)", no, "truncated")
                port = None
        elif port_text:
            port = SERVICE_PORTS.get(port_text)
            if port is None:
                cut = " (possibly cut short)" if truncatable else ""
                self.warn(f"{what} {text!r}: port name {port_text!r}{cut} is not known; list with ipvsadm -Ln",
                          no, "unresolved")
        else:
            self.warn(f"{what} {text!r}: the port was cut off (ipvsadm -L without -n truncates names at "
                      f"{TRUNCATED_AT} characters); list with ipvsadm -Ln", no, "truncated")
        return host, ip, port, port_text

    def _host_ip(self, host: str, no: int, what: str) -> IPAddress | None:
        ip = self.ips.get(host)  # a virtual address is printed again on each of its real servers' lines
        if ip is not None:
            return ip
        try:
            ip = self.ips[host] = ip_of(host.split("%", 1)[0])
            return ip
        except ValueError:
            pass
        if host in self.hosts:  # said once per name, at its first line
            return self.hosts[host]
        ip = self._resolve(host, no, what)
        self.hosts[host] = ip
        return ip

    def _resolve(self, host: str, no: int, what: str) -> IPAddress | None:
        m = _EC2.match(host)
        if m and all(int(g) < 256 for g in m.groups()):
            ip = ipaddress.ip_address(".".join(str(int(g)) for g in m.groups()))  # ip-00-0-… (fuzzing)
            self.warn(f"host name {host!r}: address {ip} read from the EC2 name", no, "resolved")
            return ip
        if host == "localhost":
            return ipaddress.ip_address("127.0.0.1")
        if re.search(r"[<>]|x\.x|\*\*\*|XX", host):
            self.warn(f"{host!r} is not an address (redacted by the author?)", no, "redacted")
        else:
            self.warn(f"host name {host!r}: its address is unknown (list with ipvsadm -Ln)", no, "unresolved")
        return None


def _kube_reals(text: str, first: int) -> list[RealServer]:
    """The real-server lines `_KUBE_SAVE` checked, as `_Loader._save_real` reads them."""
    out: list[RealServer] = []
    ips: dict[str, IPAddress] = {}
    for i, line in enumerate(text.splitlines()):
        m = _KUBE_REAL.fullmatch(line)
        assert m is not None
        host, port_text, fwd, weight = m.groups()
        ip = ips.get(host)
        if ip is None:
            ip = ips[host] = ip_of(host)
        out.append(RealServer(host, ip, int(port_text), port_text, first + i, line, i + 1, _FORWARD[fwd],
                              int(weight)))
    return out


@keeps_objects
def load_ipvs(text: str, source: str = "<ipvsadm>") -> IPVSTable:
    """Parse `ipvsadm -Ln` / `-L` / `--stats` / `--rate` / `-Sn` output into an `IPVSTable`."""
    return _Loader(text, source).load()
