"""Troubleshooting drills: a small cluster, built by the simulator and broken in one realistic way, for the student
to diagnose with the real commands (`svctrace explain`, `svctrace learn show`) and to repair with a change to
an object. The engine grades the repair by applying it, simulating again and asking explain() whether the
Service now works: any fix that works is accepted, not only the intended one.

Everything a drill shows is generated from its seed: names, addresses and ports are examples, not rules (a real
API server picks a random free nodePort, a real CNI its own pod addresses). Pure: no UI, no files.

The drills' world has one fact kube-proxy does not know: on which port the application really listens (the
container's `--listen=:PORT` argument). The "kubelet" below marks a pod ready when its readiness probe asks
that port, and the grader checks that every connection the rules DNAT lands on it.
"""

from __future__ import annotations

import copy
import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from svctrace.errors import InputError
from svctrace.explain import Explanation, Request, explain
from svctrace.kubeproxy.simulate import Simulation, simulate
from svctrace.model.cluster import parse_cluster
from svctrace.model.snapshot import NodeFiles, Snapshot

Obj = dict[str, Any]

NAMESPACES = ("shop", "payments", "blog", "inventory", "media", "billing")
APPS = ("web", "api", "cart", "catalog", "search", "auth", "orders")
TARGET_PORTS = (8080, 3000, 5000, 9000, 8000)
WRONG_PORTS = {8080: 80, 3000: 80, 5000: 8080, 9000: 90, 8000: 80}
OUTSIDE = "198.51.100.7"  # a client outside the cluster (documentation range, RFC 5737)
ALLOWED = "203.0.113.0/24"


@dataclass
class World:
    """The healthy cluster of a drill, before it is broken: what the seed chose."""

    seed: int
    ns: str
    app: str
    port: int  # the Service port
    listen: int  # where the application listens (= the healthy targetPort)
    replicas: int
    nodes: list[tuple[str, str, str]]  # (name, InternalIP, podCIDR); the first is the control plane
    objects: list[Obj] = field(default_factory=list)

    @property
    def workers(self) -> list[str]:
        return [n for n, _, _ in self.nodes[1:]]

    def obj(self, kind: str, name: str) -> Obj:
        for o in self.objects:
            if o.get("kind") == kind and o["metadata"]["name"] == name:
                return o
        raise KeyError(f"{kind}/{name}")

    @property
    def service(self) -> Obj:
        return self.obj("Service", self.app)

    @property
    def deployment(self) -> Obj:
        return self.obj("Deployment", self.app)

    @property
    def container(self) -> Obj:
        return self.deployment["spec"]["template"]["spec"]["containers"][0]


@dataclass(frozen=True)
class Question:
    """What the drill's ticket asks about: explain()'s request, and the ticket's words."""

    request: Request
    ticket: str


@dataclass(frozen=True)
class DrillClass:
    id: str
    title: str  # the failure class, for --list and the docs
    cause: str  # the root cause, as a choice
    codes: tuple[str, ...]  # the diagnostics explain shows for it (the tests check they appear)
    fix: str  # the intended fix, in words
    break_it: Callable[[World, random.Random], Question] = field(repr=False, compare=False)
    patch: Callable[[World], list[Obj]] = field(repr=False, compare=False)  # the intended fix


@dataclass
class Drill:
    cls: DrillClass
    seed: int
    world: World  # broken
    question: Question
    choices: tuple[str, ...]  # root causes; one is cls.cause
    answer: int

    @property
    def id(self) -> str:
        return f"{self.cls.id}-{self.seed}"

    def to_json(self) -> dict[str, Any]:
        r = self.question.request
        return {"id": self.id, "class": self.cls.id, "seed": self.seed, "ticket": self.question.ticket,
                "question": {"target": r.target, "namespace": r.namespace, "port": r.port, "from": r.source,
                             "to": r.to, "node": r.node},
                "commands": commands(self, "DIR"),
                "choices": [{"letter": "abcdefgh"[i], "cause": c} for i, c in enumerate(self.choices)]}


# -- the healthy world ----------------------------------------------------------------------------------------

def _pod_suffix(seed: int, *parts: object) -> str:
    h = hashlib.sha256(":".join(map(str, (seed, *parts))).encode()).hexdigest()
    alphabet = "bcdfghjklmnpqrstvwxz2456789"
    return "".join(alphabet[int(h[i:i + 2], 16) % len(alphabet)] for i in range(0, 10, 2))


