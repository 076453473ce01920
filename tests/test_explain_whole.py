"""The whole path around kube-proxy's rules (issue 14, items 4-6): NetworkPolicy after DNAT, the CNI that enforces
it, LoadBalancers nobody provisions, named ports of the wrong protocol, headless Services' not-ready pods,
ExternalName's headers, session affinity read from the rules, Service environment variables, DNS names, and
conntrack flows pinned to endpoints that have left. Each test provokes its diagnostic on a purpose-built
snapshot (tests/trouble.py: the cluster docs/examples/trouble holds)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import trouble

from svctrace.errors import InputError
from svctrace.explain import Request, explain
from svctrace.model.snapshot import load_snapshot

Obj = dict[str, Any]


def codes(exp: Any) -> set[str]:
    return {d.code for d in exp.diagnostics}


def diag(exp: Any, code: str) -> Any:
    return next(d for d in exp.diagnostics if d.code == code)


def snap_of(
    tmp_path: Path, objs: list[Obj] | None = None, conntrack: str = trouble.CONNTRACK_NODE01, name: str = "s"
) -> Any:
    return load_snapshot(str(trouble.write(tmp_path / name, objs, conntrack)))


@pytest.fixture(scope="module")
def snap() -> Any:
    return load_snapshot(str(trouble.OUT))


def ask(snap: Any, target: str, **kw: Any) -> Any:
    return explain(snap, Request(target=target, **kw))


def objs() -> list[Obj]:
    return copy.deepcopy(trouble.objects())


def find(objects: list[Obj], kind: str, ns: str | None, name: str) -> Obj:
    return next(
        o
        for o in objects
        if o["kind"] == kind and o["metadata"]["name"] == name and o["metadata"].get("namespace") == ns
    )


def test_the_trouble_snapshot_is_what_its_builder_makes() -> None:
    root = trouble.OUT
    built = trouble.files()
    assert {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()} == set(built)
    for rel, text in built.items():
        assert (root / rel).read_text() == text, f"{rel} is stale: run python tests/trouble.py"


# -- NetworkPolicy ---------------------------------------------------------------------------------------------


def test_netpol_service_port_instead_of_target_port(snap: Any, tmp_path: Path) -> None:
    """The policy allows port 80 (the Service's) but the pod listens on 8080: named as such, and the packet is
    denied (exit 1). With the targetPort, by number or by the container port's name, it is allowed."""
    exp = ask(snap, "svc/shop/web", source="pod/shop/frontend")
    d = diag(exp, "netpol-service-port")
    assert "allows port 80/TCP, the Service's port" in d.message and "on port 8080" in d.message
    assert "shop/web-from-frontend ingress rule 1" in d.message and d.severity == "error"
    assert "netpol-ingress-denied" not in codes(exp) and exp.exit_code == 1
    for port in (8080, "http"):
        o = objs()
        find(o, "NetworkPolicy", "shop", "web-from-frontend")["spec"]["ingress"][0]["ports"] = [
            {"port": port}
        ]
        fixed = ask(snap_of(tmp_path, o, name=str(port)), "svc/shop/web", source="pod/shop/frontend")
        assert not codes(fixed) & {"netpol-service-port", "netpol-ingress-denied"}, port
        assert "shop/web-from-frontend ingress rule 1" in diag(fixed, "netpol-allowed").message
        assert fixed.exit_code == 0
    # the same mistake in an egress policy
    o = objs()
    find(o, "NetworkPolicy", "other", "egress-dns-only")["spec"]["egress"].append(
        {"to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "web"}}}], "ports": [{"port": 80}]})
    eg = ask(snap_of(tmp_path, o, name="egress"), "svc/shop/web", source="pod/other/client")
    d = diag(eg, "netpol-service-port")
    assert "other/egress-dns-only egress rule 2 (80/TCP)" in d.message and "egress is denied" in d.message


def test_netpol_ingress_default_deny_and_allow(snap: Any, tmp_path: Path) -> None:
    exp = ask(snap, "svc/shop/web", source="pod/other/debug")
    d = diag(exp, "netpol-ingress-denied")
    assert (
        "shop/default-deny, shop/web-from-frontend" in d.message
        and "from 10.244.1.71 to port 8080/TCP" in d.message
    )
    assert "to shop/web-from-frontend" in d.hint and exp.exit_code == 1
    # namespaceSelector AND podSelector (matchExpressions In) in one peer: shop's frontend passes
    ok = ask(snap, "svc/shop/api", source="pod/shop/frontend")
    assert (
        "netpol-allowed" in codes(ok) and "api-from-shop ingress rule 1" in diag(ok, "netpol-allowed").message
    )
    # ... a pod of another namespace does not, even with the right labels
    o = objs()
    find(o, "Pod", "other", "debug")["metadata"]["labels"] = {"role": "frontend"}
    s = snap_of(tmp_path, o, name="labels")
    assert "netpol-ingress-denied" in codes(ask(s, "svc/shop/api", source="pod/other/debug"))
    # a policy with policyTypes [Egress] does not isolate for ingress; endPort ranges; protocols differ
    o = objs()
    pols = [x for x in o if x["kind"] == "NetworkPolicy" and x["metadata"]["namespace"] == "shop"]
    for p in pols:
        o.remove(p)
    o.append(trouble.policy("egress-only", "shop", {"podSelector": {}, "policyTypes": ["Egress"]}))
    assert not [
        c
        for c in codes(ask(snap_of(tmp_path, o, name="eg"), "svc/shop/web", source="pod/other/debug"))
        if c.startswith("netpol")
    ]
    for ports, allowed in (
        ([{"port": 8000, "endPort": 8100}], True),
        ([{"port": 8000, "endPort": 8079}], False),
        ([{"protocol": "UDP", "port": 8080}], False),
        ([], True),
    ):
        o2 = [x for x in o if x["kind"] != "NetworkPolicy" or x["metadata"]["namespace"] != "shop"]
        o2.append(
            trouble.policy(
                "range",
                "shop",
                {
                    "podSelector": {"matchLabels": {"app": "web"}},
                    "ingress": [{"ports": ports} if ports else {}],
                },
            )
        )
        e = ask(
            snap_of(
                tmp_path, o2, name=f"r{len(ports)}{allowed}{ports[0].get('endPort', '') if ports else ''}"
            ),
            "svc/shop/web",
            source="pod/other/debug",
        )
        assert ("netpol-allowed" in codes(e)) is allowed and (
            "netpol-ingress-denied" in codes(e)
        ) is not allowed, ports


def test_netpol_ip_block_sees_the_masqueraded_node_address(tmp_path: Path) -> None:
    """NodePort from outside with externalTrafficPolicy Cluster: the walk masquerades, so the pod sees the node's
    address; an ipBlock for the client's range no longer matches, one for the nodes' range (minus an except)
    does. Traffic from the pod's own node is always allowed."""

    def with_block(block: Obj, name: str) -> Any:
        o = [x for x in objs() if x["kind"] != "NetworkPolicy"]
        o.append(
            trouble.policy(
                "store-in",
                "default",
                {
                    "podSelector": {"matchLabels": {"app": "store"}},
                    "ingress": [{"from": [{"ipBlock": block}]}],
                },
            )
        )
        s = snap_of(tmp_path, o, name=name)
        return explain(s, Request(target="svc/default/store", to="node-port", node="node01"))

    e = with_block({"cidr": "203.0.113.0/24"}, "client")
    assert all(o.masquerade for o in e.outcomes)
    d = diag(e, "netpol-ingress-denied")
    assert "from 192.168.56.11 (the walk masquerades" in d.message
    assert "netpol-allowed" in codes(with_block({"cidr": "192.168.56.0/24"}, "nodes"))
    assert "netpol-ingress-denied" in codes(
        with_block({"cidr": "192.168.56.0/24", "except": ["192.168.56.11/32"]}, "except")
    )
    # the same packet received on node02, where store-1 runs: from the pod's own node, always allowed
    o = [x for x in objs() if x["kind"] != "NetworkPolicy"]
    o.append(trouble.policy("deny", "default", {"podSelector": {}}))
    s = snap_of(tmp_path, o, name="own")
    e = explain(s, Request(target="svc/default/store", to="node-port", node="node02"))
    assert "netpol-ingress-denied" not in codes(e) and "always allowed" in diag(e, "netpol-allowed").message


def test_netpol_egress_denied_and_not_enforced(snap: Any, tmp_path: Path) -> None:
    exp = ask(snap, "svc/shop/web", source="pod/other/client")
    d = diag(exp, "netpol-egress-denied")
    assert (
        "other/egress-dns-only selects the client pod client" in d.message
        and "10.244.1.10:8080/TCP" in d.message
    )
    # DNS is what it allows: UDP 53 to kube-system, decided by the namespace's automatic name label
    dns = ask(snap, "svc/kube-system/kube-dns", source="pod/other/client")
    assert "egress of client: other/egress-dns-only egress rule 1" in diag(dns, "netpol-allowed").message
    # Flannel alone enforces nothing: the same policies are named as having no effect, and the packet passes
    o = objs()
    ds = find(o, "DaemonSet", "kube-system", "calico-node")
    ds["metadata"]["name"] = "kube-flannel-ds"
    ds["spec"]["template"]["spec"]["containers"][0]["image"] = "docker.io/flannel/flannel:v0.25.1"
    flannel = ask(snap_of(tmp_path, o, name="flannel"), "svc/shop/web", source="pod/other/client")
    assert not codes(flannel) & {"netpol-egress-denied", "netpol-ingress-denied"}
    d = diag(flannel, "netpol-not-enforced")
    assert "Flannel (DaemonSet kube-system/kube-flannel-ds), does not enforce" in d.message
    assert (
        "other/egress-dns-only" in d.message and "shop/default-deny" in d.message and flannel.exit_code == 0
    )
    # no CNI recognised: denied, with the assumption stated
    o = [x for x in objs() if x["kind"] != "DaemonSet" or x["metadata"]["name"] != "calico-node"]
    unknown = ask(snap_of(tmp_path, o, name="nocni"), "svc/shop/web", source="pod/other/client")
    assert "no CNI recognised" in diag(unknown, "netpol-egress-denied").message
    # a known enforcer is named too
    assert "; Calico enforces NetworkPolicy here (DaemonSet kube-system/calico-node)" in diag(exp, "netpol-egress-denied").message


def test_netpol_uncertain_and_namespace_selector(snap: Any, tmp_path: Path) -> None:
    """Without Namespace objects a namespaceSelector on team=shop cannot be decided (only the automatic
    kubernetes.io/metadata.name label is known); a client with no Pod object has unknown labels."""
    o = [x for x in objs() if x["kind"] != "Namespace"]
    s = snap_of(tmp_path, o, name="nons")
    e = ask(s, "svc/shop/api", source="pod/shop/frontend")
    d = diag(e, "netpol-uncertain")
    assert "namespace shop's labels are not in the snapshot" in d.message and e.exit_code == 0
    assert "netpol-allowed" in codes(ask(s, "svc/kube-system/kube-dns", source="pod/other/client"))
    anon = ask(snap, "svc/shop/api")  # no --from: a pod of node01's CIDR without a Pod object
    assert "no Pod object in the snapshot" in diag(anon, "netpol-uncertain").message


# -- objects ------------------------------------------------------------------------------------------------


def test_lb_without_ingress_names_the_missing_controller(snap: Any, tmp_path: Path) -> None:
    e = ask(snap, "svc/default/store", to="load-balancer")
    d = diag(e, "lb-no-ingress")
    assert "no cloud provider" in d.message and "(30300)" in d.message and "MetalLB" in d.hint
    assert d.severity == "error" and e.exit_code == 1  # asked for the load balancer's path: there is none
    assert diag(ask(snap, "svc/default/store"), "lb-no-ingress").severity == "warning"  # its cluster IP works
    assert (
        e.destination["via"] == "node-port" and e.destination["port"] == 30300
    )  # the NodePort path still shown
    assert e.outcomes and all(o.verdict == "accept" for o in e.outcomes)
    cls = diag(ask(snap, "svc/default/store-nlb"), "lb-no-ingress")
    assert (
        "loadBalancerClass is service.k8s.aws/nlb" in cls.message
        and "AWS Load Balancer Controller" in cls.message
    )
    o = objs()
    o.append(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "controller", "namespace": "metallb-system"},
            "spec": {"template": {"spec": {"containers": [{"image": "quay.io/metallb/controller:v0.14.5"}]}}},
        }
    )
    find(o, "Node", None, "node01")["spec"]["providerID"] = "aws:///eu-west-1a/i-0abc"
    d = diag(ask(snap_of(tmp_path, o), "svc/default/store"), "lb-no-ingress")
    assert (
        "MetalLB (Deployment metallb-system/controller)" in d.message
        and "the AWS cloud provider" in d.message
    )
    find(o, "Service", "default", "store")["status"] = {
        "loadBalancer": {"ingress": [{"hostname": "x.elb.example"}]}
    }
    assert "lb-no-ingress" not in codes(ask(snap_of(tmp_path, o, name="host"), "svc/default/store"))


def test_named_port_of_the_wrong_protocol(snap: Any) -> None:
    e = ask(snap, "svc/default/syslog")
    d = diag(e, "named-port-protocol")
    assert "is UDP, but pod syslog-1 declares 'syslog' as 514/TCP" in d.message
    assert "named-port-unresolved" not in codes(e) and [o.verdict for o in e.outcomes] == ["reject"]


def test_headless_not_ready_and_external_name_headers(snap: Any, tmp_path: Path) -> None:
    d = diag(ask(snap, "svc/default/db"), "headless-not-ready")
    assert "db-1 (10.244.1.50)" in d.message and d.severity == "warning" and "db-0" not in d.message
    o = objs()
    find(o, "Service", "default", "db")["spec"]["publishNotReadyAddresses"] = True
    d = diag(ask(snap_of(tmp_path, o), "svc/default/db"), "headless-not-ready")
    assert d.severity == "info" and "also returns its not-ready pods: db-1" in d.message
    x = diag(ask(snap, "svc/default/payments"), "external-name")
    assert (
        "Host header and TLS's SNI say payments.default.svc" in x.message
        and "api.payments.example.com" in x.hint
    )
    find(o, "Service", "default", "payments")["spec"]["externalName"] = "192.0.2.10"
    x = diag(ask(snap_of(tmp_path, o, name="ip"), "svc/default/payments"), "external-name")
    assert x.severity == "error" and "is an IP address (192.0.2.10)" in x.message and "EndpointSlice" in x.hint


def test_session_affinity_read_from_the_walked_rules(snap: Any, tmp_path: Path) -> None:
    d = diag(ask(snap, "svc/default/cart", source="pod/other/debug"), "session-affinity")
    assert (
        "`-m recent --rcheck --seconds 600`" in d.message
        and "for 600 s" in d.message
        and d.severity == "info"
    )
    # the rules, not the Service, say the timeout: a dump with 900 s is read as 900 s and the difference named
    files = trouble.files()
    root = tmp_path / "edited"
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text.replace("--seconds 600", "--seconds 900"))
    d = diag(ask(load_snapshot(str(root)), "svc/default/cart", source="pod/other/debug"), "session-affinity")
    assert "for 900 s, while default/cart asks for 600 s" in d.message and d.severity == "warning"
    # a Service asking for affinity whose node rules have none (stale rules): said, not assumed
    o = objs()
    find(o, "Service", "default", "cart")["spec"]["sessionAffinity"] = "None"
    dumps = trouble.files(o)
    o2 = objs()
    root2 = tmp_path / "stale"
    for rel, text in trouble.files(o2).items():
        (root2 / rel).parent.mkdir(parents=True, exist_ok=True)
        (root2 / rel).write_text(dumps[rel] if rel.endswith("iptables-save") else text)
    d = diag(ask(load_snapshot(str(root2)), "svc/default/cart", source="pod/other/debug"), "session-affinity")
    assert "has no affinity check" in d.message
    assert "session-affinity" not in codes(ask(snap, "svc/shop/api", source="pod/shop/frontend"))
    # IPVS mode: the virtual service's persistence; nftables mode: the affinity set's timeout (demo's node03/04)
    demo = load_snapshot("demo")
    ipvs = diag(ask(demo, "svc/session", source="node/node03"), "session-affinity").message
    assert "IPVS virtual service line" in ipvs and "-p 10800`" in ipvs and "for 10800 s" in ipvs
    nft = diag(ask(demo, "svc/session", source="node/node04"), "session-affinity").message
    assert "nft set affinity-" in nft and "timeout 10800 s" in nft and "for 10800 s" in nft


