"""What svctrace runs on a node, and which bundle file each output goes to — as data.

Transport-neutral. ``collect_node(run)`` turns ``COMMANDS`` into one POSIX ``sh`` script, hands it to
``run`` (an SSH exec, an exec into a debug pod, a local subprocess …), parses the framed output and returns
a ``NodeDump``. A transport only has to run a script in the node's namespaces and return its exit code,
stdout and stderr (both: each command's output is framed on stdout, its errors on stderr)::

    def run(script: str) -> RunResult:          # as the login user; the script uses `sudo -n` itself
        ...                                     # ssh: exec `sh -s`, script on stdin; a privileged
                                                # debug pod: `chroot /host sh -s`, or
                                                # `nsenter -t 1 -m -u -n -- sh -s` (hostPID)

    dump = collect_node(run, host="worker-1", transport="debug-pod", use_sudo=False)
    dump.name = "worker-1"                      # when the caller knows the node name better than the
                                                # hostname (hostname-override, cloud names)

The commands (``COMMANDS``; ``describe()`` prints them):

=====================================  ====================================================================
file                                   command (first variant whose tool exists and that exits 0)
=====================================  ====================================================================
iptables-save, ip6tables-save          ``iptables-nft-save -c`` / ``iptables-legacy-save -c`` (the backend
                                       kube-proxy uses, see below); plain ``iptables-save -c`` where neither
                                       exists
iptables-legacy-save (ip6…)            ``iptables-legacy-save -c`` when the legacy backend is not the one in
                                       use but also holds rules (``-A`` lines); only run when
                                       ``/proc/net/ip_tables_names`` lists tables (no module loading)
iptables-nft-save (ip6…)               the nft backend's dump when *legacy* is in use and nft also holds
                                       rules (an extra file; readers ignore files they do not know)
nft.json (or nft)                      ``nft -j list ruleset`` (``nft list ruleset`` without JSON support)
ipvsadm                                ``ipvsadm -Sn``; only when ``/proc/net/ip_vs`` exists (IPVS in use)
ipset                                  ``ipset save``; only when the ip_set module is loaded
ip-addr.json (or ip-addr)              ``ip -j addr`` (``ip -o addr``)
ip-route.json (or ip-route)            ``ip -j route show table all`` (``ip route show table all``)
proxy-mode                             ``curl http://127.0.0.1:10249/proxyMode`` (wget, python3 when there is
                                       no curl); only when /proc/net/tcp shows a listener on port 10249
configz.json                           the same for ``/configz``, when ``/proxyMode`` answered
ip-rule.json (or ip-rule)              ``ip -j rule`` (``ip rule``)
sysctl                                 ``SYSCTL_KEYS`` read from ``/proc/sys`` (``*``: every interface;
                                       ``net.bridge.*`` exist only with br_netfilter) as ``key = value``
hairpin-mode                           ``IFACE 0|1``: each bridge port's ``brport/hairpin_mode``
modules                                the ``MODULES`` lines of ``/proc/modules`` (skipped without it)
conntrack                              ``conntrack -L -o extended`` (the flows; the first
                                       ``CONNTRACK_MAX_LINES`` kept, errors.json says when more were cut);
                                       only when the nf_conntrack module is loaded
(node name, user)                      the hostname (/proc/sys/kernel/hostname) and uid, read by the shell
=====================================  ====================================================================

Backend detection (``detect_backend``) is the iptables-wrappers heuristic kube-proxy's image uses: kubelet
creates ``KUBE-IPTABLES-HINT`` / ``KUBE-KUBELET-CANARY`` in the mangle table of the backend it uses, so
hint chains in iptables-nft's mangle table mean nft, else in iptables-legacy's mean legacy, else the
backend with more rules wins (legacy only when strictly more). Both full dumps are taken in one pass and
the mangle sections read from them.

A tool that is missing, a command that fails or times out, a condition that says "not in use" — each is
a ``NodeError`` for that file in ``errors.json``, never a failure of the node. The node fails only when
the script cannot run at all or when no dataplane dump (iptables or nftables) could be read (typically
``sudo`` wanting a password).

Root: commands marked ``root`` run through ``sudo -n`` when the login user is not root and ``use_sudo``
(only the netfilter dumps: ``iptables*-save``, ``nft``, ``ipvsadm``, ``ipset``), so a sudoers rule can
be limited to exactly those programs. Standard library only.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from svctrace.collect.bundle import NodeDump, NodeError, safe_name, scrub_file, scrub_text

__all__ = [
    "COMMANDS",
    "SYSCTL_KEYS",
    "NodeCommand",
    "Output",
    "RunResult",
    "Runner",
    "Variant",
    "build_script",
    "collect_node",
    "describe",
    "detect_backend",
    "holds_rules",
    "interpret",
    "parse_output",
]

PROXY_METRICS = "127.0.0.1:10249"  # kube-proxy's default metricsBindAddress
SYSCTL_KEYS = (  # what decides Service traffic on a node (docs/snapshots.md); `*` is every interface
    "net.ipv4.ip_forward",
    "net.ipv6.conf.all.forwarding",
    "net.ipv4.conf.*.forwarding",
    "net.ipv4.conf.*.route_localnet",
    "net.ipv4.conf.*.rp_filter",
    "net.bridge.bridge-nf-call-iptables",  # present only when br_netfilter is loaded (or built in)
    "net.bridge.bridge-nf-call-ip6tables",
    "net.netfilter.nf_conntrack_max",
    "net.netfilter.nf_conntrack_count",
    "net.netfilter.nf_conntrack_buckets",
    "net.netfilter.nf_conntrack_tcp_be_liberal",
    "net.netfilter.nf_conntrack_tcp_loose",
    "net.netfilter.nf_conntrack_udp_timeout",
    "net.netfilter.nf_conntrack_udp_timeout_stream",
    "net.netfilter.nf_conntrack_tcp_timeout_established",
    "net.ipv4.vs.*",  # a subtree: conntrack, expire_nodest_conn, … (only when ip_vs is loaded)
)
# Modules whose presence changes the path (br_netfilter: bridged frames through iptables; ip_vs: IPVS mode).
MODULES = ("br_netfilter", "bridge", "ip_vs", "ip_vs_rr", "ip_vs_wrr", "ip_vs_sh", "nf_conntrack", "nf_nat",
           "nf_tables", "ip_tables", "iptable_nat", "iptable_filter", "xt_physdev", "veth", "vxlan")
MAX_STDERR = 600  # characters of a failing command's stderr kept in errors.json


@dataclass(frozen=True)
class Variant:
    """One way to get a file: ``argv`` (its first word is the tool looked up on PATH) and, when it differs
    from the command's, the bundle file its output goes to (``ip -o addr`` -> ``ip-addr``)."""

    argv: tuple[str, ...]
    file: str | None = None

    @property
    def tool(self) -> str:
        return self.argv[0]

    def display(self) -> str:
        return shlex.join(self.argv) if len(" ".join(self.argv)) < 120 else f"{self.argv[0]} … (script)"


