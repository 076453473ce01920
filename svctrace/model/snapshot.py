"""Snapshot bundles (docs/snapshots.md): a directory or a .tar.gz of one.

Reading is pure (files and tar archives only). A bundle with missing files still loads; a damaged
file is reported with its path and line; unknown files are ignored.
"""

from __future__ import annotations

import io
import json
import lzma
import os
import posixpath
import re
import tarfile
import zlib
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from svctrace.errors import InputError, Warn, shorten
from svctrace.limits import MAX_ARCHIVE, MAX_JSON_DEPTH, MAX_MEMBER, MAX_MEMBERS, MAX_TOTAL, READ_CHUNK, MiB
from svctrace.model.cluster import (
    Cluster,
    NotStreamed,
    parse_cluster,
    parse_items,
    pod_cidr_supernet,
    stream_items,
)
from svctrace.model.loading import gc_paused

T = TypeVar("T")

DUMP_FILES = ("iptables-save", "ip6tables-save", "iptables-legacy-save", "ip6tables-legacy-save", "nft.json", "nft",
              "ipvsadm", "ipset", "ip-addr.json", "ip-addr", "ip-route.json", "ip-route", "ip-rule.json",
              "ip-rule", "hairpin-mode", "modules", "proxy-mode", "configz.json", "sysctl", "errors.json",
              "conntrack")


@dataclass(frozen=True)
class OnDisk:
    """A snapshot file left on disk until it is used (a directory bundle's node dumps: every node's dump is
    megabytes, and one question reads one node's)."""

    path: Path
    size: int


class Texts(MutableMapping[str, str]):
    """A node's files as file name -> text, each decoded when first used (`decode_text`): from its bytes, or
    read from disk (OnDisk). Presence, size and byte-for-byte sameness are known without decoding."""

    def __init__(self, where: Callable[[str], str], raw: dict[str, bytes | OnDisk] | None = None) -> None:
        self._where = where  # file name -> the path said in messages
        self._items: dict[str, str | bytes | OnDisk] = dict(raw or {})
        self._disk: dict[str, OnDisk] = {}  # decoded files that came from disk: they can be compared there

    def __getitem__(self, fname: str) -> str:
        v = self._items[fname]
        if isinstance(v, str):
            return v
        data = _read_on_disk(v, self._where(fname)) if isinstance(v, OnDisk) else v
        text = decode_text(data, self._where(fname))
        del data
        if isinstance(v, OnDisk):
            self._disk[fname] = v
        self._items[fname] = text
        return text

    def add(self, fname: str, data: bytes | OnDisk) -> None:
        """A file not decoded yet."""
        self._items[fname] = data
        self._disk.pop(fname, None)

    def __setitem__(self, fname: str, text: str) -> None:
        self._items[fname] = text
        self._disk.pop(fname, None)

    def __delitem__(self, fname: str) -> None:
        del self._items[fname]
        self._disk.pop(fname, None)

    def __contains__(self, fname: object) -> bool:
        return fname in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def size(self, fname: str) -> int | None:
        """The file's length (bytes until decoded, then characters: zero alike), None when absent."""
        v = self._items.get(fname)
        if v is None:
            return None
        return v.size if isinstance(v, OnDisk) else len(v)

    def lines(self, fname: str) -> tuple[str, list[str]] | None:
        """(the first HEAD characters, `text.splitlines()`) of a file still on disk and not decoded, read a chunk at
        a time so that its text is never held whole (a dump of 10k Services is 25 MB, its lines as many again);
        decoded as decode_text would (UTF-8, else Latin-1 throughout). None for any other file."""
        v = self._items.get(fname)
        if not isinstance(v, OnDisk):
            return None
        where = self._where(fname)
        for encoding in ("utf-8", "latin-1"):
            lines: list[str] = []
            head: list[str] = []
            have = 0
            rest = b""
            try:
                with open(v.path, "rb") as fh:
                    refuse_binary(fh.read(65536), where)
                    fh.seek(0)
                    read = 0
                    while chunk := fh.read(READ_CHUNK):
                        read += len(chunk)
                        if read > MAX_MEMBER:
                            raise InputError(f"larger than {MAX_MEMBER // MiB} MiB (svctrace's limit MAX_MEMBER, see "
                                             "docs/limits.md)", source=where)
                        chunk = rest + chunk
                        cut = chunk.rfind(b"\n") + 1  # a line break no character spans, in UTF-8 and Latin-1
                        rest = chunk[cut:]
                        part = chunk[:cut].decode(encoding)
                        if have < HEAD:
                            head.append(part[: HEAD - have])
                            have += len(head[-1])
                        lines += part.splitlines()
                    part = rest.decode(encoding)
                    if have < HEAD:
                        head.append(part[: HEAD - have])
                    lines += part.splitlines()
            except UnicodeDecodeError:
                continue
            except OSError as e:
                raise InputError(f"cannot read it: {e.strerror}", source=where) from None
            return "".join(head), lines
        raise AssertionError("Latin-1 decodes every byte")

    def is_read(self, fname: str) -> bool:
        """Whether the file was decoded (or given as text)."""
        return isinstance(self._items.get(fname), str)

    def on_disk(self, fname: str) -> OnDisk | None:
        v = self._items.get(fname)
        return v if isinstance(v, OnDisk) else self._disk.get(fname)