def test_service_env_missing_and_dns_from_another_namespace(snap: Any, tmp_path: Path) -> None:
    e = ask(snap, "svc/shop/cache", source="pod/shop/frontend")
    d = diag(e, "service-env-missing")
    assert "before shop/cache (2026-11-20T10:00:00Z)" in d.message and "CACHE_SERVICE_HOST" in d.message
    assert "service-env-missing" not in codes(
        ask(snap, "svc/shop/api", source="pod/shop/frontend")
    )  # older Service
    e = ask(snap, "web", namespace="shop", source="pod/other/debug")
    d = diag(e, "dns-other-namespace")
    assert "web.other.svc.cluster.local), which does not exist" in d.message
    assert "web.shop (or web.shop.svc, web.shop.svc.cluster.local)" in d.hint
    assert "dns-other-namespace" not in codes(ask(snap, "web.shop", source="pod/other/debug"))
    o = objs()
    o.append(trouble.service("web", "other", [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 80}],
                             None, "10.96.100.99"))
    e = ask(snap_of(tmp_path, o, name="namesake"), "web", namespace="shop", source="pod/other/debug")
    assert "(web.other.svc.cluster.local), which is other/web, a different Service" in diag(
        e, "dns-other-namespace").message
    assert "dns-other-namespace" not in codes(ask(snap, "svc/shop/web", source="pod/shop/frontend"))


