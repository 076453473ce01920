"""Writing snapshot bundles (docs/snapshots.md), and the scrubber that keeps secrets out.

The pieces, smallest first:

* ``scrub_text`` / ``scrub_json`` / ``scrub_file``: drop every line (text) or field (JSON) that looks like a
  secret — a private key block, an ``Authorization:`` header, a bearer token, a JWT (Kubernetes service
  account tokens), ``password=``/``token:``/``secret=``-style assignments, well-known token formats. What
  was dropped is described by reason and line number, never by content.
* ``NodeDump`` / ``NodeError``: what one node gave (bundle file name -> bytes), what it did not and why.
  Both transports (SSH here, debug pods in ``debugpod.py``) produce these through
  ``svctrace.collect.commands.collect_node``.
* ``make_meta`` / ``assemble``: ``meta.json``, ``nodes/<name>/*`` and ``nodes/<name>/errors.json`` as
  ``{relative path: bytes}``.
* ``write_bundle``: that mapping to a directory or a ``.tar.gz``, atomically (a temporary sibling, then a
  rename), owner-only permissions (0700 directories, 0600 files), every file scrubbed on the way.

Standard library only.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import io
import json
import os
import re
import shutil
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from svctrace import __version__

FORMAT = "svctrace-snapshot/1"

__all__ = [
    "FORMAT",
    "NodeDump",
    "NodeError",
    "assemble",
    "is_archive",
    "make_meta",
    "safe_name",
    "scrub_file",
    "scrub_json",
    "scrub_text",
    "unique_names",
    "write_bundle",
]

# --------------------------------------------------------------------------------------------------
# scrubbing

# Names of fields/keys whose value is a credential. Matched against a key with '-', '_' and case removed.
_SECRET_KEY_PARTS = ("password", "passwd", "passphrase", "secret", "token", "apikey", "accesskey", "privatekey",
                     "clientkeydata", "authorization", "bearer", "credential", "cookie")
# What makes a line secret. Every pattern runs on the lower-cased text and starts with a literal, so that
# the regex engine can skip ahead (a 25 MB iptables dump is scanned in well under a second); the checks
# that need context (word boundaries) are done in Python on each candidate.
_W = re.compile(r"[\w-]")


def _word_start(low: str, i: int) -> int:
    while i > 0 and _W.match(low, i - 1):
        i -= 1
    return i


def _free_word(low: str, m: re.Match[str]) -> bool:
    """The match starts a word (after any letters, digits, '_' or '-') that is not part of a path, a domain or an address:
    `default/token:http` is kube-proxy's comment for a Service named "token", not a credential."""
    ws = _word_start(low, m.start())
    if ws > 0 and low[ws - 1] in "/.@":
        return False
    word = low[ws:m.end()].split(":")[0].split("=")[0].strip("\"' \t")
    return word not in ("nopasswd", "passwd")  # sudoers tags (`NOPASSWD: /usr/sbin/nft`)


def _flag_word(low: str, m: re.Match[str]) -> bool:
    """The match is inside a command-line flag (`--some-secret`, `-token`), not a plain word."""
    ws = _word_start(low, m.start())
    return low.startswith("-", ws) and (ws == 0 or low[ws - 1] in " \t\n\"'=")


def _boundary_before(low: str, m: re.Match[str]) -> bool:
    return m.start() == 0 or not _W.match(low, m.start() - 1)


def _boundary_after(low: str, m: re.Match[str]) -> bool:
    return m.end() >= len(low) or not re.match(r"[\w.+/=-]", low[m.end()])


def _bootstrap(low: str, m: re.Match[str]) -> bool:  # kubeadm token abcdef.0123456789abcdef
    s = m.start() - 6
    return s >= 0 and re.fullmatch(r"[a-z0-9]{6}", low[s:m.start()]) is not None and \
        (s == 0 or not re.match(r"[\w.-]", low[s - 1])) and _boundary_after(low, m)


def _always(low: str, m: re.Match[str]) -> bool:
    return True


