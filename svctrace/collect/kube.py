"""The Kubernetes API side of `svctrace collect`: find the cluster like kubectl does, read the objects a
snapshot needs (never Secrets), keep only the fields svctrace uses, and print them as `kubectl get -o json`.

Kubeconfig resolution follows kubectl's loading rules:

1. ``--kubeconfig FILE``: that file only (it must exist);
2. else ``$KUBECONFIG``: every listed file that exists, merged (the first file to define a cluster, user or
   context by name wins, and so does the first non-empty ``current-context``);
3. else ``~/.kube/config``;
4. else, when none of those exists, the in-cluster configuration (``KUBERNETES_SERVICE_HOST``/``_PORT`` and the
   service account token), as kubectl does inside a pod.

``--context`` picks a context. The configuration goes into a fresh ``Configuration`` (never the client's
global default) and nothing is written back to the user's kubeconfig files (``persist_config`` off).
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import shlex
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from svctrace.collect.bundle import looks_secret
from svctrace.errors import CollectError
from svctrace.kubeproxy.endpoints import HINTS_ANNOTATION, SERVICE_NAME_LABEL, TOPOLOGY_MODE_ANNOTATION

Obj = dict[str, Any]
Progress = Callable[[str], None]

# Where a pod finds its service account (kubectl's in-cluster config reads the same files). Module
# attributes so that tests can point them at files of their own.
SERVICE_TOKEN_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/token"
SERVICE_CA_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
SERVICE_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

REQUEST_TIMEOUT = (10.0, 60.0)  # (connect, read) seconds for one API request
PAGE = 500  # list page size (the server may ignore it)

# Annotations svctrace reads; every other annotation is dropped (they carry last-applied configurations,
# which hold env values and more).
KEEP_ANNOTATIONS = frozenset({HINTS_ANNOTATION, TOPOLOGY_MODE_ANNOTATION})


# -- connection -------------------------------------------------------------------------------------

@dataclass
class Connection:
    """A resolved cluster: a client configuration of its own, and where it came from."""

    configuration: Any  # kubernetes.client.Configuration
    context: str | None
    namespace: str  # the context's namespace (kubectl's default namespace)
    source: str  # "kubeconfig /path[, /path2]" or "in-cluster"
    server: str

    def describe(self) -> str:
        ctx = f"context {self.context}" if self.context else "in-cluster configuration"
        return f"{ctx} ({self.server})"

    @property
    def identity(self) -> str:
        """A stable key for caches: which server, as which context."""
        return f"{self.server}|{self.context or ''}|{self.source}"


def kubeconfig_paths(kubeconfig: str | None = None, environ: Mapping[str, str] | None = None) -> list[str]:
    """The kubeconfig files kubectl would read, in precedence order (empty: none exists)."""
    env = os.environ if environ is None else environ
    if kubeconfig:
        p = os.path.expanduser(kubeconfig)
        if not os.path.isfile(p):
            raise CollectError(f"--kubeconfig {kubeconfig}: no such file")
        return [p]
    listed = env.get("KUBECONFIG", "")
    if listed:
        out: list[str] = []
        for part in listed.split(os.pathsep):
            p = os.path.expanduser(part) if part else ""
            if p and os.path.isfile(p) and p not in out:
                out.append(p)
        return out  # kubectl ignores listed files that do not exist
    home = env.get("HOME") or os.path.expanduser("~")
    default = os.path.join(home, ".kube", "config")
    return [default] if os.path.isfile(default) else []


def _in_cluster_possible(env: Mapping[str, str]) -> bool:
    return bool(env.get("KUBERNETES_SERVICE_HOST") and env.get("KUBERNETES_SERVICE_PORT")
                and os.path.isfile(SERVICE_TOKEN_FILE))


def _fresh_configuration() -> Any:
    from kubernetes.client import Configuration

    # type.__call__ skips the metaclass of older clients, which copied the global default.
    cfg = type.__call__(Configuration)
    cfg.retries = 2
    return cfg


def connect(kubeconfig: str | None = None, context: str | None = None,
            environ: Mapping[str, str] | None = None) -> Connection:
    """Resolve the cluster like kubectl (see the module docstring). Raises CollectError (exit 3)."""
    env = os.environ if environ is None else environ
    paths = kubeconfig_paths(kubeconfig, env)
    if not paths:
        if _in_cluster_possible(env):
            if context:
                raise CollectError(f"--context {context}: no kubeconfig file to find it in (only the in-cluster "
                                   "configuration is available)")
            return _in_cluster(env)
        if env.get("KUBECONFIG"):
            raise CollectError(f"no cluster configured: none of the $KUBECONFIG files exists ({env['KUBECONFIG']}), "
                               "and not running in a pod (KUBERNETES_SERVICE_HOST unset)")
        raise CollectError("no cluster configured: no --kubeconfig, no $KUBECONFIG, no ~/.kube/config, and "
                           "not running in a pod (KUBERNETES_SERVICE_HOST unset)")
    return _from_kubeconfig(paths, context)


def _from_kubeconfig(paths: list[str], context: str | None) -> Connection:
    from kubernetes.config.config_exception import ConfigException
    from kubernetes.config.kube_config import (
        ENV_KUBECONFIG_PATH_SEPARATOR,
        KubeConfigLoader,
        KubeConfigMerger,
    )

    where = "kubeconfig " + ", ".join(paths)
    try:
        merger = KubeConfigMerger(ENV_KUBECONFIG_PATH_SEPARATOR.join(paths))
    except (ConfigException, OSError, ValueError) as e:
        raise CollectError(f"{where}: {e}") from None
    except Exception as e:  # yaml errors
        raise CollectError(f"{where}: not a readable kubeconfig ({type(e).__name__}: {e})") from None
    merged = merger.config
    if merged is None:
        raise CollectError(f"{where}: no configuration in it")
    # kubectl: the first file that sets current-context wins (the client's merger lets the last one win).
    current = None
    for p in paths:
        cc = (merger.config_files.get(p) or {}).get("current-context")
        if cc:
            current = cc
            break
    merged.value["current-context"] = current or ""
    names = [str(getattr(c, "value", c).get("name")) for c in merged.value.get("contexts") or []]
    chosen = context or current
    if not chosen:
        raise CollectError(f"{where}: no current-context set; choose one with --context "
                           f"({', '.join(names) or 'no contexts defined'})")
    if chosen not in names:
        raise CollectError(f"{where}: context \"{chosen}\" does not exist (contexts: {', '.join(names) or 'none'})")
    cfg = _fresh_configuration()
    try:
        loader = KubeConfigLoader(config_dict=merged, active_context=chosen, config_base_path=None,
                                  config_persister=None)
        loader.load_and_set(cfg)
        ctx = loader.current_context.get("context") or {}
    except ConfigException as e:
        raise CollectError(f"{where}: context {chosen}: {e}") from None
    except (KeyError, TypeError, ValueError, OSError) as e:
        raise CollectError(f"{where}: context {chosen}: incomplete configuration ({type(e).__name__}: {e})") from None
    namespace = str(ctx.get("namespace") or "default") if hasattr(ctx, "get") else "default"
    return Connection(cfg, chosen, namespace, where, str(cfg.host))


def _in_cluster(env: Mapping[str, str]) -> Connection:
    from kubernetes.config.config_exception import ConfigException
    from kubernetes.config.incluster_config import InClusterConfigLoader

    cfg = _fresh_configuration()
    try:
        InClusterConfigLoader(token_filename=SERVICE_TOKEN_FILE, cert_filename=SERVICE_CA_FILE,
                              environ=dict(env)).load_and_set(cfg)
    except ConfigException as e:
        raise CollectError(f"in-cluster configuration: {e}") from None
    ns = "default"
    with contextlib.suppress(OSError):
        ns = Path(SERVICE_NAMESPACE_FILE).read_text().strip() or "default"
    return Connection(cfg, None, ns, "in-cluster", str(cfg.host))


# -- errors ---------------------------------------------------------------------------------------

class PermissionDenied(CollectError):
    """RBAC said no (403). Names the verb, the resource and the namespace that were refused."""

    def __init__(self, verb: str, resource: str, namespace: str | None, detail: str = "",
                 name: str | None = None) -> None:
        self.verb, self.resource, self.namespace, self.detail = verb, resource, namespace, detail
        where = f"in namespace {namespace}" if namespace else "cluster-wide"
        what = f"{resource} {name}" if name else resource
        msg = (f"permission denied: cannot {verb} {what} {where}; the kubeconfig user needs RBAC permission "
               f"to `{verb}` `{resource}`{' in namespace ' + namespace if namespace else ' (a ClusterRole)'} "
               f"(check: kubectl auth can-i {verb} {resource}{' -n ' + namespace if namespace else ' -A'})")
        if detail:
            msg += f" — the API server said: {detail}"
        super().__init__(msg)


class NotFound(CollectError):
    """404: the object (or the API group) does not exist."""


def status_message(body: object) -> str:
    """The `message` of a Kubernetes Status body (JSON), else the body's start."""
    if not body:
        return ""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
    try:
        return str(json.loads(text).get("message") or "")
    except (ValueError, AttributeError):
        return text[:300]