def test_dns_resolver_of_a_host_network_pod(snap: Any, tmp_path: Path) -> None:
    d = diag(ask(snap, "svc/default/cart", source="pod/default/node-agent"), "dns-resolver")
    assert "falls back to the node's resolv.conf" in d.message and d.severity == "error"
    o = objs()
    find(o, "Pod", "default", "node-agent")["spec"]["dnsPolicy"] = "ClusterFirstWithHostNet"
    find(o, "Pod", "other", "debug")["spec"]["dnsConfig"] = {
        "options": [{"name": "ndots", "value": "2"}],
        "searches": ["corp.example"],
    }
    s = snap_of(tmp_path, o)
    d = diag(ask(s, "svc/default/cart", source="pod/default/node-agent"), "dns-resolver")
    assert "search default.svc.cluster.local svc.cluster.local cluster.local, ndots:5" in d.message
    d = diag(ask(s, "svc/default/cart", source="pod/other/debug"), "dns-resolver")
    assert "cluster.local corp.example, ndots:2" in d.message and "cart.default, " in d.message
    # dnsPolicy None: the cluster's DNS only when a nameserver is a DNS Service's cluster IP
    for servers, cluster in ((["10.96.0.10"], True), (["8.8.8.8"], False)):
        find(o, "Pod", "other", "debug")["spec"].update(dnsPolicy="None", dnsConfig={"nameservers": servers})
        d = diag(ask(snap_of(tmp_path, o, name=servers[0]), "svc/default/cart", source="pod/other/debug"),
                 "dns-resolver")
        assert (d.severity == "info") is cluster and ("does not ask the cluster's DNS" in d.message) is not cluster