_ASSIGN = r"[\"']?[ \t]*[:=][ \t]*[^\s\"']"
_CRED_WORDS = ("password", "passwd", "passphrase", "pass", "pwd", "secret", "token", "apikey", "api_key", "api-key",
               "access_key", "access-key", "accesskey", "private_key", "private-key", "key_data", "key-data",
               "keydata", "credential", "auth", "cookie", "session_id", "session-id", "sessionid")

# (reason, literal, pattern, check): the pattern is tried where the literal occurs in the lower-cased text
# (str.find is much faster than the regex engine's own scan); a line with a confirmed candidate is dropped.
_Check = Callable[[str, "re.Match[str]"], bool]
_LINE_PATTERNS: tuple[tuple[str, str, re.Pattern[str], _Check], ...] = (
    ("Authorization header", "authorization", re.compile(r"authorization[\"']?[ \t]*[:=]"), _boundary_before),
    ("bearer token", "bearer", re.compile(r"bearer[ \t]+[a-z0-9\-._~+/]{8,}"), _boundary_before),
    ("basic credentials", "basic", re.compile(r"basic[ \t]+[a-z0-9+/]{12,}={0,2}"),
     lambda low, m: _boundary_before(low, m) and _boundary_after(low, m)),
    ("JSON web token", "eyj", re.compile(r"eyj[a-z0-9_-]{8,}\.eyj[a-z0-9_-]{8,}\."), _boundary_before),
    # `password=x`, `token: x`, `"client-key-data": "..."`, `AWS_SECRET_ACCESS_KEY=...`
    *(("credential assignment", w, re.compile(re.escape(w) + r"[\w-]*" + _ASSIGN), _free_word) for w in _CRED_WORDS),
    # `--some-secret VALUE`, `-token VALUE`: a flag named for a credential, its value after a blank
    *(("credential flag", w, re.compile(re.escape(w) + r"[\w-]*[ \t]+[\"']?[^\s\"'-]"), _flag_word)
      for w in ("password", "passwd", "secret", "token", "api-key", "apikey", "credential", "private-key")),
    ("URL with a password", "://", re.compile(r"://[^/\s:@]+:[^/\s@]+@"), _always),
    *(("AWS access key", w, re.compile(w + r"[0-9a-z]{16}"),
       lambda low, m: _boundary_before(low, m) and _boundary_after(low, m)) for w in ("akia", "asia")),
    ("GitHub token", "gh", re.compile(r"gh[pousr]_[a-z0-9]{30,}"), _boundary_before),
    ("Slack token", "xox", re.compile(r"xox[abprs]-[a-z0-9-]{10,}"), _boundary_before),
    ("kubeadm bootstrap token", "", re.compile(r"\.[a-z0-9]{16}"), _bootstrap),  # no literal: a regex scan
    *(("private key", w, re.compile(re.escape(w)), _always)
      for w in ("private key", "putty-user-key-file", "begin openssh")),
)
_PEM_BEGIN = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY( BLOCK)?-----")
_PEM_END = re.compile(r"-----END [A-Z0-9 ]*PRIVATE KEY( BLOCK)?-----")


def _candidates(low: str, lit: str, pat: re.Pattern[str]) -> Iterator[re.Match[str]]:
    if not lit:
        yield from pat.finditer(low)
        return
    i = low.find(lit)
    while i >= 0:
        m = pat.match(low, i)
        if m is not None:
            yield m
        i = low.find(lit, i + 1)


def _secret_lines(text: str) -> dict[int, str]:
    """{offset of a line's start: reason} for every line that looks secret (private key blocks: every line
    from BEGIN to END, the first one with the reason). Patterns never span a newline, so searching the
    whole text finds exactly what a line-by-line search would, in one pass per pattern."""
    low = text.lower()
    bad: dict[int, str] = {}
    for m in _PEM_BEGIN.finditer(text):
        first = text.rfind("\n", 0, m.start()) + 1
        end_m = _PEM_END.search(text, m.end())
        stop = len(text) if end_m is None else text.find("\n", end_m.end())
        stop = len(text) if stop < 0 else stop
        bad[first] = "private key"
        i = text.find("\n", first)
        while 0 <= i < stop:
            bad.setdefault(i + 1, "")  # "": part of a block already noted
            i = text.find("\n", i + 1)
    if len(low) == len(text):
        _scan(low, 0, bad)
    else:  # lower() changed the length (a few non-ASCII letters): offsets differ, go line by line
        pos = 0
        for line in text.split("\n"):
            _scan(line.lower(), pos, bad)
            pos += len(line) + 1
    return bad