@dataclass(frozen=True)
class NodeCommand:
    """What to run for one bundle file.

    ``key`` names the command in the script's output and in errors; ``file`` is the bundle file
    (None: read by svctrace itself, like the hostname, or assigned after backend detection, like the
    iptables dumps); ``variants`` are tried in order until one exits 0; ``root`` runs them through
    ``sudo -n`` for a non-root login (and under ``timeout``: only the netfilter dumps can hang); ``when`` is
    a shell condition (false: skipped, and ``skipped`` says why in errors.json); ``requires`` names a
    command that must have succeeded first; ``value`` replaces ``variants`` with a shell word the script
    already knows (no process is started: ``$H`` the hostname, ``$U`` the uid)."""

    key: str
    file: str | None
    variants: tuple[Variant, ...]
    root: bool = False
    when: str | None = None
    skipped: str = ""
    hint: str = ""
    fallback_on_failure: bool = True  # False: later variants only when the earlier tools are missing
    requires: str | None = None
    value: str | None = None


def _v(*argv: str, file: str | None = None) -> Variant:
    return Variant(tuple(argv), file)


def _http(path: str) -> tuple[Variant, ...]:
    url = f"http://{PROXY_METRICS}{path}"
    py = ("import sys,urllib.request as u\n"
          "try:\n"
          f" r=u.build_opener(u.ProxyHandler({{}})).open({url!r},timeout=5)\n"
          "except Exception as e:\n"
          f" sys.exit({url!r}+': '+str(getattr(e,'reason',e)))\n"
          "sys.stdout.write(r.read().decode('utf-8','replace'))")
    return (_v("curl", "-sS", "-f", "--max-time", "5", "--noproxy", "*", url),
            _v("wget", "-q", "-O", "-", "-T", "5", url),
            _v("python3", "-c", py))