def api_error(e: BaseException, verb: str, resource: str, namespace: str | None, conn: Connection | None,
              name: str | None = None) -> CollectError:
    """An exception of the client as a CollectError saying what was asked and what to do."""
    return status_error(getattr(e, "status", None), status_message(getattr(e, "body", None)),
                        str(getattr(e, "reason", None) or e), verb, resource, namespace, conn, name)


def status_error(status: int | None, detail: str, reason: str, verb: str, resource: str, namespace: str | None,
                 conn: Connection | None, name: str | None = None) -> CollectError:
    """A failed request (HTTP status, the Status message, the transport's reason) as a CollectError."""
    target = f"{resource}{' ' + name if name else ''}{' in namespace ' + namespace if namespace else ''}"
    server = conn.describe() if conn else "the API server"
    if status == 403:
        return PermissionDenied(verb, resource, namespace, detail, name)
    if status == 401:
        return CollectError(f"{server} rejected the credentials (401 Unauthorized) when asked to {verb} {target}: "
                            "the token or certificate may have expired; log in again")
    if status == 404:
        return NotFound(f"{verb} {target}: not found{' (' + detail + ')' if detail else ''}")
    if status in (None, 0):
        return CollectError(f"cannot reach {server} to {verb} {target}: {_short(reason)}")
    return CollectError(f"{server}: {verb} {target} failed: {status}{': ' + detail if detail else ''}")