def _read_on_disk(f: OnDisk, where: str) -> bytes:
    try:
        with open(f.path, "rb") as fh:
            data = fh.read(MAX_MEMBER + 1)
    except OSError as e:
        raise InputError(f"cannot read it: {e.strerror}", source=where) from None
    if len(data) > MAX_MEMBER:
        raise InputError(f"larger than {MAX_MEMBER // MiB} MiB (svctrace's limit MAX_MEMBER, see docs/limits.md)",
                         source=where)
    return data


def _same_on_disk(a: OnDisk, b: OnDisk) -> bool:
    """Two files byte for byte, a chunk at a time (neither is held whole)."""
    if a.size != b.size:
        return False
    try:
        with open(a.path, "rb") as fa, open(b.path, "rb") as fb:
            while True:
                chunk = fa.read(READ_CHUNK)
                if chunk != fb.read(READ_CHUNK):
                    return False
                if not chunk:
                    return True
    except OSError:
        return False


@dataclass
class NodeFiles:
    name: str
    files: MutableMapping[str, str] = field(default_factory=dict)  # file name -> text (Texts: decoded when used)
    source: str = ""
    _parsed: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    _same: dict[tuple[str, str, str], bool] = field(default_factory=dict, repr=False, compare=False)

    def path(self, fname: str) -> str:
        return f"{self.source}/nodes/{self.name}/{fname}"

    def get(self, fname: str) -> str | None:
        return self.files.get(fname)

    def has(self, fname: str, *, empty: bool = True) -> bool:
        """Whether the node has the file (with `empty=False`: and it is not empty), without reading it."""
        if isinstance(self.files, Texts):
            size = self.files.size(fname)
            return size is not None and (empty or size > 0)
        text = self.files.get(fname)
        return text is not None and (empty or text != "")

    def same(self, fname: str, other: NodeFiles) -> bool:
        """Whether `other`'s file `fname` is this node's, byte for byte; two files still on disk are compared
        there, a chunk at a time, and neither is decoded. Once per pair of files (`check` asks per Service)."""
        if fname not in self.files or fname not in other.files:
            return False
        key = (fname, other.name, other.source)
        if key not in self._same:
            a = self.files.on_disk(fname) if isinstance(self.files, Texts) else None
            b = other.files.on_disk(fname) if isinstance(other.files, Texts) else None
            if a is not None and b is not None:
                self._same[key] = a.path == b.path or _same_on_disk(a, b)
            else:
                return self.files[fname] == other.files[fname]  # (text in memory: quick to compare again)
        return self._same[key]

    def parsed(self, fname: str, loader: Callable[..., T], text: str | None = None, *, by_lines: bool = False) -> T:
        """`loader(text, path)` of a file, once: every question asked of this snapshot reuses the parse (a
        big dump costs a second to read; the TUI asks one question per Service). `text` stands in for the
        file's text when the result is derived from several files (a key that is no file name). `by_lines`: a
        file still on disk is read line by line, never held whole, and given as `loader(head, path, lines=...)`
        (Texts.lines)."""
        if fname not in self._parsed:
            got = self.files.lines(fname) if by_lines and text is None and isinstance(self.files, Texts) else None
            if got is not None:
                self._parsed[fname] = loader(got[0], self.path(fname), lines=got[1])
            else:
                self._parsed[fname] = loader(self.files[fname] if text is None else text, self.path(fname))
        return self._parsed[fname]

    def is_parsed(self, fname: str) -> bool:
        return fname in self._parsed


