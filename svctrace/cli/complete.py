"""Dynamic shell completion, through typer's own mechanism (the `_SVCTRACE_COMPLETE` protocol; the scripts
`svctrace completion bash|zsh|fish` prints call svctrace back at each TAB).

The values come from where the command line says the cluster is, as the command itself would read it: the
snapshot of `--snapshot PATH` (or a `tui` path) or `--demo` anywhere on the same command line — before or
after the word being completed —, else the live cluster of `--context`/`--kubeconfig` (the current
context), asked with a short timeout. `--context` completes the kubeconfig's contexts (read as YAML, no
API call). Namespaces, Services, pods and nodes follow `-n`/`--namespace` (else the context's namespace).

A completer never raises and never prints: whatever cannot be read offers nothing (the shell then falls
back to file names).
"""

from __future__ import annotations

import contextlib
import os
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

# seconds for one API request while the user waits at a TAB: (connect, read)
LIVE_TIMEOUT = (2.0, 3.0)
SERVICE_PREFIXES = ("svc/", "service/", "services/")


def _words() -> list[str]:
    """The whole command line being completed. bash gives every word (those after the cursor too, so
    `explain svc/<TAB> --demo` sees --demo); zsh and fish give the words up to the cursor."""
    raw = os.environ.get("COMP_WORDS") or os.environ.get("_TYPER_COMPLETE_ARGS") or ""
    try:
        return shlex.split(raw)
    except ValueError:  # an open quote
        return raw.split()


def _option(words: list[str], *names: str) -> str | None:
    """The value of the last `NAME VALUE` or `NAME=VALUE` among `words`."""
    found = None
    for i, w in enumerate(words):
        for n in names:
            if w == n and i + 1 < len(words):
                found = words[i + 1]
            elif n.startswith("--") and w.startswith(n + "="):
                found = w[len(n) + 1 :]
    return found


@dataclass
class Where:
    """Where the command line says the cluster is."""

    snapshot: str | None = None
    context: str | None = None
    kubeconfig: str | None = None
    namespace: str | None = None


def where(ctx: Any) -> Where:
    params: dict[str, Any] = dict(getattr(ctx, "params", None) or {})
    words = _words()
    w = Where(
        snapshot=params.get("snapshot") or _option(words, "--snapshot"),
        context=params.get("context") or _option(words, "--context"),
        kubeconfig=params.get("kubeconfig") or _option(words, "--kubeconfig"),
        namespace=params.get("namespace") or _option(words, "-n", "--namespace"),
    )
    if params.get("demo") or "--demo" in words:
        w.snapshot = "demo"
    path = params.get("path")  # `svctrace tui PATH`
    if w.snapshot is None and isinstance(path, str) and path:
        w.snapshot = path
    return w


class _Cluster:
    """Names to offer: namespaces, Services (per namespace), pods (per namespace), nodes."""

    def __init__(self, w: Where) -> None:
        self.w = w

    def namespace(self) -> str:
        return self.w.namespace or "default"

    def namespaces(self) -> list[str]:
        raise NotImplementedError

    def services(self, ns: str | None) -> list[str]:
        raise NotImplementedError

    def pods(self, ns: str | None) -> list[str]:
        raise NotImplementedError

    def nodes(self) -> list[str]:
        raise NotImplementedError


class _Snapshot(_Cluster):
    def __init__(self, w: Where) -> None:
        super().__init__(w)
        from svctrace.model.snapshot import load_snapshot

        assert w.snapshot is not None
        self.cluster = load_snapshot(w.snapshot).cluster

    def namespaces(self) -> list[str]:
        c = self.cluster
        return sorted({s.namespace for s in c.services.values()} | {p.namespace for p in c.pods})

    def services(self, ns: str | None) -> list[str]:
        return [s.name for s in self.cluster.services.values() if ns is None or s.namespace == ns]

    def pods(self, ns: str | None) -> list[str]:
        return [p.name for p in self.cluster.pods if ns is None or p.namespace == ns]

    def nodes(self) -> list[str]:
        return list(self.cluster.nodes)


