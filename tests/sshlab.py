"""SSH lab: real ``sshd`` servers, each in a network namespace of its own, for the SSH collector's tests.

Topology (every address is private and lives only inside namespaces made here; nothing is added to the
namespace the tests run in, and no packet leaves the sandbox)::

    client ns: br0 10.250.0.1/24 ──veth── node ns "n1": eth0 10.250.0.11   sshd, iptables rules
                                 ──veth── node ns "n2": eth0 10.250.0.12   …
                                 ──veth── bastion ns:  eth0 10.250.0.13, in1 10.251.1.1/24
                                                          └──veth── hidden ns: eth0 10.251.1.2 (no route
                                                                    from the client: ProxyJump only)

* The test talks to the nodes from the **client** namespace: ``with lab.client():`` moves the calling
  thread into it (``setns``); threads started inside (the collector's pool, paramiko's transports)
  inherit it. The previous namespace is restored on exit.
* Each node runs ``sshd -D`` under ``ip netns exec NS unshare --uts``: its own hostname (the node name
  svctrace must find) and a private mount namespace in which the lab bind-mounts its own copies of
  ``/etc/passwd``, ``/etc/group``, ``/etc/shadow``, ``/etc/hosts`` and ``/etc/sudoers.d``. So the
  non-root users ``ops`` (sudo without a password, limited to the dump tools) and ``nopw`` (sudo wants a
  password) exist only for these sshd processes; the machine's files are never changed.
* Rules: ``iptables-restore`` in the node namespace (``rules=``), optionally ``iptables-legacy-restore``
  (``legacy_rules=``). A fake kube-proxy (``kube_proxy=``) answers ``/proxyMode`` and ``/configz`` on
  127.0.0.1:10249 inside the node.
* Misbehaving nodes: ``silent`` (a TCP listener on port 22 that never says a word) and ``blackhole``
  (``iptables -j DROP`` of port 22: the TCP handshake never completes).
* Keys: one ed25519 user key (``lab.user_key``), one host key per node, generated with ``ssh-keygen`` in
  a temporary directory (0711 so that sshd can read the non-root users' authorized keys).

``close()`` (also at exit) kills every process in the lab's namespaces by pid and deletes the
namespaces and the directory. The only trace left on the machine is ``/run/sshd`` (sshd's privilege
separation directory), created when missing. Needs root, ``ip``, ``iptables-restore``, ``sshd``,
``ssh-keygen`` and ``unshare`` (Debian: iproute2, iptables, openssh-server, util-linux); ``sudo`` for the
sudo cases (skipped without it).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["LabNode", "SSHLab", "lab_available", "normalize_dump"]

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
CLONE_NEWNET = 0x40000000
_COUNTER = itertools.count(1)
_OPEN: set[SSHLab] = set()

CLIENT_NET = "10.250.0"
INNER_NET = "10.251"

# the sudoers rule svctrace's error message suggests: only the dump tools, no password
SUDO_TOOLS = ("/usr/sbin/iptables-save", "/usr/sbin/iptables-nft-save", "/usr/sbin/iptables-legacy-save",
              "/usr/sbin/ip6tables-save", "/usr/sbin/ip6tables-nft-save", "/usr/sbin/ip6tables-legacy-save",
              "/usr/sbin/nft", "/usr/sbin/ipset", "/usr/sbin/ipvsadm")
USERS = {"ops": 5001, "nopw": 5002}

KUBELET_HINTS = "*mangle\n:KUBE-IPTABLES-HINT - [0:0]\n:KUBE-KUBELET-CANARY - [0:0]\nCOMMIT\n"

_FAKE_KUBE_PROXY = r"""
import http.server, json, sys
mode, configz = sys.argv[1], sys.argv[2]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = {"/proxyMode": mode, "/configz": configz}.get(self.path)
        if body is None:
            self.send_error(404); return
        data = body.encode()
        self.send_response(200); self.send_header("Content-Length", str(len(data))); self.end_headers()
        self.wfile.write(data)
    def log_message(self, *a):
        pass
http.server.HTTPServer(("127.0.0.1", 10249), H).serve_forever()
"""

_SILENT = r"""
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 22)); s.listen(128)
while True:
    time.sleep(3600)   # accepts TCP (the kernel does, from the backlog) and never answers