def _short(reason: object) -> str:
    text = str(reason)
    m = re.search(r"(Connection refused|Name or service not known|timed out|No route to host|"
                  r"certificate verify failed[^')]*|Temporary failure in name resolution)", text)
    return m.group(1) if m else text[:300]


# -- the API --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Kind:
    resource: str
    kind: str
    api_version: str
    namespaced: bool = True


KINDS = {
    "services": Kind("services", "Service", "v1"),
    "endpointslices": Kind("endpointslices", "EndpointSlice", "discovery.k8s.io/v1"),
    "endpoints": Kind("endpoints", "Endpoints", "v1"),
    "pods": Kind("pods", "Pod", "v1"),
    "nodes": Kind("nodes", "Node", "v1", namespaced=False),
    "namespaces": Kind("namespaces", "Namespace", "v1", namespaced=False),
    "configmaps": Kind("configmaps", "ConfigMap", "v1"),
    "daemonsets": Kind("daemonsets", "DaemonSet", "apps/v1"),
    "deployments": Kind("deployments", "Deployment", "apps/v1"),
    "networkpolicies": Kind("networkpolicies", "NetworkPolicy", "networking.k8s.io/v1"),
}


class Kube:
    """Raw JSON reads through the official client (typed calls, `_preload_content=False`), errors mapped to
    CollectError. Secrets are never asked for: there is no method for them."""

    def __init__(self, conn: Connection, timeout: tuple[float, float] = REQUEST_TIMEOUT) -> None:
        from kubernetes import client

        self.conn = conn
        self.timeout = timeout  # (connect, read) seconds per request
        self.api_client = client.ApiClient(configuration=conn.configuration)
        self.api_client.user_agent = "svctrace"
        self.core = client.CoreV1Api(self.api_client)
        self.discovery = client.DiscoveryV1Api(self.api_client)
        self.apps = client.AppsV1Api(self.api_client)
        self.networking = client.NetworkingV1Api(self.api_client)
        self.version_api = client.VersionApi(self.api_client)
        # debug pods created through this client and not known to be deleted (any thread), for the final sweep
        self._pods_lock = threading.Lock()
        self.pods_live: set[tuple[str, str]] = set()
        self.pods_created = 0
        self.pods_deleted = 0

    def pod_created(self, namespace: str, name: str) -> None:
        with self._pods_lock:
            self.pods_live.add((namespace, name))
            self.pods_created += 1

    def pod_deleted(self, namespace: str, name: str, *, existed: bool = True) -> None:
        with self._pods_lock:
            if (namespace, name) in self.pods_live:
                self.pods_live.discard((namespace, name))
                if existed:
                    self.pods_deleted += 1
                else:
                    self.pods_created -= 1

    def sweep_pods(self) -> list[tuple[str, str]]:
        """Delete every debug pod still known to exist; the ones that could not be deleted."""
        with self._pods_lock:
            live = sorted(self.pods_live)
        left = []
        for ns, name in live:
            try:
                with contextlib.suppress(NotFound):
                    self.call("delete", "pods", ns, self.core.delete_namespaced_pod, name, ns, grace_period_seconds=0,
                              name=name)
                self.pod_deleted(ns, name)
            except CollectError:
                left.append((ns, name))
        return left

    def close(self) -> None:
        with contextlib.suppress(Exception):  # closing is best effort
            self.api_client.close()

    def __enter__(self) -> Kube:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # one request, raw JSON
    def call(self, verb: str, resource: str, namespace: str | None, fn: Callable[..., Any], *args: Any,
             name: str | None = None, **kwargs: Any) -> Any:
        import urllib3
        from kubernetes.client.rest import ApiException

        kwargs.setdefault("_request_timeout", self.timeout)
        try:
            resp = fn(*args, _preload_content=False, **kwargs)
            data = resp.data
        except ApiException as e:
            raise api_error(e, verb, resource, namespace, self.conn, name) from None
        except (urllib3.exceptions.HTTPError, OSError) as e:
            raise api_error(e, verb, resource, namespace, self.conn, name) from None
        try:
            return json.loads(data) if data else None
        except ValueError:
            raise CollectError(f"{self.conn.describe()}: {verb} {resource}: the answer is not JSON") from None

    def version(self) -> Obj:
        return self.call("get", "version", None, self.version_api.get_code) or {}

    def list(self, resource: str, namespace: str | None = None, label_selector: str | None = None,
             field_selector: str | None = None) -> list[Obj]:
        """Every object of a kind (all namespaces when namespace is None), following `continue` tokens;
        each item gets its apiVersion and kind (a list's items have none on the wire)."""
        fn, args = self._list_fn(resource, namespace)
        items: list[Obj] = []
        token: str | None = None
        while True:
            kw: dict[str, Any] = {"limit": PAGE}
            if label_selector:
                kw["label_selector"] = label_selector
            if field_selector:
                kw["field_selector"] = field_selector
            if token:
                kw["_continue"] = token
            doc = self.call("list", resource, namespace, fn, *args, **kw) or {}
            k = KINDS[resource]
            for it in doc.get("items") or []:
                if isinstance(it, dict):
                    it.setdefault("apiVersion", k.api_version)
                    it.setdefault("kind", k.kind)
                    items.append(it)
            token = (doc.get("metadata") or {}).get("continue") or None
            if not token:
                return items

    def get(self, resource: str, name: str, namespace: str | None = None) -> Obj | None:
        """One object, or None when it does not exist."""
        fn = self._get_fn(resource)
        args = (name, namespace) if KINDS[resource].namespaced else (name,)
        try:
            o = self.call("get", resource, namespace, fn, *args, name=name)
        except NotFound:
            return None
        if isinstance(o, dict):
            k = KINDS[resource]
            o.setdefault("apiVersion", k.api_version)
            o.setdefault("kind", k.kind)
            return o
        return None

    def _list_fn(self, resource: str, namespace: str | None) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        c, d, a = self.core, self.discovery, self.apps
        table: dict[str, tuple[Callable[..., Any], Callable[..., Any] | None]] = {
            "services": (c.list_service_for_all_namespaces, c.list_namespaced_service),
            "endpointslices": (d.list_endpoint_slice_for_all_namespaces, d.list_namespaced_endpoint_slice),
            "endpoints": (c.list_endpoints_for_all_namespaces, c.list_namespaced_endpoints),
            "pods": (c.list_pod_for_all_namespaces, c.list_namespaced_pod),
            "nodes": (c.list_node, None),
            "namespaces": (c.list_namespace, None),
            "configmaps": (c.list_config_map_for_all_namespaces, c.list_namespaced_config_map),
            "daemonsets": (a.list_daemon_set_for_all_namespaces, a.list_namespaced_daemon_set),
            "deployments": (a.list_deployment_for_all_namespaces, a.list_namespaced_deployment),
            "networkpolicies": (self.networking.list_network_policy_for_all_namespaces,
                                self.networking.list_namespaced_network_policy),
        }
        all_ns, in_ns = table[resource]
        if namespace is None or in_ns is None:
            return all_ns, ()
        return in_ns, (namespace,)

    def _get_fn(self, resource: str) -> Callable[..., Any]:
        c, d, a = self.core, self.discovery, self.apps
        table: dict[str, Callable[..., Any]] = {
            "services": c.read_namespaced_service,
            "endpointslices": d.read_namespaced_endpoint_slice,
            "endpoints": c.read_namespaced_endpoints,
            "pods": c.read_namespaced_pod,
            "nodes": c.read_node,
            "namespaces": c.read_namespace,
            "configmaps": c.read_namespaced_config_map,
            "daemonsets": a.read_namespaced_daemon_set,
            "deployments": a.read_namespaced_deployment,
            "networkpolicies": self.networking.read_namespaced_network_policy,
        }
        return table[resource]


