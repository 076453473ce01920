"""The course: one function per lesson, building its text, its real rules and its questions from the engine.

Every fact a question checks is computed here at run time: from explain() on the bundled demo cluster, from
simulate() on a small YAML the lesson shows, from the nodes' dumps through the parser. Nothing is a constant
that could drift from what the tool computes. Pure: no UI.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache

from svctrace.dataplane.contract import Dnat
from svctrace.explain import ExplainedOutcome, Explanation
from svctrace.kubeproxy.versions import FEATURES
from svctrace.learn import engine as E
from svctrace.learn.model import Block, Command, Lesson, LessonContent, Question, Rules, Text, make_question

SAVE = "iptables-save"


def _since(feature: str) -> str:
    """The kube-proxy release a behaviour arrived in, from the feature table."""
    return FEATURES[feature].since_text


def _step_chain(o: ExplainedOutcome, prefix: str) -> str:
    for st in o.path:
        if st.chain.startswith(prefix):
            return st.chain
    raise LookupError(f"no {prefix} chain on the path")


def _dnat_chain(o: ExplainedOutcome) -> str:
    for st in o.path:
        if st.action.startswith("DNAT"):
            return st.chain
    raise LookupError("no DNAT on the path")


def _pod_name(o: ExplainedOutcome) -> str:
    return (o.pod or o.endpoint or "?").split("/", 1)[-1]


def _short(name: str | None) -> str:
    """`client` for `default/client`."""
    return (name or "?").rsplit("/", 1)[-1]


def _port_of(endpoint: Dnat | None) -> str:
    return str(endpoint.port) if endpoint is not None and endpoint.port is not None else "?"


def _rules(caption: str, lines: list[str]) -> Rules:
    return Rules(caption, tuple(lines) if lines else ("(no rule)",))


def _caption(node: str, what: str, source: str = "the demo snapshot") -> str:
    return f"{node} · {what} ({source}, {SAVE})"


# -- 1. ClusterIP -------------------------------------------------------------------------------------------

def clusterip() -> LessonContent:
    exp = E.ask("svc/web", source="pod/client")
    svc, port, src, node = exp.service, exp.port, exp.source, exp.node or "?"
    assert port is not None
    vip = f"{exp.destination['ip']}:{exp.destination['port']}"
    rs = E.rules_of(node)
    first = exp.outcomes[0]
    svc_chain = _step_chain(first, "KUBE-SVC-")
    kube_services = [st.text for st in first.path if st.chain == "KUBE-SERVICES" and st.table == "nat"]
    seps = [line for o in exp.outcomes for line in E.chain_lines(rs, "nat", _dnat_chain(o))]
    blocks: list[Block] = [
        Text(f"A ClusterIP Service gets a virtual IP: {svc.key} has {svc.cluster_ips[0]}. No interface on any node "
             f"owns that address. kube-proxy on every node writes NAT rules that catch packets to {vip} and "
             "rewrite their destination to one of the Service's ready endpoints. `kubectl get svc` shows the IP; "
             f"`kubectl get endpointslices -l kubernetes.io/service-name={svc.name}` shows the endpoints."),
        Text(f"Here pod {_short(src.name)} ({src.ip}) on {node} connects to {vip}. Its packet walks {node}'s rules: "
             "PREROUTING hands it to KUBE-SERVICES (one rule per Service IP and port), which jumps to the Service "
             "port's KUBE-SVC-… chain (the load balancer: one rule per endpoint), which jumps to one KUBE-SEP-… "
             "chain (one endpoint: DNAT)."),
        _rules(_caption(node, "nat KUBE-SERVICES, the rule for this Service port"), kube_services),
        _rules(_caption(node, f"nat {svc_chain}, the load balancer"), E.chain_lines(rs, "nat", svc_chain)),
        _rules(_caption(node, "nat KUBE-SEP-…, one chain per endpoint"), seps),
        Text("The first rule of the KUBE-SVC chain marks for masquerade only sources outside the cluster's pod "
             "CIDR (`! -s …`). The `-m statistic --mode random --probability` rules are tried in order, and each one "
             "only sees the connections that the rules before it did not take; the last rule has no probability "
             "and takes whatever is left."),
        Command(f"svctrace explain svc/{svc.name} --demo --from pod/{_short(src.name)}", "the same walk, hop by hop"),
    ]
    # The endpoint whose printed probability is furthest from its real share.
    cands = [(o, st) for o in exp.outcomes for st in o.path if st.chain == svc_chain and st.probability]
    o, st = max(cands, key=lambda t: abs(float(t[1].probability or 0) - t[0].probability))
    printed = float(st.probability or 0)
    assert o.endpoint is not None
    q1 = make_question(
        "clusterip.probability",
        f"The rule for {o.endpoint} in {svc_chain} says `--probability {st.probability}`. What share of new "
        f"connections from pod {_short(src.name)} reach {o.endpoint} (pod {_pod_name(o)})?",
        E.pct(o.probability), [E.pct(printed), E.pct(1 - o.probability), E.pct(printed * o.probability), "100%"],
        E.hops_for(exp, o.endpoint))
    dnat = _dnat_chain(o)
    q2 = make_question(
        "clusterip.dnat-chain",
        f"Which chain rewrites the destination of that packet from {vip} to {o.endpoint}?",
        dnat, [svc_chain, "KUBE-SERVICES", "KUBE-POSTROUTING", "PREROUTING"],
        [h for h in E.hops_for(exp, o.endpoint) if "rewrites" in h])
    q3 = _masquerade_question("clusterip.masquerade", exp, svc_chain)
    return LessonContent(tuple(blocks), (q1, q2, q3))


def _masquerade_question(qid: str, exp: Explanation, svc_chain: str) -> Question:
    src, node = exp.source, exp.node or "?"
    n = E.snapshot().cluster.nodes.get(node)
    node_ip = n.internal_ips[0] if n and n.internal_ips else "its own address"
    masq = {o.endpoint: o.masquerade for o in exp.outcomes if o.endpoint}
    local = {o.endpoint for o in exp.outcomes if o.endpoint and o.endpoint_node == node}
    options = {
        "none": f"No: the pod sees {src.ip}",
        "all": f"Yes: the pod sees {node}'s address {node_ip}",
        "remote": f"Only when the endpoint runs on another node than {node}",
        "local": f"Only when the endpoint runs on {node} itself",
    }
    if not any(masq.values()):
        key = "none"
    elif all(masq.values()):
        key = "all"
    elif {e for e, m in masq.items() if m} == set(masq) - local:
        key = "remote"
    else:
        key = "local"
    rs = E.rules_of(node)
    masq_rule = [line for line in E.chain_lines(rs, "nat", svc_chain) if "KUBE-MARK-MASQ" in line]
    why = [o.masquerade_reason for o in exp.outcomes if o.masquerade_reason][:1]
    m = re.search(r"! -s (\S+)", masq_rule[0]) if masq_rule else None
    if not why and m:
        why = [f"The source {src.ip} is inside {m.group(1)}, so `! -s {m.group(1)}` does not match and nothing "
               "marks the packet for masquerade: the pod sees the client's own address."]
    return make_question(qid, f"Is the connection from pod {_short(src.name)} ({src.ip}) masqueraded, i.e. does the "
                         f"pod see {node}'s address instead of {src.ip}?",
                         options.pop(key), list(options.values()), [*why, *masq_rule])


# -- 2. NodePort --------------------------------------------------------------------------------------------

def nodeport() -> LessonContent:
    node = "node02"
    exp = E.ask("svc/web-nodeport", to="node-port", node=node)
    svc, port = exp.service, exp.port
    assert port is not None and port.node_port is not None
    dst = f"{exp.destination['ip']}:{exp.destination['port']}"
    first = exp.outcomes[0]
    ext = next(st.chain for st in first.path if st.action == "jump KUBE-MARK-MASQ")
    svc_chain = _step_chain(first, "KUBE-SVC-")
    blocks: list[Block] = [
        Text(f"A NodePort Service is a ClusterIP Service plus one port opened on every node: {svc.key} port "
             f"{port.port} has nodePort {port.node_port} (from the 30000-32767 range unless you pick one). A client "
             f"outside the cluster connects to any node's address on that port — here {exp.source.ip} to {dst}, "
             f"{node}'s address."),
        Text("The last rule of nat KUBE-SERVICES sends every packet addressed to one of the node's own addresses "
             "(`-m addrtype --dst-type LOCAL`) to KUBE-NODEPORTS; its rule for the port jumps to the Service port's "
             "KUBE-EXT-… chain, which decides about masquerade and then goes on to the same KUBE-SVC-… load "
             "balancer a ClusterIP packet uses. Every rule the packet went through:"),
        _rules(_caption(node, "the nat rules on the path"), E.path_lines(exp, tables=("nat",))),
        Text("With `externalTrafficPolicy: Cluster` (the default) any endpoint may be chosen, also one on another "
             "node; the packet is then masqueraded (source NAT to the node's address) so that the reply comes "
             "back through this node, which undoes the DNAT."),
        Command(f"svctrace explain svc/{svc.name} --demo --to node-port --node {node}"),
        Command(f"kubectl get svc {svc.name} -o wide", f"PORT(S) shows {port.port}:{port.node_port}/{port.protocol}"),
    ]
    q1 = make_question(
        "nodeport.masq-chain", "Which chain decides that this packet must be masqueraded (it jumps to KUBE-MARK-MASQ)?",
        ext, ["KUBE-POSTROUTING", "KUBE-NODEPORTS", svc_chain, "KUBE-SERVICES"],
        [*[h for h in E.hops_for(exp) if "masquerade" in h][:1], first.masquerade_reason or ""])
    others = sorted({o.endpoint_node for o in exp.outcomes if o.endpoint_node and o.endpoint_node != node})
    other = others[0] if others else "controlplane"
    p = sum(o.probability for o in exp.outcomes if o.endpoint_node == other)
    q2 = make_question(
        "nodeport.cross-node",
        f"The packet arrives at {node}:{port.node_port}. What is the chance that a pod on {other} serves it?",
        E.pct(p), ["0%", E.pct(1 - p), "100%", "50.0%"],
        [h for h in E.hops_for(exp) if h.startswith("•")])
    q3 = make_question(
        "nodeport.outcome", f"What does {node} do with this NodePort packet?",
        E.fate_words(exp), E.fate_distractors(exp, receiving_node=node),
        [*[h for h in E.hops_for(exp) if not h.startswith("•")], first.masquerade_reason or ""])
    return LessonContent(tuple(blocks), (q1, q2, q3))


# -- 3. LoadBalancer ----------------------------------------------------------------------------------------

LB_YAML = """\
apiVersion: v1
kind: ConfigMap
metadata: {name: kube-proxy, namespace: kube-system}
data:
  config.conf: |
    mode: iptables
    clusterCIDR: 10.244.0.0/16
