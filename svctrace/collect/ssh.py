"""Collect node dumps over SSH (paramiko): the SSH half of `svctrace collect`.

``collect_ssh(hosts, out=...)`` connects to every host (``[USER@]HOST[:PORT]``, or an alias of the SSH
config), runs ``svctrace.collect.commands`` there in one ``sh -s`` session, and writes a bundle.
``collect_nodes_ssh`` does the same without writing (NodeDumps in memory), for a caller that mixes
transports or adds ``cluster.json``.

Like ``ssh``:

* the SSH config (``ssh_config`` or ``~/.ssh/config`` then ``/etc/ssh/ssh_config``): ``HostName``,
  ``User``, ``Port``, ``IdentityFile``, ``IdentitiesOnly``, ``IdentityAgent none``, ``ProxyJump`` (chains
  too, each hop a ``direct-tcpip`` channel through the previous one; one connection per jump host,
  shared by all nodes behind it), ``ProxyCommand``, ``HostKeyAlias``, ``UserKnownHostsFile``,
  ``GlobalKnownHostsFile``, ``StrictHostKeyChecking accept-new``/``no`` (= trust new keys);
* authentication by the SSH agent and key files (``~/.ssh/id_*`` unless ``IdentitiesOnly``); never by
  password, and no passphrase is asked for (add encrypted keys to the agent);
* host keys: known_hosts (``known_hosts``, else the config's/``~/.ssh/known_hosts`` and the system
  files). An unknown key is refused unless ``trust_new_host_keys`` (then remembered in the user's
  known_hosts, like ``accept-new``); the message says how to trust one. A key that differs from a known
  one — another key of the same type, or only keys of other types known — is always refused.
* not root: root commands run through ``sudo -n``; sudo wanting a password is a clear error.

Bounded: ``parallel`` nodes at a time; for each node ``timeout`` seconds to connect (TCP, SSH handshake,
authentication, through every jump) and ``command_timeout`` seconds for the collection. A node's failure
is a result (``NodeDump.ok`` False, its ``errors.json`` says why), never the end of the run. Node names
come from each host's hostname (lower-cased, as the kubelet does).

Nothing secret is logged or stored: no passwords are used, keys stay in paramiko, and every bundle file
goes through ``bundle.scrub_file``.
"""

from __future__ import annotations

import contextlib
import getpass
import logging
import os
import select
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paramiko

from svctrace.collect import commands as _commands
from svctrace.collect.bundle import (
    NodeDump,
    assemble,
    make_meta,
    safe_name,
    unique_names,
    write_bundle,
)
from svctrace.collect.commands import RunResult
from svctrace.limits import MAX_NODE_OUTPUT, SSH_COMMAND_TIMEOUT, SSH_CONNECT_TIMEOUT

__all__ = ["TRUST_FLAG", "CollectResult", "HostSpec", "collect_nodes_ssh", "collect_ssh", "parse_host"]

TRUST_FLAG = "--trust-new-host-keys"  # the CLI option named in the unknown-key message
MAX_OUTPUT = MAX_NODE_OUTPUT  # bytes of script output accepted from one node (svctrace.limits)
MAX_STDERR_BYTES = 4 * 1024 * 1024  # stderr kept (the rest is read and dropped)
MAX_HOPS = 8

Progress = Callable[[str, str], None]

# paramiko logs its transport threads' failures at ERROR, tracebacks included ("Exception (client): Error
# reading SSH protocol banner" and the stack); with no handler configured, Python's last-resort handler
# prints them on stderr. svctrace reports every node's failure itself (one line, and errors.json), so
# paramiko's log goes nowhere, whatever the root logger does.
_PARAMIKO_LOG = logging.getLogger("paramiko")
_PARAMIKO_LOG.addHandler(logging.NullHandler())
_PARAMIKO_LOG.propagate = False


# --------------------------------------------------------------------------------------------------
# hosts and results

@dataclass(frozen=True)
class HostSpec:
    """``[USER@]HOST[:PORT]`` (IPv6: ``[ADDR]`` or ``[ADDR]:PORT``)."""

    host: str
    user: str | None = None
    port: int | None = None
    text: str = ""