class _Live(_Cluster):
    def __init__(self, w: Where) -> None:
        super().__init__(w)
        from svctrace.collect.kube import Kube, connect

        self.conn = connect(w.kubeconfig, w.context)
        self.conn.configuration.retries = 0
        self.kube = Kube(self.conn, timeout=LIVE_TIMEOUT)

    def namespace(self) -> str:
        return self.w.namespace or self.conn.namespace

    def _names(self, resource: str, ns: str | None = None) -> list[str]:
        return [str((o.get("metadata") or {}).get("name") or "") for o in self.kube.list(resource, ns)]

    def namespaces(self) -> list[str]:
        try:
            names = self._names("namespaces")
        except Exception:  # not allowed to list namespaces (namespace-scoped RBAC): those with Services
            names = []
        if names:
            return names
        return sorted(
            {str((o.get("metadata") or {}).get("namespace") or "") for o in self.kube.list("services")}
        )

    def services(self, ns: str | None) -> list[str]:
        return self._names("services", ns)

    def pods(self, ns: str | None) -> list[str]:
        return self._names("pods", ns)

    def nodes(self) -> list[str]:
        return self._names("nodes")


@contextlib.contextmanager
def _cluster(ctx: Any) -> Iterator[_Cluster | None]:
    w = where(ctx)
    c: _Cluster | None = None
    try:
        c = _Snapshot(w) if w.snapshot else _Live(w)
    except Exception:  # nothing readable: offer nothing
        c = None
    try:
        yield c
    finally:
        kube = getattr(c, "kube", None)
        if kube is not None:
            kube.close()


def _safe(fn: Any) -> list[str]:
    try:
        return [x for x in fn() if x]
    except Exception:  # a completion never fails loudly
        return []


# -- the completers (typer's autocompletion=: ctx, incomplete -> values) ------------------------------------


def namespaces(ctx: Any, incomplete: str) -> list[str]:
    with _cluster(ctx) as c:
        return [] if c is None else [n for n in _safe(c.namespaces) if n.startswith(incomplete)]


def nodes(ctx: Any, incomplete: str) -> list[str]:
    with _cluster(ctx) as c:
        return [] if c is None else [n for n in _safe(c.nodes) if n.startswith(incomplete)]


def services(ctx: Any, incomplete: str) -> list[str]:
    """A command's Service: `svc/NAME` (kubectl's spelling; `service/` too), or a bare NAME once one is
    being typed. In the namespace of -n, else the context's."""
    with _cluster(ctx) as c:
        if c is None:
            return []
        names = sorted(set(_safe(lambda: c.services(c.namespace()))))
    prefix = next((p for p in SERVICE_PREFIXES if incomplete.startswith(p)), None)
    if prefix is not None:
        return [prefix + n for n in names if (prefix + n).startswith(incomplete)]
    out = [f"svc/{n}" for n in names if f"svc/{n}".startswith(incomplete)]
    if incomplete:
        out += [n for n in names if n.startswith(incomplete)]
    return out


def sources(ctx: Any, incomplete: str) -> list[str]:
    """--from: `pod/NAME` (the namespace's pods) and `node/NAME`."""
    with _cluster(ctx) as c:
        if c is None:
            return []
        cands = [f"pod/{p}" for p in _safe(lambda: c.pods(c.namespace()))]
        cands += [f"node/{n}" for n in _safe(c.nodes)]
    return [x for x in cands if x.startswith(incomplete)]


def contexts(ctx: Any, incomplete: str) -> list[str]:
    """The contexts of the kubeconfig kubectl would read (--kubeconfig, $KUBECONFIG, ~/.kube/config)."""
    try:
        import yaml

        from svctrace.collect.kube import kubeconfig_paths

        w = where(ctx)
        names: list[str] = []
        for p in kubeconfig_paths(w.kubeconfig):
            with open(p, encoding="utf-8") as f:
                doc = yaml.safe_load(f) or {}
            for c in doc.get("contexts") or []:
                name = str((c or {}).get("name") or "")
                if name and name not in names:
                    names.append(name)
    except Exception:  # an unreadable kubeconfig offers nothing
        return []
    return [n for n in names if n.startswith(incomplete)]


def path_or_service(ctx: Any, incomplete: str) -> list[str]:
    """`tui`'s first argument: a Service when it is being typed as one (`svc/...`), or when --snapshot or
    --demo already names the snapshot (`tui --demo svc/web`); else nothing, so that the shell offers file
    names (a snapshot or a dump)."""
    if incomplete.startswith(SERVICE_PREFIXES) or (where(ctx).snapshot is not None and not incomplete):
        return services(ctx, incomplete)
    return []