# The sysctls read from /proc/sys (the `sysctl` tool cannot expand a key per interface): one `grep -H` over the
# files that exist, turned into `key = value` by sed (an interface's dots become slashes, as sysctl writes them);
# one `cat` a file where there is no grep (the shell's `read` cannot read sysctl files: it reads byte by byte,
# and integer sysctls answer only the first byte).
_SYSCTL_PATHS = " ".join("/proc/sys/" + k.replace(".", "/") for k in SYSCTL_KEYS)
_SYSCTL_LOOP = (
    "set --; for f in " + _SYSCTL_PATHS + "; do [ -f \"$f\" ] && set -- \"$@\" \"$f\"; done; "
    "[ $# -gt 0 ] || exit 0; "
    "if command -v grep >/dev/null 2>&1 && command -v sed >/dev/null 2>&1; then "
    "grep -H '' \"$@\" | sed -e 's|^/proc/sys/||' -e 'h;s|:.*||;y|./|/.|;G;s|\\n[^:]*:| = |'; "
    "else for f in \"$@\"; do k=${f#/proc/sys/}; "
    "printf '%s = %s\\n' \"$(printf %s \"$k\" | tr './' '/.')\" \"$(cat \"$f\")\"; done; fi")
# Each bridge port's hairpin_mode as `IFACE 0|1`.
_HAIRPIN = (
    "for f in /sys/class/net/*/brport/hairpin_mode; do [ -f \"$f\" ] || continue; "
    "d=${f%/brport/hairpin_mode}; printf '%s %s\\n' \"${d##*/}\" \"$(cat \"$f\")\"; done")
_MODULES = "grep -E '^(" + "|".join(MODULES) + ") ' /proc/modules; exit 0"

# A listener on 127.0.0.1 or 0.0.0.0 (::1 or :: in tcp6) at the metrics port, state 0A (LISTEN): spares
# starting curl when there is no kube-proxy to ask. Without grep or /proc, curl is tried anyway.
_PORT_HEX = f"{int(PROXY_METRICS.rsplit(':', 1)[1]):04X}"
_LISTENING = ("{ ! have grep || ! [ -r /proc/net/tcp ] || grep -qE "
              f"'^ *[0-9]+: (0100007F|00000000|0{{24}}0{{8}}|0{{24}}01000000):{_PORT_HEX} [0-9A-F:]+ 0A ' "
              "/proc/net/tcp /proc/net/tcp6 2>/dev/null; }")
_LEGACY4 = "nonempty /proc/net/ip_tables_names"
_LEGACY6 = "nonempty /proc/net/ip6_tables_names"
_PLAIN = "! have iptables-nft-save && ! have iptables-legacy-save"
_PLAIN6 = "! have ip6tables-nft-save && ! have ip6tables-legacy-save"