def parse_host(text: str) -> HostSpec:
    s = text.strip()
    if not s or any(c.isspace() for c in s):
        raise ValueError(f"not a host: {text!r} (expected [USER@]HOST[:PORT])")
    user = None
    if "@" in s:
        user, _, s = s.rpartition("@")
        if not user:
            raise ValueError(f"empty user in {text!r}")
    port: int | None = None
    if s.startswith("["):
        host, sep, rest = s[1:].partition("]")
        if not sep:
            raise ValueError(f"unclosed [ in {text!r}")
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"unexpected text after ] in {text!r}")
            port = _port(rest[1:], text)
    elif s.count(":") == 1:
        host, _, p = s.partition(":")
        port = _port(p, text)
    else:
        host = s  # a name, an IPv4 address, or a bare IPv6 address
    if not host:
        raise ValueError(f"empty host in {text!r}")
    return HostSpec(host, user, port, text.strip())


def _port(p: str, text: str) -> int:
    if not p.isdigit() or not 0 < int(p) < 65536:
        raise ValueError(f"bad port {p!r} in {text!r} (a port is 1-65535)")
    return int(p)


@dataclass
class CollectResult:
    """What ``collect_ssh`` did: the bundle path (None when not written), every node's dump (in the order
    of ``hosts``; failed nodes included), the meta.json written, the wall time."""

    out: Path | None
    nodes: list[NodeDump]
    meta: dict[str, Any] = field(default_factory=dict)
    elapsed: float = 0.0
    scrubbed: list[str] = field(default_factory=list)  # where the bundle writer dropped secret-looking text

    @property
    def ok(self) -> bool:
        return bool(self.nodes) and all(n.ok for n in self.nodes)

    @property
    def failed(self) -> list[NodeDump]:
        return [n for n in self.nodes if not n.ok]

    def summary(self) -> str:
        good = sum(n.ok for n in self.nodes)
        s = f"{good}/{len(self.nodes)} nodes collected in {self.elapsed:.1f} s"
        for n in self.failed:
            why = n.errors[0].error if n.errors else "failed"
            s += f"\n  {n.host or n.name}: {why}"
        return s


# --------------------------------------------------------------------------------------------------
# failures