@dataclass
class Snapshot:
    source: str
    cluster: Cluster
    meta: dict[str, Any] = field(default_factory=dict)
    nodes: dict[str, NodeFiles] = field(default_factory=dict)
    warnings: list[Warn] = field(default_factory=list)

    @property
    def is_demo(self) -> bool:
        return self.source.startswith("demo")


def decode_text(data: bytes, where: str, binary: str = "binary data where text was expected", *,
                line: bool = False, latin1: Callable[[int], None] | None = None) -> str:
    """A dump's bytes as text: UTF-8, else Latin-1 (every byte is a character); NUL bytes near the start mean
    binary data, reported as `binary` (with `line`: at the line of the first NUL). `latin1` hears the line of
    the first byte that is not UTF-8 when the text is read as Latin-1."""
    refuse_binary(data, where, binary, line=line)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        if latin1 is not None:
            latin1(data[: e.start].count(b"\n") + 1)
        return data.decode("latin-1")


def refuse_binary(data: bytes, where: str, binary: str = "binary data where text was expected", *,
                  line: bool = False) -> None:
    """decode_text's refusal: NUL bytes in the first 64 KiB are binary data."""
    if b"\x00" in data[:65536]:
        at = data[: data.index(b"\x00")].count(b"\n") + 1 if line else None
        raise InputError(binary, source=where, line=at)


TOP_FILES = ("cluster.json", "cluster.yaml", "meta.json")


def _wanted(rel: str) -> bool:
    """Is `rel` (a bundle-relative POSIX path) a file svctrace reads? Nothing else is ever read."""
    if rel in TOP_FILES:
        return True
    parts = rel.split("/")
    return len(parts) == 3 and parts[0] == "nodes" and bool(parts[1]) and parts[2] in DUMP_FILES


def _member_name(raw: str, where: str) -> str | None:
    """An archive member's name as a bundle-relative POSIX path (`./a//b` -> `a/b`); None for the archive's
    root itself. A name that climbs out (`..` anywhere) or is absolute is refused: a snapshot never needs one,
    and taking it (as `lstrip("./")` once did) would read `../../nodes/x` as `nodes/x`."""
    name = raw
    if name.startswith("/") or ".." in name.split("/"):
        raise InputError(f"archive member {shorten(raw)!r} climbs out of the archive ({'an absolute path' if name.startswith('/') else '..'}); "
                         "refusing the snapshot (repack it without such names)", source=where)
    norm = posixpath.normpath(name)
    return None if norm in (".", "") else norm


HEAD = 200_000  # characters of a dump read line by line that are also given whole (its format is sniffed from them)
LAZY_SIZE = 65536  # a directory bundle's node file larger than this stays on disk until it is used (OnDisk)