"""


def lab_available() -> tuple[bool, str]:
    if not sys.platform.startswith("linux"):
        return False, "not Linux"
    if os.geteuid() != 0:
        return False, "needs root (network namespaces, sshd)"
    for tool in ("ip", "iptables-restore", "iptables-save", "ssh-keygen", "unshare", "mount"):
        if shutil.which(tool) is None:
            return False, f"{tool} not found on PATH"
    if not os.access(SSHD, os.X_OK):
        return False, "sshd not installed (Debian: openssh-server)"
    name = f"sshlab-{os.getpid()}-check"
    try:
        res = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True, timeout=20)
        if res.returncode != 0:
            return False, f"cannot create a network namespace: {res.stderr.strip()}"
    except (OSError, subprocess.SubprocessError) as e:
        return False, f"cannot use network namespaces: {e}"
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
    return True, ""


def sudo_available() -> bool:
    return os.path.exists("/usr/bin/sudo") and os.path.isdir("/etc/sudoers.d")


def normalize_dump(text: str) -> list[str]:
    """An iptables-save dump without its comment lines (timestamps) and counters (they move with the SSH
    traffic itself), for comparing two dumps of the same rules."""
    out = []
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        if line.startswith(":"):
            name, policy = line.split()[:2]
            out.append(f"{name} {policy}")
        elif line.startswith("["):
            out.append(line.split("] ", 1)[1])
        else:
            out.append(line)
    return out


def _run(argv: list[str], *, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=60, check=False)
    if check and res.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:6])}…: exit {res.returncode}: {res.stderr.strip()[:500]}")
    return res


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


@contextlib.contextmanager
def in_netns(name: str) -> Iterator[None]:
    """Run the calling thread (and the threads it starts) in network namespace ``name``."""
    libc = _libc()
    orig = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(target, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({name}): {os.strerror(err)}")
        try:
            yield
        finally:
            if libc.setns(orig, CLONE_NEWNET) != 0:  # pragma: no cover - would leave the thread elsewhere
                raise OSError(ctypes.get_errno(), "cannot return to the original network namespace")
    finally:
        os.close(orig)
        os.close(target)


@dataclass
class LabNode:
    name: str  # its hostname
    ns: str
    addr: str
    host_pub: str = ""  # "ssh-ed25519 AAAA..."
    host_key_file: str = ""
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    kind: str = "sshd"  # sshd | silent | blackhole

    @property
    def known_hosts_line(self) -> str:
        return f"{self.addr} {self.host_pub}\n"

    def iptables_save(self, tool: str = "iptables-save") -> str:
        return _run(["ip", "netns", "exec", self.ns, tool, "-c"]).stdout


class SSHLab:
    def __init__(self) -> None:
        self.tag = f"sshlab{os.getpid()}x{next(_COUNTER)}"
        self.root = Path(tempfile.mkdtemp(prefix=f"{self.tag}-"))
        os.chmod(self.root, 0o711)
        self.client_ns = f"{self.tag}-c"
        self.nodes: dict[str, LabNode] = {}
        self._namespaces: list[str] = []
        self._next_host = 11
        self._next_inner = 1
        _OPEN.add(self)
        try:
            self._setup()
        except BaseException:
            self.close()
            raise

    # -- setup --------------------------------------------------------------------------------------

    def _setup(self) -> None:
        self._netns(self.client_ns)
        c = self.client_ns
        _run(["ip", "-n", c, "link", "add", "br0", "type", "bridge"])
        _run(["ip", "-n", c, "addr", "add", f"{CLIENT_NET}.1/24", "dev", "br0"])
        _run(["ip", "-n", c, "link", "set", "br0", "up"])
        self.user_key = str(self.root / "id_user")
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "svctrace-lab", "-f", self.user_key])
        pub = Path(self.user_key + ".pub").read_text()
        auth = self.root / "authorized_keys"
        auth.mkdir(mode=0o755)
        for user in ("root", *USERS):
            (auth / user).write_text(pub)
            os.chmod(auth / user, 0o644)
        # the lab's /etc overlay: users, sudoers.d, hosts (bind-mounted inside each sshd's mount namespace)
        etc = self.root / "etc"
        etc.mkdir()
        # root's login shell is /bin/sh here: a bash root with a heavy ~/.bashrc (pyenv …) would run it for
        # every SSH command and dominate the timings; nodes rarely have one
        passwd = "".join(("root:x:0:0:root:/root:/bin/sh\n" if ln.startswith("root:") else ln + "\n")
                         for ln in Path("/etc/passwd").read_text().splitlines())
        group = Path("/etc/group").read_text()
        # no copy of the machine's password hashes: every account gets "*" (no password, not locked)
        shadow = "".join(f"{ln.split(':', 1)[0]}:*:19000:0:99999:7:::\n" for ln in passwd.splitlines() if ln)
        for user, uid in USERS.items():
            passwd += f"{user}:x:{uid}:{uid}:svctrace lab:/:/bin/sh\n"
            group += f"{user}:x:{uid}:\n"
            shadow += f"{user}:*:19000:0:99999:7:::\n"
        (etc / "passwd").write_text(passwd)
        (etc / "group").write_text(group)
        (etc / "shadow").write_text(shadow)
        os.chmod(etc / "passwd", 0o644)
        os.chmod(etc / "group", 0o644)
        os.chmod(etc / "shadow", 0o640)
        sudoers = etc / "sudoers.d"
        sudoers.mkdir(mode=0o750)
        (sudoers / "svctrace-lab").write_text(
            f"ops ALL=(root) NOPASSWD: {', '.join(SUDO_TOOLS)}\n"
            "nopw ALL=(root) ALL\n")
        os.chmod(sudoers / "svctrace-lab", 0o440)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory

    def _netns(self, name: str) -> None:
        _run(["ip", "netns", "add", name])
        self._namespaces.append(name)
        _run(["ip", "-n", name, "link", "set", "lo", "up"])

    def _link_to_client(self, ns: str) -> str:
        i = self._next_host
        self._next_host += 1
        if i > 250:
            raise RuntimeError("the lab's /24 is full")
        addr = f"{CLIENT_NET}.{i}"
        veth = f"v{i}"
        _run(["ip", "-n", self.client_ns, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns])
        _run(["ip", "-n", self.client_ns, "link", "set", veth, "master", "br0", "up"])
        _run(["ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0"])
        _run(["ip", "-n", ns, "link", "set", "eth0", "up"])
        return addr

    def _link_behind(self, bastion: LabNode, ns: str) -> str:
        k = self._next_inner
        self._next_inner += 1
        inner = f"in{k}"
        _run(["ip", "-n", bastion.ns, "link", "add", inner, "type", "veth", "peer", "name", "eth0", "netns", ns])
        _run(["ip", "-n", bastion.ns, "addr", "add", f"{INNER_NET}.{k}.1/24", "dev", inner])
        _run(["ip", "-n", bastion.ns, "link", "set", inner, "up"])
        addr = f"{INNER_NET}.{k}.2"
        _run(["ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0"])
        _run(["ip", "-n", ns, "link", "set", "eth0", "up"])
        return addr

    def add_node(self, name: str, *, rules: str | None = None, legacy_rules: str | None = None,
                 kube_proxy: tuple[str, dict[str, object]] | None = None, behind: LabNode | None = None,
                 kind: str = "sshd", sshd_extra: str = "") -> LabNode:
        """A node namespace named after ``name`` (its hostname). ``kind``: sshd | silent | blackhole."""
        ns = f"{self.tag}-{len(self._namespaces)}"
        self._netns(ns)
        addr = self._link_behind(behind, ns) if behind is not None else self._link_to_client(ns)
        node = LabNode(name, ns, addr, kind=kind)
        self.nodes[name] = node
        if rules is not None:
            _run(["ip", "netns", "exec", ns, "iptables-restore", "-w", "5"], input=rules)
        if legacy_rules is not None:
            _run(["ip", "netns", "exec", ns, "iptables-legacy-restore", "-w", "5"], input=legacy_rules)
        if kind == "blackhole":
            _run(["ip", "netns", "exec", ns, "iptables", "-w", "5", "-I", "INPUT", "-p", "tcp", "--dport", "22",
                  "-j", "DROP"])
            return node
        if kind == "silent":
            node.procs.append(self._spawn(ns, [sys.executable, "-c", _SILENT, addr]))
            self._wait_listen(node, addr, 22)
            return node
        if kube_proxy is not None:
            mode, configz = kube_proxy
            node.procs.append(self._spawn(ns, [sys.executable, "-c", _FAKE_KUBE_PROXY, mode, json.dumps(configz)]))
        self._start_sshd(node, sshd_extra)
        if kube_proxy is not None:
            self._wait_listen(node, "127.0.0.1", 10249, proc=node.procs[0])
        return node

    def _spawn(self, ns: str, argv: list[str], *, log: Path | None = None) -> subprocess.Popen[bytes]:
        out = open(log, "wb") if log is not None else subprocess.DEVNULL  # noqa: SIM115 - handed to the child
        try:
            return subprocess.Popen(["ip", "netns", "exec", ns, *argv], stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=out, start_new_session=True)
        finally:
            if log is not None and not isinstance(out, int):
                out.close()

    def _start_sshd(self, node: LabNode, extra: str) -> None:
        d = self.root / node.ns
        d.mkdir()
        key = d / "ssh_host_ed25519_key"
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(key)])
        node.host_key_file = str(key)
        node.host_pub = " ".join(Path(str(key) + ".pub").read_text().split()[:2])
        cfg = d / "sshd_config"
        cfg.write_text(textwrap.dedent(f"""\
            ListenAddress {node.addr}:22
            HostKey {key}
            AuthorizedKeysFile {self.root}/authorized_keys/%u
            PasswordAuthentication no
            KbdInteractiveAuthentication no
            UsePAM no
            StrictModes no
            PermitRootLogin prohibit-password
            AllowTcpForwarding yes
            PidFile none
            MaxStartups 100:30:200
            LogLevel ERROR
            """) + extra)
        etc = self.root / "etc"
        hosts = d / "hosts"
        hosts.write_text(f"127.0.0.1 localhost\n127.0.1.1 {node.name}\n")
        binds = [(etc / "passwd", "/etc/passwd"), (etc / "group", "/etc/group"), (hosts, "/etc/hosts")]
        if os.path.exists("/etc/shadow"):
            binds.append((etc / "shadow", "/etc/shadow"))
        if os.path.isdir("/etc/sudoers.d"):
            binds.append((etc / "sudoers.d", "/etc/sudoers.d"))
        script = "set -e\n" + f"hostname {node.name}\n" + "".join(
            f"mount --bind {src} {dst}\n" for src, dst in binds) + f"exec {SSHD} -D -e -f {cfg}\n"
        proc = self._spawn(node.ns, ["unshare", "--uts", "sh", "-c", script], log=d / "sshd.log")
        node.procs.append(proc)
        self._wait_listen(node, node.addr, 22, proc=proc, log=d / "sshd.log")

    def _wait_listen(self, node: LabNode, addr: str, port: int, *, proc: subprocess.Popen[bytes] | None = None,
                     log: Path | None = None) -> None:
        """Until something listens on addr:port in the node's namespace (read from /proc/PID/net/tcp)."""
        proc = proc or node.procs[-1]
        want = f"{_hex_addr(addr)}:{port:04X}"
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                detail = log.read_text()[-800:] if log is not None and log.exists() else ""
                raise RuntimeError(f"{node.name}: the server exited ({proc.returncode}) {detail}")
            try:
                table = Path(f"/proc/{proc.pid}/net/tcp").read_text()
            except OSError:
                table = ""
            if any(len(f := ln.split()) > 3 and f[1] == want and f[3] == "0A" for ln in table.splitlines()):
                return
            time.sleep(0.01)
        raise RuntimeError(f"{node.name}: nothing listens on {addr}:{port} after 15 s")

    # -- use ----------------------------------------------------------------------------------------

    def client(self) -> contextlib.AbstractContextManager[None]:
        """``with lab.client():`` — the calling thread (and what it starts) in the client namespace."""
        return in_netns(self.client_ns)

    def known_hosts(self, path: Path, nodes: list[LabNode]) -> Path:
        path.write_text("".join(n.known_hosts_line for n in nodes if n.host_pub))
        return path

    def ssh_config(self, path: Path, extra: str = "") -> Path:
        """A config: ``extra`` first (first value wins), then the user key for every host, root by default."""
        path.write_text(extra + textwrap.dedent(f"""
            Host *
              User root
              IdentityFile {self.user_key}
              IdentitiesOnly yes
            """))
        return path

    # -- teardown -----------------------------------------------------------------------------------

    def close(self) -> None:
        for node in self.nodes.values():
            for p in node.procs:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(p.pid, signal.SIGTERM)
        for ns in self._namespaces:
            self._kill_ns(ns, signal.SIGTERM)
        deadline = time.monotonic() + 3
        for node in self.nodes.values():
            for p in node.procs:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(timeout=max(0.05, deadline - time.monotonic()))
        for ns in self._namespaces:
            self._kill_ns(ns, signal.SIGKILL)
        for node in self.nodes.values():
            for p in node.procs:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(timeout=2)
        for ns in reversed(self._namespaces):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        self._namespaces.clear()
        self.nodes.clear()
        shutil.rmtree(self.root, ignore_errors=True)
        _OPEN.discard(self)

    @staticmethod
    def _kill_ns(ns: str, sig: int) -> None:
        res = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, check=False)
        for pid in res.stdout.split():
            with contextlib.suppress(ProcessLookupError, ValueError, PermissionError):
                os.kill(int(pid), sig)

    def __enter__(self) -> SSHLab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _hex_addr(addr: str) -> str:
    return socket.inet_aton(addr)[::-1].hex().upper()


@atexit.register
def _close_all() -> None:
    for lab in list(_OPEN):
        lab.close()
