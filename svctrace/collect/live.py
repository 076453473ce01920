"""Collect from a live cluster: a whole bundle (`svctrace collect`), or just what one `explain` needs.

``collect_cluster`` reads the objects (kube.py) and every chosen node's dataplane (a debug pod per node,
or SSH) and writes a bundle (bundle.py): ``cluster.json``, ``nodes/<node>/*``, ``errors.json`` per node,
``meta.json``.

``snapshot_for_question`` reads only what one question needs — the Service's namespace (its Services, the
Service's EndpointSlices, the namespace's Pods), the nodes, kube-proxy's configuration and the dump of
the one node whose rules decide — into a small cache directory (``$XDG_CACHE_HOME/svctrace/live/<key>``,
default ``~/.cache/svctrace``) that stays fresh for ``ttl`` seconds, so that asking again (another
``--port``, ``--to``, ``-o json``) is instant and does not touch the cluster. ``refresh=True`` forces a
new collection.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from svctrace.collect import bundle
from svctrace.collect.debugpod import DebugPodOptions, critical, first_signal, signals_interrupt
from svctrace.collect.kube import (
    Connection,
    Kube,
    Objects,
    as_list,
    connect,
    dump_list,
    fetch_objects,
)
from svctrace.errors import CollectError, InputError, Interrupted, shorten
from svctrace.explain import question
from svctrace.model.cluster import parse_cluster

Progress = Callable[[str], None]
VIA = ("auto", "ssh", "debug-pod")
DEFAULT_TTL = 60.0  # seconds a per-question snapshot stays fresh
DEFAULT_MAX_NODES = 10  # without --node/--all-nodes, every node of a cluster this small
DEFAULT_FEW_NODES = 3  # ... and of a bigger one, this many Ready nodes
CACHE_KEEP = 24 * 3600.0
_OPTIONAL_FILES = ("ipvsadm", "ipset", "proxy-mode", "configz.json", "sysctl", "nft.json", "ip-addr.json",
                   "ip-route.json", "ip-rule.json", "hairpin-mode", "modules", "ip6tables-save")  # cache entries older than this are removed when a new one is written


@dataclass
class CollectResult:
    path: Path
    context: str | None
    server_version: str | None
    nodes: list[bundle.NodeDump] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[str]:
        return [n.name for n in self.nodes if not n.ok]

    @property
    def ok(self) -> bool:
        """Every chosen node gave its rules."""
        return not self.failed


class _Cancelled(KeyboardInterrupt):
    """Raised in a worker when the run is being interrupted."""


class _Progress:
    """The caller's callback, serialized (workers call it too), and a cancellation point."""

    def __init__(self, cb: Progress | None, cancel: threading.Event) -> None:
        self.cb, self.cancel, self.lock = cb, cancel, threading.Lock()

    def __call__(self, msg: str) -> None:
        if self.cancel.is_set():
            raise _Cancelled("interrupted")
        if self.cb is not None:
            with self.lock:
                self.cb(msg)


# -- nodes ----------------------------------------------------------------------------------------

def _node_name(o: dict[str, Any]) -> str:
    return str((o.get("metadata") or {}).get("name") or "")


def _ready(o: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (o.get("status") or {}).get("conditions") or [])


def _control_plane(o: dict[str, Any]) -> bool:
    return question.is_control_plane((o.get("metadata") or {}).get("labels") or {})


def choose_nodes(objs: Objects, nodes: Sequence[str] | None, all_nodes: bool) -> tuple[list[str], list[str]]:
    """(node names to collect, warnings)."""
    known = [_node_name(o) for o in objs.nodes()]
    if nodes:
        missing = [n for n in nodes if n not in known]
        if missing:
            raise CollectError(f"no node {', '.join(missing)} in the cluster (nodes: {', '.join(known) or 'none'})")
        return list(dict.fromkeys(nodes)), []
    if all_nodes or len(known) <= DEFAULT_MAX_NODES:
        return known, []
    ready = [_node_name(o) for o in objs.nodes() if _ready(o)]
    workers = [_node_name(o) for o in objs.nodes() if _ready(o) and not _control_plane(o)]
    pick = (workers or ready or known)[:DEFAULT_FEW_NODES]
    return pick, [f"the cluster has {len(known)} nodes: collected {', '.join(pick)} only (--all-nodes for every "
                  "node, --node NAME for the ones you need)"]