# -- conntrack -----------------------------------------------------------------------------------------------


def test_conntrack_stale_udp_dns_entry(snap: Any, tmp_path: Path) -> None:
    e = ask(snap, "svc/kube-system/kube-dns", source="pod/other/client")
    d = diag(e, "conntrack-stale")
    assert "1 UDP flow to 10.96.0.10:53 pinned to 10.244.0.9" in d.message
    assert e.exit_code == 0  # the flow asked about is a new one: it is translated afresh
    assert "`conntrack -D -p udp --orig-dst 10.96.0.10 --orig-port-dst 53 --reply-src 10.244.0.9`" in d.hint
    # the TCP port of the same Service has no stale flow; nor has the TCP flow to shop/api (its pod is there)
    assert "conntrack-stale" not in codes(
        ask(snap, "svc/kube-system/kube-dns", port="dns-tcp", source="pod/other/client")
    )
    assert "conntrack-stale" not in codes(ask(snap, "svc/shop/api", source="pod/shop/frontend"))
    # plain `conntrack -L` (no ipv4 prefix) reads alike
    plain = "\n".join(line.split(None, 2)[2] for line in trouble.CONNTRACK_NODE01.splitlines()) + "\n"
    plain += "conntrack v1.4.7 (conntrack-tools): 3 flow entries have been shown.\n"
    s = snap_of(tmp_path, conntrack=plain, name="plain")
    assert "conntrack-stale" in codes(ask(s, "svc/kube-system/kube-dns", source="pod/other/client"))