# -- keeping only what svctrace uses ------------------------------------------------------------------

_SECRET_FLAG = re.compile(r"^--?[A-Za-z0-9-]*(token|password|passwd|secret|credential|private-key|api-key|"
                          r"bearer|auth)[A-Za-z0-9-]*(=|$)", re.I)
_URL_USERINFO = re.compile(r"(\b[a-z][a-z0-9+.-]*://)[^/@\s:]+(:[^/@\s]*)?@", re.I)


def _pick(d: Any, keys: Iterable[str]) -> Obj:
    if not isinstance(d, Mapping):
        return {}
    return {k: copy.deepcopy(d[k]) for k in keys if k in d and d[k] is not None}


def _slim_meta(m: Any) -> Obj:
    out = _pick(m, ("name", "namespace", "uid", "resourceVersion", "creationTimestamp", "deletionTimestamp",
                    "labels"))
    ann = {k: str(v) for k, v in ((m or {}).get("annotations") or {}).items() if k in KEEP_ANNOTATIONS}
    if ann:
        out["annotations"] = ann
    owners = [_pick(o, ("apiVersion", "kind", "name", "controller")) for o in (m or {}).get("ownerReferences") or []]
    if owners:
        out["ownerReferences"] = owners
    return out


# `API_TOKEN=x`, `export KUBE_PASSWORD=x`: an environment assignment whose name says it holds a credential
_SECRET_ENV = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(token|password|passwd|secret|credential|private_?key|api_?key|"
                         r"auth)[A-Za-z0-9_]*=", re.I)