def _scan(low: str, base: int, bad: dict[int, str]) -> None:
    for reason, lit, pat, check in _LINE_PATTERNS:
        for m in _candidates(low, lit, pat):
            if check(low, m):
                bad.setdefault(base + low.rfind("\n", 0, m.start()) + 1, reason)


def _line_reason(line: str) -> str | None:
    return next(iter(_secret_lines(line).values()), None)


def looks_secret(text: str) -> str | None:
    """Why `text` (one line, a command-line word) would be scrubbed as a secret, or None."""
    return _line_reason(text)


def scrub_text(text: str, dropped: list[str] | None = None, *, where: str = "") -> str:
    """``text`` without the lines that look like secrets.

    Private key blocks (``-----BEGIN ... PRIVATE KEY-----`` to ``-----END ...``) go whole. When ``dropped``
    is given, one entry per dropped line or block is appended: ``"<where>line N: <reason>"`` — never the
    content. Lines are kept byte-for-byte otherwise, line endings included, so an iptables dump stays
    loadable."""
    bad = _secret_lines(text)
    if not bad:
        return text
    prefix = f"{where}:" if where else ""
    out: list[str] = []
    pos, line_no = 0, 1
    for start in sorted(bad):
        if start >= len(text):
            continue
        out.append(text[pos:start])
        line_no += text.count("\n", pos, start)
        nl = text.find("\n", start)
        pos = len(text) if nl < 0 else nl + 1
        if bad[start] and dropped is not None:
            dropped.append(f"{prefix}line {line_no}: {bad[start]}")
        line_no += 1 if nl >= 0 else 0
    out.append(text[pos:])
    return "".join(out)


def _secret_key(key: str) -> bool:
    k = re.sub(r"[-_ .]", "", key.lower())
    return any(p in k for p in _SECRET_KEY_PARTS)


def _strings_and_keys(obj: Any, strings: list[str], keys: list[str]) -> None:
    stack = [obj]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            keys.extend(k for k in v if isinstance(k, str))
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
        elif isinstance(v, str):
            strings.append(v)


def scrub_json(obj: Any, dropped: list[str] | None = None, *, where: str = "") -> Any:
    """A JSON value without secrets (``obj`` itself when there is nothing to drop, else a copy).

    A mapping entry whose key names a credential (``token``, ``password``, ``client-key-data``,
    ``Authorization`` …) is removed whatever its value; a string that looks like a secret (see
    ``scrub_text``) is removed with its key or list slot. ``dropped`` gets one entry per removal, by JSON
    path (``<where>$.a.b[3]: reason``) — never the value."""

    strings: list[str] = []
    keys: list[str] = []
    _strings_and_keys(obj, strings, keys)
    if not _secret_lines("\n".join(strings)) and not _secret_key("\n".join(keys)):
        return obj

    def note(path: str, reason: str) -> None:
        if dropped is not None:
            dropped.append(f"{where}{':' if where else ''}{path}: {reason}")

    def walk(v: Any, path: str) -> tuple[bool, Any]:  # (keep, value)
        if isinstance(v, dict):
            res: dict[Any, Any] = {}
            for k, x in v.items():
                p = f"{path}.{k}"
                if isinstance(k, str) and _secret_key(k) and not isinstance(x, bool):
                    note(p, "credential field")
                    continue
                keep, y = walk(x, p)
                if keep:
                    res[k] = y
            return True, res
        if isinstance(v, list):
            items = []
            for i, x in enumerate(v):
                keep, y = walk(x, f"{path}[{i}]")
                if keep:
                    items.append(y)
            return True, items
        if isinstance(v, str):
            if _PEM_BEGIN.search(v):
                note(path, "private key")
                return False, None
            for line in v.splitlines() or [v]:
                reason = _line_reason(line)
                if reason is not None:
                    note(path, reason)
                    return False, None
        return True, v

    return walk(obj, "$")[1]