def _read_tree(root: Path, warnings: list[Warn]) -> dict[str, bytes | OnDisk]:
    """The files svctrace uses from a directory bundle: cluster.json/yaml, meta.json, nodes/*/<dump>; never
    anything else (linear in the bundle's node count). A symlink is followed only when it stays inside the
    bundle; the others are skipped with a warning. A node's big files are only looked at (OnDisk): read when
    used."""
    out: dict[str, bytes | OnDisk] = {}
    real_root = root.resolve()
    total = 0
    skipped: list[str] = []

    def inside(p: Path) -> bool:
        try:
            return p.resolve().is_relative_to(real_root)
        except (OSError, RuntimeError):  # a symlink loop
            return False

    candidates = [root / f for f in TOP_FILES]
    nodes = root / "nodes"
    if nodes.is_dir():
        if not inside(nodes):
            skipped.append("nodes")
        else:
            try:
                names = sorted(e.name for e in os.scandir(nodes))
            except OSError as e:
                raise InputError(f"cannot read it: {e.strerror}", source=str(nodes)) from None
            if len(names) > MAX_MEMBERS:
                raise InputError(f"more than {MAX_MEMBERS} node folders (svctrace's limit MAX_MEMBERS, see "
                                 "docs/limits.md)", source=str(nodes))
            for n in names:
                d = nodes / n
                if not d.is_dir():
                    continue
                if not inside(d):
                    skipped.append(f"nodes/{n}")
                    continue
                candidates.extend(d / f for f in DUMP_FILES)
    for p in candidates:
        rel = p.relative_to(root).as_posix()
        if not p.is_file():
            if p.is_symlink():
                skipped.append(rel)
            continue
        if not inside(p):
            skipped.append(rel)
            continue
        try:
            size = p.stat().st_size
            if size > MAX_MEMBER:
                raise InputError(f"larger than {MAX_MEMBER // MiB} MiB (svctrace's limit MAX_MEMBER, see "
                                 "docs/limits.md)", source=str(p))
            total += size
            if total > MAX_TOTAL:
                raise InputError(f"the files svctrace reads add up to more than {MAX_TOTAL // MiB} MiB (svctrace's "
                                 "limit MAX_TOTAL, see docs/limits.md)", source=str(root))
            if size > LAZY_SIZE and rel.startswith("nodes/"):
                out[rel] = OnDisk(p, size)
                continue
            with open(p, "rb") as fh:
                out[rel] = fh.read(MAX_MEMBER + 1)
        except OSError as e:
            raise InputError(f"cannot read it: {e.strerror}", source=str(p)) from None
    if skipped:
        warnings.append(Warn(f"not followed (symlinks that lead out of the bundle, or broken): "
                             f"{shorten(', '.join(skipped), 400)}", str(root), None, "snapshot"))
    return out


def _read_tar(path: Path, warnings: list[Warn]) -> dict[str, bytes]:
    try:
        if path.stat().st_size > MAX_ARCHIVE:
            raise InputError(f"larger than {MAX_ARCHIVE // MiB} MiB (svctrace's limit MAX_ARCHIVE, see "
                             "docs/limits.md)", source=str(path))
        return _read_tar_members(path, warnings)
    except (tarfile.TarError, OSError, EOFError, zlib.error, lzma.LZMAError) as e:
        why = str(e).splitlines()[0].rstrip(":") if str(e) else type(e).__name__
        raise InputError(f"not a readable .tar.gz snapshot ({shorten(why)}; a snapshot is a directory or a "
                         ".tar.gz/.tgz of one)", source=str(path)) from None


