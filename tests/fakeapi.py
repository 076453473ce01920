"""A small Kubernetes API server for tests: recorded objects at the real REST paths, pods, and exec.

No API server can run here, so ``FakeAPIServer`` plays one (stdlib ``http.server`` in a thread, on
127.0.0.1 and a free port; optionally TLS with a throw-away CA made by ``openssl``):

* objects: the demo cluster (``svctrace/data/demo/cluster.json``) made to look like a real server's
  answers — ``managedFields``, ``last-applied-configuration`` annotations, ``env``/``envFrom``, secret
  volumes, a kube-proxy ``kubeconfig.conf`` and a token flag, plus a Secret. Every one of those holds
  ``CANARY``, so a test can grep a bundle for it. Lists and gets at the real paths (``/api/v1/...``,
  ``/apis/discovery.k8s.io/v1/...``, ``/apis/apps/v1/...``, ``/version``) with ``labelSelector``,
  ``fieldSelector``, ``limit``/``continue``;
* pods: create (``generateName`` too), get, list, delete; a created pod turns Running after
  ``start_delay`` seconds unless told to fail (``pod_mode``: ``image-pull``, ``pending``, ``failed``,
  ``unschedulable``);
* exec: ``/api/v1/namespaces/{ns}/pods/{name}/exec?command=...`` upgraded to a WebSocket (RFC 6455, by
  hand) speaking ``v4.channel.k8s.io``: one binary frame per chunk, the channel number in its first
  byte (1 stdout, 2 stderr), then the status on channel 3 and a close frame. The command runs on this
  machine inside the network namespace of the pod's node (``node_netns``), so it reads real netfilter
  state loaded with ``iptables-restore`` (``NodeNamespaces``);
* slowness on demand: ``create_delay`` (the pod exists, its answer comes late), ``delete_delay``;
* failures on demand: ``forbid`` (403 with the API server's RBAC wording), ``pod_security`` (Pod Security
  admission refusing hostNetwork pods, also a 403), ``exec_override`` (canned result, or a delay),
  ``no_endpointslices`` (an old cluster: 404 on discovery.k8s.io/v1);
* auth: bearer token only (401 otherwise); ``write_kubeconfig`` writes a real kubeconfig for it.

Every request is recorded in ``requests`` (method, path, query, verb, resource, namespace, name).
"""

from __future__ import annotations

import base64
import contextlib
import copy
import hashlib
import itertools
import json
import os
import random
import shutil
import socket
import ssl
import string
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "svctrace" / "data" / "demo"
CANARY = "sekrit-7f3a9c"  # in every value that must never reach a bundle
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

Obj = dict[str, Any]

# resource -> (group/version, kind, namespaced)
RESOURCES: dict[str, tuple[str, str, bool]] = {
    "services": ("v1", "Service", True),
    "endpoints": ("v1", "Endpoints", True),
    "pods": ("v1", "Pod", True),
    "nodes": ("v1", "Node", False),
    "configmaps": ("v1", "ConfigMap", True),
    "secrets": ("v1", "Secret", True),
    "namespaces": ("v1", "Namespace", False),
    "endpointslices": ("discovery.k8s.io/v1", "EndpointSlice", True),
    "daemonsets": ("apps/v1", "DaemonSet", True),
    "deployments": ("apps/v1", "Deployment", True),
    "networkpolicies": ("networking.k8s.io/v1", "NetworkPolicy", True),
}
KIND_TO_RESOURCE = {v[1]: k for k, v in RESOURCES.items()}


@dataclass
class Req:
    method: str
    path: str
    query: dict[str, list[str]]
    verb: str = ""
    resource: str = ""
    namespace: str | None = None
    name: str | None = None
    status: int = 0

    def q(self, key: str) -> str | None:
        v = self.query.get(key)
        return v[0] if v else None


# -- the demo cluster, as a real server would hold it ------------------------------------------------