def world(seed: int) -> World:
    rng = random.Random(seed)
    ns, app = rng.choice(NAMESPACES), rng.choice(APPS)
    listen = rng.choice(TARGET_PORTS)
    port = rng.choice((80, 8080)) if listen != 8080 else 80
    net = rng.randrange(1, 250)
    pod16 = rng.choice(("10.244", "10.42", "172.20"))
    nodes = [("controlplane", f"192.168.{net}.10", f"{pod16}.0.0/24"),
             ("node01", f"192.168.{net}.11", f"{pod16}.1.0/24"),
             ("node02", f"192.168.{net}.12", f"{pod16}.2.0/24")]
    w = World(seed, ns, app, port, listen, rng.choice((2, 3)), nodes)
    for i, (name, ip, cidr) in enumerate(nodes):
        labels = {"kubernetes.io/hostname": name}
        if i == 0:
            labels["node-role.kubernetes.io/control-plane"] = ""
        w.objects.append({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels},
                          "spec": {"podCIDR": cidr, "podCIDRs": [cidr]},
                          "status": {"addresses": [{"type": "InternalIP", "address": ip},
                                                   {"type": "Hostname", "address": name}]}})
    w.objects.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    w.objects.append({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": app, "namespace": ns},
        "spec": {"replicas": w.replicas, "selector": {"matchLabels": {"app": app}},
                 "template": {"metadata": {"labels": {"app": app, "tier": "backend"}},
                              "spec": {"containers": [{
                                  "name": app, "image": f"registry.example/{app}:1.4",
                                  "args": [f"--listen=:{listen}"],
                                  "ports": [{"name": "http", "containerPort": listen, "protocol": "TCP"}],
                                  "readinessProbe": {"httpGet": {"path": "/healthz", "port": listen},
                                                     "periodSeconds": 5}}]}}}})
    w.objects.append({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": app, "namespace": ns},
        "spec": {"type": "ClusterIP", "selector": {"app": app},
                 "ports": [{"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}]}})
    w.objects.append({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "client", "namespace": ns, "labels": {"run": "client"}},
        "spec": {"nodeName": "node01", "containers": [{"name": "client", "image": "busybox:1.36",
                                                       "command": ["sleep", "infinity"]}]},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}})
    return w


def _from_pod(w: World, ticket: str) -> Question:
    return Question(Request(f"svc/{w.app}", namespace=w.ns, source=f"pod/{w.ns}/client"), ticket)


def _ticket_pod(w: World, symptom: str) -> str:
    return (f"The pod {w.ns}/client cannot use the Service {w.ns}/{w.app}: `wget -qO- http://{w.app}:{w.port}` "
            f"{symptom}. Find the root cause and fix it.")


# -- the failure classes ----------------------------------------------------------------------------------------

def _svc_patch(w: World, spec: Obj) -> list[Obj]:
    return [{"kind": "Service", "metadata": {"name": w.app, "namespace": w.ns}, "spec": spec}]


def _break_selector(w: World, rng: random.Random) -> Question:
    typo = w.app[1] + w.app[0] + w.app[2:] if len(w.app) > 2 else w.app + "s"
    w.service["spec"]["selector"] = {"app": typo}
    return _from_pod(w, _ticket_pod(w, "times out; the pods of the Deployment are Running and Ready"))


def _break_target_port(w: World, rng: random.Random) -> Question:
    wrong = WRONG_PORTS[w.listen]
    w.service["spec"]["ports"][0]["targetPort"] = wrong
    return _from_pod(w, _ticket_pod(w, "answers 'connection refused'; the pods are Running and Ready"))


def _break_named_port(w: World, rng: random.Random) -> Question:
    w.service["spec"]["ports"][0]["targetPort"] = rng.choice(("web", "https", "http-api"))
    return _from_pod(w, _ticket_pod(w, "times out right after a new release of the Service manifest"))


def _break_readiness(w: World, rng: random.Random) -> Question:
    w.container["readinessProbe"]["httpGet"]["port"] = WRONG_PORTS[w.listen]
    return _from_pod(w, _ticket_pod(w, "times out; `kubectl get pods` shows the pods Running but 0/1 READY"))


def _break_replicas(w: World, rng: random.Random) -> Question:
    w.deployment["spec"]["replicas"] = 0
    return _from_pod(w, _ticket_pod(w, "times out since last night's maintenance"))


def _break_etp_local(w: World, rng: random.Random) -> Question:
    svc = w.service
    svc["spec"]["type"] = "NodePort"
    svc["spec"]["externalTrafficPolicy"] = "Local"
    w.deployment["spec"]["replicas"] = 1
    node = w.nodes[2]
    return Question(Request(f"svc/{w.app}", namespace=w.ns, source=OUTSIDE, to="node-port", node=node[0]),
                    f"Customers at {OUTSIDE} reach the NodePort Service {w.ns}/{w.app} through {node[0]} "
                    f"({node[1]}) and time out; through node01 it works. Find the root cause and fix it.")


def _break_source_range(w: World, rng: random.Random) -> Question:
    svc = w.service
    svc["spec"]["type"] = "LoadBalancer"
    svc["spec"]["loadBalancerSourceRanges"] = [ALLOWED]
    lb = f"203.0.113.{rng.randrange(100, 200)}"
    svc["status"] = {"loadBalancer": {"ingress": [{"ip": lb}]}}
    return Question(Request(f"svc/{w.app}", namespace=w.ns, source=OUTSIDE, to="load-balancer", node="node01"),
                    f"A new partner office at {OUTSIDE} cannot reach {w.ns}/{w.app} at its load balancer "
                    f"{lb}:{w.port} (it times out); the old offices in {ALLOWED} can. Find the root cause and fix "
                    "it so that the partner gets in.")


def _calico() -> Obj:
    """The CNI of the drills' clusters: Calico, which enforces NetworkPolicy."""
    return {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "calico-node", "namespace": "kube-system"},
            "spec": {"selector": {"matchLabels": {"k8s-app": "calico-node"}},
                     "template": {"metadata": {"labels": {"k8s-app": "calico-node"}},
                                  "spec": {"containers": [{"name": "calico-node",
                                                           "image": "docker.io/calico/node:v3.28.0"}]}}}}


def _break_netpol_port(w: World, rng: random.Random) -> Question:
    w.objects.append(_calico())
    w.objects.append({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": f"{w.app}-allow-clients", "namespace": w.ns},
        "spec": {"podSelector": {"matchLabels": {"app": w.app}}, "policyTypes": ["Ingress"],
                 "ingress": [{"from": [{"podSelector": {"matchLabels": {"run": "client"}}}],
                              "ports": [{"protocol": "TCP", "port": w.port}]}]}})
    return _from_pod(w, _ticket_pod(w, "times out since a NetworkPolicy that should allow it was applied"))


def _break_named_port_protocol(w: World, rng: random.Random) -> Question:
    w.service["spec"]["ports"][0]["protocol"] = "UDP"
    q = _from_pod(w, f"The pod {w.ns}/client cannot use the Service {w.ns}/{w.app} over UDP (`nc -u {w.app} "
                     f"{w.port}` gets no answer), although the application serves UDP and TCP on {w.listen}. Find "
                     "the root cause and fix it.")
    return Question(replace(q.request, proto="udp"), q.ticket)


CLASSES: dict[str, DrillClass] = {c.id: c for c in (
    DrillClass("selector", "Selector typo",
               "The Service's selector matches no pod (a typo in a label)",
               ("selector-matches-no-pods",), "set the Service's selector to the pods' labels",
               _break_selector, lambda w: _svc_patch(w, {"selector": {"app": w.app}})),
    DrillClass("target-port", "port vs targetPort",
               "The Service's targetPort is not the port the application listens on",
               ("target-port-not-declared",), "set targetPort to the container's port",
               _break_target_port,
               lambda w: _svc_patch(w, {"ports": [{"port": w.port, "targetPort": w.listen}]})),
    DrillClass("named-port", "Named targetPort",
               "The Service's targetPort names a port no container defines",
               ("named-port-unresolved",), "use the container port's name (or number) as targetPort",
               _break_named_port,
               lambda w: _svc_patch(w, {"ports": [{"port": w.port, "targetPort": "http"}]})),
    DrillClass("readiness", "Readiness",
               "The pods never become ready: the readiness probe asks a port nothing listens on",
               ("no-ready-endpoints",), "point the readiness probe at the port the application listens on",
               _break_readiness,
               lambda w: [{"kind": "Deployment", "metadata": {"name": w.app, "namespace": w.ns},
                           "spec": {"template": {"spec": {"containers": [
                               {"name": w.app, "readinessProbe": {"httpGet": {"port": w.listen}}}]}}}}]),
    DrillClass("no-endpoints", "No endpoints",
               "No pod backs the Service: the Deployment is scaled to zero",
               ("no-endpoints",), "scale the Deployment up",
               _break_replicas,
               lambda w: [{"kind": "Deployment", "metadata": {"name": w.app, "namespace": w.ns},
                           "spec": {"replicas": 2}}]),
    DrillClass("etp-local", "externalTrafficPolicy Local",
               "externalTrafficPolicy: Local, and the node the client uses runs no pod of the Service",
               ("no-local-endpoints",), "set externalTrafficPolicy: Cluster (or run a pod on every node)",
               _break_etp_local, lambda w: _svc_patch(w, {"externalTrafficPolicy": "Cluster"})),
    DrillClass("source-range", "loadBalancerSourceRanges",
               "loadBalancerSourceRanges does not include the client's address",
               ("source-range-blocked",), "add the client's range to loadBalancerSourceRanges",
               _break_source_range,
               lambda w: _svc_patch(w, {"loadBalancerSourceRanges": [ALLOWED, "198.51.100.0/24"]})),
    DrillClass("netpol-port", "NetworkPolicy port",
               "A NetworkPolicy allows the Service's port, but the pods are reached on the targetPort",
               ("netpol-service-port",), "allow the targetPort (the container's port) in the NetworkPolicy",
               _break_netpol_port,
               lambda w: [{"kind": "NetworkPolicy", "metadata": {"name": f"{w.app}-allow-clients", "namespace": w.ns},
                           "spec": {"ingress": [{"from": [{"podSelector": {"matchLabels": {"run": "client"}}}],
                                                 "ports": [{"protocol": "TCP", "port": w.listen}]}]}}]),
    DrillClass("port-protocol", "Named port and protocol",
               "The named targetPort exists on the pods only for another protocol (TCP, not UDP)",
               ("named-port-protocol",), "declare the container port for UDP too (a port per protocol)",
               _break_named_port_protocol,
               lambda w: [{"kind": "Deployment", "metadata": {"name": w.app, "namespace": w.ns},
                           "spec": {"template": {"spec": {"containers": [
                               {"name": w.app, "ports": [{"name": "http", "containerPort": w.listen, "protocol": "TCP"},
                                                         {"name": "http-udp", "containerPort": w.listen,
                                                          "protocol": "UDP"}]}]}}}},
                          {"kind": "Service", "metadata": {"name": w.app, "namespace": w.ns},
                           "spec": {"ports": [{"port": w.port, "targetPort": "http-udp"}]}}]),
)}


def find_class(name: str) -> DrillClass:
    c = CLASSES.get(name)
    if c is None:
        raise InputError(f"no drill class {name!r}; classes: {', '.join(CLASSES)}")
    return c


def make(seed: int, cls: str | None = None) -> Drill:
    """The drill of this seed (and class: by default the seed picks one). The same inputs give the same drill."""
    rng = random.Random(f"drill:{seed}")
    c = find_class(cls) if cls is not None else CLASSES[rng.choice(sorted(CLASSES))]
    w = world(seed)
    q = c.break_it(w, rng)
    others = [d.cause for d in CLASSES.values() if d.id != c.id]
    rng.shuffle(others)
    choices = [c.cause, *others[:3]]
    rng.shuffle(choices)
    return Drill(c, seed, w, q, tuple(choices), choices.index(c.cause))


# -- the world run: a "kubelet", the simulator, explain ---------------------------------------------------------

def _listen_port(container: Obj) -> int | None:
    for a in container.get("args") or []:
        if isinstance(a, str) and a.startswith("--listen=:") and a[10:].isdigit():
            return int(a[10:])
    return None


def _probe_port(container: Obj) -> int | None:
    probe = ((container.get("readinessProbe") or {}).get("httpGet") or {}).get("port")
    if probe is None:
        return None
    if isinstance(probe, int) or str(probe).isdigit():
        return int(probe)
    for p in container.get("ports") or []:
        if p.get("name") == probe:
            return int(p["containerPort"])
    return -1  # a named probe port no container defines: the probe fails


def _pods_of(w: World, objects: list[Obj]) -> list[Obj]:
    """The Deployment's pods, as the ReplicaSet controller, the scheduler and the kubelet make them (ready when
    the readiness probe asks the port the application listens on)."""
    pods: list[Obj] = []
    for d in [o for o in objects if o.get("kind") == "Deployment"]:
        spec = d.get("spec") or {}
        tmpl = spec.get("template") or {}
        containers = (tmpl.get("spec") or {}).get("containers") or []
        workers = w.workers
        for i in range(int(spec.get("replicas", 1) or 0)):
            ready = all(_probe_port(c) in (None, _listen_port(c)) for c in containers)
            name = f"{d['metadata']['name']}-{_pod_suffix(w.seed, 'rs')}-{_pod_suffix(w.seed, i)}"
            pods.append({"apiVersion": "v1", "kind": "Pod",
                         "metadata": {"name": name, "namespace": d["metadata"].get("namespace", "default"),
                                      "labels": dict((tmpl.get("metadata") or {}).get("labels") or {})},
                         "spec": {**copy.deepcopy(tmpl.get("spec") or {}), "nodeName": workers[i % len(workers)]},
                         "status": {"phase": "Running",
                                    "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}})
    return pods


@dataclass
class Run:
    sim: Simulation
    snap: Snapshot
    objects: list[Obj]  # what the student sees (`learn show`): the completed objects and the Deployment


def run(w: World) -> Run:
    """Simulate the world: the kubelet's pods, then kube-proxy's rules on every node."""
    objects = [o for o in w.objects if o.get("kind") != "Deployment"] + _pods_of(w, w.objects)
    sim = simulate(objects)
    shown = sim.objects + [copy.deepcopy(o) for o in w.objects if o.get("kind") == "Deployment"]
    sim.objects = shown
    source = f"drill:{w.seed}"
    cluster = parse_cluster({"apiVersion": "v1", "kind": "List", "items": shown}, source)
    if cluster.proxy.cluster_cidr is None and sim.cluster_cidr:
        cluster.proxy.cluster_cidr = sim.cluster_cidr
    if cluster.proxy.mode is None:
        cluster.proxy.mode = "iptables"
    nodes = {n: NodeFiles(n, {"iptables-save": d, "proxy-mode": "iptables\n"}, source) for n, d in sim.dumps.items()}
    return Run(sim, Snapshot(source, cluster, {"proxy_mode": "iptables"}, nodes), shown)


def commands(d: Drill, where: str) -> list[str]:
    r = d.question.request
    ask = f"svctrace explain {r.target} -n {r.namespace} --snapshot {where}"
    ask += f" --from {r.source}" if r.source else ""
    ask += f" --to {r.to}" if r.to else ""
    ask += f" --node {r.node}" if r.node else ""
    return [ask, f"svctrace check -n {d.world.ns} --snapshot {where}",
            f"svctrace learn show svc/{d.world.app} -n {d.world.ns} --snapshot {where} -o yaml",
            f"svctrace learn show deploy/{d.world.app} -n {d.world.ns} --snapshot {where} -o yaml",
            f"svctrace learn show pods -n {d.world.ns} --snapshot {where}"]


# -- applying a fix ---------------------------------------------------------------------------------------------

# Lists merged by a key, as `kubectl patch` (strategic merge) does for these fields; other lists are replaced.
MERGE_KEYS = {"ports": ("port", "containerPort", "name"), "containers": ("name",), "env": ("name",)}


def _merge(base: Any, patch: Any, key: str = "") -> Any:
    if isinstance(patch, dict) and isinstance(base, dict):
        out = dict(base)
        for k, v in patch.items():
            if v is None:
                out.pop(k, None)
            else:
                out[k] = _merge(base.get(k), v, k)
        return out
    if isinstance(patch, list) and isinstance(base, list) and key in MERGE_KEYS:
        merged = [copy.deepcopy(x) for x in base]
        for item in patch:
            mk = next((k for k in MERGE_KEYS[key] if isinstance(item, dict) and k in item), None)
            at = next((i for i, x in enumerate(merged) if mk and isinstance(x, dict) and x.get(mk) == item[mk]),
                      None) if mk else None
            if at is None:
                merged.append(copy.deepcopy(item))
            else:
                merged[at] = _merge(merged[at], item, "")
        return merged
    return copy.deepcopy(patch)


def apply_fix(w: World, patches: list[Obj], source: str = "fix") -> World:
    """The world after `kubectl patch` of each document (by kind, name and namespace; `$patch: delete` removes
    the object; a document for an object that does not exist is created)."""
    out = copy.deepcopy(w)
    for i, p in enumerate(patches):
        if not isinstance(p, dict) or not isinstance(p.get("kind"), str) or not isinstance(p.get("metadata"), dict):
            raise InputError(f"document {i + 1}: a fix is an object with kind and metadata.name (a patch)",
                             source=source)
        kind, meta = p["kind"], p["metadata"]
        name, ns = meta.get("name"), meta.get("namespace", w.ns)
        if not isinstance(name, str):
            raise InputError(f"document {i + 1}: metadata.name missing", source=source)
        at = next((j for j, o in enumerate(out.objects) if o.get("kind") == kind and o["metadata"]["name"] == name
                   and o["metadata"].get("namespace", ns if kind != "Node" else None) == (
                       ns if kind != "Node" else None)), None)
        body = {k: v for k, v in p.items() if k != "$patch"}
        if p.get("$patch") == "delete":
            if at is not None:
                del out.objects[at]
            continue
        if kind in ("Pod", "Node", "EndpointSlice") and at is None:
            raise InputError(f"document {i + 1}: change the workload or the Service, not a {kind}", source=source)
        if at is None:
            body.setdefault("metadata", {}).setdefault("namespace", ns)
            body.setdefault("apiVersion", "v1")
            out.objects.append(body)
        else:
            out.objects[at] = _merge(out.objects[at], body)
    return out


# -- grading ----------------------------------------------------------------------------------------------------

@dataclass
class Verdict:
    works: bool
    reasons: list[str]  # why not (empty when it works)
    exp: Explanation | None


def works(w: World, q: Question) -> Verdict:
    """Does the ticket's request work in this world? Every connection is DNATed to a ready pod of the Service,
    on the port its application listens on, and explain() reports no error."""
    r = run(w)
    try:
        exp = explain(r.snap, q.request)
    except InputError as e:
        return Verdict(False, [f"explain cannot answer the ticket's question any more: {e}"], None)
    reasons = [f"{d.code}: {d.message}" for d in exp.diagnostics if d.severity == "error"]
    reasons += [f"{d.code}: {d.message}" for d in exp.diagnostics
                if d.severity == "warning" and d.code in BLOCKING]
    if not exp.outcomes:
        reasons.append("no rule translates the packet")
    pods = {ip: p for p in r.snap.cluster.pods for ip in p.ips}
    listen: dict[str, int] = {}
    for obj in r.objects:
        if obj.get("kind") == "Pod":
            for c in (obj.get("spec") or {}).get("containers") or []:
                lp = _listen_port(c)
                ip = (obj.get("status") or {}).get("podIP")
                if lp is not None and ip:
                    listen[ip] = lp
    for o in exp.outcomes:
        if o.verdict != "accept" or o.endpoint is None:
            reasons.append(f"{o.probability:.0%} of the connections end in {o.verdict.upper()}"
                           + (f" ({o.reason})" if o.reason else ""))
            continue
        addr = str(o.endpoint.addr)
        pod = pods.get(addr)
        if pod is None:
            reasons.append(f"{o.endpoint} is not a pod")
        elif addr in listen and o.endpoint.port != listen[addr]:
            reasons.append(f"{o.endpoint}: pod {pod.name} listens on {listen[addr]}, not on "
                           f"{o.endpoint.port}: the connection is refused")
    return Verdict(not reasons, list(dict.fromkeys(reasons)), exp)


BLOCKING = frozenset(code for c in CLASSES.values() for code in c.codes)


@dataclass
class Grade:
    cause_right: bool
    fix_works: bool
    intended: bool  # the fix is the drill's own (or does the same)
    reasons: list[str]

    @property
    def passed(self) -> bool:
        return self.cause_right and self.fix_works

    def to_json(self) -> dict[str, Any]:
        return {"passed": self.passed, "cause_right": self.cause_right, "fix_works": self.fix_works,
                "fix_is_intended": self.intended, "reasons": self.reasons}


def grade(d: Drill, cause: int | None, patches: list[Obj] | None, source: str = "fix") -> Grade:
    right = cause == d.answer
    if patches is None:
        return Grade(right, False, False, ["no fix given"])
    fixed = apply_fix(d.world, patches, source)
    v = works(fixed, d.question)
    intended = apply_fix(d.world, d.cls.patch(d.world)).objects == fixed.objects
    return Grade(right, v.works, intended, v.reasons)


def parse_cause(text: str, d: Drill) -> int | None:
    s = text.strip().lower().rstrip(").")
    if len(s) == 1 and "a" <= s <= "h" and ord(s) - 97 < len(d.choices):
        return ord(s) - 97
    if s.isdigit() and 1 <= int(s) <= len(d.choices):
        return int(s) - 1
    for i, c in enumerate(d.choices):
        if s and s == c.lower():
            return i
    return None


__all__ = ["CLASSES", "Drill", "DrillClass", "Grade", "apply_fix", "commands", "find_class", "grade", "make",
           "parse_cause", "run", "works"]