def _read_tar_members(path: Path, warnings: list[Warn]) -> dict[str, bytes]:
    """One pass over the archive, reading forward (nothing is kept but what is read). Only members at the
    paths svctrace uses are read (at the root, or under one top-level folder), each at most MAX_MEMBER bytes
    and all together at most MAX_TOTAL; every member's size, used or not, counts towards MAX_TOTAL too,
    since skipping it still costs its decompression. Links, devices and other non-files are skipped with a
    warning; a name with `..` refuses the archive."""
    where = str(path)
    kept: dict[str, bytes] = {}
    special: list[str] = []
    count = 0
    scanned = 0
    with tarfile.open(path, "r:*") as tf:
        for m in tf:
            count += 1
            if count > MAX_MEMBERS:
                raise InputError(f"more than {MAX_MEMBERS} members (svctrace's limit MAX_MEMBERS, see "
                                 "docs/limits.md)", source=where)
            name = _member_name(m.name, where)
            if name is None or m.isdir():
                continue
            scanned += max(0, m.size)
            if scanned > MAX_TOTAL:
                raise InputError(f"the archive holds more than {MAX_TOTAL // MiB} MiB once decompressed "
                                 "(svctrace's limit MAX_TOTAL, see docs/limits.md)", source=where)
            used = _wanted(name) or ("/" in name and _wanted(name.split("/", 1)[1]))
            if not m.isfile():
                if used or m.issym() or m.islnk() or m.isdev():
                    special.append(f"{name} ({_kind(m)})")
                continue
            if not used:
                continue
            if m.size > MAX_MEMBER:
                raise InputError(f"member {shorten(name)} is larger than {MAX_MEMBER // MiB} MiB once decompressed "
                                 "(svctrace's limit MAX_MEMBER, see docs/limits.md)", source=where)
            f = tf.extractfile(m)
            if f is None:
                continue
            buf = bytearray()
            while chunk := f.read(READ_CHUNK):
                if not buf and b"\x00" in chunk[:65536]:
                    raise InputError("binary data where text was expected", source=f"{where}/{name}")
                buf += chunk
            kept[name] = bytes(buf)
    if special:
        warnings.append(Warn(f"skipped {len(special)} archive member(s) that are not regular files: "
                             f"{shorten(', '.join(special), 400)}", where, None, "snapshot"))
    prefix = ""
    if not any(n in kept for n in ("cluster.json", "cluster.yaml")):
        tops = {n.split("/", 1)[0] for n in kept if "/" in n}
        if len(tops) == 1 and all("/" in n for n in kept):
            prefix = tops.pop() + "/"
    out = {}
    for n, data in kept.items():
        rel = n[len(prefix):] if prefix and n.startswith(prefix) else n
        if _wanted(rel):
            out[rel] = data
    return out


def _kind(m: tarfile.TarInfo) -> str:
    if m.issym():
        return f"symlink to {shorten(m.linkname, 40)}"
    if m.islnk():
        return f"hard link to {shorten(m.linkname, 40)}"
    if m.isdev():
        return "device"
    return "not a regular file"


def load_snapshot(path: str, *, raw_for: tuple[str, str] | None = None) -> Snapshot:
    """Read a bundle: a directory, a .tar.gz/.tgz, or `demo` for the bundled demo cluster. `raw_for`: the
    (namespace, name) of the one Service the caller asks about, whose API objects alone are kept as read
    (parse_cluster)."""
    if path in ("demo", "demo:"):
        root = resources.files("svctrace.data").joinpath("demo")
        files: dict[str, bytes] = {}

        def walk(node: Any, prefix: str) -> None:
            for child in node.iterdir():
                rel = f"{prefix}{child.name}"
                if child.is_dir():
                    walk(child, rel + "/")
                elif rel in ("cluster.json", "meta.json") or rel.startswith("nodes/"):
                    files[rel] = child.read_bytes()

        walk(root, "")
        return _build(files, "demo", raw_for=raw_for)
    p = Path(path)
    try:
        exists, is_dir = p.exists(), p.is_dir()
    except OSError as e:  # a name too long, a loop of symlinks
        raise InputError(f"cannot open it: {e.strerror}", source=shorten(path)) from None
    if not exists:
        raise InputError("no such snapshot (a directory, a .tar.gz, or `demo`)", source=shorten(path))
    warnings: list[Warn] = []
    return _build(_read_tree(p, warnings) if is_dir else _read_tar(p, warnings), path, warnings, raw_for)