_MAX_SHELL_DEPTH = 4  # `sh -c "sh -c '...'"`: shell strings inside shell strings, this deep


def _secret_flag(word: str) -> bool:
    return bool(_SECRET_FLAG.match(word))


def _safe_args(args: Any, depth: int = 0) -> list[str]:
    """Command-line words without the values of flags that carry credentials, without secret-named
    environment assignments, and without user:password@ in URLs. A word with blanks in it is a shell string
    (`sh -c "kube-proxy --proxy-mode=ipvs --some-secret VALUE"`): it is split as the shell would (shlex),
    cleaned the same way, and joined back; a secret flag that ends one word takes the next word with it."""
    out: list[str] = []
    skip_next = False
    for a in args or []:
        s = str(a)
        if skip_next:
            skip_next = False
            continue
        if depth < _MAX_SHELL_DEPTH and any(c.isspace() for c in s):
            cleaned, skip_next = _safe_shell(s, depth + 1)
            if cleaned and not looks_secret(cleaned):  # what the bundle's scrubber would still drop goes whole
                out.append(cleaned)
            continue
        if _secret_flag(s):
            skip_next = "=" not in s  # `--token VALUE`: drop the value too
            continue
        s = _URL_USERINFO.sub(r"\1", s)
        if _SECRET_ENV.match(s) or looks_secret(s):  # `Authorization: Bearer ...`, a JWT, `password:x`
            continue
        out.append(s)
    return out