COMMANDS: tuple[NodeCommand, ...] = (
    NodeCommand("hostname", None, (), value="$H"),  # /proc/sys/kernel/hostname, else `uname -n`
    NodeCommand("uid", None, (), value="$U"),  # `id -u`
    NodeCommand("iptables-version", None, (_v("iptables", "-V"),), when=_PLAIN, skipped="not needed"),
    NodeCommand("iptables-nft-save", None, (_v("iptables-nft-save", "-c"),), root=True),
    NodeCommand("ip6tables-nft-save", None, (_v("ip6tables-nft-save", "-c"),), root=True),
    NodeCommand("iptables-legacy-save", None, (_v("iptables-legacy-save", "-c"),), root=True, when=_LEGACY4,
                skipped="the legacy backend holds no tables (/proc/net/ip_tables_names is empty)"),
    NodeCommand("ip6tables-legacy-save", None, (_v("ip6tables-legacy-save", "-c"),), root=True, when=_LEGACY6,
                skipped="the legacy backend holds no tables (/proc/net/ip6_tables_names is empty)"),
    NodeCommand("iptables-save", None, (_v("iptables-save", "-c"),), root=True, when=_PLAIN,
                skipped="iptables-nft-save/iptables-legacy-save used instead"),
    NodeCommand("ip6tables-save", None, (_v("ip6tables-save", "-c"),), root=True, when=_PLAIN6,
                skipped="ip6tables-nft-save/ip6tables-legacy-save used instead"),
    NodeCommand("nft", "nft.json", (_v("nft", "-j", "list", "ruleset"), _v("nft", "list", "ruleset", file="nft")),
                root=True, hint="install nftables (only nftables-mode kube-proxy and iptables-nft need it)"),
    NodeCommand("ipvsadm", "ipvsadm", (_v("ipvsadm", "-Sn"),), root=True, when="[ -e /proc/net/ip_vs ]",
                skipped="IPVS is not in use (no /proc/net/ip_vs: the ip_vs module is not loaded)",
                hint="install ipvsadm (only IPVS-mode kube-proxy needs it)"),
    NodeCommand("ipset", "ipset", (_v("ipset", "save"),), root=True, when="[ -d /sys/module/ip_set ]",
                skipped="no IP sets (the ip_set module is not loaded; not loading it either)",
                hint="install ipset (IPVS-mode kube-proxy and some CNIs use sets)"),
    NodeCommand("ip-addr", "ip-addr.json", (_v("ip", "-j", "addr"), _v("ip", "-o", "addr", file="ip-addr"))),
    NodeCommand("ip-route", "ip-route.json", (_v("ip", "-j", "route", "show", "table", "all"),
                                              _v("ip", "route", "show", "table", "all", file="ip-route"))),
    NodeCommand("proxy-mode", "proxy-mode", _http("/proxyMode"), fallback_on_failure=False, when=_LISTENING,
                skipped=f"nothing listens on {PROXY_METRICS} (kube-proxy's default metrics address; "
                        "/proc/net/tcp has no such listener)",
                hint=f"kube-proxy serves it on its metrics address ({PROXY_METRICS} by default; "
                     "metricsBindAddress in its configuration)"),
    NodeCommand("configz", "configz.json", _http("/configz"), fallback_on_failure=False, requires="proxy-mode",
                skipped="kube-proxy's metrics endpoint did not answer (see proxy-mode)",
                hint=f"kube-proxy serves it on its metrics address ({PROXY_METRICS} by default)"),
    NodeCommand("ip-rule", "ip-rule.json", (_v("ip", "-j", "rule"), _v("ip", "rule", file="ip-rule"))),
    NodeCommand("sysctl", "sysctl", (_v("sh", "-c", _SYSCTL_LOOP),)),
    NodeCommand("hairpin-mode", "hairpin-mode", (_v("sh", "-c", _HAIRPIN),)),
    NodeCommand("modules", "modules", (_v("sh", "-c", _MODULES),), when="[ -r /proc/modules ]",
                skipped="no /proc/modules: the kernel loads no modules (what it has is built in)"),
)

# conntrack's flows (docs/snapshots.md: nodes/NAME/conntrack), a block of its own. A busy node tracks
# hundreds of thousands of flows: interpret() keeps the first CONNTRACK_MAX_LINES lines.
CONNTRACK_MAX_LINES = 20000
CONNTRACK = NodeCommand(
    "conntrack", "conntrack", (_v("conntrack", "-L", "-o", "extended"),), root=True,
    when="[ -e /proc/net/nf_conntrack ] || [ -d /sys/module/nf_conntrack ]",
    skipped="connection tracking is not loaded (no nf_conntrack module)",
    hint="install conntrack (conntrack-tools); svctrace reads flows pinned to endpoints that have left")
COMMANDS = (*COMMANDS, CONNTRACK)

_IPTABLES_KEYS = ("iptables-nft-save", "ip6tables-nft-save", "iptables-legacy-save", "ip6tables-legacy-save",
                  "iptables-save", "ip6tables-save")


def describe(commands: Sequence[NodeCommand] = COMMANDS) -> list[tuple[str, str]]:
    """(bundle file or key, commands) pairs, for documentation and ``--help`` text."""
    out = []
    for c in commands:
        cmds = " || ".join(("sudo -n " if c.root else "") + v.display() for v in c.variants) or f"echo {c.value}"
        out.append((c.file or c.key, cmds + (f"  (when: {c.when})" if c.when else "")))
    return out


# --------------------------------------------------------------------------------------------------
# the script and its framed output