_KEY_LITERALS = ("pass", "secret", "token", "api", "access", "private", "client", "authorization", "bearer",
                 "credential", "cookie")


def _json_suspect(raw: str) -> bool:
    """Could ``scrub_json`` drop anything from the JSON text ``raw``? Checked on the text itself, which is
    much cheaper than a walk of the parsed value: a secret-looking line in some string shows in the text (a
    ``\\u`` escape could hide one: then yes); a key naming a credential is a quoted string followed by
    ``:``."""
    if "\\u" in raw or _secret_lines(raw):
        return True
    low = raw.lower()
    for lit in _KEY_LITERALS:
        i = low.find(lit)
        while i >= 0:
            q, e = low.rfind('"', 0, i), low.find('"', i)
            if q < 0 or e < 0 or "\\" in low[q:e]:
                return True  # not plainly inside one string: look properly
            if low[e + 1:e + 40].lstrip().startswith(":") and _secret_key(low[q + 1:e]):
                return True
            i = low.find(lit, e)
    return False


def scrub_file(name: str, data: bytes, dropped: list[str] | None = None) -> bytes:
    """One bundle file without secrets: ``*.json`` by field (``scrub_json``; text scrubbing when it does not
    parse), anything else by line (``scrub_text``). ``name`` is used for the ``dropped`` notes."""
    text = data.decode("utf-8", errors="surrogateescape")
    if name.endswith(".json"):
        if not _json_suspect(text):
            return data  # nothing anywhere in the text could be dropped: no need to parse a big nft.json
        try:
            doc = json.loads(text)
        except ValueError:
            doc = None
        else:
            mine: list[str] = []
            clean = scrub_json(doc, mine, where=name)
            if not mine:
                return data
            if dropped is not None:
                dropped.extend(mine)
            return (json.dumps(clean, indent=1, ensure_ascii=False) + "\n").encode("utf-8", "surrogateescape")
    mine = []
    clean_text = scrub_text(text, mine, where=name)
    if not mine:
        return data
    if dropped is not None:
        dropped.extend(mine)
    return clean_text.encode("utf-8", errors="surrogateescape")


# --------------------------------------------------------------------------------------------------
# what a node gave

@dataclass
class NodeError:
    """Something that could not be collected on a node, and why. One line each; no secrets, no dumps.

    ``what`` is the bundle file that is missing (``ipvsadm``, ``iptables-save`` …) or, for a failure of
    the whole node, the stage: ``connect``, ``host-key``, ``auth``, ``sudo``, ``timeout``, ``node``."""

    what: str
    error: str
    command: str | None = None
    exit_code: int | None = None
    stderr: str | None = None  # first lines of the command's stderr, scrubbed
    hint: str | None = None  # how to get it

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"what": self.what, "error": self.error}
        for k in ("command", "exit_code", "stderr", "hint"):
            v = getattr(self, k)
            if v is not None:
                d[k] = v
        return d