def _safe_shell(s: str, depth: int) -> tuple[str, bool]:
    """(the shell string without its secrets, whether it ends with a secret flag whose value follows)."""
    try:
        words = shlex.split(s)
    except ValueError:  # unbalanced quotes: split on blanks, and rebuild from what is kept
        words = s.split()
    if not words:
        return s, False
    kept = _safe_args(words, depth)
    trailing = _secret_flag(words[-1]) and "=" not in words[-1]
    if kept == words:
        return s, False  # nothing secret: the string as it was written
    return shlex.join(kept), trailing


def _slim_container(c: Any, *, with_command: bool = False) -> Obj:
    out = _pick(c, ("name", "image", "ports", "restartPolicy"))
    if with_command:
        for k in ("command", "args"):
            if (c or {}).get(k):
                out[k] = _safe_args(c[k])
    return out


def slim(o: Obj) -> Obj | None:
    """The object with only the fields svctrace reads (None for kinds it never keeps, Secrets above all)."""
    kind = o.get("kind")
    base: Obj = {"apiVersion": o.get("apiVersion"), "kind": kind, "metadata": _slim_meta(o.get("metadata"))}
    if kind == "Service":
        spec = copy.deepcopy(o.get("spec") or {})
        status = _pick(o.get("status"), ("loadBalancer",))
        return {**base, "spec": spec, "status": status}
    if kind == "EndpointSlice":
        return {**base, **_pick(o, ("addressType", "endpoints", "ports"))}
    if kind == "Endpoints":
        return {**base, **_pick(o, ("subsets",))}
    if kind == "Pod":
        spec = o.get("spec") or {}
        s: Obj = _pick(spec, ("nodeName", "hostNetwork", "dnsPolicy", "dnsConfig", "enableServiceLinks"))
        s["containers"] = [_slim_container(c) for c in spec.get("containers") or []]
        if spec.get("initContainers"):
            s["initContainers"] = [_slim_container(c) for c in spec["initContainers"]]
        st = o.get("status") or {}
        status = _pick(st, ("phase", "podIP", "podIPs", "hostIP", "hostIPs", "reason"))
        status["conditions"] = [_pick(c, ("type", "status", "reason")) for c in st.get("conditions") or []]
        return {**base, "spec": s, "status": status}
    if kind == "Node":
        st = o.get("status") or {}
        status = _pick(st, ("addresses",))
        status["conditions"] = [_pick(c, ("type", "status", "reason")) for c in st.get("conditions") or []
                                if isinstance(c, Mapping) and c.get("type") == "Ready"]
        info = _pick(st.get("nodeInfo"), ("kubeletVersion", "kubeProxyVersion", "kernelVersion", "osImage",
                                          "containerRuntimeVersion", "operatingSystem", "architecture"))
        if info:
            status["nodeInfo"] = info
        return {**base, "spec": _pick(o.get("spec"), ("podCIDR", "podCIDRs", "unschedulable", "taints",
                                                      "providerID")), "status": status}
    if kind == "ConfigMap":
        data = o.get("data") or {}
        # kube-proxy's configuration only; its kubeconfig.conf (and anything else) is left behind.
        keep = {k: str(v) for k, v in data.items() if "kubeconfig" not in k.lower()
                and (k == "config.conf" or k == "config" or k.endswith((".conf", ".yaml", ".yml", ".json")))}
        return {**base, "data": keep}
    if kind in ("DaemonSet", "Deployment"):
        # kube-proxy's flags are read; of every other workload only its name and images (which add-ons run)
        proxy = kind == "DaemonSet" and (o.get("metadata") or {}).get("name") == "kube-proxy"
        tmpl = ((o.get("spec") or {}).get("template") or {})
        tspec = tmpl.get("spec") or {}
        ts: Obj = _pick(tspec, ("hostNetwork",))
        ts["containers"] = [_slim_container(c, with_command=proxy) if proxy else _pick(c, ("name", "image"))
                            for c in tspec.get("containers") or []]
        spec = {"template": {"metadata": {"labels": dict((tmpl.get("metadata") or {}).get("labels") or {})},
                             "spec": ts}}
        return {**base, "spec": spec}
    if kind == "NetworkPolicy":
        return {**base, "spec": copy.deepcopy(o.get("spec") or {})}
    if kind == "Namespace":
        return base  # its labels (namespaceSelector)
    return None