def _build(files: Mapping[str, bytes | OnDisk], source: str, warnings: list[Warn] | None = None,
           raw_for: tuple[str, str] | None = None) -> Snapshot:
    # cluster.json's objects are allocated by the hundred thousand and none is freed while they are read: the
    # cyclic garbage collector would only walk them again and again, so it waits (as the iptables parser's does).
    with gc_paused(look_after=False):
        return _build_snapshot(files, source, warnings, raw_for)


def _build_snapshot(files: Mapping[str, bytes | OnDisk], source: str, warnings: list[Warn] | None,
                    raw_for: tuple[str, str] | None) -> Snapshot:
    warnings = list(warnings or [])

    def top(name: str) -> bytes:
        data = files[name]
        return _read_on_disk(data, f"{source}/{name}") if isinstance(data, OnDisk) else data

    if "cluster.json" in files:
        where = f"{source}/cluster.json"
        raw = top("cluster.json")
        cluster = _cluster_json(decode_text(raw, where), raw, where, raw_for)
        del raw
    elif "cluster.yaml" in files:
        where = f"{source}/cluster.yaml"
        text = decode_text(top("cluster.yaml"), where)
        try:
            import yaml  # the kubernetes client depends on PyYAML; only YAML bundles need it

            doc = _yaml_documents(yaml, text, where)
        except ImportError:
            raise InputError("reading cluster.yaml needs PyYAML (pip install pyyaml)", source=where) from None
        except RecursionError:
            raise InputError(f"nested deeper than svctrace reads (limit MAX_JSON_DEPTH, {MAX_JSON_DEPTH} levels; "
                             "see docs/limits.md)", source=where) from None
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            raise InputError(f"broken YAML: {getattr(e, 'problem', e)}", source=where,
                             line=mark.line + 1 if mark else None) from None
    else:
        raise InputError("the snapshot has no cluster.json (nor cluster.yaml): it is required; make it with "
                         "`kubectl get services,endpointslices,pods,nodes -A -o json > cluster.json`", source=source)
    if "cluster.json" not in files:
        cluster = parse_cluster(doc, where, raw_for)
        del doc  # (what parse_cluster did not keep goes now)
    meta: dict[str, Any] = {}
    if "meta.json" in files:
        try:
            meta = _json(decode_text(top("meta.json"), f"{source}/meta.json"), f"{source}/meta.json")
        except InputError as e:
            warnings.append(Warn(f"meta.json is not usable ({e.message}); ignored", f"{source}/meta.json", e.line,
                                 "snapshot"))
            meta = {}
        if not isinstance(meta, dict):
            warnings.append(Warn(f"meta.json is {type(meta).__name__}, not an object; ignored", f"{source}/meta.json",
                                 None, "snapshot"))
            meta = {}
    nodes: dict[str, NodeFiles] = {}
    for rel, data in sorted(files.items()):
        parts = rel.split("/")
        if len(parts) != 3 or parts[0] != "nodes":
            continue
        name, fname = parts[1], parts[2]
        if fname not in DUMP_FILES:
            continue
        nf = nodes.get(name)
        if nf is None:
            nf = nodes[name] = NodeFiles(name, source=source)
            nf.files = Texts(nf.path)
        assert isinstance(nf.files, Texts)
        # decoded when used; what decode_text would refuse is refused now, as when every file was decoded here
        refuse_binary(_head(data, f"{source}/{rel}") if isinstance(data, OnDisk) else data, f"{source}/{rel}")
        nf.files.add(fname, data)
    for name in nodes:
        if cluster.nodes and name not in cluster.nodes:
            warnings.append(Warn(f"nodes/{name}/ holds dumps of a node that is not in cluster.json", source, None,
                                 "snapshot"))
    snap = Snapshot(source, cluster, meta, nodes, warnings + cluster.warnings)
    _apply_meta(snap)
    return snap