@dataclass
class NodeDump:
    """What one node gave: bundle files (``iptables-save`` -> bytes …) and the errors.

    ``name`` is the node's name (its hostname, lower-cased, as the kubelet names a node) or, when the node
    was never reached, the host it was asked for. ``ok``: the node was reached and a dataplane dump
    (iptables or nftables) was collected; missing optional tools (ipvsadm …) leave it ok."""

    name: str
    host: str = ""
    transport: str = "ssh"
    files: dict[str, bytes] = field(default_factory=dict)
    errors: list[NodeError] = field(default_factory=list)
    backend: str | None = None  # iptables backend kube-proxy uses: "nft" | "legacy" | None (unknown)
    backend_reason: str | None = None
    ok: bool = False
    user: str | None = None
    elapsed: float = 0.0
    scrubbed: list[str] = field(default_factory=list)  # where secrets were dropped (no content)

    def meta(self) -> dict[str, Any]:
        m: dict[str, Any] = {"transport": self.transport, "backend": self.backend, "ok": self.ok}
        if self.host:
            m["host"] = self.host
        if self.backend_reason:
            m["backend_reason"] = self.backend_reason
        if self.errors:
            m["errors"] = len(self.errors)
        m["elapsed"] = round(self.elapsed, 3)
        return m

    def errors_json(self) -> bytes:
        doc: dict[str, Any] = {"node": self.name, "host": self.host, "transport": self.transport, "ok": self.ok,
                               "errors": [e.to_json() for e in self.errors]}
        if self.scrubbed:
            doc["scrubbed"] = list(self.scrubbed)
        return (json.dumps(doc, indent=1, ensure_ascii=False) + "\n").encode()

    def fail(self, what: str, error: str, hint: str | None = None) -> NodeDump:
        """Record a failure of the whole node (it is then not ok) and return self."""
        self.errors.append(NodeError(what, error, hint=hint))
        self.ok = False
        return self


_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(name: str) -> str:
    """A node or host name as a single safe path component (``nodes/<name>/``)."""
    s = _SAFE.sub("_", name.strip()).strip("._") or "node"
    return s[:200]


# --------------------------------------------------------------------------------------------------
# meta.json and the file map

def _now() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def make_meta(nodes: Sequence[NodeDump], *, context: str | None = None, server_version: str | None = None,
              proxy_mode: str | None = None, collected_at: str | None = None,
              extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``meta.json`` as a dict. ``proxy_mode`` defaults to what the nodes' ``proxy-mode`` files say (the
    most common answer); fields that are None are left out (readers infer them)."""
    if proxy_mode is None:
        modes: dict[str, int] = {}
        for n in nodes:
            m = n.files.get("proxy-mode", b"").decode("utf-8", "replace").strip()
            if m and re.fullmatch(r"[A-Za-z0-9_-]{1,32}", m):
                modes[m] = modes.get(m, 0) + 1
        if modes:
            proxy_mode = max(sorted(modes), key=lambda k: modes[k])
    meta: dict[str, Any] = {"format": FORMAT, "collected_at": collected_at or _now(), "svctrace": __version__}
    for k, v in (("context", context), ("server_version", server_version), ("proxy_mode", proxy_mode)):
        if v is not None:
            meta[k] = v
    for k, v in (extra or {}).items():
        if v is not None and k not in meta and k != "nodes":
            meta[k] = v
    meta["nodes"] = {n.name: n.meta() for n in nodes}
    return meta


def assemble(nodes: Sequence[NodeDump], *, cluster: bytes | None = None,
             meta: Mapping[str, Any] | None = None) -> dict[str, bytes]:
    """The whole bundle as ``{relative path: bytes}``: ``meta.json`` (``make_meta(nodes)`` unless given),
    ``cluster.json`` when given, and per node its files plus ``errors.json``. Node names must be unique
    (see ``unique_names``).

    Without ``cluster`` the bundle holds node dumps only: ``svctrace explain`` refuses it (cluster.json is
    required, and says how to add one with kubectl), while the dumps themselves stay usable
    (``svctrace trace nodes/NAME/iptables-save``); meta.json then says ``"cluster": "not collected"``."""
    files: dict[str, bytes] = {}
    if cluster is not None:
        files["cluster.json"] = cluster
    m = dict(meta) if meta is not None else make_meta(nodes)
    if cluster is None:
        m.setdefault("cluster", "not collected")
    files["meta.json"] = (json.dumps(m, indent=1, ensure_ascii=False) + "\n").encode()
    seen: set[str] = set()
    for n in nodes:
        d = safe_name(n.name)
        if d in seen:
            raise ValueError(f"two nodes named {d!r} in one bundle")
        seen.add(d)
        for fname, data in n.files.items():
            files[f"nodes/{d}/{safe_name(fname)}"] = data
        files[f"nodes/{d}/errors.json"] = n.errors_json()
    return files


def unique_names(nodes: Iterable[NodeDump]) -> None:
    """Rename nodes in place so that no two share a name (``name``, ``name_2`` …), noting it in their
    errors: two hosts that report the same hostname must not overwrite each other's dumps."""
    seen: dict[str, int] = {}
    for n in nodes:
        base = safe_name(n.name)
        k = seen.get(base, 0) + 1
        seen[base] = k
        if k > 1:
            n.name = f"{base}_{k}"  # "_" is not allowed in Kubernetes node names: no clash with a real one
            n.errors.append(NodeError("node", f"another host already reported the name {base!r}; stored as "
                                      f"{n.name!r}", hint="check that the host list has no duplicates"))
        else:
            n.name = base