def _node_obj(objs: Objects, name: str) -> dict[str, Any]:
    return next((o for o in objs.nodes() if _node_name(o) == name), {"metadata": {"name": name}})


def _node_address(o: dict[str, Any]) -> str | None:
    addrs = (o.get("status") or {}).get("addresses") or []
    for t in ("InternalIP", "ExternalIP", "Hostname"):
        for a in addrs:
            if a.get("type") == t and a.get("address"):
                return str(a["address"])
    return None


# -- one node, by either transport ------------------------------------------------------------------

def _via_debug_pod(kube: Kube, node: str, opts: DebugPodOptions, progress: Progress) -> bundle.NodeDump:
    from svctrace.collect import debugpod

    return debugpod.collect_node(kube, node, opts, progress, getattr(progress, "cancel", None))


SSH_KEYS = ("timeout", "command_timeout", "trust_new_host_keys", "known_hosts", "ssh_config", "use_sudo", "parallel")


def _ssh_host(node_obj: dict[str, Any], ssh_options: dict[str, Any]) -> str:
    """`[USER@]HOST[:PORT]` for a node: ssh_options["hosts"][node] if given, else the node's InternalIP
    (ExternalIP, hostname), with ssh_options["user"] when the host names no user."""
    name = _node_name(node_obj)
    host = str((ssh_options.get("hosts") or {}).get(name) or _node_address(node_obj) or name)
    user = ssh_options.get("user")
    if user and "@" not in host:
        host = f"{user}@{host}"
    return host


def _via_ssh(node_objs: Sequence[dict[str, Any]], ssh_options: dict[str, Any],
             progress: Progress) -> list[bundle.NodeDump]:
    """The nodes' dumps over SSH (ssh.py), named after the Kubernetes nodes."""
    hosts = [_ssh_host(o, ssh_options) for o in node_objs]
    names = {h: _node_name(o) for h, o in zip(hosts, node_objs, strict=True)}
    try:
        from svctrace.collect import ssh
    except ImportError as e:  # paramiko missing
        return [bundle.NodeDump(_node_name(o), h, "ssh").fail("connect", f"SSH is not available: {e}")
                for h, o in zip(hosts, node_objs, strict=True)]
    for h in hosts:
        progress(f"{names[h]}: collecting over SSH ({h})")

    def note(host: str, msg: str) -> None:
        progress(f"{names.get(host, host)}: {msg}")

    opts = {k: v for k, v in ssh_options.items() if k in SSH_KEYS}
    dumps = ssh.collect_nodes_ssh(hosts, progress=note, **opts)
    for d, o in zip(dumps, node_objs, strict=True):
        if d.ok and d.name != _node_name(o):
            d.errors.append(bundle.NodeError("node", f"the host calls itself {d.name!r}; stored as the Kubernetes "
                                                     f"node {_node_name(o)!r}"))
        d.name = _node_name(o)  # the Kubernetes node name, whatever the host calls itself
    return dumps