def _cluster_json(text: str, data: bytes, where: str, raw_for: tuple[str, str] | None) -> Cluster:
    """cluster.json's objects. A List (what kubectl prints) is read an item at a time (stream_items), so that the
    JSON of what parse_cluster does not keep goes at once and the whole document is never in memory. Anything
    else, and any error, takes json.loads of the whole text: its errors, and their order, are what they were."""
    try:
        cluster = parse_items(stream_items(text, where), where, raw_for)
    except (InputError, NotStreamed):
        return parse_cluster(_json(text, where, data), where, raw_for)
    if _json_depth_over(data, MAX_JSON_DEPTH):
        raise InputError(f"nested deeper than svctrace reads (limit MAX_JSON_DEPTH, {MAX_JSON_DEPTH} levels; see "
                         "docs/limits.md)", source=where)
    return cluster


def _head(f: OnDisk, where: str) -> bytes:
    try:
        with open(f.path, "rb") as fh:
            return fh.read(65536)
    except OSError as e:
        raise InputError(f"cannot read it: {e.strerror}", source=where) from None


def _json(text: str, where: str, data: bytes | None = None) -> Any:
    """JSON text, or InputError naming the file: broken, nested deeper than MAX_JSON_DEPTH, or a number of
    more digits than Python converts (ValueError from int()). `data`: the bytes `text` was decoded from, when
    at hand (the depth is read from them)."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"broken JSON: {e.msg}", source=where, line=e.lineno) from None
    except RecursionError:
        raise InputError(f"nested deeper than svctrace reads (limit MAX_JSON_DEPTH, {MAX_JSON_DEPTH} levels; see "
                         "docs/limits.md)", source=where) from None
    except ValueError as e:  # "Exceeds the limit (4300 digits) for integer string conversion"
        raise InputError(f"unreadable JSON: {shorten(e)}", source=where) from None
    if _json_depth_over(text.encode("utf-8", "surrogatepass") if data is None else data, MAX_JSON_DEPTH):
        raise InputError(f"nested deeper than svctrace reads (limit MAX_JSON_DEPTH, {MAX_JSON_DEPTH} levels; see "
                         "docs/limits.md)", source=where)
    return doc


def _yaml_documents(yaml: Any, text: str, where: str) -> list[Any]:
    """Every document of a YAML text, read safely and without aliases: `kubectl -o yaml` writes none, and
    a few nested aliases stand for billions of nodes to whoever walks the result."""

    class Loader(yaml.SafeLoader):
        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                mark = self.peek_event().start_mark
                raise InputError("YAML aliases (*name) are not read in cluster.yaml (kubectl writes none)",
                                 source=where, line=mark.line + 1)
            return super().compose_node(parent, index)

    docs = list(yaml.load_all(text, Loader=Loader))  # a SafeLoader
    if _depth_over(docs, MAX_JSON_DEPTH + 1):
        raise InputError(f"nested deeper than svctrace reads (limit MAX_JSON_DEPTH, {MAX_JSON_DEPTH} levels; see "
                         "docs/limits.md)", source=where)
    return docs


_NOT_STRUCTURE = bytes(c for c in range(256) if c not in b'"[]{}')
_OPEN_CLOSE = bytes.maketrans(b"[]{}", b"()()")
_STRING = re.compile(rb'"[^"]*"')


def _json_depth_over(data: bytes, limit: int) -> bool:
    """Does the JSON text `data` (valid: json.loads read it) nest more than `limit` lists/objects deep? Read from
    the text with bytes methods, which is ten times quicker than walking the decoded document: drop escaped
    backslashes and quotes, keep only quotes and brackets, drop the strings (what is left between two quotes),
    and peel the innermost pairs off one level at a time. UTF-8 never puts these ASCII bytes inside a
    character, so Latin-1 text reads alike."""
    s = data.replace(b"\\\\", b"").replace(b'\\"', b"").translate(None, _NOT_STRUCTURE)
    # Two quotes side by side: an empty string, or one string's end and the next one's start; dropping them
    # leaves every bracket inside or outside a string as it was, and leaves only the strings holding a bracket.
    s = s.replace(b'""', b"")
    if b'"' in s:
        s = _STRING.sub(b"", s)
    s = s.translate(_OPEN_CLOSE)
    if s.count(b"(") <= limit:
        return False
    for _ in range(limit):
        if not s:
            return False
        s = s.replace(b"()", b"")  # the innermost lists/objects: one level each time
    return bool(s)


def _depth_over(doc: Any, limit: int) -> bool:
    """Does `doc` nest more than `limit` lists/objects deep? (iteratively, linear in its size)"""
    work = [(doc, 1)]
    while work:
        v, d = work.pop()
        if isinstance(v, dict):
            v = list(v.values())
        if isinstance(v, list):
            if d > limit:
                return True
            work.extend((x, d + 1) for x in v if isinstance(x, dict | list))
    return False


def _apply_configz(snap: Snapshot) -> None:
    """kube-proxy's /configz (`{"kubeproxy.config": {...}}`) from any node, for what the objects did not say."""
    proxy = snap.cluster.proxy
    for name, nf in sorted(snap.nodes.items()):
        text = nf.get("configz.json")
        if not text:
            continue
        try:
            cfg = (_json(text, nf.path("configz.json")) or {}).get("kubeproxy.config") or {}
            if not isinstance(cfg, dict):
                raise AttributeError
        except (InputError, AttributeError):
            snap.warnings.append(Warn("configz.json is not kube-proxy's /configz JSON; ignored",
                                      nf.path("configz.json"), None, "snapshot"))
            continue
        where = f"nodes/{name}/configz.json"
        if cfg.get("mode") and proxy.mode is None:
            proxy.mode = str(cfg["mode"])
            proxy.sources["mode"] = where
        if cfg.get("clusterCIDR") and proxy.cluster_cidr is None:
            proxy.cluster_cidr = str(cfg["clusterCIDR"])
            proxy.sources["cluster_cidr"] = where