_PRELUDE = """\
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH; export PATH
LC_ALL=C; export LC_ALL
unset http_proxy HTTP_PROXY https_proxy HTTPS_PROXY all_proxy ALL_PROXY
umask 077
N={nonce}
trap 'exit 130' INT TERM HUP
U=
while read -r k _ e _; do if [ "$k" = Uid: ]; then U=$e; break; fi; done 2>/dev/null </proc/self/status
[ -n "$U" ] || U=$(id -u 2>/dev/null)
H=
{{ read -r H </proc/sys/kernel/hostname; }} 2>/dev/null
[ -n "$H" ] || H=$(uname -n 2>/dev/null)
SUDO=
if [ {use_sudo} = 1 ] && [ "$U" != 0 ]; then SUDO="sudo -n"; fi
TMO=
if command -v timeout >/dev/null 2>&1; then TMO="timeout {timeout}"; fi
have() {{ command -v "$1" >/dev/null 2>&1; }}
nonempty() {{ _l=; {{ read -r _l <"$1"; }} 2>/dev/null; [ -n "$_l" ]; }}
skip() {{ printf '@@%s skip %s\\n' "$N" "$1"; }}
val() {{ printf '@@%s out %s.0\\n%s\\n@@%s end %s.0 0\\n' "$N" "$1" "$2" "$N" "$1"; c=0; }}
run() {{
  k=$1; r=$2; shift 2
  printf '@@%s out %s\\n' "$N" "$k"
  printf '@@%s err %s\\n' "$N" "$k" >&2
  if [ "$r" = 1 ]; then $TMO $SUDO "$@" </dev/null; else "$@" </dev/null; fi
  c=$?
  printf '\\n@@%s end %s %s\\n' "$N" "$k" "$c"
  printf '\\n@@%s end %s\\n' "$N" "$k" >&2
  return 0
}}
"""


def _ok_var(key: str) -> str:
    return "ok_" + re.sub(r"[^A-Za-z0-9]", "_", key)


def build_script(nonce: str, commands: Sequence[NodeCommand] = COMMANDS, *, use_sudo: bool = True,
                 command_timeout: float = 120.0) -> str:
    """The POSIX sh script that runs ``commands`` and frames each output with ``nonce`` (hex)."""
    if not re.fullmatch(r"[0-9a-f]{8,64}", nonce):
        raise ValueError("nonce must be lower-case hex")
    lines = [_PRELUDE.format(nonce=nonce, use_sudo=1 if use_sudo else 0, timeout=max(1, int(command_timeout)))]
    for cmd in commands:
        body = ["c=127; d=0"]
        again = '[ "$c" != 0 ]' if cmd.fallback_on_failure else '[ "$d" = 0 ]'
        if cmd.value is not None:
            body.append(f'val {cmd.key} "{cmd.value}"')
        for i, v in enumerate(cmd.variants):
            body.append(f"if {again} && have {shlex.quote(v.tool)}; then "
                        f"run {cmd.key}.{i} {1 if cmd.root else 0} {shlex.join(v.argv)}; d=1; fi")
        body.append(f'if [ "$c" = 0 ]; then {_ok_var(cmd.key)}=1; fi')
        cond = " && ".join(x for x in (cmd.when and f"{{ {cmd.when}; }}",
                                       cmd.requires and f'[ "${_ok_var(cmd.requires)}" = 1 ]') if x)
        if cond:
            lines.append(f"if {cond}; then\n  " + "\n  ".join(body) + f"\nelse skip {cmd.key}; fi")
        else:
            lines.extend(body)
    lines.append("exit 0")
    return "\n".join(lines) + "\n"


@dataclass
class RunResult:
    """What a transport gives back for the script: its exit code, stdout and stderr (bytes)."""

    exit_code: int | None
    stdout: bytes
    stderr: bytes = b""


Runner = Callable[[str], RunResult]


@dataclass
class Output:
    """One command variant's run, as framed by the script."""

    key: str
    variant: int
    exit_code: int | None
    stdout: bytes
    stderr: bytes
    complete: bool = True


@dataclass
class Parsed:
    outputs: dict[str, list[Output]] = field(default_factory=dict)  # command key -> variants run, in order
    skipped: set[str] = field(default_factory=set)
    frames: int = 0


def _frames(data: bytes, tag: bytes, opener: bytes) -> list[tuple[str, bytes, bytes | None]]:
    """(key, body, rest of the end line or None when cut short) for each ``<tag><opener> KEY`` frame."""
    out: list[tuple[str, bytes, bytes | None]] = []
    start = tag + opener + b" "
    pos = 0
    while (i := data.find(start, pos)) >= 0:
        eol = data.find(b"\n", i)
        if eol < 0:
            break
        key = data[i + len(start):eol]
        end = b"\n" + tag + b"end " + key
        j = data.find(end, eol)
        while j >= 0 and data[j + len(end):j + len(end) + 1] not in (b" ", b"\n"):
            j = data.find(end, j + 1)  # `a.1` must not end at `a.10`
        name = key.decode("ascii", "replace")
        if j < 0:
            out.append((name, data[eol + 1:], None))
            break
        eol2 = data.find(b"\n", j + len(end))
        eol2 = len(data) if eol2 < 0 else eol2
        out.append((name, data[eol + 1:j], data[j + len(end):eol2].strip()))
        pos = eol2
    return out