def collect_one(kube: Kube, node_obj: dict[str, Any], via: str, opts: DebugPodOptions,
                ssh_options: dict[str, Any] | None, progress: Progress, fallback_note: list[str]) -> bundle.NodeDump:
    """One node's dump; never raises for the node's own failures (they go to its errors.json), but does for
    an interruption. `auto`: a debug pod, else SSH when the pod cannot be used."""
    name = _node_name(node_obj)
    t0 = time.monotonic()
    if via == "ssh":
        dump = _via_ssh([node_obj], ssh_options or {}, progress)[0]
    else:
        try:
            dump = _via_debug_pod(kube, name, opts, progress)
        except CollectError as e:  # DebugPodError, PermissionDenied, the API unreachable
            dump = bundle.NodeDump(name, name, "debug-pod").fail(
                "node", str(e), hint="--via ssh, or another --image / --debug-namespace" if via == "debug-pod" else None)
            if via == "auto":
                progress(f"{name}: debug pod failed ({_first_line(e)}); trying SSH")
                fallback_note.append(f"{name}: debug pod failed, SSH tried instead: {_first_line(e)}")
                alt = _via_ssh([node_obj], ssh_options or {}, progress)[0]
                if alt.ok:
                    alt.errors.insert(0, bundle.NodeError("debug-pod", str(e)))
                    dump = alt
                else:
                    dump.errors.extend(alt.errors)
    dump.elapsed = dump.elapsed or (time.monotonic() - t0)
    return dump


def _first_line(e: BaseException) -> str:
    return shorten(str(e).splitlines()[0], 200) if str(e) else type(e).__name__


def collect_nodes(kube: Kube, objs: Objects, names: Sequence[str], *, via: str, opts: DebugPodOptions,
                  ssh_options: dict[str, Any] | None, progress: _Progress, parallel: int,
                  notes: list[str]) -> list[bundle.NodeDump]:
    """Every node, `parallel` at a time. On an interruption (Ctrl-C, SIGTERM, an exception from the
    progress callback) the other workers are told to stop, and each deletes its own pod on the way out."""
    if via not in VIA:
        raise InputError(f"--via takes one of {', '.join(VIA)}, not {via!r}")
    if via == "ssh":  # one SSH session for all (shared jump hosts), parallel inside
        opts_ssh = {"parallel": max(1, parallel), **(ssh_options or {})}
        return _via_ssh([_node_obj(objs, n) for n in names], opts_ssh, progress)
    if parallel <= 1 or len(names) <= 1:
        return [collect_one(kube, _node_obj(objs, n), via, opts, ssh_options, progress, notes) for n in names]
    results: dict[str, bundle.NodeDump] = {}
    pool = ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="svctrace-node")
    futures: dict[Future[bundle.NodeDump], str] = {}
    try:
        for n in names:
            futures[pool.submit(collect_one, kube, _node_obj(objs, n), via, opts, ssh_options, progress,
                                notes)] = n
        pending = set(futures)
        while pending:
            done, pending = wait(pending, timeout=0.2, return_when=FIRST_EXCEPTION)
            for f in done:
                results[futures[f]] = f.result()  # re-raises a worker's interruption here
        pool.shutdown(wait=True)
    except BaseException:
        progress.cancel.set()  # the others stop at their next step and delete their pods
        with critical():  # and are waited for: no signal breaks this wait (debugpod.signals_interrupt)
            pool.shutdown(wait=True, cancel_futures=True)
        raise
    return [results[n] for n in names]


@contextlib.contextmanager
def _pods_cleaned(kube: Kube, cancel: threading.Event, nothing: str) -> Iterator[None]:
    """Every debug pod created inside is deleted on the way out, whatever happens: what the workers did not
    delete is swept (in a critical section: no signal breaks it). An interruption leaves as Interrupted,
    one line saying what was cleaned and what, if anything, is left."""
    interrupted: BaseException | None = None
    try:
        yield
    except KeyboardInterrupt as e:
        interrupted = e
        cancel.set()
    finally:
        left: list[tuple[str, str]] = []
        try:
            with critical():
                left = kube.sweep_pods()
        except KeyboardInterrupt as e:  # a first signal that came during the sweep
            interrupted = interrupted or e
            left = sorted(kube.pods_live)
        if interrupted is not None:
            sig = first_signal()
            by = f"by {sig}; " if sig and sig != "SIGINT" else ""  # (Ctrl-C is what "interrupted" means)
            raise Interrupted(by + _cleanup_summary(kube, left, nothing)) from None


