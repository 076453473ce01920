"""Snapshot bundles (docs/snapshots.md): a directory or a .tar.gz of one.

Reading is pure (files and tar archives only). A bundle with missing files still loads; a damaged
file is reported with its path and line; unknown files are ignored.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from svctrace.errors import InputError, Warn
from svctrace.model.cluster import Cluster, parse_cluster, pod_cidr_supernet

T = TypeVar("T")

DUMP_FILES = ("iptables-save", "ip6tables-save", "iptables-legacy-save", "ip6tables-legacy-save", "nft.json", "nft",
              "ipvsadm", "ipset", "ip-addr.json", "ip-addr", "ip-route.json", "ip-route", "ip-rule.json",
              "ip-rule", "hairpin-mode", "modules", "proxy-mode", "configz.json", "sysctl", "errors.json",
              "conntrack")
MAX_MEMBER = 256 * 1024 * 1024


@dataclass
class NodeFiles:
    name: str
    files: dict[str, str] = field(default_factory=dict)  # file name -> text
    source: str = ""
    _parsed: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def path(self, fname: str) -> str:
        return f"{self.source}/nodes/{self.name}/{fname}"

    def get(self, fname: str) -> str | None:
        return self.files.get(fname)

    def parsed(self, fname: str, loader: Callable[[str, str], T], text: str | None = None) -> T:
        """`loader(text, path)` of a file, once: every question asked of this snapshot reuses the parse (a
        big dump costs a second to read; the TUI asks one question per Service). `text` stands in for the
        file's text when the result is derived from several files (a key that is no file name)."""
        if fname not in self._parsed:
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
    if b"\x00" in data[:65536]:
        at = data[: data.index(b"\x00")].count(b"\n") + 1 if line else None
        raise InputError(binary, source=where, line=at)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        if latin1 is not None:
            latin1(data[: e.start].count(b"\n") + 1)
        return data.decode("latin-1")


def _read_tree(root: Path) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for p in root.rglob("*"):
        if p.is_file():
            rel = p.relative_to(root).as_posix()
            if rel == "cluster.json" or rel == "cluster.yaml" or rel == "meta.json" or rel.startswith("nodes/"):
                out[rel] = p.read_bytes()
    return out


def _read_tar(path: Path) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    try:
        return _read_tar_members(path, out)
    except (tarfile.TarError, OSError, EOFError) as e:
        why = str(e).splitlines()[0].rstrip(":") if str(e) else type(e).__name__
        raise InputError(f"not a readable .tar.gz snapshot ({why}; a snapshot is a directory or a .tar.gz/.tgz of one)",
                         source=str(path)) from None


def _read_tar_members(path: Path, out: dict[str, bytes]) -> dict[str, bytes]:
    with tarfile.open(path, "r:*") as tf:
        members = [m for m in tf.getmembers() if m.isfile()]
        names = [m.name.lstrip("./") for m in members]
        prefix = ""
        if names and "cluster.json" not in names and "cluster.yaml" not in names:
            tops = {n.split("/", 1)[0] for n in names if "/" in n}
            if len(tops) == 1:
                prefix = tops.pop() + "/"
        for m, n in zip(members, names, strict=True):
            if m.size > MAX_MEMBER:
                raise InputError(f"{n} is larger than {MAX_MEMBER // 2**20} MiB", source=str(path))
            if prefix and not n.startswith(prefix):
                continue
            rel = n[len(prefix):]
            if ".." in rel.split("/"):
                continue
            f = tf.extractfile(m)
            if f is not None:
                out[rel] = f.read()
    return out


def load_snapshot(path: str) -> Snapshot:
    """Read a bundle: a directory, a .tar.gz/.tgz, or `demo` for the bundled demo cluster."""
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
        return _build(files, "demo")
    p = Path(path)
    if not p.exists():
        raise InputError("no such snapshot (a directory, a .tar.gz, or `demo`)", source=path)
    files = _read_tree(p) if p.is_dir() else _read_tar(p)
    return _build(files, path)


def _build(files: dict[str, bytes], source: str) -> Snapshot:
    warnings: list[Warn] = []
    if "cluster.json" in files:
        where = f"{source}/cluster.json"
        text = decode_text(files["cluster.json"], where)
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            raise InputError(f"broken JSON: {e.msg}", source=where, line=e.lineno) from None
    elif "cluster.yaml" in files:
        where = f"{source}/cluster.yaml"
        text = decode_text(files["cluster.yaml"], where)
        try:
            import yaml  # the kubernetes client depends on PyYAML; only YAML bundles need it

            doc = list(yaml.safe_load_all(text))
        except ImportError:
            raise InputError("reading cluster.yaml needs PyYAML (pip install pyyaml)", source=where) from None
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            raise InputError(f"broken YAML: {getattr(e, 'problem', e)}", source=where,
                             line=mark.line + 1 if mark else None) from None
    else:
        raise InputError("the snapshot has no cluster.json (nor cluster.yaml): it is required; make it with "
                         "`kubectl get services,endpointslices,pods,nodes -A -o json > cluster.json`", source=source)
    cluster = parse_cluster(doc, where)
    meta: dict[str, Any] = {}
    if "meta.json" in files:
        try:
            meta = json.loads(decode_text(files["meta.json"], f"{source}/meta.json"))
        except json.JSONDecodeError as e:
            warnings.append(Warn(f"meta.json is broken JSON ({e.msg}); ignored", f"{source}/meta.json", e.lineno,
                                 "snapshot"))
    nodes: dict[str, NodeFiles] = {}
    for rel, data in sorted(files.items()):
        parts = rel.split("/")
        if len(parts) != 3 or parts[0] != "nodes":
            continue
        name, fname = parts[1], parts[2]
        if fname not in DUMP_FILES:
            continue
        nf = nodes.setdefault(name, NodeFiles(name, source=source))
        nf.files[fname] = decode_text(data, f"{source}/{rel}")
    for name in nodes:
        if cluster.nodes and name not in cluster.nodes:
            warnings.append(Warn(f"nodes/{name}/ holds dumps of a node that is not in cluster.json", source, None,
                                 "snapshot"))
    snap = Snapshot(source, cluster, meta, nodes, warnings + cluster.warnings)
    _apply_meta(snap)
    return snap


def _apply_configz(snap: Snapshot) -> None:
    """kube-proxy's /configz (`{"kubeproxy.config": {...}}`) from any node, for what the objects did not say."""
    proxy = snap.cluster.proxy
    for name, nf in sorted(snap.nodes.items()):
        text = nf.get("configz.json")
        if not text:
            continue
        try:
            cfg = (json.loads(text) or {}).get("kubeproxy.config") or {}
        except (json.JSONDecodeError, AttributeError):
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