def parse_output(nonce: str, stdout: bytes, stderr: bytes = b"") -> Parsed:
    """Split the script's stdout and stderr into per-command outputs. Robust to cut-short streams (the last
    output is then ``complete=False``); anything outside frames is ignored."""
    tag = b"@@" + nonce.encode() + b" "
    res = Parsed()
    errs = {k: body for k, body, _ in _frames(stderr, tag, b"err")}
    for m in re.finditer(re.escape(tag) + rb"skip (\S+)\n", stdout):
        res.skipped.add(m.group(1).decode("ascii", "replace"))
        res.frames += 1
    for name, body, rest in _frames(stdout, tag, b"out"):
        key, _, idx = name.rpartition(".")
        rc: int | None = None
        if rest is not None:
            with contextlib.suppress(ValueError):
                rc = int(rest)
        res.frames += 1
        res.outputs.setdefault(key, []).append(
            Output(key, int(idx) if idx.isdigit() else 0, rc, body, errs.get(name, b""),
                   complete=rest is not None and rc is not None))
    return res


# --------------------------------------------------------------------------------------------------
# backend detection

_HINT = re.compile(rb"^:(KUBE-IPTABLES-HINT|KUBE-KUBELET-CANARY)\s", re.M)


def _table(dump: bytes, name: bytes) -> bytes:
    m = re.search(rb"(?ms)^\*" + name + rb"\s*$(.*?)^COMMIT\s*$", dump)
    return m.group(1) if m else b""


_RULE = re.compile(rb"^(?:\[\d+:\d+\] )?-A ", re.M)  # `-A …`, or `[pkts:bytes] -A …` with -c


def holds_rules(dump: bytes | None) -> bool:
    """The dump has at least one rule (an ``-A`` line)."""
    return bool(dump) and _RULE.search(dump or b"") is not None


def _rules(dump: bytes | None) -> int:
    return len(_RULE.findall(dump or b""))


def detect_backend(nft: Sequence[bytes | None], legacy: Sequence[bytes | None],
                   version: str = "") -> tuple[str | None, str]:
    """(backend, why): "nft" or "legacy", from the IPv4 and IPv6 dumps of each backend (None: not taken).

    iptables-wrappers' rule: kubelet's hint chains in nft's mangle table -> nft; else in legacy's -> legacy;
    else more rules in legacy than in nft -> legacy; else nft. With no dump of either backend, the
    ``iptables -V`` text decides ("(nf_tables)" / "(legacy)"; versions before 1.8 are legacy)."""
    have_nft = any(d is not None for d in nft)
    have_legacy = any(d is not None for d in legacy)
    if have_nft or have_legacy:
        nh = sum(len(_HINT.findall(_table(d, b"mangle"))) for d in nft if d)
        if nh:
            return "nft", "kubelet's hint chains (KUBE-IPTABLES-HINT/KUBE-KUBELET-CANARY) are in iptables-nft's mangle table"
        lh = sum(len(_HINT.findall(_table(d, b"mangle"))) for d in legacy if d)
        if lh:
            return "legacy", "kubelet's hint chains are in iptables-legacy's mangle table"
        nr, lr = sum(_rules(d) for d in nft), sum(_rules(d) for d in legacy)
        if not have_nft:
            return "legacy", "only iptables-legacy is installed"
        if not have_legacy and nr == 0:
            return "nft", "no kubelet hint chains; the legacy backend holds no tables; iptables-nft is installed"
        if lr > nr:
            return "legacy", f"no kubelet hint chains; iptables-legacy holds more rules ({lr}) than iptables-nft ({nr})"
        return "nft", f"no kubelet hint chains; iptables-nft holds {nr} rules, iptables-legacy {lr}"
    if "nf_tables" in version:
        return "nft", "iptables -V says nf_tables"
    if "legacy" in version or re.search(r"v1\.[0-7]\.", version):
        return "legacy", "iptables -V says legacy"
    return None, "no iptables dump and no iptables -V"


# --------------------------------------------------------------------------------------------------
# turning outputs into bundle files and errors

_SUDO_FAIL = re.compile(r"(?i)sudo: (a password is required|a terminal is required|.*not in the sudoers|"
                        r".*not allowed to (execute|run)|.*may not run sudo|sorry, you must have a tty)|"
                        r"sudo: not found|sudo: command not found|sudo: no such file|failed to run command .sudo.")


def _first_lines(b: bytes, n: int = 3) -> str:
    text = scrub_text(b.decode("utf-8", "replace")).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()][:n]
    s = " | ".join(lines)
    return s[:MAX_STDERR] + ("…" if len(s) > MAX_STDERR else "")