def _cleanup_summary(kube: Kube, left: Sequence[tuple[str, str]], nothing: str) -> str:
    if not kube.pods_created:
        return f"no debug pod was created; {nothing}"
    done = f"{kube.pods_deleted} debug pod(s) deleted"
    if not left:
        return f"{done}; {nothing}"
    names = ", ".join(f"{ns}/{n}" for ns, n in left[:5]) + (" …" if len(left) > 5 else "")
    ns0, n0 = left[0]
    return (f"{done}, {len(left)} could not be: {names} (`kubectl delete pod -n {ns0} {n0}`; they stop by "
            f"themselves after {DebugPodOptions.active_deadline} s); {nothing}")


# -- the whole cluster --------------------------------------------------------------------------------

def _bundle_meta(conn: Connection, objs: Objects, dumps: Sequence[bundle.NodeDump], scope: dict[str, Any],
                 warnings: Sequence[str]) -> dict[str, Any]:
    extra: dict[str, Any] = {"scope": scope}
    if warnings:
        extra["warnings"] = list(warnings)
    return bundle.make_meta(dumps, context=conn.context, server_version=objs.server_version, extra=extra)


def collect_cluster(out: str | os.PathLike[str], nodes: Sequence[str] | None = None, all_nodes: bool = False,
                    via: str = "auto", context: str | None = None, kubeconfig: str | None = None,
                    progress: Progress | None = None, *, debug: DebugPodOptions | None = None,
                    ssh_options: dict[str, Any] | None = None, parallel: int = 4,
                    overwrite: bool = False) -> CollectResult:
    """Write a full bundle of the cluster to `out` (a directory, or a .tar.gz).

    nodes: the nodes to dump (default: every node of a cluster of up to 10, else 3 Ready workers, said so
    in the warnings); all_nodes: every node. via: `debug-pod` (a pod per node through the API), `ssh`,
    or `auto` (a debug pod, SSH when it cannot be used). A node that fails gets `nodes/<node>/errors.json`
    and the bundle is still written; CollectError (exit 3) when the cluster itself cannot be read.
    """
    if via not in VIA:
        raise InputError(f"--via takes one of {', '.join(VIA)}, not {via!r}")
    if Path(out).exists() and not overwrite:  # before any work, not after
        raise InputError(f"{out} already exists (choose another path, or overwrite it: --overwrite)")
    cancel = threading.Event()
    prog = _Progress(progress, cancel)
    conn = connect(kubeconfig, context)
    opts = debug or DebugPodOptions()
    with signals_interrupt(cancel), Kube(conn) as kube, _pods_cleaned(kube, cancel, "nothing written"):
        prog(f"reading the cluster ({conn.describe()})")
        objs = fetch_objects(kube, progress=prog)
        names, warns = choose_nodes(objs, nodes, all_nodes)
        warns = list(objs.warnings) + warns
        dumps = collect_nodes(kube, objs, names, via=via, opts=opts, ssh_options=ssh_options, progress=prog,
                              parallel=parallel, notes=warns)
    bundle.unique_names(dumps)
    meta = _bundle_meta(conn, objs, dumps, {"kind": "cluster", "nodes": names}, warns)
    files = bundle.assemble(dumps, cluster=dump_list(objs.items).encode(), meta=meta)
    prog(f"writing {out}")
    path = bundle.write_bundle(out, files, overwrite=overwrite)
    return CollectResult(path, conn.context, objs.server_version, list(dumps), warns)


# -- one question ---------------------------------------------------------------------------------------