def test_conntrack_parser_errors_name_file_and_line(tmp_path: Path) -> None:
    from svctrace.dataplane.conntrack import parse_conntrack

    flows = parse_conntrack(trouble.CONNTRACK_NODE01)
    assert [(f.proto, f.orig.dst, f.reply.src, f.state) for f in flows] == [
        ("udp", "10.96.0.10", "10.244.0.9", None),
        ("udp", "10.96.0.10", "10.244.0.2", None),
        ("tcp", "10.96.100.20", "10.244.2.20", "ESTABLISHED"),
    ]
    assert flows[0].flags == ("ASSURED",) and flows[2].timeout == 86390
    for bad, why in (
        ("udp 17 29 src=1.1.1.1 dst=2.2.2.2 sport=1 dport=2\n", "two src="),
        ("hello world\n", "not a conntrack flow"),
        (
            "udp 17 29 src=1.1.1.1 dst=2.2.2.2 sport=x dport=2 src=2.2.2.2 dst=1.1.1.1 sport=2 dport=1\n",
            "sport 'x' is not a number",
        ),
    ):
        with pytest.raises(InputError) as ei:
            parse_conntrack("\n" + bad, "nodes/node01/conntrack")
        assert str(ei.value).startswith("nodes/node01/conntrack:2: ") and why in str(ei.value)
    s = snap_of(tmp_path, conntrack="garbage line\n")
    with pytest.raises(InputError, match=r"nodes/node01/conntrack:1: not a conntrack flow"):
        ask(s, "svc/kube-system/kube-dns", source="pod/other/client")