---
apiVersion: v1
kind: Node
metadata: {name: worker-a}
spec: {podCIDR: 10.244.1.0/24}
status: {addresses: [{type: InternalIP, address: 192.168.10.11}]}
---
apiVersion: v1
kind: Node
metadata: {name: worker-b}
spec: {podCIDR: 10.244.2.0/24}
status: {addresses: [{type: InternalIP, address: 192.168.10.12}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: shop, namespace: shop}
spec:
  replicas: 2
  selector: {matchLabels: {app: shop}}
  template:
    metadata: {labels: {app: shop}}
    spec:
      containers:
      - {name: shop, image: nginx, ports: [{name: http, containerPort: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: shop-lb, namespace: shop}
spec:
  type: LoadBalancer
  selector: {app: shop}
  loadBalancerSourceRanges: [198.51.100.0/24]
  ports: [{name: http, port: 80, targetPort: http}]
status:
  loadBalancer: {ingress: [{ip: 203.0.113.10}]}
"""


def loadbalancer() -> LessonContent:
    s = E.simulated("loadbalancer", LB_YAML)
    node, allowed, blocked = "worker-a", "198.51.100.7", "192.0.2.50"
    ok = E.ask("svc/shop-lb", snap=s.name, namespace="shop", to="load-balancer", node=node, source=allowed)
    no = E.ask("svc/shop-lb", snap=s.name, namespace="shop", to="load-balancer", node=node, source=blocked)
    svc, port = ok.service, ok.port
    assert port is not None
    lb = f"{ok.destination['ip']}:{ok.destination['port']}"
    rs = E.rules_of(node, s.name)
    spec_port = E.sim_object(s, "Service", svc.name)["spec"]["ports"][0]
    blocks: list[Block] = [
        Text("A LoadBalancer Service is a NodePort Service plus an address on a load balancer outside the cluster "
             "(the cloud's, or MetalLB's): the load balancer forwards to the nodes' node port, and the address "
             "shows in `status.loadBalancer.ingress` and in `kubectl get svc` under EXTERNAL-IP. kube-proxy also "
             "writes a rule for that address itself, so a packet to it that reaches a node is handled right there. "
             "This lesson does not use the demo cluster: it simulates what kube-proxy would program for this YAML "
             "(what `svctrace simulate -f` does):"),
        Rules("lb.yaml", tuple(LB_YAML.rstrip("\n").splitlines())),
        Text(f"The rules kube-proxy writes for {svc.key} on {node}. `loadBalancerSourceRanges` turns the rule for "
             "the load-balancer IP into a KUBE-FW-… chain: sources in the ranges go on to KUBE-EXT-…, the others "
             "fall through and filter KUBE-PROXY-FIREWALL drops them."),
        _rules(_caption(node, f"every rule that names {svc.key}", "simulated"), E.lines_mentioning(rs, svc.key)),
        Command("svctrace simulate -f lb.yaml", "save the YAML above as lb.yaml: the full iptables-save of each node"),
    ]
    fw = _step_chain(ok.outcomes[0], "KUBE-FW-")
    ext = _step_chain(ok.outcomes[0], "KUBE-EXT-")
    q1 = make_question(
        "loadbalancer.allowed",
        f"A client at {allowed} connects to {lb} and the load balancer hands the packet to {node}. What happens "
        f"on {node}?", E.fate_words(ok), E.fate_distractors(ok, receiving_node=node, snap=s.name),
        [h for h in ok.hops if not h.lstrip().startswith("•")])
    drop = no.outcomes[0]
    dropper = next((st.chain for st in reversed(drop.path) if st.action in ("DROP", "REJECT")), "?")
    q2 = make_question(
        "loadbalancer.blocked-chain",
        f"A client at {blocked}, outside loadBalancerSourceRanges, tries the same. Which chain drops its packet?",
        dropper, [fw, ext, "KUBE-SERVICES", "KUBE-NODEPORTS"],
        [*no.hops, *E.diagnostics_text(no)])
    node_port = str(spec_port.get("nodePort"))
    target = _port_of(ok.outcomes[0].endpoint)
    q3 = make_question(
        "loadbalancer.node-port",
        "The YAML asks for no nodePort. What does the Service get on its port once it is created?",
        f"A node port the API server picks at random among the free ones of 30000-32767 (the simulation "
        f"picked {node_port})",
        [f"Port {port.port} opened on every node", f"The targetPort {target} opened on every node",
         "None: a LoadBalancer Service needs no node port"],
        [*[line for line in E.chain_lines(rs, "nat", "KUBE-NODEPORTS") if svc.key in line],
         "A LoadBalancer Service is also a NodePort Service (unless allocateLoadBalancerNodePorts: false). The API "
         "server allocates a random free port of the service-node-port-range (30000-32767 by default); "
         f"{node_port} is the simulator's pick, an example: a real cluster picks another."])
    return LessonContent(tuple(blocks), (q1, q2, q3))


# -- 4. ExternalName ----------------------------------------------------------------------------------------

def externalname() -> LessonContent:
    exp = E.ask("svc/weather-api")
    svc = exp.service
    nodes = sorted(n for n, f in E.snapshot().nodes.items()  # the iptables-mode nodes (IPVS/nftables: modes lesson)
                   if f.get("iptables-save") and (f.get("proxy-mode") or "iptables").strip() == "iptables")
    counts = {n: E.count_service_rules(E.rules_of(n), svc.key) for n in nodes}
    fqdn = f"{svc.name}.{svc.namespace}.svc.{E.CLUSTER_DOMAIN}."
    ans = E.dns_answer(fqdn)
    blocks: list[Block] = [
        Text(f"An ExternalName Service is only a DNS alias: {svc.key} has `externalName: {svc.external_name}`. It has "
             "no cluster IP, no selector and no endpoints, and kube-proxy writes no rule for it. Cluster DNS answers "
             "its name with a CNAME record, and the client then resolves and connects to the outside name itself."),
        Rules(f"what cluster DNS answers for {fqdn}",
              (f"{fqdn}  {ans.rtype}  {' '.join(ans.values)}",) if ans else ("NXDOMAIN",)),
        Text("Rules that name it, per node: " + ", ".join(f"{n}: {c}" for n, c in counts.items()) + ". The ports "
             "in its spec are not used for anything; a client must use the port the outside service listens on. "
             "TLS and HTTP Host checks see the name the client used, which is often why ExternalName "
             "Services fail with HTTPS."),
        Command(f"svctrace explain svc/{svc.name} --demo"),
        Command(f"kubectl get svc {svc.name}", f"TYPE ExternalName, EXTERNAL-IP {svc.external_name}, no CLUSTER-IP"),
    ]
    assert ans is not None
    if ans.rtype == "CNAME":
        right = f"A CNAME record: {ans.values[0]}"
    else:
        right = f"An A record: {', '.join(ans.values)}"
    q1 = make_question(
        "externalname.dns", f"A pod runs `curl https://{svc.name}`. What does cluster DNS answer for {fqdn}?",
        right, [f"An A record with a cluster IP that kube-proxy DNATs to {svc.external_name}",
                "NXDOMAIN: a Service without a selector has no DNS name",
                f"A CNAME record: {svc.name}.{svc.namespace}.svc.{E.CLUSTER_DOMAIN}"],
        E.diagnostics_text(exp))
    node = "node01"
    web = E.count_service_rules(E.rules_of(node), "default/web")
    q2 = make_question(
        "externalname.rule-count", f"How many iptables rules does {node} hold for {svc.key}?",
        str(counts[node]), [str(web), "1", "2"],
        [*E.diagnostics_text(exp), f"(For comparison, default/web has {web} rules on {node}.)"])
    return LessonContent(tuple(blocks), (q1, q2))


# -- 5. headless --------------------------------------------------------------------------------------------

def headless() -> LessonContent:
    exp = E.ask("svc/db")
    svc = exp.service
    cluster = E.snapshot().cluster
    eps = [(a, e) for sl in cluster.slices_for(svc) for e in sl.endpoints for a in e.addresses]
    where = sorted({e.node_name for _, e in eps if e.node_name}) or ["node01"]
    node = where[0]
    n_rules = E.count_service_rules(E.rules_of(node), svc.key)
    fqdn = f"{svc.name}.{svc.namespace}.svc.{E.CLUSTER_DOMAIN}."
    ans = E.dns_answer(fqdn)
    assert ans is not None
    blocks: list[Block] = [
        Text(f"A headless Service has `clusterIP: None`: {svc.key}. It has a selector and EndpointSlices like any "
             "Service, but no virtual IP, so kube-proxy has nothing to translate. Cluster DNS answers its name "
             "with the addresses of the ready endpoints themselves, and the client connects straight to a pod. "
             "StatefulSets use one to give each pod a stable name (`db-0.db.default.svc.cluster.local`)."),
        Rules(f"EndpointSlice of {svc.name} (kubectl get endpointslices -l kubernetes.io/service-name={svc.name})",
              tuple(f"{a}  ready={str(e.ready).lower()}  {e.target or ''} on {e.node_name}" for a, e in eps)
              or ("(no endpoints)",)),
        Rules(f"what cluster DNS answers for {fqdn}", (f"{fqdn}  {ans.rtype}  {' '.join(ans.values)}",)),
        Text(f"{node}, where the pod runs, has {n_rules} rules naming {svc.key}."),
        Command(f"svctrace explain svc/{svc.name} --demo"),
        Command(f"kubectl run -it --rm dns --image=busybox:1.36 --restart=Never -- nslookup {svc.name}"),
    ]
    q1 = make_question(
        "headless.dns", f"A pod in {svc.namespace} runs `nslookup {svc.name}`. What comes back?",
        f"The ready pods' own addresses: {', '.join(ans.values) or 'none'}",
        ["A cluster IP that kube-proxy load-balances over the pods",
         f"A CNAME record: {svc.name}-0.{svc.name}.{svc.namespace}.svc.{E.CLUSTER_DOMAIN}",
         "NXDOMAIN: without a cluster IP there is no DNS name"],
        E.diagnostics_text(exp))
    web = E.count_service_rules(E.rules_of(node), "default/web")
    q2 = make_question(
        "headless.rule-count", f"How many iptables rules does {node} hold for {svc.key}?",
        str(n_rules), ["1", "2", str(web)], E.diagnostics_text(exp))
    return LessonContent(tuple(blocks), (q1, q2))


# -- 6. selectors and EndpointSlices ------------------------------------------------------------------------

CAUSES = {
    "selector-matches-no-pods": "Its selector matches no pod (the labels differ)",
    "no-ready-endpoints": "Its pods match the selector but none is ready",
    "no-selector": "It has no selector: its endpoints are written by hand",
    "no-endpoints": "It has no endpoints at all",
    "port-not-in-service": "The port is not one of the Service's ports",
    "targetport-not-found": "No pod has a container port of the targetPort's name",
}


def _cause(exp: Explanation) -> str:
    for sev in ("error", "warning", "info"):
        for d in exp.diagnostics:
            if d.severity == sev and d.code in CAUSES:
                return d.code
    return exp.diagnostics[0].code if exp.diagnostics else "none"


def endpoints() -> LessonContent:
    pay, slow, legacy = E.ask("svc/payment"), E.ask("svc/slow-start"), E.ask("svc/legacy-db")
    node = pay.node or "node01"
    rs = E.rules_of(node)
    cluster = E.snapshot().cluster

    def slices(exp: Explanation) -> list[str]:
        out = []
        for sl in cluster.slices_for(exp.service):
            ports = ", ".join(f"{n or '-'}={p}/{proto}" for n, p, proto in sl.ports) or "no ports"
            eps = "; ".join(f"{','.join(e.addresses)} ready={str(e.ready).lower()}" for e in sl.endpoints)
            out.append(f"{exp.service.name}: slice {sl.name} [{ports}] {eps or '(no endpoints)'}")
        return out or [f"{exp.service.name}: (no EndpointSlice)"]

    sel = pay.service.selector or {}
    pods = [p for p in cluster.pods_in(pay.service.namespace) if p.name.startswith(pay.service.name)]
    blocks: list[Block] = [
        Text("A Service with a selector gets its endpoints from the EndpointSlice controller: every pod whose "
             "labels match the selector becomes an endpoint, marked ready or not from the pod's readiness. "
             "kube-proxy only sends traffic to ready endpoints. A Service port with no endpoint at all gets a "
             "REJECT rule in the filter table, so clients fail fast instead of waiting."),
        Rules("EndpointSlices (kubectl get endpointslices -o wide)", tuple(slices(pay) + slices(slow) + slices(legacy))),
        Text(f"{pay.service.key} selects {', '.join(f'{k}={v}' for k, v in sel.items())}; "
             + ("; ".join(f"pod {p.name} has {', '.join(f'{k}={v}' for k, v in p.labels.items())}" for p in pods)
                or "no pod comes close") + ". A Service without a selector (like "
             f"{legacy.service.key}) gets no slices from the controller: you write an EndpointSlice (or the old "
             "Endpoints object) yourself, for example for a database outside the cluster."),
        _rules(_caption(node, "filter KUBE-SERVICES: Services without endpoints"),
               E.chain_lines(rs, "filter", "KUBE-SERVICES")),
        _rules(_caption(node, f"nat, every rule naming {legacy.service.key}"),
               E.lines_mentioning(rs, legacy.service.key, "nat")),
        Command("svctrace explain svc/payment --demo"),
        Command(f"kubectl get pods -l {','.join(f'{k}={v}' for k, v in sel.items())} --show-labels",
                "no pod: the selector and the labels disagree"),
    ]
    code = _cause(pay)
    q1 = make_question(
        "endpoints.diagnose",
        f"Clients of {pay.service.name} ({pay.destination['ip']}:{pay.destination['port']}) get 'connection "
        "refused' at once. What is wrong?",
        CAUSES.get(code, code),
        [CAUSES.get(_cause(e), _cause(e)) for e in (slow, legacy)] + [CAUSES[c] for c in CAUSES
                                                                     if c not in {d.code for d in pay.diagnostics}],
        [*E.diagnostics_text(pay), *[d.hint for d in pay.diagnostics if d.hint]])
    matching = [p for p in cluster.selected_pods(slow.service)]
    q2 = make_question(
        "endpoints.not-ready",
        f"{slow.service.name}'s selector matches {len(matching)} pods, none of them ready. What does a client of "
        f"{slow.destination['ip']}:{slow.destination['port']} get?",
        E.fate_words(slow), E.fate_distractors(slow), [*slow.hops, *E.diagnostics_text(slow)])
    q3 = make_question(
        "endpoints.no-selector",
        f"{legacy.service.name} has no selector. A pod connects to {legacy.destination['ip']}:"
        f"{legacy.destination['port']}. Where does the packet go?",
        E.fate_words(legacy), E.fate_distractors(legacy), [*legacy.hops, *E.diagnostics_text(legacy)])
    return LessonContent(tuple(blocks), (q1, q2, q3))


# -- 7. named targetPorts -----------------------------------------------------------------------------------

TYPO_YAML = """\
apiVersion: v1
kind: Node
metadata: {name: worker-a}
spec: {podCIDR: 10.244.1.0/24}
status: {addresses: [{type: InternalIP, address: 192.168.10.11}]}
---
apiVersion: v1
kind: Pod
metadata: {name: cache-0, namespace: shop, labels: {app: cache}}
spec:
  containers: [{name: redis, image: redis:7, ports: [{name: redis, containerPort: 6379}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: shop}
spec:
  containers: [{name: sh, image: busybox:1.36}]
---
apiVersion: v1
kind: Service
metadata: {name: cache, namespace: shop}
spec:
  selector: {app: cache}
  ports: [{name: redis, port: 6379, targetPort: rediss}]
"""


def targetport() -> LessonContent:
    exp = E.ask("svc/web", source="pod/client")
    wrong = E.ask("svc/web", source="pod/client", port="8080")
    s = E.simulated("targetport", TYPO_YAML)
    typo = E.ask("svc/cache", snap=s.name, namespace="shop", source="pod/client")
    svc, port, node = exp.service, exp.port, exp.node or "?"
    assert port is not None
    cluster = E.snapshot().cluster
    pods = cluster.selected_pods(svc)
    pod_ports = [f"pod {p.name}: " + ", ".join(f"name: {n}, containerPort: {c}" for n, c, _ in p.container_ports)
                 for p in pods]
    o = exp.outcomes[0]
    assert o.endpoint is not None
    lines = [line for line in E.path_lines(exp, tables=("nat",), chains=("KUBE-SERVICES", "KUBE-SEP-"))
             if "DNAT" in line or "KUBE-SERVICES" in line]
    blocks: list[Block] = [
        Text(f"A Service port maps `port` (what clients use) to `targetPort` (what the pod listens on). The "
             f"targetPort can be a number or the name of a container port: {svc.key} port {port.port} has "
             f"`targetPort: {port.target_port}`. The EndpointSlice controller looks the name up in each pod and "
             "writes the number in the slice, so pods may even use different numbers; kube-proxy only sees "
             "numbers."),
        Rules(f"the pods behind {svc.name} (kubectl get pod -o yaml: spec.containers[].ports)", tuple(pod_ports)),
        _rules(_caption(node, "nat: the Service port in KUBE-SERVICES, the container port in the DNAT"), lines),
        Text("If no pod has a container port of that name, the controller makes the slice without endpoints for "
             "the port, and kube-proxy REJECTs the traffic. The YAML below has such a typo (simulated):"),
        Rules("typo.yaml", tuple(TYPO_YAML.rstrip("\n").splitlines())),
        _rules(_caption("worker-a", "filter KUBE-SERVICES", "simulated"),
               E.chain_lines(E.rules_of("worker-a", s.name), "filter", "KUBE-SERVICES")),
        Command(f"svctrace explain svc/{svc.name} --demo --from pod/client --port {_port_of(o.endpoint)}",
                "what happens when a client uses the targetPort instead of the Service port"),
    ]
    q1 = make_question(
        "targetport.dnat-port",
        f"{svc.name}'s port {port.port} has `targetPort: {port.target_port}`. To which port does the DNAT rule "
        "send the packet?",
        _port_of(o.endpoint), [str(port.port), f"{port.target_port} (the name is looked up when the packet arrives)"],
        E.hops_for(exp, o.endpoint)[-1:])
    q2 = make_question(
        "targetport.wrong-port",
        f"A pod runs `curl {wrong.destination['ip']}:{wrong.destination['port']}`: the targetPort instead of the "
        "Service port. What happens?",
        E.fate_words(wrong), E.fate_distractors(wrong), [*wrong.hops, *E.diagnostics_text(wrong)])
    q3 = make_question(
        "targetport.typo",
        f"In typo.yaml the container port is named `{_container_port_name(s)}` but the Service says "
        f"`targetPort: {typo.port.target_port if typo.port else '?'}`. What does a client of the Service get?",
        E.fate_words(typo), E.fate_distractors(typo, snap=s.name), [*typo.hops, *E.diagnostics_text(typo)])
    return LessonContent(tuple(blocks), (q1, q2, q3))


def _container_port_name(s: E.Simulated) -> str:
    pod = E.sim_object(s, "Pod", "cache-0")
    return str(pod["spec"]["containers"][0]["ports"][0]["name"])


# -- 8. session affinity ------------------------------------------------------------------------------------

def affinity() -> LessonContent:
    new = E.ask("svc/session", source="pod/client")
    back = E.ask("svc/session", source="pod/client", returning_client=True)
    svc, src, node = new.service, new.source, new.node or "?"
    rs = E.rules_of(node)
    svc_chain = _step_chain(new.outcomes[0], "KUBE-SVC-")
    blocks: list[Block] = [
        Text(f"`sessionAffinity: ClientIP` keeps a client on the endpoint it got first: {svc.key} has it, with "
             f"timeoutSeconds {svc.affinity_timeout}. In iptables mode kube-proxy does it with the `recent` match: "
             "each KUBE-SEP-… chain records the client's address in a list named after the chain (`--set`), and the "
             "KUBE-SVC-… chain first checks those lists (`--rcheck`) before it picks at random."),
        _rules(_caption(node, f"nat {svc_chain}"), E.chain_lines(rs, "nat", svc_chain)),
        _rules(_caption(node, "nat KUBE-SEP-…: DNAT, and remember the client"),
               [line for line in E.lines_mentioning(rs, svc.key, "nat") if line.startswith("-A KUBE-SEP-")]),
        Text("The affinity is per client IP address, and per node: each node keeps its own lists. Clients behind "
             "one NAT all look like one client."),
        Command(f"svctrace explain svc/{svc.name} --demo --from pod/{_short(src.name)}"),
        Command(f"svctrace explain svc/{svc.name} --demo --from pod/{_short(src.name)} --returning-client"),
    ]
    o = new.outcomes[-1]
    assert o.endpoint is not None
    n = len(new.outcomes)
    q1 = make_question(
        "affinity.new-client",
        f"A client that never connected before: what is the chance it reaches {o.endpoint} (pod {_pod_name(o)})?",
        E.pct(o.probability), ["100%", "0%", E.pct(1 / (n + 1)), E.pct(1 - o.probability)],
        [*E.hops_for(new, o.endpoint), *E.diagnostics_text(new)])
    sep = _dnat_chain(o)
    again = next(b for b in back.outcomes if any("--rcheck" in st.text and f"--name {sep} " in st.text
                                                 for st in b.path))
    rcheck = next(st.text for st in again.path if "--rcheck" in st.text)
    def who(x: ExplainedOutcome) -> str:
        return f"pod {_pod_name(x)} ({x.endpoint})"
    q2 = make_question(
        "affinity.returning-client",
        f"Pod {_short(src.name)} first reached {who(o)}. It connects again a minute later. Which pod does it reach now?",
        who(again), [who(x) for x in new.outcomes if x.endpoint != again.endpoint]
        + [f"Either, at random: {E.pct(o.probability)} each"],
        [f"{svc_chain} checks the client's address in the list {sep} first:", rcheck,
         *E.hops_for(back, again.endpoint)[-1:]])
    m = re.search(r"--seconds (\d+)", rcheck)
    secs = int(m.group(1)) if m else 0
    q3 = make_question(
        "affinity.timeout",
        "For how long after its last new connection is the client sent back to the same pod?",
        f"{secs} seconds ({secs / 3600:g} hours)",
        ["60 seconds (1 minute)", "Only while its TCP connection is open", "Until the pod restarts, however long"],
        [f"The `--rcheck --seconds {secs}` match in {svc_chain}: {rcheck}"])
    return LessonContent(tuple(blocks), (q1, q2, q3))


# -- 9. traffic policies ------------------------------------------------------------------------------------

ITP_YAML = """\
apiVersion: v1
kind: Node
metadata: {name: worker-a}
spec: {podCIDR: 10.244.1.0/24}
status: {addresses: [{type: InternalIP, address: 192.168.10.11}]}
---
apiVersion: v1
kind: Node
metadata: {name: worker-b}
spec: {podCIDR: 10.244.2.0/24}
status: {addresses: [{type: InternalIP, address: 192.168.10.12}]}
---
apiVersion: v1
kind: Pod
metadata: {name: cache-0, namespace: shop, labels: {app: cache}}
spec:
  nodeName: worker-a
  containers: [{name: redis, image: redis:7, ports: [{name: redis, containerPort: 6379}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: shop}
spec:
  nodeName: worker-b
  containers: [{name: sh, image: busybox:1.36}]
---
apiVersion: v1
kind: Service
metadata: {name: cache, namespace: shop}
spec:
  selector: {app: cache}
  internalTrafficPolicy: Local
  ports: [{name: redis, port: 6379, targetPort: redis}]
"""


def traffic_policy() -> LessonContent:
    client = "192.168.56.99"
    far = E.ask("svc/frontend", to="load-balancer", node="node02", source=client)
    near = E.ask("svc/frontend", to="load-balancer", node="node01", source=client)
    s = E.simulated("traffic-policy", ITP_YAML)
    itp = E.ask("svc/cache", snap=s.name, namespace="shop", source="pod/client")
    svc = far.service
    pod_nodes = sorted({o.endpoint_node for o in near.outcomes if o.endpoint_node})
    lb = f"{far.destination['ip']}:{far.destination['port']}"
    blocks: list[Block] = [
        Text("Two fields choose which endpoints a node may use. `externalTrafficPolicy` is for traffic from "
             "outside (node ports, external IPs, load-balancer IPs), `internalTrafficPolicy` for traffic to the "
             "cluster IP. `Cluster` (the default): any ready endpoint in the cluster, and external traffic is "
             "masqueraded. `Local`: only endpoints on the node the packet arrived at, no masquerade, so the pod "
             "sees the client's real address; a node without a local endpoint drops the traffic."),
        Text(f"{svc.key} has externalTrafficPolicy {svc.external_traffic_policy}, load-balancer IP {lb}, and its pod "
             f"runs on {', '.join(pod_nodes)}. The cloud's load balancer uses the health check node port "
             f"{svc.health_check_node_port} to send traffic only to nodes that have a local pod."),
        _rules(_caption("node02", f"filter rules naming {svc.key}, and its KUBE-EXT chain: no local endpoint"),
               [line for line in E.lines_mentioning(E.rules_of("node02"), svc.key)
                if line.startswith(("-A KUBE-EXTERNAL-SERVICES", "-A KUBE-PROXY-FIREWALL", "-A KUBE-EXT-"))]),
        _rules(_caption("node01", f"nat rules naming {svc.key}: here KUBE-EXT-… goes to KUBE-SVL-… (local only)"),
               [line for line in E.lines_mentioning(E.rules_of("node01"), svc.key, "nat")
                if line.startswith(("-A KUBE-EXT-", "-A KUBE-SVL-"))]),
        Text("internalTrafficPolicy: Local, simulated: `cache`'s only pod runs on worker-a, and a client pod "
             "runs on worker-b (the YAML below)."),
        Rules("itp.yaml", tuple(ITP_YAML.rstrip("\n").splitlines())),
        _rules(_caption("worker-b", "every rule that names shop/cache", "simulated"),
               E.lines_mentioning(E.rules_of("worker-b", s.name), "shop/cache")),
        Command(f"svctrace explain svc/{svc.name} --demo --to load-balancer --node node02 --from {client}"),
    ]
    q1 = make_question(
        "traffic-policy.local-elsewhere",
        f"A client at {client} sends to {lb}, and the packet lands on node02 (the pod runs on "
        f"{', '.join(pod_nodes)}). What happens?",
        E.fate_words(far), E.fate_distractors(far, receiving_node="node02"),
        [*far.hops, *E.diagnostics_text(far)])
    n1 = E.snapshot().cluster.nodes["node01"]
    node_ip = n1.internal_ips[0] if n1.internal_ips else "?"
    masq = any(o.masquerade for o in near.outcomes)
    keep, snat = f"{client}, the client's own address", f"{node_ip}, node01's address"
    q2 = make_question(
        "traffic-policy.client-ip",
        "The same packet lands on node01, where the pod runs. Which source address does the pod see?",
        snat if masq else keep, [keep if masq else snat, f"{far.destination['ip']}, the load balancer's address"],
        [*near.hops, *(o.masquerade_reason or "" for o in near.outcomes)])
    q3 = make_question(
        "traffic-policy.internal-local",
        f"`cache` has internalTrafficPolicy: Local. Pod client on {itp.node} connects to its cluster IP "
        f"{itp.destination['ip']}:{itp.destination['port']}. What happens?",
        E.fate_words(itp), E.fate_distractors(itp, receiving_node=itp.node, snap=s.name),
        [*itp.hops, *E.diagnostics_text(itp)])
    return LessonContent(tuple(blocks), (q1, q2, q3))


# -- 10. DNS names ------------------------------------------------------------------------------------------

def dns() -> LessonContent:
    ns = "default"
    exp = E.ask("kube-dns.kube-system.svc.cluster.local", port="dns")
    node = exp.node or "?"
    rs = E.rules_of(node)
    port = exp.port
    assert port is not None
    blocks: list[Block] = [
        Text("Every Service gets a DNS name `<service>.<namespace>.svc.cluster.local` from cluster DNS (CoreDNS, "
             "behind the Service kube-system/kube-dns). A pod does not need the full name: the kubelet writes the "
             "pod's /etc/resolv.conf so that short names work:"),
        Rules(f"/etc/resolv.conf in a pod of namespace {ns} (dnsPolicy: ClusterFirst)", tuple(E.resolv_conf(ns))),
        Text("A name with fewer dots than ndots (5) is tried with each search domain appended, in order, and only "
             "then as it is. So in namespace default, `web` becomes web.default.svc.cluster.local (answered at "
             "once), and `web.default` is first tried as web.default.default.svc.cluster.local (no such name) and "
             "then as web.default.svc.cluster.local. A Service in another namespace needs at least "
             "`<service>.<namespace>`."),
        Text(f"The nameserver is kube-dns's cluster IP, so every DNS query is a Service packet like any other: "
             f"UDP to {exp.destination['ip']}:{port.port}, DNATed by {node}'s rules to a CoreDNS pod:"),
        _rules(_caption(node, f"nat rules naming {exp.service.key}:{port.name}"),
               E.lines_mentioning(rs, f"{exp.service.key}:{port.name}", "nat")),
        Command("svctrace explain kube-dns.kube-system.svc.cluster.local --demo --port dns"),
        Command("kubectl run -it --rm dns --image=busybox:1.36 --restart=Never -- cat /etc/resolv.conf"),
    ]
    o = exp.outcomes[-1]
    assert o.endpoint is not None
    q1 = make_question(
        "dns.backend",
        f"A pod on {node} sends a DNS query to {exp.destination['ip']}:{port.port}/{port.protocol}. What is the "
        f"chance that {_pod_name(o)} ({o.endpoint}) answers it?",
        E.pct(o.probability), ["100%", "0%", E.pct(1 / (len(exp.outcomes) + 1)), E.pct(1 - o.probability)],
        E.hops_for(exp, o.endpoint))
    name = "web.default"
    queries = E.dns_queries(name, ns)
    ans = E.resolve(name, ns)
    assert ans is not None
    tried = queries[: queries.index(ans.query) + 1]
    q2 = make_question(
        "dns.first-answer", f"A pod in namespace {ns} looks up `{name}`. Which query is the first to get an answer?",
        ans.query, [q for q in queries if q != ans.query],
        [*(f"{q}  NXDOMAIN" for q in tried[:-1]), f"{ans.query}  {ans.rtype} {' '.join(ans.values)}"])
    target = E.ask("svc/kube-dns", namespace="kube-system", port="dns").service
    cands = [target.name, f"{target.name}.{ns}", f"{target.name}.{target.namespace}",
             f"{target.name}.svc.{E.CLUSTER_DOMAIN}"]
    results = {c: E.resolve(c, ns) for c in cands}
    good = [c for c, a in results.items() if a is not None and a.service.key == target.key]
    q3 = make_question(
        "dns.cross-namespace",
        f"From a pod in namespace {ns}, which name reaches {target.key}?",
        good[0], [c for c in cands if c not in good],
        [f"{c}: " + (f"{a.query} {a.rtype} {' '.join(a.values)}" if a else "NXDOMAIN for every search domain")
         for c, a in results.items()])
    return LessonContent(tuple(blocks), (q1, q2, q3))


# -- 11. ping -----------------------------------------------------------------------------------------------

def ping() -> LessonContent:
    icmp = E.ask("svc/web", proto="icmp", source="pod/client")
    tcp = E.ask("svc/web", source="pod/client")
    pay = E.ask("svc/payment", proto="icmp", source="pod/client")
    node = icmp.node or "?"
    rs = E.rules_of(node)
    vip, pvip = str(icmp.destination["ip"]), str(pay.destination["ip"])
    nat = [line for line in E.chain_lines(rs, "nat", "KUBE-SERVICES") if f"-d {vip}/" in line]
    flt = [line for line in E.chain_lines(rs, "filter", "KUBE-SERVICES") if f"-d {pvip}/" in line]
    blocks: list[Block] = [
        Text("`ping` sends ICMP echo requests. In iptables mode a cluster IP is not an address of any interface: "
             "it exists only as rules for the Service's ports, and every such rule names a protocol and a port. "
             f"Here is everything {node} has for {vip} ({icmp.service.key}):"),
        _rules(_caption(node, "nat KUBE-SERVICES, the rules for this address"), nat),
        Text(f"And for {pvip} ({pay.service.key}, which has no endpoints), a REJECT rule in the filter table:"),
        _rules(_caption(node, "filter KUBE-SERVICES, the rules for that address"), flt),
        Text("So test a Service with its real protocol and port (`curl`, `nc -zv`, `nslookup`), never with ping. "
             "In the exam, a ping to a Service that gets no answer proves nothing."),
        Command(f"svctrace explain svc/{icmp.service.name} --demo --proto icmp --from pod/client"),
    ]
    q1 = make_question(
        "ping.clusterip", f"What happens to the echo request of `ping {vip}` from pod client?",
        E.fate_words(icmp), E.fate_distractors(icmp), [*icmp.hops, *E.diagnostics_text(icmp, "ping-virtual-ip")])
    q2 = make_question(
        "ping.curl", f"And to `curl http://{vip}` from the same pod?",
        E.fate_words(tcp), E.fate_distractors(tcp), [h for h in tcp.hops if not h.lstrip().startswith("•")])
    q3 = make_question(
        "ping.reject-rule", f"{pay.service.name} has that REJECT rule. What happens to `ping {pvip}`?",
        E.fate_words(pay), E.fate_distractors(pay), [*pay.hops, *E.diagnostics_text(pay, "ping-virtual-ip")])
    return LessonContent(tuple(blocks), (q1, q2, q3))


# -- 12. proxy modes ----------------------------------------------------------------------------------------

def proxy_modes() -> LessonContent:
    exp = E.ask("svc/web", source="pod/client")
    unserved = E.ask("svc/web", source="pod/client", port="8080")
    node = exp.node or "?"
    rs = E.rules_of(node)
    key = f"{exp.service.key}:{exp.port.name if exp.port else ''}"
    mine = E.lines_mentioning(rs, key)
    cluster = E.snapshot().cluster
    blocks: list[Block] = [
        Text("kube-proxy programs Services in one of three modes (`mode:` in the kube-proxy ConfigMap; on a node, "
             "`curl -s localhost:10249/proxyMode`):"),
        Text("iptables (the default, what every lesson here shows): chains walked rule by rule. KUBE-SERVICES has "
             "one rule per Service IP and port, so a packet to the last Service is compared with all the others "
             "first; each endpoint adds rules. A Service IP is only rules: ping gets no answer, and a port the "
             "Service does not serve matches nothing and times out."),
        Text(f"nftables (alpha in {_since('nft-mode-alpha')}, beta in {_since('nft-mode-beta')}): one nftables table `kube-proxy` with maps, so finding the "
             "Service is one lookup instead of a walk. It also differs on purpose: since "
             f"{_since('nft-cluster-ips-check-reject')} traffic to a cluster IP on a port the Service does not serve "
             "is REJECTed at once instead of timing out."),
        Text("IPVS: the kernel's IPVS load balancer, with every cluster IP added to a dummy interface kube-ipvs0 "
             f"on every node. Because the node then owns the address, before {_since('ipvs-filter-chain')} "
             "`ping <cluster IP>` got an answer — from the node, not from a pod, and even with no endpoints; since "
             f"{_since('ipvs-filter-chain')} an iptables rule (KUBE-IPVS-FILTER) rejects what no virtual server "
             "serves."),
        _rules(_caption(node, f"every rule naming {key}, for one Service port with {len(exp.outcomes)} endpoints"),
               mine),
        Command("kubectl -n kube-system get configmap kube-proxy -o yaml | grep mode"),
    ]
    mode = exp.proxy_mode or "iptables"
    q1 = make_question(
        "proxy-modes.mode", f"In which mode does kube-proxy run on {node} of the demo cluster?",
        mode, ["nftables", "ipvs", f"userspace (removed in {FEATURES['userspace-mode'].until_text})", "iptables"],
        [f"kube-proxy mode {mode}, from {cluster.proxy.sources.get('mode', 'the node')}; the rules are "
         f"{'iptables chains (KUBE-SERVICES, KUBE-SVC-…, KUBE-SEP-…)' if rs.has_kube_rules() else 'not iptables'}."])
    q2 = make_question(
        "proxy-modes.unserved-port",
        f"On {node} a pod connects to {unserved.destination['ip']}:{unserved.destination['port']}, a port "
        f"{exp.service.name} does not serve. What happens in this (iptables) mode?",
        E.fate_words(unserved), E.fate_distractors(unserved),
        [*unserved.hops, *E.diagnostics_text(unserved),
         f"In nftables mode ({_since('nft-cluster-ips-check-reject')} and later) the same packet is rejected at "
         "once."])
    n = len(mine)
    q3 = make_question(
        "proxy-modes.rule-count",
        f"How many iptables rules does {node} carry for the one Service port {key} ({len(exp.outcomes)} endpoints)?",
        str(n), ["1", str(len(exp.outcomes)), str(len(exp.outcomes) + 1), str(2 * n)],
        [f"{n} rules: 1 in KUBE-SERVICES, 1 + {len(exp.outcomes)} in the KUBE-SVC chain (masquerade, then one per "
         f"endpoint), 2 in each KUBE-SEP chain." if n == 2 + 3 * len(exp.outcomes) else f"{n} rules name {key}.",
         "nftables finds the Service with one map lookup; IPVS keeps a hash table of virtual servers."])
    return LessonContent(tuple(blocks), (q1, q2, q3))


# -- the course ---------------------------------------------------------------------------------------------

def _cached(f: Callable[[], LessonContent]) -> Callable[[], LessonContent]:
    return lru_cache(maxsize=1)(f)


LESSONS: tuple[Lesson, ...] = (
    Lesson("clusterip", "ClusterIP: a virtual IP made of NAT rules",
           "KUBE-SERVICES, KUBE-SVC, KUBE-SEP; real load-balancing odds", _cached(clusterip)),
    Lesson("nodeport", "NodePort: a port on every node", "KUBE-NODEPORTS, KUBE-EXT, masquerade, other nodes' pods",
           _cached(nodeport)),
    Lesson("loadbalancer", "LoadBalancer: an outside address, source ranges",
           "a simulated LoadBalancer Service; KUBE-FW and KUBE-PROXY-FIREWALL", _cached(loadbalancer)),
    Lesson("externalname", "ExternalName: a DNS alias, no rules", "CNAME records; nothing for kube-proxy",
           _cached(externalname)),
    Lesson("headless", "Headless Services: clusterIP None", "DNS returns the pods; no rules", _cached(headless)),
    Lesson("endpoints", "Selectors and EndpointSlices", "label typos, unready pods, hand-made endpoints, REJECT",
           _cached(endpoints)),
    Lesson("targetport", "port, targetPort, named ports", "how a port name becomes a number; typos",
           _cached(targetport)),
    Lesson("affinity", "Session affinity: ClientIP", "-m recent lists; the returning client",
           _cached(affinity)),
    Lesson("traffic-policy", "Traffic policies: Cluster or Local", "externalTrafficPolicy, internalTrafficPolicy",
           _cached(traffic_policy)),
    Lesson("dns", "Service DNS names and search domains", "resolv.conf, ndots, other namespaces", _cached(dns)),
    Lesson("ping", "Why ping to a ClusterIP fails", "a Service IP is only rules for its ports", _cached(ping)),
    Lesson("proxy-modes", "kube-proxy modes: iptables, nftables, IPVS", "what differs, and why it matters",
           _cached(proxy_modes)),
)

ALIASES = {"selectors": "endpoints", "endpointslices": "endpoints", "session-affinity": "affinity",
           "sessionaffinity": "affinity", "lb": "loadbalancer", "traffic-policies": "traffic-policy",
           "modes": "proxy-modes", "named-ports": "targetport", "cluster-ip": "clusterip", "node-port": "nodeport"}


def find_lesson(name: str) -> Lesson | None:
    """A lesson by id, number (1-based), alias or unique prefix."""
    n = name.strip().lower()
    if n.isdigit() and 1 <= int(n) <= len(LESSONS):
        return LESSONS[int(n) - 1]
    n = ALIASES.get(n, n)
    exact = [le for le in LESSONS if le.id == n]
    if exact:
        return exact[0]
    pre = [le for le in LESSONS if n and le.id.startswith(n)]
    return pre[0] if len(pre) == 1 else None