def as_list(items: Iterable[Obj]) -> Obj:
    """A `v1` `List` as `kubectl get -o json` prints one."""
    return {"apiVersion": "v1", "items": list(items), "kind": "List", "metadata": {"resourceVersion": ""}}


def dump_list(items: Iterable[Obj]) -> str:
    return json.dumps(as_list(items), indent=4, ensure_ascii=False) + "\n"


# -- what a snapshot needs ----------------------------------------------------------------------------

@dataclass
class Objects:
    """The objects read (already slimmed), the server version, and what could not be read (optional parts)."""

    items: list[Obj] = field(default_factory=list)
    server_version: str | None = None
    warnings: list[str] = field(default_factory=list)
    legacy_endpoints: bool = False

    def of(self, kind: str) -> list[Obj]:
        return [o for o in self.items if o.get("kind") == kind]

    def nodes(self) -> list[Obj]:
        return self.of("Node")

    def add(self, objs: Iterable[Obj]) -> None:
        seen = {_key(o) for o in self.items}
        for o in objs:
            s = slim(o)
            if s is not None and _key(s) not in seen:
                seen.add(_key(s))
                self.items.append(s)


def _key(o: Obj) -> tuple[str, str, str]:
    m = o.get("metadata") or {}
    return str(o.get("kind")), str(m.get("namespace") or ""), str(m.get("name") or "")


def _note(progress: Progress | None, msg: str) -> None:
    if progress is not None:
        progress(msg)