def test_trouble_json_carries_every_code(snap: Any) -> None:
    """The JSON form carries the codes (docs/cli.md's contract)."""
    got = json.loads(json.dumps(ask(snap, "svc/shop/web", source="pod/shop/frontend").to_json()))
    assert "netpol-service-port" in [d["code"] for d in got["diagnostics"]]


def test_netpol_cost_is_per_pod_shape_not_per_endpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Deployment's replicas share labels and ports: the policies are evaluated once for them all, and every
    replica still gets its own verdict (named in the message)."""
    from svctrace.explain import netpol

    o = objs()
    pods = [trouble.pod(f"web-r{i}", "shop", {"app": "web"}, "node02", f"10.244.2.{100 + i}", [("http", 8080, "TCP")])
            for i in range(40)]
    o = [x for x in o if not (x["kind"] == "EndpointSlice" and x["metadata"]["name"].startswith("web-"))] + pods
    svc = find(o, "Service", "shop", "web")
    o += trouble.endpoint_slices_for(svc, [x for x in o if x["kind"] == "Pod"])
    s = snap_of(tmp_path, o)
    calls: list[str] = []
    real = netpol.evaluate

    def counting(*a: Any, **kw: Any) -> Any:
        calls.append(a[2].name)
        return real(*a, **kw)

    monkeypatch.setattr(netpol, "evaluate", counting)
    e = ask(s, "svc/shop/web", source="pod/other/debug")
    assert len(e.outcomes) == 42 and "and 38 more" in diag(e, "netpol-ingress-denied").message
    # ingress: one call per shape (web-1 on node01; web-2 and the 40 replicas on node02), and egress alike
    assert len(calls) == 4 and calls.count("debug") == 2 and "web-1" in calls