def infer_cluster_cidr(snap: Snapshot) -> tuple[str | None, str]:
    """The pod CIDR kube-proxy masquerades from outside of, and where it came from."""
    proxy = snap.cluster.proxy
    if proxy.cluster_cidr:
        return proxy.cluster_cidr, proxy.sources.get("cluster_cidr", "configuration")
    net = pod_cidr_supernet(c for n in snap.cluster.nodes.values() for c in n.pod_cidrs)
    if net is None:
        return None, "unknown"
    return net, "inferred from the nodes' podCIDRs (no kube-proxy configuration in the snapshot)"


def _apply_meta(snap: Snapshot) -> None:
    _apply_configz(snap)
    proxy = snap.cluster.proxy
    m = snap.meta
    if m.get("proxy_mode") and proxy.mode is None:
        proxy.mode = str(m["proxy_mode"])
        proxy.sources["mode"] = "meta.json"
    if m.get("cluster_cidr") and proxy.cluster_cidr is None:
        proxy.cluster_cidr = str(m["cluster_cidr"])
        proxy.sources["cluster_cidr"] = "meta.json"
    if m.get("server_version") and proxy.version is None:
        proxy.version = str(m["server_version"])
        proxy.sources["version"] = "meta.json (server version)"


def bundle_bytes(files: dict[str, str]) -> bytes:
    """A .tar.gz of a bundle given as {relative path: text} (used by tests and `collect`)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for rel, text in sorted(files.items()):
            data = text.encode()
            info = tarfile.TarInfo(rel)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()