def _ok(o: Output) -> bool:
    return o.complete and o.exit_code == 0


def _failure(cmd: NodeCommand, runs: list[Output], skipped: bool, file: str, timeout: float) -> NodeError:
    if skipped:
        return NodeError(file, f"not collected: {cmd.skipped}", command=cmd.variants[0].display())
    if not runs:
        tools = ", ".join(dict.fromkeys(v.tool for v in cmd.variants))
        return NodeError(file, f"not installed: no {tools} on the node's PATH", exit_code=127,
                         hint=cmd.hint or None)
    last = runs[0]  # the preferred tool's failure says most (later variants are fallbacks)
    v = cmd.variants[last.variant] if last.variant < len(cmd.variants) else cmd.variants[0]
    stderr = _first_lines(last.stderr) or None
    if not last.complete:
        msg = "output cut short (the connection or the script ended mid-way)"
    elif last.exit_code == 124:
        msg = f"timed out after {int(timeout)} s"
    elif stderr and _SUDO_FAIL.search(stderr):
        msg = f"{_sudo_says(stderr)}: {stderr}"
    elif cmd.key in ("proxy-mode", "configz") and last.exit_code == 7:
        msg = f"nothing answers on {PROXY_METRICS} (connection refused)"
    else:
        msg = f"exit code {last.exit_code}" + (f": {stderr}" if stderr else "")
    return NodeError(file, msg, command=(("sudo -n " if cmd.root else "") + v.display()),
                     exit_code=last.exit_code, stderr=stderr, hint=cmd.hint or None)


def interpret(parsed: Parsed, result: RunResult, *, host: str = "", transport: str = "ssh",
              commands: Sequence[NodeCommand] = COMMANDS, command_timeout: float = 120.0) -> NodeDump:
    """The NodeDump for a script run: files, errors, backend, name, ok."""
    dump = NodeDump(name=safe_name(host or "node"), host=host, transport=transport)
    if not parsed.frames:
        err = _first_lines(result.stderr) or "no output"
        if _SUDO_FAIL.search(err):
            return dump.fail("sudo", f"{_sudo_says(err)}: {err}", hint=_sudo_hint(err))
        return dump.fail("node", f"the collection script did not run (exit code {result.exit_code}): {err}")
    outs = parsed.outputs

    def first_ok(key: str) -> Output | None:
        return next((o for o in outs.get(key, []) if _ok(o)), None)

    if (o := first_ok("hostname")) and o.stdout.strip():
        # The kubelet names a node after its hostname, lower-cased (unless --hostname-override).
        dump.name = safe_name(o.stdout.decode("utf-8", "replace").strip().lower())
    if (o := first_ok("uid")) and o.stdout.strip():
        dump.user = "root" if o.stdout.strip() == b"0" else f"uid {o.stdout.strip().decode('ascii', 'replace')}"
    by_key = {c.key: c for c in commands}

    # Root commands all refused by sudo: one clear node-level error instead of one per file.
    root_runs = [o for c in commands if c.root for o in outs.get(c.key, [])]
    sudo_fail = [o for o in root_runs if not _ok(o) and _SUDO_FAIL.search(o.stderr.decode("utf-8", "replace"))]
    if root_runs and len(sudo_fail) == len(root_runs):
        err = _first_lines(sudo_fail[0].stderr, 1)
        return dump.fail("sudo", f"not root, and {_sudo_says(err)}: {err}", hint=_sudo_hint(err))

    for cmd in commands:
        if cmd.file is None:
            continue
        runs = outs.get(cmd.key, [])
        good = next((o for o in runs if _ok(o)), None)
        if good is not None:
            v = cmd.variants[good.variant]
            dump.files[v.file or cmd.file] = good.stdout
        else:
            dump.errors.append(_failure(cmd, runs, cmd.key in parsed.skipped, cmd.file, command_timeout))

    # iptables: detect the backend, then file the dumps.
    got: dict[str, bytes | None] = {k: (o.stdout if (o := first_ok(k)) else None) for k in _IPTABLES_KEYS}
    version = (first_ok("iptables-version") or Output("", 0, 0, b"", b"")).stdout.decode("utf-8", "replace")
    backend, why = detect_backend((got["iptables-nft-save"], got["ip6tables-nft-save"]),
                                  (got["iptables-legacy-save"], got["ip6tables-legacy-save"]), version)
    dump.backend, dump.backend_reason = backend, why
    other = "legacy" if backend == "nft" else "nft"
    for fam in ("iptables", "ip6tables"):
        primary = got[f"{fam}-{backend}-save"] if backend else None
        if primary is None and got[f"{fam}-save"] is not None:
            primary = got[f"{fam}-save"]
        if primary is not None:
            dump.files[f"{fam}-save"] = primary
        else:
            tried = [k for k in (f"{fam}-nft-save", f"{fam}-legacy-save", f"{fam}-save")
                     if outs.get(k) and k in by_key]
            if tried:
                dump.errors.append(_failure(by_key[tried[0]], outs[tried[0]], False, f"{fam}-save", command_timeout))
            else:
                dump.errors.append(NodeError(f"{fam}-save", f"not installed: no {fam}-save, {fam}-nft-save or "
                                             f"{fam}-legacy-save on the node's PATH", exit_code=127))
        if backend:
            extra = got[f"{fam}-{other}-save"]
            if holds_rules(extra):
                assert extra is not None
                dump.files[f"{fam}-{other}-save"] = extra

    _cap_conntrack(dump)
    dump.ok = "iptables-save" in dump.files or "nft.json" in dump.files or "nft" in dump.files
    if not dump.ok:
        dump.errors.insert(0, NodeError("node", "no dataplane dump (iptables or nftables) could be read"))
    # scrub now so that errors.json can say what was dropped (write_bundle scrubs again, as a guarantee)
    for fname in list(dump.files):
        notes: list[str] = []
        dump.files[fname] = scrub_file(fname, dump.files[fname], notes)
        dump.scrubbed.extend(notes)
    return dump