class _NodeFailure(Exception):
    def __init__(self, what: str, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.what, self.message, self.hint = what, message, hint


def _fp(key: paramiko.PKey) -> str:
    return f"{key.get_name()} {key.fingerprint}"


# --------------------------------------------------------------------------------------------------
# a per-node deadline that closes what the node's thread is blocked on

class _Watchdog:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._objs: list[Any] = []
        self._timer: threading.Timer | None = None
        self.stage = ""
        self.seconds = 0.0
        self.deadline = float("inf")
        self.fired: str | None = None

    def arm(self, seconds: float, stage: str) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            self.stage, self.seconds = stage, seconds
            self.deadline = time.monotonic() + seconds
            self._timer = threading.Timer(seconds, self._fire)
            self._timer.daemon = True
            self._timer.start()

    def remaining(self) -> float:
        return max(0.05, self.deadline - time.monotonic())

    def watch(self, obj: Any) -> None:
        with self._lock:
            self._objs.append(obj)
            fired = self.fired
        if fired:
            _close(obj)

    def _fire(self) -> None:
        with self._lock:
            self.fired = self.stage
            objs = list(self._objs)
        for o in reversed(objs):
            _close(o)

    def abort(self) -> None:
        with self._lock:
            self.stage = self.stage or "aborted"
        self._fire()

    def cancel(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None


def _close(o: Any) -> None:
    with contextlib.suppress(Exception):
        o.close()


# --------------------------------------------------------------------------------------------------
# known hosts

class _KnownHosts:
    """known_hosts files, loaded once per run and shared by the node threads; new keys are appended."""

    def __init__(self, trust_new: bool) -> None:
        self.trust_new = trust_new
        self._lock = threading.Lock()
        self._files: dict[str, paramiko.HostKeys] = {}

    def _load(self, path: str) -> paramiko.HostKeys:
        with self._lock:
            hk = self._files.get(path)
            if hk is None:
                hk = paramiko.HostKeys()
                with contextlib.suppress(OSError):
                    hk.load(path)
                self._files[path] = hk
            return hk

    def known(self, name: str, files: Sequence[str]) -> dict[str, paramiko.PKey]:
        out: dict[str, paramiko.PKey] = {}
        for f in files:
            sub = self._load(f).lookup(name)
            if sub:
                for ktype, key in sub.items():
                    out.setdefault(ktype, key)
        return out

    def remember(self, name: str, key: paramiko.PKey, path: str) -> None:
        line = f"{name} {key.get_name()} {key.get_base64()}\n"
        with self._lock:
            p = Path(path)
            if str(p) != os.devnull:
                p.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                fd = os.open(p, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                with os.fdopen(fd, "a") as fh:
                    fh.write(line)
            hk = self._files.setdefault(path, paramiko.HostKeys())
            hk.add(name, key.get_name(), key)


class _Policy(paramiko.MissingHostKeyPolicy):
    """Called by paramiko only when no key at all is known for the name (known keys were loaded into the
    client, so paramiko itself refuses a different key of a known type, and a key of an unknown type when
    other types are known: both are "changed")."""

    def __init__(self, store: _KnownHosts, target: _Target) -> None:
        self.store, self.target = store, target

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        t = self.target
        if self.store.trust_new or t.trust_new:
            self.store.remember(hostname, key, t.user_known_hosts[0])
            return
        files = ", ".join(t.user_known_hosts + t.global_known_hosts)
        ktype = {"ssh-rsa": "rsa", "ssh-ed25519": "ed25519"}.get(key.get_name(), key.get_name().split("-")[0])
        scan = f"ssh-keyscan -p {t.port} -t {ktype} {t.hostname}"
        raise _NodeFailure(
            "host-key",
            f"unknown host key for {hostname} ({_fp(key)}): it is not in {files}",
            f"check the fingerprint with the node's owner, then add it (`{scan} >> {t.user_known_hosts[0]}`), "
            f"or collect with {TRUST_FLAG} to accept and remember keys of hosts seen for the first time "
            "(a changed key is always refused)")


# --------------------------------------------------------------------------------------------------
# connecting

@dataclass
class _Target:
    alias: str
    hostname: str
    port: int
    user: str
    identity_files: list[str]
    identities_only: bool
    agent: bool
    proxy_jump: list[str]
    proxy_command: str | None
    key_name: str  # the name looked up in known_hosts
    user_known_hosts: list[str]
    global_known_hosts: list[str]
    trust_new: bool

    def display(self) -> str:
        return f"{self.user}@{self.hostname}" + (f":{self.port}" if self.port != 22 else "")


def _local_user() -> str:
    """Who ssh would log in as without User: the local user name."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "root" if os.geteuid() == 0 else str(os.geteuid())


def _split_files(value: Any) -> list[str]:
    if not value:
        return []
    vals = value if isinstance(value, list) else str(value).split()
    return [os.path.expanduser(v) for v in vals]


class _Session:
    """One run: options, the SSH config, known hosts, shared jump connections."""

    def __init__(self, *, timeout: float, command_timeout: float, trust_new: bool, known_hosts: str | None,
                 ssh_config: str | None, use_sudo: bool, progress: Progress | None) -> None:
        self.timeout, self.command_timeout, self.use_sudo = timeout, command_timeout, use_sudo
        self.known_hosts = os.path.expanduser(known_hosts) if known_hosts else None
        self.store = _KnownHosts(trust_new)
        self.config = paramiko.SSHConfig()
        paths = [ssh_config] if ssh_config else ["~/.ssh/config", "/etc/ssh/ssh_config"]
        for p in paths:
            path = os.path.expanduser(p)
            if ssh_config or os.path.isfile(path):
                try:
                    with open(path) as fh:
                        self.config.parse(fh)
                except OSError as e:
                    raise ValueError(f"cannot read the SSH config {path}: {e.strerror}") from None
        self._progress = progress
        self._plock = threading.Lock()
        self._lock = threading.Lock()
        self._jumps: dict[tuple[str, ...], _Shared] = {}
        self._dogs: set[_Watchdog] = set()

    def note(self, host: str, msg: str) -> None:
        if self._progress is not None:
            with self._plock, contextlib.suppress(Exception):
                self._progress(host, msg)

    def resolve(self, alias: str, user: str | None = None, port: int | None = None) -> _Target:
        o = self.config.lookup(alias)
        hostname = str(o.get("hostname") or alias)
        port = port or int(o.get("port") or 22)
        user = user or o.get("user") or _local_user()
        jump = str(o.get("proxyjump") or "")
        hops = [] if jump.lower() in ("", "none") else [h.strip() for h in jump.split(",") if h.strip()]
        pcmd = o.get("proxycommand")
        pcmd = None if not pcmd or str(pcmd).lower() == "none" else str(pcmd)
        alias_key = o.get("hostkeyalias")
        key_name = str(alias_key) if alias_key else (hostname if port == 22 else f"[{hostname}]:{port}")
        if self.known_hosts:
            user_kh, global_kh = [self.known_hosts], []
        else:
            user_kh = _split_files(o.get("userknownhostsfile")) or [os.path.expanduser("~/.ssh/known_hosts"),
                                                                    os.path.expanduser("~/.ssh/known_hosts2")]
            global_kh = _split_files(o.get("globalknownhostsfile")) or ["/etc/ssh/ssh_known_hosts",
                                                                        "/etc/ssh/ssh_known_hosts2"]
        strict = str(o.get("stricthostkeychecking") or "").lower()
        return _Target(
            alias=alias, hostname=hostname, port=port, user=str(user),
            identity_files=[f for f in _split_files(o.get("identityfile")) if os.path.isfile(f)],
            identities_only=str(o.get("identitiesonly") or "").lower() == "yes",
            agent=str(o.get("identityagent") or "").lower() != "none",
            proxy_jump=hops, proxy_command=pcmd, key_name=key_name, user_known_hosts=user_kh,
            global_known_hosts=global_kh, trust_new=strict in ("accept-new", "no", "off"))

    # -- connections --------------------------------------------------------------------------------

    def open(self, spec: HostSpec, dog: _Watchdog) -> tuple[paramiko.SSHClient, _Target]:
        t = self.resolve(spec.host, spec.user, spec.port)
        via = self._chain(tuple(t.proxy_jump), dog, 1) if t.proxy_jump else None
        return self._open_target(t, dog, via), t

    def _open_target(self, t: _Target, dog: _Watchdog, via: paramiko.SSHClient | None) -> paramiko.SSHClient:
        sock: Any
        where = t.display()
        try:
            if via is not None:
                tr = via.get_transport()
                if tr is None or not tr.is_active():
                    raise _NodeFailure("connect", f"the jump connection closed before {where} could be reached")
                try:
                    sock = tr.open_channel("direct-tcpip", (t.hostname, t.port), ("127.0.0.1", 0),
                                           timeout=dog.remaining())
                except paramiko.ChannelException as e:
                    raise _NodeFailure("connect", f"the jump host could not reach {t.hostname}:{t.port} "
                                       f"({e.text or e.code})") from None
            elif t.proxy_command:
                sock = paramiko.ProxyCommand(t.proxy_command)
            else:
                sock = socket.create_connection((t.hostname, t.port), timeout=min(self.timeout, dog.remaining()))
                # no Nagle: SSH's many small messages would each wait for a delayed ACK (~40 ms on Linux)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except socket.gaierror as e:
            raise _NodeFailure("connect", f"cannot resolve {t.hostname}: {e.strerror}") from None
        except TimeoutError:
            raise _NodeFailure("timeout", f"no TCP connection to {t.hostname}:{t.port} within "
                               f"{self.timeout:g} s") from None
        except ConnectionRefusedError:
            raise _NodeFailure("connect", f"connection refused by {t.hostname}:{t.port} (no SSH server there?)") \
                from None
        except OSError as e:
            raise _NodeFailure("connect", f"cannot connect to {t.hostname}:{t.port}: {e.strerror or e}") from None
        dog.watch(sock)
        client = paramiko.SSHClient()
        dog.watch(client)
        known = self.store.known(t.key_name, t.user_known_hosts + t.global_known_hosts)
        for ktype, key in known.items():
            client.get_host_keys().add(t.key_name, ktype, key)
        client.set_missing_host_key_policy(_Policy(self.store, t))
        host_for_keys, port_for_keys = (t.key_name, 22) if not t.key_name.startswith("[") else (t.hostname, t.port)
        rem = dog.remaining()
        try:
            client.connect(host_for_keys, port_for_keys, username=t.user, sock=sock,
                           key_filename=t.identity_files or None, allow_agent=t.agent,
                           look_for_keys=not t.identities_only, timeout=rem, banner_timeout=rem,
                           auth_timeout=rem, channel_timeout=rem, password=None, passphrase=None)
        except _NodeFailure:
            _close(client)
            raise
        except paramiko.BadHostKeyException as e:
            _close(client)
            files = ", ".join(t.user_known_hosts + t.global_known_hosts)
            raise _NodeFailure(
                "host-key",
                f"the host key of {t.key_name} has CHANGED: it offered {_fp(e.key)}, known is "
                f"{_fp(e.expected_key)} (in {files}); refusing to connect — it may be another machine or a "
                "man in the middle",
                f"if the node was reinstalled, check the new key with its owner, remove the old one "
                f"(`ssh-keygen -R '{t.key_name}' -f {t.user_known_hosts[0]}`) and add the new one") from None
        except paramiko.PasswordRequiredException:
            _close(client)
            raise _NodeFailure("auth", f"the key for {where} is encrypted and no passphrase is asked for",
                               "add it to the SSH agent (`ssh-add KEYFILE`)") from None
        except paramiko.AuthenticationException as e:
            _close(client)
            tried = ["the SSH agent"] if t.agent and os.environ.get("SSH_AUTH_SOCK") else []
            tried += t.identity_files or ([] if t.identities_only else ["~/.ssh/id_*"])
            raise _NodeFailure("auth", f"authentication failed for {where} ({e}); tried: "
                               f"{', '.join(tried) or 'no key at all'}",
                               "svctrace uses keys only (agent, IdentityFile, ~/.ssh/id_*), never passwords") \
                from None
        except (paramiko.SSHException, EOFError, OSError) as e:
            _close(client)
            if dog.fired:
                raise
            msg = str(e) or type(e).__name__
            if "banner" in msg.lower():
                raise _NodeFailure("timeout", f"no SSH banner from {where} within {self.timeout:g} s "
                                   "(is it an SSH server?)") from None
            raise _NodeFailure("connect", f"SSH to {where} failed: {msg}") from None
        return client

    def _chain(self, hops: tuple[str, ...], dog: _Watchdog, depth: int,
               seen: frozenset[tuple[str, ...]] = frozenset()) -> paramiko.SSHClient:
        """The shared connection to the last of ``hops`` (through the previous ones)."""
        if hops in seen:
            raise _NodeFailure("connect", f"ProxyJump loop in the SSH config ({' -> '.join(hops)} again)")
        if depth > MAX_HOPS:
            raise _NodeFailure("connect", f"more than {MAX_HOPS} ProxyJump hops (a loop in the SSH config?)")
        seen = seen | {hops}
        with self._lock:
            sh = self._jumps.get(hops)
            mine = sh is None
            if sh is None:
                sh = self._jumps[hops] = _Shared()
        if mine:
            jdog = _Watchdog()
            with self._lock:
                self._dogs.add(jdog)
            jdog.arm(self.timeout, f"connecting to jump host {hops[-1]}")
            try:
                spec = parse_host(hops[-1])
                t = self.resolve(spec.host, spec.user, spec.port)
                if len(hops) > 1:
                    via: paramiko.SSHClient | None = self._chain(hops[:-1], jdog, depth + 1, seen)
                elif t.proxy_jump:
                    via = self._chain(tuple(t.proxy_jump), jdog, depth + 1, seen)
                else:
                    via = None
                sh.client = self._open_target(t, jdog, via)
            except _NodeFailure as e:
                prefix = "" if e.message.startswith("jump host ") or "ProxyJump" in e.message else \
                    f"jump host {hops[-1]}: "
                sh.error = _NodeFailure(e.what, prefix + e.message, e.hint)
            except Exception as e:  # a failed jump is a result for every node behind it
                why = f"timed out after {self.timeout:g} s" if jdog.fired else (str(e) or type(e).__name__)
                sh.error = _NodeFailure("timeout" if jdog.fired else "connect", f"jump host {hops[-1]}: {why}")
            finally:
                jdog.cancel()
                sh.ready.set()
        elif not sh.ready.wait(dog.remaining()):
            raise _NodeFailure("timeout", f"jump host {hops[-1]}: not connected within {self.timeout:g} s")
        if sh.error is not None:
            raise sh.error
        assert sh.client is not None
        return sh.client

    # -- lifetime -----------------------------------------------------------------------------------

    def track(self, dog: _Watchdog) -> None:
        with self._lock:
            self._dogs.add(dog)

    def untrack(self, dog: _Watchdog) -> None:
        with self._lock:
            self._dogs.discard(dog)

    def abort_all(self) -> None:
        with self._lock:
            dogs = list(self._dogs)
        for d in dogs:
            d.abort()

    def close(self) -> None:
        with self._lock:
            shared = list(self._jumps.values())
            self._jumps.clear()
        for sh in shared:
            if sh.client is not None:
                _close(sh.client)


@dataclass
class _Shared:
    ready: threading.Event = field(default_factory=threading.Event)
    client: paramiko.SSHClient | None = None
    error: _NodeFailure | None = None


# --------------------------------------------------------------------------------------------------
# running the script

def _run_script(client: paramiko.SSHClient, script: str, dog: _Watchdog) -> RunResult:
    """Run ``script`` with ``sh -s`` (the script on stdin) and read stdout and stderr together (a command's
    errors must not stall its output: both share the channel's window)."""
    tr = client.get_transport()
    if tr is None or not tr.is_active():
        raise _NodeFailure("connect", "the SSH connection closed")
    chan = tr.open_session(timeout=dog.remaining())
    dog.watch(chan)
    chan.exec_command("sh -s")
    chan.sendall(script.encode())
    chan.shutdown_write()
    out, err = bytearray(), bytearray()
    while True:
        while chan.recv_ready():
            out += chan.recv(1 << 20)
        while chan.recv_stderr_ready():
            data = chan.recv_stderr(1 << 16)
            if len(err) < MAX_STDERR_BYTES:
                err += data
        if len(out) > MAX_OUTPUT:
            raise _NodeFailure("node", f"more than {MAX_OUTPUT >> 20} MiB of output")
        if chan.eof_received and not chan.recv_ready() and not chan.recv_stderr_ready():
            break
        if dog.fired:
            raise TimeoutError("the node's time is up")
        if chan.closed:  # ended without EOF: what was framed is kept, the rest is "cut short"
            break
        select.select([chan], [], [], min(1.0, dog.remaining()))
    rc = chan.recv_exit_status() if chan.status_event.wait(0 if chan.closed else dog.remaining()) else None
    _close(chan)
    return RunResult(rc, bytes(out), bytes(err))


def _collect_one(spec_text: str, session: _Session) -> NodeDump:
    t0 = time.monotonic()
    dump = NodeDump(name=safe_name(spec_text), host=spec_text, transport="ssh")
    dog = _Watchdog()
    session.track(dog)
    client: paramiko.SSHClient | None = None
    try:
        spec = parse_host(spec_text)
        dump.name = safe_name(spec.host)
        session.note(spec_text, "connecting")
        dog.arm(session.timeout, "connecting")
        client, target = session.open(spec, dog)
        session.note(spec_text, f"connected as {target.user}; collecting")
        dog.arm(session.command_timeout, "collecting")

        def run(script: str) -> RunResult:
            assert client is not None
            try:
                return _run_script(client, script, dog)
            except TimeoutError:
                raise _NodeFailure("timeout", f"timed out after {session.command_timeout:g} s while "
                                   "collecting") from None
            except (paramiko.SSHException, EOFError, OSError) as e:
                if dog.fired:
                    raise
                raise _NodeFailure("node", f"the SSH session failed: {e or type(e).__name__}") from None

        dump = _commands.collect_node(run, host=dump.host, transport="ssh", use_sudo=session.use_sudo,
                                      command_timeout=max(1.0, session.command_timeout - 5))
        if dog.fired:
            dump.fail("timeout", f"timed out after {session.command_timeout:g} s while collecting; what is "
                      "listed was read before")
    except _NodeFailure as e:
        dump.fail(e.what, e.message, e.hint)
    except ValueError as e:
        dump.fail("node", str(e))
    except Exception as e:  # one node's failure is a result, not the end of the run
        if dog.fired:
            secs = session.timeout if dog.fired == "connecting" else session.command_timeout
            dump.fail("timeout", f"timed out after {secs:g} s while {dog.fired}")
        else:
            dump.fail("node", f"{type(e).__name__}: {e}")
    finally:
        dog.cancel()
        session.untrack(dog)
        if client is not None:
            _close(client)
    dump.elapsed = time.monotonic() - t0
    session.note(spec_text, f"{'ok' if dump.ok else 'FAILED'} ({dump.name}, {len(dump.files)} files, "
                            f"{len(dump.errors)} errors, {dump.elapsed:.1f} s)")
    return dump


# --------------------------------------------------------------------------------------------------
# public API

def collect_nodes_ssh(hosts: Sequence[str], *, parallel: int = 8, timeout: float = SSH_CONNECT_TIMEOUT,
                      command_timeout: float = SSH_COMMAND_TIMEOUT, trust_new_host_keys: bool = False,
                      known_hosts: str | None = None, ssh_config: str | None = None, use_sudo: bool = True,
                      progress: Progress | None = None) -> list[NodeDump]:
    """Collect every host's dumps over SSH, ``parallel`` at a time; one NodeDump per host, in order, failed
    ones included (names made unique). See ``collect_ssh`` for the options."""
    if parallel < 1:
        raise ValueError("parallel must be at least 1")
    session = _Session(timeout=timeout, command_timeout=command_timeout, trust_new=trust_new_host_keys,
                       known_hosts=known_hosts, ssh_config=ssh_config, use_sudo=use_sudo, progress=progress)
    pool = ThreadPoolExecutor(max_workers=max(1, min(parallel, len(hosts))), thread_name_prefix="svctrace-ssh")
    try:
        futures = [pool.submit(_collect_one, h, session) for h in hosts]
        nodes = [f.result() for f in futures]
    except BaseException:
        session.abort_all()
        pool.shutdown(wait=True, cancel_futures=True)
        session.close()
        raise
    pool.shutdown(wait=True)
    session.close()
    unique_names(nodes)
    return nodes


def collect_ssh(hosts: list[str], *, out: str, parallel: int = 8, timeout: float = SSH_CONNECT_TIMEOUT,
                trust_new_host_keys: bool = False, known_hosts: str | None = None, ssh_config: str | None = None,
                progress: Callable[[str, str], None] | None = None, command_timeout: float = SSH_COMMAND_TIMEOUT,
                use_sudo: bool = True, cluster: bytes | None = None, context: str | None = None,
                server_version: str | None = None, meta_extra: Mapping[str, Any] | None = None,
                overwrite: bool = False) -> CollectResult:
    """Collect ``hosts`` over SSH and write the bundle ``out`` (a directory, or ``.tar.gz``/``.tgz``).

    hosts: ``[USER@]HOST[:PORT]`` or SSH config aliases. parallel: nodes at a time. timeout: seconds to
    connect to one node (TCP, handshake, auth, jumps). command_timeout: seconds for one node's collection.
    trust_new_host_keys: accept and remember unknown host keys (changed keys are always refused).
    known_hosts: the only known_hosts file to use (default: the SSH config's, ~/.ssh/known_hosts and the
    system ones). ssh_config: the only SSH config to read (default ~/.ssh/config, /etc/ssh/ssh_config).
    progress(host, message): called from worker threads (serialised; its exceptions are ignored).
    use_sudo: ``sudo -n`` for the dump tools when the login user is not root.
    cluster: ``cluster.json`` bytes from the Kubernetes side (without it the bundle holds node dumps only,
    see ``bundle.assemble``); context/server_version/meta_extra: for meta.json. An existing ``out`` is refused unless
    ``overwrite``; it is checked before any connection is made.

    Every node's failure is recorded in its ``nodes/<name>/errors.json`` (``CollectResult.failed``); the
    bundle is written even when every node failed."""
    t0 = time.monotonic()
    dest = Path(out)
    if dest.exists() and not overwrite:
        raise FileExistsError(f"{dest} already exists (choose another path, or overwrite it: --overwrite)")
    if not hosts:
        raise ValueError("no hosts to collect from")
    for h in hosts:
        parse_host(h)  # a typo fails before anything connects
    nodes = collect_nodes_ssh(hosts, parallel=parallel, timeout=timeout, command_timeout=command_timeout,
                              trust_new_host_keys=trust_new_host_keys, known_hosts=known_hosts,
                              ssh_config=ssh_config, use_sudo=use_sudo, progress=progress)
    meta = make_meta(nodes, context=context, server_version=server_version, extra=meta_extra)
    files = assemble(nodes, cluster=cluster, meta=meta)
    dropped: list[str] = []
    path = write_bundle(dest, files, overwrite=overwrite, dropped=dropped)
    return CollectResult(path, nodes, meta, time.monotonic() - t0, dropped)