def _managed(manager: str) -> list[Obj]:
    return [{"manager": manager, "operation": "Update", "apiVersion": "v1", "time": "2026-11-20T09:00:00Z",
             "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {"f:labels": {".": {}}}}}]


def realistic_objects(source: Path = DEMO / "cluster.json") -> list[Obj]:
    """The demo objects with what a real server adds (and svctrace must drop), and a Secret."""
    doc = json.loads(source.read_text())
    out: list[Obj] = []
    rv = itertools.count(1000)
    from svctrace.data.build_demo import MODES

    for o in doc["items"]:
        if o["kind"] == "Node" and MODES.get(o["metadata"]["name"], "iptables") != "iptables":
            continue  # an IPVS-mode node cannot be emulated: this kernel has no IPVS
        o = copy.deepcopy(o)
        m = o.setdefault("metadata", {})
        m["resourceVersion"] = str(next(rv))
        m["managedFields"] = _managed("kubectl-client-side-apply")
        ann = m.setdefault("annotations", {})
        kind = o["kind"]
        if kind in ("Service", "Pod", "DaemonSet", "ConfigMap"):
            applied = copy.deepcopy(o)
            applied["metadata"].pop("managedFields", None)
            applied.setdefault("spec", {})["__env"] = [{"name": "API_KEY", "value": CANARY}]
            ann["kubectl.kubernetes.io/last-applied-configuration"] = json.dumps(applied) + "\n"
        if kind == "Pod":
            spec = o["spec"]
            spec["serviceAccountName"] = "default"
            spec["volumes"] = [
                {"name": "kube-api-access-x7k2p", "projected": {"sources": [{"serviceAccountToken": {
                    "expirationSeconds": 3607, "path": "token"}}]}},
                {"name": "creds", "secret": {"secretName": "db-credentials-" + CANARY}},
            ]
            for c in spec.get("containers") or []:
                c["env"] = [{"name": "DB_PASSWORD", "value": CANARY},
                            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "tok", "key": CANARY}}}]
                c["envFrom"] = [{"secretRef": {"name": "env-" + CANARY}}]
                c["args"] = ["--api-key=" + CANARY]
                c["volumeMounts"] = [{"name": "creds", "mountPath": "/etc/creds", "readOnly": True}]
            o["status"]["containerStatuses"] = [
                {"name": c["name"], "ready": True, "restartCount": 0, "image": c.get("image", ""),
                 "state": {"running": {"startedAt": "2026-11-20T09:00:05Z"}}} for c in spec.get("containers") or []]
        if kind == "ConfigMap" and m.get("name") == "kube-proxy":
            o["data"]["kubeconfig.conf"] = (
                "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    server: https://192.168.56.10:6443\n"
                f"  name: default\nusers:\n- name: default\n  user:\n    token: {CANARY}\n")
        if kind == "DaemonSet":
            ct = o["spec"]["template"]["spec"]["containers"][0]
            ct["command"] = [*ct["command"], f"--token={CANARY}"]
            ct["env"] = [{"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                         {"name": "SECRET", "value": CANARY}]
            o["spec"]["template"]["spec"]["volumes"] = [{"name": "kube-proxy", "configMap": {"name": "kube-proxy"}}]
            o["spec"]["template"]["metadata"] = {"labels": {"k8s-app": "kube-proxy"}}
            o["spec"]["selector"] = {"matchLabels": {"k8s-app": "kube-proxy"}}
        if kind == "Node":
            o["status"]["images"] = [{"names": ["registry.k8s.io/kube-proxy:v1.30.2"], "sizeBytes": 29000000}]
            o["status"]["nodeInfo"].update({"machineID": "0" * 32, "bootID": CANARY, "kernelVersion": "6.8.0",
                                            "osImage": "Ubuntu 24.04 LTS", "operatingSystem": "linux",
                                            "architecture": "amd64", "containerRuntimeVersion": "containerd://1.7.18"})
        if not ann:
            m.pop("annotations")
        out.append(o)
    out.append({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                "metadata": {"name": "db-credentials", "namespace": "default", "resourceVersion": "999"},
                "data": {"password": base64.b64encode(CANARY.encode()).decode()}})
    return out


def endpoints_from_slices(objs: Iterable[Obj]) -> list[Obj]:
    """v1 Endpoints as an old cluster's endpoints controller would write them."""
    by_svc: dict[tuple[str, str], list[Obj]] = {}
    for o in objs:
        if o.get("kind") == "EndpointSlice":
            m = o["metadata"]
            svc = (m.get("labels") or {}).get("kubernetes.io/service-name")
            if svc:
                by_svc.setdefault((m.get("namespace", "default"), svc), []).append(o)
    out = []
    for (ns, name), slices in sorted(by_svc.items()):
        subsets = []
        for s in slices:
            ready: list[Obj] = []
            not_ready: list[Obj] = []
            for e in s.get("endpoints") or []:
                for ip in e.get("addresses") or []:
                    a = {"ip": ip, **({"nodeName": e["nodeName"]} if e.get("nodeName") else {}),
                         **({"targetRef": e["targetRef"]} if e.get("targetRef") else {})}
                    (ready if (e.get("conditions") or {}).get("ready", True) else not_ready).append(a)
            sub: Obj = {"ports": [{k: v for k, v in p.items() if k in ("name", "port", "protocol")}
                                  for p in s.get("ports") or []]}
            if ready:
                sub["addresses"] = ready
            if not_ready:
                sub["notReadyAddresses"] = not_ready
            if ready or not_ready:
                subsets.append(sub)
        out.append({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": name, "namespace": ns},
                    "subsets": subsets})
    return out


# -- selectors ------------------------------------------------------------------------------------

def _label_match(labels: dict[str, str], selector: str) -> bool:
    for term in filter(None, (t.strip() for t in _split_selector(selector))):
        if " in " in term or " notin " in term:
            key, op, rest = term.partition(" notin " if " notin " in term else " in ")
            vals = {v.strip() for v in rest.strip().strip("()").split(",")}
            has = labels.get(key.strip()) in vals
            if has != (op.strip() == "in"):
                return False
        elif "!=" in term:
            k, v = term.split("!=", 1)
            if labels.get(k.strip()) == v.strip():
                return False
        elif "=" in term:
            k, v = term.replace("==", "=").split("=", 1)
            if labels.get(k.strip()) != v.strip():
                return False
        elif term.startswith("!"):
            if term[1:].strip() in labels:
                return False
        elif term not in labels:
            return False
    return True


def _split_selector(sel: str) -> list[str]:
    out, depth, cur = [], 0, ""
    for ch in sel:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    out.append(cur)
    return out


def _field_value(o: Obj, path: str) -> str:
    cur: Any = o
    for part in path.split("."):
        cur = cur.get(part) if isinstance(cur, dict) else None
    return "" if cur is None else str(cur)


FIELD_SELECTORS = {
    "Pod": {"metadata.name", "metadata.namespace", "spec.nodeName", "status.podIP", "status.phase",
            "spec.hostNetwork", "spec.serviceAccountName", "spec.restartPolicy", "spec.schedulerName"},
    "*": {"metadata.name", "metadata.namespace"},
}


def _field_match(o: Obj, selector: str) -> bool:
    for term in filter(None, (t.strip() for t in selector.split(","))):
        neg = "!=" in term
        k, v = term.split("!=" if neg else "=", 1)
        k = k.strip()
        v = v.strip().lstrip("=")
        if (_field_value(o, k) == v) == neg:
            return False
    return True


# -- WebSocket (server side, RFC 6455) --------------------------------------------------------------

def ws_accept(key: str) -> str:
    return base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()


def ws_frame(payload: bytes, opcode: int = 2) -> bytes:
    """One unmasked, final frame (servers never mask)."""
    n = len(payload)
    head = bytes([0x80 | opcode])
    if n < 126:
        head += bytes([n])
    elif n < 65536:
        head += bytes([126]) + struct.pack("!H", n)
    else:
        head += bytes([127]) + struct.pack("!Q", n)
    return head + payload


def ws_read_frame(sock: socket.socket | ssl.SSLSocket) -> tuple[int, bytes] | None:
    """(opcode, payload) of the next frame from a client (masked), or None on EOF."""
    def recv(n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            if not chunk:
                raise EOFError
            buf += chunk
        return buf

    try:
        b0, b1 = recv(2)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", recv(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", recv(8))[0]
        mask = recv(4) if b1 & 0x80 else b"\0\0\0\0"
        data = bytes(c ^ mask[i % 4] for i, c in enumerate(recv(n)))
        return b0 & 0x0F, data
    except (EOFError, OSError):
        return None


# -- the server -----------------------------------------------------------------------------------

ExecOverride = Callable[[str, list[str]], "tuple[int, bytes, bytes] | float | None"]


@dataclass
class FakeState:
    objects: dict[str, list[Obj]] = field(default_factory=dict)  # resource -> objects
    created: dict[str, float] = field(default_factory=dict)  # "ns/name" -> time a pod was created
    created_bodies: list[Obj] = field(default_factory=list)


class FakeAPIServer:
    """See the module docstring. Use as a context manager (or start()/stop())."""

    def __init__(self, objects: list[Obj] | None = None, *, token: str | None = None, tls: bool = False,
                 version: str = "v1.30.2", user: str = "alice") -> None:
        self.token = token or "svctrace-fake-token-" + "".join(random.choices(string.ascii_lowercase, k=24))
        self.user = user
        self.version = version
        self.tls = tls
        self.state = FakeState()
        for o in objects if objects is not None else realistic_objects():
            self.add(o)
        self.requests: list[Req] = []
        self.lock = threading.RLock()
        # knobs
        self.forbid: set[tuple[str, str, str | None]] = set()  # (verb, resource, namespace|None|"*")
        self.pod_mode = "run"  # run / image-pull / pending / failed / unschedulable
        self.start_delay = 0.2
        self.create_delay = 0.0  # seconds a pod create takes after the pod exists (its answer comes late)
        self.delete_delay = 0.0  # seconds a pod delete takes before the pod is gone
        self.node_netns: dict[str, str] = {}  # node -> network namespace to run exec commands in
        self.exec_override: ExecOverride | None = None
        self.no_endpointslices = False
        self.pod_security: str | None = None  # e.g. "baseline": Pod Security admission refuses hostNetwork pods
        self.exec_procs: list[subprocess.Popen[bytes]] = []
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._tmp = tempfile.mkdtemp(prefix="fakeapi-")
        self.ca_file: str | None = None

    # objects
    def add(self, o: Obj) -> None:
        self.state.objects.setdefault(KIND_TO_RESOURCE[o["kind"]], []).append(o)

    def objects(self, resource: str) -> list[Obj]:
        if resource == "endpoints" and "endpoints" not in self.state.objects:
            return endpoints_from_slices(self.state.objects.get("endpointslices", []))
        return self.state.objects.get(resource, [])

    def pods(self) -> list[Obj]:
        return self.state.objects.get("pods", [])

    # lifecycle
    def start(self) -> FakeAPIServer:
        server = self

        class Handler(_Handler):
            fake = server

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        if self.tls:
            self._httpd.socket = self._tls_context().wrap_socket(self._httpd.socket, server_side=True)
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="fakeapi", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        for p in self.exec_procs:
            with contextlib.suppress(OSError):
                p.kill()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> FakeAPIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._httpd is not None
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def _tls_context(self) -> ssl.SSLContext:
        ca_key, ca_crt = os.path.join(self._tmp, "ca.key"), os.path.join(self._tmp, "ca.crt")
        key, csr, crt = (os.path.join(self._tmp, n) for n in ("srv.key", "srv.csr", "srv.crt"))
        ext = os.path.join(self._tmp, "ext.cnf")
        Path(ext).write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")

        def run(*args: str) -> None:
            subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)

        run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca_crt, "-days", "2",
            "-subj", "/CN=fake-kubernetes-ca")
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=kube-apiserver")
        run("x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key, "-CAcreateserial", "-out", crt, "-days", "2",
            "-extfile", ext)
        self.ca_file = ca_crt
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(crt, key)
        return ctx

    def write_kubeconfig(self, path: str | os.PathLike[str], *, context: str = "fake", cluster: str = "fake-cluster",
                         user: str = "fake-user", namespace: str | None = None, token: str | None = None,
                         current: bool = True, extra_contexts: Iterable[tuple[str, str, str]] = ()) -> Path:
        """A real kubeconfig (YAML) with token auth for this server. extra_contexts: (name, cluster, user)."""
        import yaml

        cl: Obj = {"server": self.url}
        if self.tls and self.ca_file:
            cl["certificate-authority-data"] = base64.b64encode(Path(self.ca_file).read_bytes()).decode()
        ctx: Obj = {"cluster": cluster, "user": user}
        if namespace:
            ctx["namespace"] = namespace
        doc: Obj = {
            "apiVersion": "v1", "kind": "Config", "preferences": {},
            "clusters": [{"name": cluster, "cluster": cl}],
            "users": [{"name": user, "user": {"token": token or self.token}}],
            "contexts": [{"name": context, "context": ctx}]
            + [{"name": n, "context": {"cluster": c, "user": u}} for n, c, u in extra_contexts],
        }
        if current:
            doc["current-context"] = context
        p = Path(path)
        p.write_text(yaml.safe_dump(doc, sort_keys=False))
        return p

    # queries for tests
    def seen(self, method: str | None = None, resource: str | None = None, verb: str | None = None) -> list[Req]:
        with self.lock:
            return [r for r in self.requests if (method is None or r.method == method)
                    and (resource is None or r.resource == resource) and (verb is None or r.verb == verb)]

    def deleted_pods(self) -> list[str]:
        return [f"{r.namespace}/{r.name}" for r in self.seen("DELETE", "pods")]

    def live_pods(self) -> list[Obj]:
        """Pods created through this server that were not deleted."""
        return [p for p in self.pods() if f"{p['metadata'].get('namespace')}/{p['metadata']['name']}"
                in self.state.created]

    # pod status as time passes
    def pod_status(self, pod: Obj) -> Obj:
        m = pod["metadata"]
        key = f"{m.get('namespace')}/{m['name']}"
        born = self.state.created.get(key)
        if born is None:
            return pod.get("status") or {}
        age = time.monotonic() - born
        node = pod["spec"].get("nodeName")
        nodes = {n["metadata"]["name"]: n for n in self.objects("nodes")}
        image = pod["spec"]["containers"][0].get("image", "")
        cname = pod["spec"]["containers"][0].get("name", "c")
        st: Obj = {"phase": "Pending", "qosClass": "BestEffort", "conditions": []}
        if self.pod_mode == "unschedulable":
            st["conditions"] = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                 "message": "0/3 nodes are available: 3 node(s) had untolerated taint."}]
            return st
        if node not in nodes or self.pod_mode == "pending":
            return st  # nothing runs it: a kubelet that is down, or no such node
        ip = next((a["address"] for a in nodes[node]["status"]["addresses"] if a["type"] == "InternalIP"), "")
        st.update({"hostIP": ip, "hostIPs": [{"ip": ip}], "startTime": "2026-11-20T10:00:00Z"})
        st["conditions"] = [{"type": "PodScheduled", "status": "True"}]
        if self.pod_mode == "failed":
            st.update({"phase": "Failed", "reason": "OutOfpods",
                       "message": "Pod was rejected: Node didn't have enough resource: pods, requested: 1, used: 110, "
                                  "capacity: 110"})
            return st
        if self.pod_mode == "image-pull":
            reason = "ErrImagePull" if age < 0.6 else "ImagePullBackOff"
            msg = (f'failed to pull and unpack image "{image}": failed to resolve reference "{image}": '
                   f"{image}: not found" if reason == "ErrImagePull" else f'Back-off pulling image "{image}"')
            st["containerStatuses"] = [{"name": cname, "ready": False, "restartCount": 0, "image": image,
                                        "imageID": "", "started": False,
                                        "state": {"waiting": {"reason": reason, "message": msg}}}]
            return st
        if age < self.start_delay:
            st["containerStatuses"] = [{"name": cname, "ready": False, "restartCount": 0, "image": image,
                                        "imageID": "", "started": False,
                                        "state": {"waiting": {"reason": "ContainerCreating"}}}]
            return st
        st.update({"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]})
        st["conditions"] += [{"type": "Initialized", "status": "True"}, {"type": "ContainersReady", "status": "True"},
                             {"type": "Ready", "status": "True"}]
        st["containerStatuses"] = [{"name": cname, "ready": True, "restartCount": 0, "image": image,
                                    "imageID": image + "@sha256:" + "0" * 64, "started": True,
                                    "state": {"running": {"startedAt": "2026-11-20T10:00:01Z"}}}]
        return st


def _status(code: int, reason: str, message: str, details: Obj | None = None) -> Obj:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "details": details or {}, "code": code}


class _Handler(BaseHTTPRequestHandler):
    fake: FakeAPIServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    # plumbing
    def _send(self, code: int, body: Obj | list[Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Audit-Id", "00000000-0000-0000-0000-000000000000")
        self.end_headers()
        self.wfile.write(data)
        if self._req is not None:
            self._req.status = code

    def _body(self) -> Obj:
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        return json.loads(raw) if raw else {}

    _req: Req | None = None

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    # routing
    def _dispatch(self, method: str) -> None:
        fake = self.fake
        u = urlsplit(self.path)
        query = parse_qs(u.query, keep_blank_values=True)
        req = Req(method, u.path, query)
        self._req = req
        with fake.lock:
            fake.requests.append(req)
        auth = self.headers.get("Authorization") or ""
        if auth.lower() != f"bearer {fake.token}".lower():
            self._send(401, _status(401, "Unauthorized", "Unauthorized"))
            return
        parts = [p for p in u.path.split("/") if p]
        if u.path.rstrip("/") == "/version":
            req.verb, req.resource = "get", "version"
            major, minor = fake.version.lstrip("v").split(".")[:2]
            self._send(200, {"major": major, "minor": minor, "gitVersion": fake.version,
                             "gitCommit": "39683505b630ff2121012f3c5b16215a1449d5ed", "gitTreeState": "clean",
                             "buildDate": "2024-06-11T20:21:00Z", "goVersion": "go1.22.4", "compiler": "gc",
                             "platform": "linux/amd64"})
            return
        # /api/v1/... or /apis/{group}/{version}/...
        if parts[:2] == ["api", "v1"]:
            group_version, rest = "v1", parts[2:]
        elif len(parts) >= 3 and parts[0] == "apis":
            group_version, rest = f"{parts[1]}/{parts[2]}", parts[3:]
        else:
            self._send(404, _status(404, "NotFound", "the server could not find the requested resource"))
            return
        namespace = None
        if len(rest) >= 2 and rest[0] == "namespaces":
            namespace, rest = rest[1], rest[2:]
        if not rest:
            self._send(404, _status(404, "NotFound", "the server could not find the requested resource"))
            return
        resource = rest[0]
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        req.resource, req.namespace, req.name = resource + (f"/{sub}" if sub else ""), namespace, name
        info = RESOURCES.get(resource)
        if info is None or info[0] != group_version or (fake.no_endpointslices and resource == "endpointslices"):
            self._send(404, _status(404, "NotFound", "the server could not find the requested resource"))
            return
        verb = {"GET": "get" if name else "list", "POST": "create", "DELETE": "delete", "PUT": "update",
                "PATCH": "patch"}[method]
        if sub == "exec":
            verb = "create"  # websocket exec needs `create` on pods/exec (AuthorizePodWebsocketUpgradeCreatePermission)
        req.verb = verb
        if self._forbidden(verb, req.resource, namespace, name, info[0]):
            return
        if sub == "exec" and resource == "pods" and name:
            self._exec(namespace or "default", name, query)
            return
        if sub is not None:
            self._send(404, _status(404, "NotFound", "the server could not find the requested resource"))
            return
        if method == "GET":
            self._get_or_list(resource, namespace, name, query)
        elif method == "POST" and resource == "pods" and namespace:
            self._create_pod(namespace)
        elif method == "DELETE" and resource == "pods" and namespace and name:
            self._delete_pod(namespace, name)
        else:
            self._send(405, _status(405, "MethodNotAllowed", f"{method} is not supported by this fake"))

    def _forbidden(self, verb: str, resource: str, namespace: str | None, name: str | None, gv: str) -> bool:
        fake = self.fake
        hit = any(v == verb and r == resource and (ns == "*" or ns == namespace)
                  for v, r, ns in fake.forbid)
        if not hit:
            return False
        group = gv.split("/")[0] if "/" in gv else ""
        what = f'{resource.split("/")[0]} "{name}"' if name else resource.split("/")[0]
        scope = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
        msg = (f'{what} is forbidden: User "{fake.user}" cannot {verb} resource "{resource}" in API group '
               f'"{group}" {scope}')
        self._send(403, _status(403, "Forbidden", msg, {"name": name, "kind": resource.split("/")[0]} if name
                                else {"kind": resource.split("/")[0]}))
        return True

    def _with_status(self, resource: str, o: Obj) -> Obj:
        o = copy.deepcopy(o)
        if resource == "pods":
            o["status"] = self.fake.pod_status(o)
        return o

    def _get_or_list(self, resource: str, namespace: str | None, name: str | None, query: dict[str, list[str]]) -> None:
        fake = self.fake
        gv, kind, namespaced = RESOURCES[resource]
        with fake.lock:
            objs = [o for o in fake.objects(resource)
                    if not namespaced or namespace is None or o["metadata"].get("namespace") == namespace]
            objs = [self._with_status(resource, o) for o in objs]
        if name is not None:
            for o in objs:
                if o["metadata"]["name"] == name:
                    self._send(200, o)
                    return
            self._send(404, _status(404, "NotFound", f'{resource} "{name}" not found',
                                    {"name": name, "kind": resource}))
            return
        ls = (query.get("labelSelector") or [""])[0]
        fs = (query.get("fieldSelector") or [""])[0]
        if fs:
            allowed = FIELD_SELECTORS.get(kind, FIELD_SELECTORS["*"])
            for term in fs.split(","):
                key = term.split("!=")[0].split("=")[0].strip()
                if key not in allowed:
                    self._send(400, _status(400, "BadRequest", f'field label not supported: {key}'))
                    return
        objs = [o for o in objs if (not ls or _label_match(o["metadata"].get("labels") or {}, ls))
                and (not fs or _field_match(o, fs))]
        start = int((query.get("continue") or ["0"])[0] or 0)
        limit = int((query.get("limit") or ["0"])[0] or 0)
        page = objs[start:start + limit] if limit else objs[start:]
        meta: Obj = {"resourceVersion": "5000"}
        if limit and start + limit < len(objs):
            meta["continue"] = str(start + limit)
            meta["remainingItemCount"] = len(objs) - start - limit
        items = []
        for o in page:  # items of a list carry no apiVersion/kind on the wire
            o = dict(o)
            o.pop("apiVersion", None)
            o.pop("kind", None)
            items.append(o)
        self._send(200, {"kind": f"{kind}List", "apiVersion": gv, "metadata": meta, "items": items})

    def _create_pod(self, namespace: str) -> None:
        fake = self.fake
        body = self._body()
        with fake.lock:
            fake.state.created_bodies.append(copy.deepcopy(body))
            m = body.setdefault("metadata", {})
            if not m.get("name"):
                m["name"] = (m.get("generateName") or "pod-") + "".join(random.choices("bcdfghjklmnpqrstvwxz2456789",
                                                                                         k=5))
            m["namespace"] = namespace
            if fake.pod_security and (body.get("spec") or {}).get("hostNetwork"):
                ctr = ((body.get("spec") or {}).get("containers") or [{}])[0]
                caps = ", ".join(f'"{c}"' for c in ((ctr.get("securityContext") or {}).get("capabilities") or {})
                                 .get("add") or [])
                msg = (f'pods "{m["name"]}" is forbidden: violates PodSecurity "{fake.pod_security}:latest": host '
                       f'namespaces (hostNetwork=true), non-default capabilities (container "{ctr.get("name")}" must '
                       f"not include {caps} in securityContext.capabilities.add)")
                self._send(403, _status(403, "Forbidden", msg, {"name": m["name"], "kind": "pods"}))
                return
            if any(p["metadata"]["name"] == m["name"] and p["metadata"].get("namespace") == namespace
                   for p in fake.pods()):
                self._send(409, _status(409, "AlreadyExists", f'pods "{m["name"]}" already exists'))
                return
            m.update({"uid": f"{random.getrandbits(128):032x}", "resourceVersion": "6000",
                      "creationTimestamp": "2026-11-20T10:00:00Z"})
            body["apiVersion"], body["kind"] = "v1", "Pod"
            fake.state.created[f"{namespace}/{m['name']}"] = time.monotonic()
            fake.add(body)
            out = self._with_status("pods", body)
        time.sleep(fake.create_delay)
        self._send(201, out)

    def _delete_pod(self, namespace: str, name: str) -> None:
        fake = self.fake
        time.sleep(fake.delete_delay)
        with fake.lock:
            pods = fake.state.objects.get("pods", [])
            for i, p in enumerate(pods):
                if p["metadata"]["name"] == name and p["metadata"].get("namespace") == namespace:
                    del pods[i]
                    p = copy.deepcopy(p)
                    p["metadata"]["deletionTimestamp"] = "2026-11-20T10:05:00Z"
                    self._send(200, p)
                    return
        self._send(404, _status(404, "NotFound", f'pods "{name}" not found', {"name": name, "kind": "pods"}))

    # exec over a WebSocket
    def _exec(self, namespace: str, name: str, query: dict[str, list[str]]) -> None:
        fake = self.fake
        argv = query.get("command") or []
        with fake.lock:
            pod = next((p for p in fake.pods() if p["metadata"]["name"] == name
                        and p["metadata"].get("namespace") == namespace), None)
            status = fake.pod_status(pod) if pod is not None else None
        if pod is None:
            self._send(404, _status(404, "NotFound", f'pods "{name}" not found', {"name": name, "kind": "pods"}))
            return
        if (status or {}).get("phase") != "Running":
            self._send(400, _status(400, "BadRequest", f"pod {name} does not have a host assigned" if not
                                    (status or {}).get("hostIP") else
                                    f"container not found (\"{pod['spec']['containers'][0]['name']}\")"))
            return
        if (self.headers.get("Upgrade") or "").lower() != "websocket" or not self.headers.get("Sec-WebSocket-Key"):
            self._send(400, _status(400, "BadRequest", "Upgrade request required"))
            return
        offered = [p.strip() for p in (self.headers.get("Sec-WebSocket-Protocol") or "").split(",")]
        if "v4.channel.k8s.io" not in offered:
            self._send(400, _status(400, "BadRequest", f"unsupported subprotocols {offered}"))
            return
        self.send_response(101, "Switching Protocols")
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", ws_accept(self.headers["Sec-WebSocket-Key"]))
        self.send_header("Sec-WebSocket-Protocol", "v4.channel.k8s.io")
        self.end_headers()
        self.wfile.flush()
        if self._req is not None:
            self._req.status = 101
        self.close_connection = True
        sock = self.connection
        wlock = threading.Lock()
        closed = threading.Event()

        def send(channel: int, data: bytes, opcode: int = 2) -> None:
            with wlock:
                if closed.is_set():
                    return
                try:
                    sock.sendall(ws_frame(bytes([channel]) + data if opcode == 2 else data, opcode))
                except OSError:
                    closed.set()

        def reader() -> None:  # the client's frames: we only care that it closes
            while True:
                fr = ws_read_frame(sock)
                if fr is None or fr[0] == 8:
                    closed.set()
                    return

        threading.Thread(target=reader, daemon=True).start()
        for ch in (1, 2, 3):  # the server opens each channel with an empty message
            send(ch, b"")
        node = pod["spec"].get("nodeName") or ""
        code, err = self._run(node, argv, send, closed)
        if code == 0:
            send(3, json.dumps({"metadata": {}, "status": "Success"}).encode())
        elif err is not None:
            send(3, json.dumps({"metadata": {}, "status": "Failure", "message": err, "reason": "InternalError",
                                "details": {"causes": [{"message": err}]}, "code": 500}).encode())
        elif code > 0:
            send(3, json.dumps({"metadata": {}, "status": "Failure",
                                "message": f"command terminated with non-zero exit code: error executing command "
                                           f"{argv}, exit code {code}", "reason": "NonZeroExitCode",
                                "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]}}).encode())
        send(0, struct.pack("!H", 1000), opcode=8)
        closed.set()
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)

    def _run(self, node: str, argv: list[str], send: Callable[..., None],
             closed: threading.Event) -> tuple[int, str | None]:
        fake = self.fake
        if fake.exec_override is not None:
            ov = fake.exec_override(node, argv)
            if isinstance(ov, tuple):
                rc, out, err = ov
                if out:
                    send(1, out)
                if err:
                    send(2, err)
                return rc, None
            if isinstance(ov, (int, float)) and ov > 0 and closed.wait(float(ov)):
                return -1, None  # the client went away while we "ran"
        if not argv:
            return 1, "you must specify at least one command for the container"
        if shutil.which(argv[0]) is None:
            return 1, (f'OCI runtime exec failed: exec failed: unable to start container process: exec: "{argv[0]}": '
                       "executable file not found in $PATH: unknown")
        netns = fake.node_netns.get(node)
        full = ["ip", "netns", "exec", netns, *argv] if netns else list(argv)
        proc = subprocess.Popen(full, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        fake.exec_procs.append(proc)

        def pump(stream: Any, channel: int) -> None:
            while True:
                chunk = os.read(stream.fileno(), 32768)
                if not chunk:
                    return
                send(channel, chunk)

        ts = [threading.Thread(target=pump, args=(proc.stdout, 1), daemon=True),
              threading.Thread(target=pump, args=(proc.stderr, 2), daemon=True)]
        for t in ts:
            t.start()
        while proc.poll() is None:
            if closed.wait(0.05):
                proc.kill()
                proc.wait()
                return -1, None
        for t in ts:
            t.join(5)
        return proc.returncode, None


# -- nodes with real netfilter state ------------------------------------------------------------------

# kube-proxy's metrics server, as far as svctrace asks it (/proxyMode, /configz), run inside a node namespace
KUBE_PROXY_PY = r"""
import http.server, json, sys
mode, cidr = sys.argv[1], sys.argv[2]
configz = {"kubeproxy.config": {"bindAddress": "0.0.0.0", "clusterCIDR": cidr, "mode": mode,
           "metricsBindAddress": "127.0.0.1:10249", "healthzBindAddress": "0.0.0.0:10256",
           "clientConnection": {"kubeconfig": "/var/lib/kube-proxy/kubeconfig.conf", "qps": 5, "burst": 10},
           "iptables": {"masqueradeAll": False, "masqueradeBit": 14, "minSyncPeriod": "1s", "syncPeriod": "30s"}}}
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = {"/proxyMode": mode.encode(), "/configz": json.dumps(configz).encode()}.get(self.path)
        if body is None:
            self.send_response(404); self.end_headers(); return
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
srv = http.server.HTTPServer(("127.0.0.1", 10249), H)
print("ready", flush=True)
srv.serve_forever()
"""

HINT_MANGLE = "*mangle\n:PREROUTING ACCEPT [0:0]\n:KUBE-IPTABLES-HINT - [0:0]\n:KUBE-KUBELET-CANARY - [0:0]\nCOMMIT\n"


def netns_available() -> tuple[bool, str]:
    if os.geteuid() != 0:
        return False, "needs root (network namespaces, iptables-restore)"
    for tool in ("ip", "iptables-nft-restore", "iptables-legacy-restore", "iptables-nft-save"):
        if shutil.which(tool) is None:
            return False, f"{tool} not found"
    name = f"fkapi-{os.getpid()}-probe"
    try:
        r = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True, timeout=20)
        if r.returncode != 0:
            return False, f"cannot create a network namespace: {r.stderr.strip()}"
        r = subprocess.run(["ip", "netns", "exec", name, "iptables-nft-restore"], input=HINT_MANGLE,
                           capture_output=True, text=True, timeout=20)
        if r.returncode != 0:
            return False, f"iptables-nft-restore does not work in a namespace: {r.stderr.strip()}"
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
    return True, ""


class NodeNamespaces:
    """One network namespace per node, holding the node's demo rules (loaded with iptables-restore, nft
    backend unless the node is in `legacy`), kubelet's mangle hint chains, and the node's InternalIP on
    `eth0` (a veth whose peer stays in the namespace)."""

    _ids = itertools.count(1)

    def __init__(self, nodes: dict[str, str], *, rules_dir: Path = DEMO / "nodes",
                 legacy: Iterable[str] = (), kube_proxy: str | None = "iptables",
                 cluster_cidr: str = "10.244.0.0/16") -> None:
        self.node_ips = nodes  # node -> InternalIP
        self.rules_dir = rules_dir
        self.legacy = set(legacy)
        self.kube_proxy = kube_proxy  # the mode a fake kube-proxy reports on 127.0.0.1:10249 (None: none runs)
        self.cluster_cidr = cluster_cidr
        self.names: dict[str, str] = {}
        self.procs: list[subprocess.Popen[str]] = []

    def __enter__(self) -> NodeNamespaces:
        try:
            for node, ip in self.node_ips.items():
                ns = f"fkapi-{os.getpid()}-{next(self._ids)}"
                self._sh("ip", "netns", "add", ns)
                self.names[node] = ns
                backend = "legacy" if node in self.legacy else "nft"
                rules = (self.rules_dir / node / "iptables-save").read_text()
                self._sh("ip", "netns", "exec", ns, f"iptables-{backend}-restore", input=rules)
                self._sh("ip", "netns", "exec", ns, f"iptables-{backend}-restore", "--noflush", input=HINT_MANGLE)
                self._sh("ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", "veth0")
                self._sh("ip", "-n", ns, "link", "set", "veth0", "up")
                self._sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0")
                self._sh("ip", "-n", ns, "link", "set", "eth0", "up")
                self._sh("ip", "-n", ns, "link", "set", "lo", "up")
                # what a node has besides kube-proxy's rules: forwarding on, a default route, route_localnet
                # (kube-proxy sets it for localhost NodePorts)
                gw = ip.rsplit(".", 1)[0] + ".1"
                self._sh("ip", "-n", ns, "route", "add", "default", "via", gw, "dev", "eth0", "onlink")
                for key in ("net/ipv4/ip_forward", "net/ipv4/conf/all/route_localnet"):
                    self._sh("ip", "netns", "exec", ns, "sh", "-c", f"echo 1 > /proc/sys/{key}")
                if self.kube_proxy:
                    self._start_kube_proxy(ns)
        except BaseException:
            self.__exit__()
            raise
        return self

    def _start_kube_proxy(self, ns: str) -> None:
        import sys

        p = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", KUBE_PROXY_PY, str(self.kube_proxy),
                              self.cluster_cidr], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.procs.append(p)
        assert p.stdout is not None
        if p.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the fake kube-proxy did not start in {ns}")

    def __exit__(self, *exc: object) -> None:
        for p in self.procs:
            p.kill()
            p.wait()
        self.procs.clear()
        for ns in self.names.values():
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        self.names.clear()

    @staticmethod
    def _sh(*argv: str, input: str | None = None) -> None:
        r = subprocess.run(list(argv), input=input, capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)}: {r.stderr.strip()}")


def demo_node_ips(objs: Iterable[Obj] | None = None) -> dict[str, str]:
    out = {}
    for o in objs if objs is not None else realistic_objects():
        if o.get("kind") == "Node":
            ip = next(a["address"] for a in o["status"]["addresses"] if a["type"] == "InternalIP")
            out[o["metadata"]["name"]] = ip
    return out