def fetch_objects(kube: Kube, *, namespace: str | None = None, service: str | None = None,
                  pods: Sequence[tuple[str, str]] = (), pod_ips: Sequence[str] = (),
                  progress: Progress | None = None) -> Objects:
    """Read what a snapshot needs.

    namespace None: everything, cluster-wide. With a namespace: only its Services, its Pods and (with
    `service`) only that Service's EndpointSlices, plus `pods` ((namespace, name) pairs: a --from pod
    elsewhere) and the pods holding `pod_ips`. Nodes, the kube-proxy ConfigMap and DaemonSet and the server
    version are always read.
    """
    out = Objects()
    scope = f"namespace {namespace}" if namespace else "all namespaces"
    try:
        v = kube.version()
        out.server_version = str(v.get("gitVersion") or "") or None
    except (PermissionDenied, NotFound) as e:  # /version is open to everyone on a normal cluster; not fatal
        out.warnings.append(f"server version unknown: {e}")

    _note(progress, f"reading Services ({scope})")
    out.add(kube.list("services", namespace))

    _note(progress, f"reading EndpointSlices ({scope})")
    sel = f"{SERVICE_NAME_LABEL}={service}" if (namespace and service) else None
    try:
        out.add(kube.list("endpointslices", namespace, label_selector=sel))
    except (NotFound, PermissionDenied) as e:
        # Clusters older than 1.21 have no discovery.k8s.io/v1: read v1 Endpoints instead.
        _note(progress, "no EndpointSlices (old cluster or not allowed): reading v1 Endpoints")
        try:
            if namespace and service:
                ep = kube.get("endpoints", service, namespace)
                out.add([ep] if ep else [])
            else:
                out.add(kube.list("endpoints", namespace))
        except PermissionDenied:
            raise e from None
        out.legacy_endpoints = True
        out.warnings.append(f"EndpointSlices could not be read ({e}); v1 Endpoints used instead")

    _note(progress, f"reading Pods ({scope})")
    out.add(kube.list("pods", namespace))
    for ns, name in pods:
        if ns != namespace:
            p = kube.get("pods", name, ns)
            if p is not None:
                out.add([p])
    for ip in pod_ips:
        out.add(kube.list("pods", None, field_selector=f"status.podIP={ip}"))

    _note(progress, "reading Nodes")
    out.add(kube.list("nodes"))

    _note(progress, "reading kube-proxy's configuration (kube-system)")
    for resource, name in (("configmaps", "kube-proxy"), ("configmaps", "kube-proxy-config"),
                           ("daemonsets", "kube-proxy")):
        try:
            o = kube.get(resource, name, "kube-system")
        except PermissionDenied as e:
            out.warnings.append(f"{e} (optional: svctrace infers kube-proxy's settings from the rules)")
            continue
        if o is not None:
            out.add([o])
    _around_the_rules(kube, out, namespace, progress)
    return out


def _around_the_rules(kube: Kube, out: Objects, namespace: str | None, progress: Progress | None) -> None:
    """What explain reads around kube-proxy's rules, each optional (a refusal is a warning): NetworkPolicies (of
    the namespace and of the collected pods' namespaces, or all), Namespaces' labels, and the DaemonSets and
    Deployments (names and images: the CNI, load-balancer controllers), plus kube-system's pods (static pods)."""
    scopes: list[str | None] = [None]
    if namespace:
        scopes = [*sorted({namespace} | {str((p.get("metadata") or {}).get("namespace") or "default")
                                         for p in out.of("Pod")})]
    reads: list[tuple[str, str | None, str]] = [
        ("networkpolicies", ns, "NetworkPolicies are not evaluated") for ns in scopes]
    reads += [("namespaces", None, "namespaceSelectors are decided only on the kubernetes.io/metadata.name label"),
              ("daemonsets", None, "the CNI and load-balancer controllers are not identified"),
              ("deployments", None, "load-balancer controllers are not identified")]
    if namespace and namespace != "kube-system":
        reads.append(("pods", "kube-system", "static add-on pods (kube-vip, cloud-controller-manager) are not seen"))
    _note(progress, "reading NetworkPolicies, Namespaces and add-ons (DaemonSets, Deployments)")
    for resource, ns, lost in reads:
        try:
            out.add(kube.list(resource, ns))
        except (PermissionDenied, NotFound) as e:
            out.warnings.append(f"{e} (optional: {lost})")