def _owner(services: Sequence[dict[str, Any]], nodes: Sequence[dict[str, Any]], ip: str,
           port: int | None) -> tuple[str, str] | None:
    """The Service (namespace, name) at ip:port; with no port, the Service whose own address ip is."""
    node_ips = {a.get("address") for n in nodes for a in (n.get("status") or {}).get("addresses") or []}
    for s in services:
        spec, m = s.get("spec") or {}, s.get("metadata") or {}
        ips = set(spec.get("clusterIPs") or [spec.get("clusterIP")]) | set(spec.get("externalIPs") or []) | {
            i.get("ip") for i in ((s.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []}
        if port is None and ip in ips:
            return str(m.get("namespace") or "default"), str(m.get("name") or "")
        for p in spec.get("ports") or []:
            if (ip in ips and p.get("port") == port) or (ip in node_ips and p.get("nodePort") == port):
                return str(m.get("namespace") or "default"), str(m.get("name") or "")
    return None


def context_namespace(context: str | None = None, kubeconfig: str | None = None) -> str:
    """The namespace a question means without -n: the context's (kubectl's rule), else `default`. The CLI
    should pass it to explain's Request too, so that both look in the same namespace."""
    return connect(kubeconfig, context).namespace or "default"


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "svctrace" / "live"


def _fresh(path: Path, ttl: float) -> bool:
    try:
        meta = path / "meta.json"
        return meta.is_file() and (path / "cluster.json").is_file() and time.time() - meta.stat().st_mtime < ttl
    except OSError:
        return False


def _prune(root: Path, keep: Path) -> None:
    with contextlib.suppress(OSError):
        for p in root.iterdir():
            if p != keep and p.is_dir() and time.time() - p.stat().st_mtime > CACHE_KEEP:
                shutil.rmtree(p, ignore_errors=True)


def question_key(conn: Connection, *parts: object) -> str:
    h = hashlib.sha256(json.dumps([conn.identity, *[str(p) for p in parts]]).encode()).hexdigest()
    return h[:20]


def _cached(path: Path, ttl: float, refresh: bool, progress: Progress | None) -> bool:
    """Whether the cache entry `path` answers (fresh, and no --refresh); says so through `progress`."""
    if refresh or not _fresh(path, ttl):
        return False
    if progress is not None:
        progress(f"using the snapshot collected {time.time() - (path / 'meta.json').stat().st_mtime:.0f} s ago "
                 f"({path})")
    return True


def _collect_and_store(conn: Connection, kube: Kube, objs: Objects, target_node: str | None, *, root: Path,
                       path: Path, scope: dict[str, Any], via: str, opts: DebugPodOptions,
                       ssh_options: dict[str, Any] | None, progress: _Progress) -> str:
    """The one node's dump beside the objects, written as a snapshot directory at `path` in the cache."""
    warns = list(objs.warnings)
    dumps: list[bundle.NodeDump] = []
    if target_node is not None:
        dumps = collect_nodes(kube, objs, [target_node], via=via, opts=opts, ssh_options=ssh_options,
                              progress=progress, parallel=1, notes=warns)
        if not dumps[0].ok:  # explain cannot answer without it: say why, and cache nothing
            why = "; ".join(e.error for e in dumps[0].errors if e.what not in _OPTIONAL_FILES) or \
                "; ".join(e.error for e in dumps[0].errors) or "no dump"
            raise CollectError(f"could not read the rules of node {target_node}: {why}")
    return _cache_bundle(root, path, conn, objs, dumps, scope, warns)


def _cache_bundle(root: Path, path: Path, conn: Connection, objs: Objects, dumps: Sequence[bundle.NodeDump],
                  scope: dict[str, Any], warns: Sequence[str]) -> str:
    """Write a live collection into the cache (0700, replacing the entry it refreshes) and prune old entries."""
    meta = _bundle_meta(conn, objs, dumps, scope, warns)
    files = bundle.assemble(dumps, cluster=dump_list(objs.items).encode(), meta=meta)
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    with contextlib.suppress(OSError):
        os.chmod(root, 0o700)
    bundle.write_bundle(path, files, overwrite=True)
    _prune(root, path)
    return str(path)


def snapshot_for_question(service: str, namespace: str | None = None, node: str | None = None, *,
                          source: str | None = None, context: str | None = None, kubeconfig: str | None = None,
                          via: str = "auto", refresh: bool = False, ttl: float = DEFAULT_TTL,
                          cache_dir: str | os.PathLike[str] | None = None, progress: Progress | None = None,
                          debug: DebugPodOptions | None = None,
                          ssh_options: dict[str, Any] | None = None) -> str:
    """Collect what `explain SERVICE [-n NS] [--node NODE] [--from SOURCE]` needs and return the path of a
    snapshot directory holding it (reused for `ttl` seconds unless `refresh`).

    service: the explain target (svc/NAME, NAME.NS.svc, NAME, IP:PORT); namespace: -n (default: the
    context's namespace); node: --node; source: --from (pod/NAME, pod/NS/NAME, node/NAME or an IP), which
    decides the node whose rules are dumped (the sender's). Reads: the namespace's Services (all Services
    for IP:PORT), the Service's EndpointSlices, the namespace's Pods (plus a --from pod elsewhere), Nodes,
    kube-proxy's ConfigMap/DaemonSet, /version, and one node's dump.
    """
    if via not in VIA:
        raise InputError(f"--via takes one of {', '.join(VIA)}, not {via!r}")
    conn = connect(kubeconfig, context)
    ns_arg = namespace
    root = Path(cache_dir) if cache_dir is not None else cache_root()
    path = root / question_key(conn, service, ns_arg or conn.namespace, node or "", source or "", via)
    if _cached(path, ttl, refresh, progress):
        return str(path)

    cancel = threading.Event()
    prog = _Progress(progress, cancel)
    opts = debug or DebugPodOptions()
    with signals_interrupt(cancel), Kube(conn) as kube, _pods_cleaned(kube, cancel, "nothing cached"):
        target = question.parse_target(service, ns_arg)
        ns, name = target.namespace or ns_arg or conn.namespace, target.name
        if target.ip is not None:
            prog(f"finding the Service of {service}")
            owner = _owner(kube.list("services"), kube.list("nodes"), target.ip, target.port)
            if owner is not None:
                ns, name = owner
        spec = question.parse_source(source, ns_arg or ns) if source else None
        pods = [(spec.namespace or ns, spec.name or "")] if spec is not None and spec.kind == "pod" else []
        pod_ips = [spec.ip] if spec is not None and spec.ip else []
        objs = fetch_objects(kube, namespace=ns, service=name, pods=pods, pod_ips=pod_ips, progress=prog)
        if spec is not None and spec.kind == "pod" and not spec.explicit and spec.name and not any(
                _node_name(p) == spec.name and (p.get("metadata") or {}).get("namespace") == (spec.namespace or ns)
                for p in objs.of("Pod")):
            # not in the namespace asked: the pods of that name elsewhere (explain takes the one, or names them)
            objs.add(kube.list("pods", None, field_selector=f"metadata.name={spec.name}"))
        if name and not any(_node_name(s) == name for s in objs.of("Service")):
            # not in this namespace: the Services of that name elsewhere, for explain's "did you mean -n"
            objs.add(kube.list("services", None, field_selector=f"metadata.name={name}"))
        target_node = _decisive_node(objs, node, spec)
        scope = {"kind": "question", "namespace": ns, "service": name, "node": target_node, "source": source}
        return _collect_and_store(conn, kube, objs, target_node, root=root, path=path, scope=scope, via=via,
                                  opts=opts, ssh_options=ssh_options, progress=prog)


def snapshot_for_screen(namespace: str | None = None, node: str | None = None, *, context: str | None = None,
                        kubeconfig: str | None = None, via: str = "auto", refresh: bool = False,
                        ttl: float = DEFAULT_TTL, cache_dir: str | os.PathLike[str] | None = None,
                        progress: Progress | None = None, debug: DebugPodOptions | None = None,
                        ssh_options: dict[str, Any] | None = None) -> str:
    """Collect what the TUI's screens need of a live cluster — every Service of `namespace` (all namespaces
    when None) with its EndpointSlices and Pods, the Nodes, kube-proxy's configuration, /version, and the
    rules of the one node whose answers the screens show (`node`, else the node explain picks with no
    --from, as for a question) — through the same collection and the same cache as `snapshot_for_question`
    (fresh for `ttl` seconds unless `refresh`). Returns the snapshot directory's path."""
    if via not in VIA:
        raise InputError(f"--via takes one of {', '.join(VIA)}, not {via!r}")
    conn = connect(kubeconfig, context)
    root = Path(cache_dir) if cache_dir is not None else cache_root()
    path = root / question_key(conn, "screen", namespace or "*", node or "", via)
    if _cached(path, ttl, refresh, progress):
        return str(path)
    cancel = threading.Event()
    prog = _Progress(progress, cancel)
    with signals_interrupt(), Kube(conn) as kube:
        prog(f"reading the cluster ({conn.describe()})")
        objs = fetch_objects(kube, namespace=namespace, progress=prog)
        target_node = _decisive_node(objs, node, None)
        scope = {"kind": "screen", "namespace": namespace, "node": target_node}
        return _collect_and_store(conn, kube, objs, target_node, root=root, path=path, scope=scope, via=via,
                                  opts=debug or DebugPodOptions(), ssh_options=ssh_options, progress=prog)


def _decisive_node(objs: Objects, node: str | None, source: question.SourceSpec | None) -> str | None:
    """The node whose rules decide, as explain picks it (svctrace.explain.question), among the Ready nodes."""
    names = [_node_name(o) for o in objs.nodes()]
    if node and node not in names:
        raise CollectError(f"no node {node} in the cluster (nodes: {', '.join(names) or 'none'})")
    cluster = parse_cluster(as_list(objs.items))
    ready = [_node_name(o) for o in objs.nodes() if _ready(o)]
    return question.node_to_collect(cluster, source, node, ready)


# -- a check ----------------------------------------------------------------------------------------------


def snapshot_for_check(namespace: str | None = None, node: str | None = None, *, context: str | None = None,
                       kubeconfig: str | None = None, via: str = "auto", refresh: bool = False,
                       ttl: float = DEFAULT_TTL, cache_dir: str | os.PathLike[str] | None = None,
                       progress: Progress | None = None, debug: DebugPodOptions | None = None,
                       ssh_options: dict[str, Any] | None = None) -> str:
    """Collect what `check [-n NS | -A] [--node NODE]` needs and return the path of a snapshot directory holding
    it, cached like a question's (`snapshot_for_question`): the namespace's objects (every namespace's when None),
    the nodes, kube-proxy's configuration, and the dumps of `node` (else the nodes `collect` picks by default:
    every node of a small cluster, a few Ready workers of a big one, said so in the warnings)."""
    if via not in VIA:
        raise InputError(f"--via takes one of {', '.join(VIA)}, not {via!r}")
    conn = connect(kubeconfig, context)
    root = Path(cache_dir) if cache_dir is not None else cache_root()
    path = root / question_key(conn, "check", namespace or "", node or "", via)
    if not refresh and _fresh(path, ttl):
        if progress is not None:
            progress(f"using the snapshot collected {time.time() - (path / 'meta.json').stat().st_mtime:.0f} s ago "
                     f"({path})")
        return str(path)
    cancel = threading.Event()
    prog = _Progress(progress, cancel)
    opts = debug or DebugPodOptions()
    with signals_interrupt(), Kube(conn) as kube:
        objs = fetch_objects(kube, namespace=namespace, progress=prog)
        names, notes = choose_nodes(objs, [node] if node else None, False)
        warns = list(objs.warnings) + notes
        dumps = collect_nodes(kube, objs, names, via=via, opts=opts, ssh_options=ssh_options, progress=prog,
                              parallel=4, notes=warns)
        if not any(d.ok for d in dumps):
            why = "; ".join(e.error for d in dumps for e in d.errors if e.what not in _OPTIONAL_FILES) or "no dump"
            raise CollectError(f"could not read the rules of any node ({', '.join(names) or 'none'}): {why}")
    bundle.unique_names(dumps)
    scope = {"kind": "check", "namespace": namespace, "nodes": names}
    return _cache_bundle(root, path, conn, objs, dumps, scope, warns)