def _cap_conntrack(dump: NodeDump) -> None:
    data = dump.files.get(CONNTRACK.file or "")
    if data is None or data.count(b"\n") <= CONNTRACK_MAX_LINES:
        return
    total = data.count(b"\n")
    cut = 0
    for _ in range(CONNTRACK_MAX_LINES):
        cut = data.index(b"\n", cut) + 1
    dump.files[CONNTRACK.file or ""] = data[:cut]
    dump.errors.append(NodeError(CONNTRACK.file or "", f"truncated: the first {CONNTRACK_MAX_LINES} of {total} flows "
                                 "kept (CONNTRACK_MAX_LINES)", command=CONNTRACK.variants[0].display()))


_SUDO_MISSING = re.compile(r"(?i)sudo: (not found|command not found|no such file)|failed to run command .sudo.")


def _sudo_says(stderr: str) -> str:
    """What sudo's failure means: not installed at all, or installed and refusing."""
    return "sudo is not installed on the node" if _SUDO_MISSING.search(stderr) else "sudo refused"


def _sudo_hint(stderr: str) -> str:
    if _SUDO_MISSING.search(stderr):
        return "connect as root (e.g. root@HOST), or install sudo and let the user run the dump tools"
    return _SUDO_HINT


_SUDO_HINT = ("connect as root, or let the user run the dump tools without a password, e.g. in sudoers: "
              "`USER ALL=(root) NOPASSWD: /usr/sbin/iptables-save, /usr/sbin/iptables-nft-save, "
              "/usr/sbin/iptables-legacy-save, /usr/sbin/ip6tables-save, /usr/sbin/ip6tables-nft-save, "
              "/usr/sbin/ip6tables-legacy-save, /usr/sbin/nft, /usr/sbin/ipset, /usr/sbin/ipvsadm, /usr/sbin/conntrack`")


def collect_node(run: Runner, *, host: str = "", transport: str = "ssh", use_sudo: bool = True,
                 command_timeout: float = 120.0, commands: Sequence[NodeCommand] = COMMANDS) -> NodeDump:
    """Run ``commands`` on a node through ``run`` (one script, one call) and return its NodeDump.

    ``run(script)`` executes the POSIX sh script as the login user (stdin or ``sh -c`` — the script reads
    nothing from stdin) and returns a RunResult; a transport failure should raise (the caller turns it into
    a failed NodeDump). ``use_sudo``: prefix root commands with ``sudo -n`` when the user is not root.
    ``command_timeout`` bounds each command on the node (``timeout`` when the node has it)."""
    nonce = secrets.token_hex(16)
    script = build_script(nonce, commands, use_sudo=use_sudo, command_timeout=command_timeout)
    result = run(script)
    parsed = parse_output(nonce, result.stdout, result.stderr)
    return interpret(parsed, result, host=host, transport=transport, commands=commands,
                     command_timeout=command_timeout)