# --------------------------------------------------------------------------------------------------
# writing

def is_archive(path: str | os.PathLike[str]) -> bool:
    s = str(path)
    return s.endswith((".tar.gz", ".tgz"))


def _check_rel(rel: str) -> str:
    parts = rel.split("/")
    if not rel or rel.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"not a relative bundle path: {rel!r}")
    return rel


def write_bundle(out: str | os.PathLike[str], files: Mapping[str, bytes], *, overwrite: bool = False,
                 dropped: list[str] | None = None) -> Path:
    """Write ``{relative path: bytes}`` as a bundle: a directory, or a ``.tar.gz`` when ``out`` ends with
    ``.tar.gz``/``.tgz`` (files at the archive's root).

    Every file goes through ``scrub_file`` first (``dropped`` collects the notes). The bundle is built
    beside ``out`` under a temporary name and renamed into place, so a reader never sees half a bundle;
    directories are 0700 and files 0600 (it describes a cluster's inside). An existing ``out`` is an error
    unless ``overwrite``. Returns the path written."""
    dest = Path(out)
    if dest.exists() and not overwrite:
        raise FileExistsError(f"{dest} already exists (choose another path, or overwrite it: --overwrite)")
    parent = dest.parent
    parent.mkdir(parents=True, exist_ok=True)
    clean = {_check_rel(rel): scrub_file(rel, data, dropped) for rel, data in sorted(files.items())}
    if is_archive(dest):
        _write_tar(dest, clean)
    else:
        _write_dir(dest, clean)
    return dest


def _write_tar(dest: Path, files: Mapping[str, bytes]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    try:
        os.fchmod(fd, 0o600)
        mtime = int(time.time())
        with os.fdopen(fd, "wb") as fh, tarfile.open(fileobj=fh, mode="w:gz", format=tarfile.PAX_FORMAT) as tf:
            dirs: set[str] = set()
            for rel, data in files.items():
                parts = rel.split("/")[:-1]
                for i in range(1, len(parts) + 1):
                    d = "/".join(parts[:i])
                    if d not in dirs:
                        dirs.add(d)
                        info = tarfile.TarInfo(d)
                        info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o700, mtime
                        tf.addfile(info)
                info = tarfile.TarInfo(rel)
                info.size, info.mode, info.mtime = len(data), 0o600, mtime
                tf.addfile(info, io.BytesIO(data))
            tf.close()
            fh.flush()
            os.fsync(fh.fileno())
        _replace(tmp, dest, is_dir=False)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _write_dir(dest: Path, files: Mapping[str, bytes]) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))  # 0700
    try:
        for rel, data in files.items():
            p = tmp / rel
            for d in reversed(p.relative_to(tmp).parents):
                if str(d) != ".":
                    (tmp / d).mkdir(mode=0o700, exist_ok=True)
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
        _replace(str(tmp), dest, is_dir=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _replace(tmp: str, dest: Path, *, is_dir: bool) -> None:
    if not dest.exists() and not dest.is_symlink():
        os.rename(tmp, dest)
        return
    if not is_dir and dest.is_file():
        os.replace(tmp, dest)
        return
    old = dest.with_name(f".{dest.name}.old-{os.getpid()}-{time.monotonic_ns()}")
    os.rename(dest, old)
    os.rename(tmp, dest)
    if old.is_dir() and not old.is_symlink():
        shutil.rmtree(old, ignore_errors=True)
    else:
        old.unlink(missing_ok=True)
