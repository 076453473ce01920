"""kube-proxy as it runs on a node: `simulate` honours the configuration fields that change rules, writes
--random-fully and the nfacct counters where a real node gets them, and each version's rule changes (rows of
svctrace/kubeproxy/versions.py) are checked against wild dumps of their era (tests/corpus/wild)."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest
import yaml
from conftest import CORPUS

from svctrace.kubeproxy.config import ProxyConfig
from svctrace.kubeproxy.render.iptables import generate, to_save
from svctrace.kubeproxy.simulate import simulate
from svctrace.kubeproxy.versions import FEATURES, MODES

WILD = CORPUS / "wild" / "iptables-save"

APP = """
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080, nodePort: 30080}]
---
apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: default, labels: {app: web}}
spec: {nodeName: node-1, containers: [{name: c, image: x, ports: [{containerPort: 8080}]}]}
status: {podIP: 10.244.0.5, phase: Running, conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Node
metadata: {name: node-1}
spec: {podCIDR: 10.244.0.0/24, podCIDRs: [10.244.0.0/24]}
status: {addresses: [{type: InternalIP, address: 192.168.0.10}]}
"""


def _objs(config: dict[str, Any] | None = None, flags: list[str] | None = None) -> list[dict[str, Any]]:
    objs = list(yaml.safe_load_all(APP))
    if config is not None:
        doc = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clusterCIDR": "10.244.0.0/16",
            **config,
        }
        objs.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "kube-proxy", "namespace": "kube-system"},
                "data": {"config.conf": yaml.safe_dump(doc)},
            }
        )
    if flags is not None:
        objs.append(
            {
                "apiVersion": "apps/v1",
                "kind": "DaemonSet",
                "metadata": {"name": "kube-proxy", "namespace": "kube-system"},
                "spec": {
                    "template": {
                        "spec": {"containers": [{"name": "kube-proxy", "command": ["kube-proxy", *flags]}]}
                    }
                },
            }
        )
    return objs


def _dump(config: dict[str, Any] | None = None, flags: list[str] | None = None, **kw: Any) -> str:
    sim = simulate(_objs(config, flags), **kw)
    return sim.dumps["node-1"]


def _rules(dump: str, chain: str) -> list[str]:
    return [x for x in dump.splitlines() if x.startswith(f"-A {chain} ")]


# -- configuration fields -------------------------------------------------------------------------------


def test_masquerade_all_and_bit() -> None:
    base = _dump({})
    assert any("! -s 10.244.0.0/16" in r for r in _rules(base, "KUBE-SVC-CDGGSHYLG3RE2FKL"))
    every = _dump({"iptables": {"masqueradeAll": True}})
    svc = _rules(every, "KUBE-SVC-CDGGSHYLG3RE2FKL")
    assert svc[0].endswith("-j KUBE-MARK-MASQ") and "! -s" not in svc[0]
    bit = _dump({"iptables": {"masqueradeBit": 13}})
    assert "0x2000/0x2000" in bit and "0x4000" not in bit
    assert _rules(bit, "KUBE-MARK-MASQ") == ["-A KUBE-MARK-MASQ -j MARK --set-xmark 0x2000/0x2000"]


def test_localhost_nodeports_and_nodeport_addresses() -> None:
    on = _dump({})
    assert any("block incoming localnet connections" in x for x in on.splitlines())
    off = _dump({"iptables": {"localhostNodePorts": False}})
    last = _rules(off, "KUBE-SERVICES")[-1]
    assert "! -d 127.0.0.0/8" in last and last.endswith("-j KUBE-NODEPORTS")
    only = _dump({"nodePortAddresses": ["192.168.0.0/24"]})
    assert _rules(only, "KUBE-SERVICES")[-1].startswith("-A KUBE-SERVICES -d 192.168.0.10/32 ")


@pytest.mark.parametrize(
    ("config", "want"),
    [
        ({"detectLocalMode": "ClusterCIDR"}, "! -s 10.244.0.0/16"),
        ({"detectLocalMode": "NodeCIDR"}, "! -s 10.244.0.0/24"),
        ({"detectLocalMode": "BridgeInterface", "detectLocal": {"bridgeInterface": "cbr0"}}, "! -i cbr0"),
        (
            {"detectLocalMode": "InterfaceNamePrefix", "detectLocal": {"interfaceNamePrefix": "veth"}},
            "! -i veth+",
        ),
    ],
)
def test_detect_local_modes(config: dict[str, Any], want: str) -> None:
    svc = _rules(_dump(config), "KUBE-SVC-CDGGSHYLG3RE2FKL")
    assert want in svc[0] and svc[0].endswith("-j KUBE-MARK-MASQ"), svc[0]


def test_daemonset_flags_win_over_the_configmap() -> None:
    dump = _dump({"iptables": {"masqueradeBit": 13}}, ["--iptables-masquerade-bit=12", "--masquerade-all"])
    assert "0x1000/0x1000" in dump
    assert "! -s" not in _rules(dump, "KUBE-SVC-CDGGSHYLG3RE2FKL")[0]


def test_detect_local_modes_need_their_version_and_mode() -> None:
    with pytest.raises(ValueError, match=r"needs kube-proxy 1\.23"):
        _dump(
            {"detectLocalMode": "BridgeInterface", "detectLocal": {"bridgeInterface": "cbr0"}},
            kube_version="1.22",
        )
    with pytest.raises(ValueError, match="iptables mode only"):
        _dump({"detectLocalMode": "NodeCIDR"}, mode="nftables", kube_version="1.31")


# -- node facts: --random-fully, nfacct --------------------------------------------------------------------


def test_random_fully_where_a_real_node_gets_it() -> None:
    assert _rules(_dump(kube_version="1.16"), "KUBE-POSTROUTING")[-1].endswith("-j MASQUERADE --random-fully")
    assert "--random-fully" not in _dump(kube_version="1.15")  # kube-proxy 1.15 never asks
    assert "--random-fully" not in _dump(kube_version="1.30", random_fully=False)  # an iptables before 1.6.2


def test_nfacct_counters_by_version() -> None:
    v129, v130, v131 = (_dump(kube_version=v) for v in ("1.29", "1.30", "1.31"))
    assert "nfacct" not in v129
    assert _rules(v130, "KUBE-FORWARD")[0] == (
        "-A KUBE-FORWARD -m conntrack --ctstate INVALID -m nfacct "
        "--nfacct-name  ct_state_invalid_dropped_pkts -j DROP"
    )
    assert "localhost_nps_accepted_pkts" not in v130
    nps = _rules(v131, "KUBE-NODEPORTS")
    assert nps[0] == (
        '-A KUBE-NODEPORTS -d 127.0.0.0/8 -p tcp -m comment --comment "default/web:http" -m tcp '
        "--dport 30080 -m nfacct --nfacct-name  localhost_nps_accepted_pkts -j KUBE-EXT-CDGGSHYLG3RE2FKL"
    )
    assert nps[1].startswith(
        '-A KUBE-NODEPORTS -p tcp -m comment --comment "default/web:http" -m tcp --dport 30080'
    )
    assert "nfacct" not in _dump(kube_version="1.31", nfacct=False)
    assert "localhost_nps" not in _dump({"iptables": {"localhostNodePorts": False}}, kube_version="1.31")


# -- versions: refused outside the modelled range, each row against a wild dump of its era ---------------------


def test_an_unmodelled_version_is_refused_with_the_range() -> None:
    with pytest.raises(
        ValueError,
        match=r"kube-proxy 1\.7 is not modelled in iptables mode \(svctrace models "
        r"1\.14\+\)",
    ):
        _dump(kube_version="1.7")
    assert MODES["iptables"].range_text == "1.14+"


def _kube_lines(text: str, chains: tuple[str, ...]) -> dict[str, list[str]]:
    """The rules of each of `chains` in a dump, in order, counters and blanks gone."""
    out: dict[str, list[str]] = {c: [] for c in chains}
    for x in text.splitlines():
        x = re.sub(r"^\[\d+:\d+\]\s*", "", x.strip())
        for c in chains:
            if x.startswith(f"-A {c} "):
                out[c].append(x)
    return out


def _render(version: str, **kw: Any) -> str:
    cfg = ProxyConfig(
        node_name="n", node_ips=("192.168.0.10",), cluster_cidr="10.244.0.0/16", kube_version=version, **kw
    )
    return to_save(generate([], [], cfg))


@pytest.mark.parametrize(
    ("wild", "version", "rows"),
    [
        # v1.22.8 (kubeadm): 3-rule KUBE-POSTROUTING with --random-fully, two KUBE-FORWARD conntrack rules
        (
            "001-kubeadm-flannel-libvirt-v1.22.txt",
            "1.22",
            ("postrouting-clear-mark", "masquerade-random-fully", "forward-invalid-drop"),
        ),
        # ~1.25/1.26 (kubeadm, 2023) and 1.2x (2024): one conntrack rule
        ("026-kubeadm-flannel-2023-nodeport-kube-ext-nat-first.txt", "1.26", ("forward-conntrack-one-rule",)),
        ("006-flannel-v1.2x-proxy-firewall-2024.txt", "1.28", ("forward-conntrack-one-rule",)),
    ],
)
def test_rows_against_wild_dumps_of_their_era(wild: str, version: str, rows: tuple[str, ...]) -> None:
    text = (WILD / wild).read_text()
    chains = ("KUBE-POSTROUTING", "KUBE-FORWARD", "KUBE-MARK-MASQ")
    mine = _render(version, random_fully=True)
    assert _kube_lines(mine, chains) == _kube_lines(text, chains)
    for row in rows:
        assert FEATURES[row].in_version((int(version.split(".")[0]), int(version.split(".")[1])))


def test_postrouting_before_1_19_against_a_wild_1_11_dump() -> None:
    # The 1.11.5 dump (pre-range: no INVALID drop) shows the one-rule KUBE-POSTROUTING kube-proxy wrote before 1.19
    # (and before 1.16 without --random-fully): the renderer's 1.14-1.15 shape is the same rule.
    text = (WILD / "005-weave-npc-v1.11-2018.txt").read_text()
    assert _kube_lines(_render("1.15", random_fully=True), ("KUBE-POSTROUTING",)) == _kube_lines(
        text, ("KUBE-POSTROUTING",)
    )
    assert _kube_lines(_render("1.18", random_fully=True), ("KUBE-POSTROUTING",))["KUBE-POSTROUTING"] == [
        '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -m mark --mark '
        "0x4000/0x4000 -j MASQUERADE --random-fully"
    ]


def test_simulate_is_linear_in_the_config_reading() -> None:
    # a configuration with every field: one pass (and a copy of the objects is not mutated)
    objs = _objs(
        {
            "iptables": {"masqueradeAll": True, "masqueradeBit": 13, "localhostNodePorts": False},
            "nodePortAddresses": ["192.168.0.0/24"],
            "conntrack": {"tcpBeLiberal": True},
        }
    )
    before = copy.deepcopy(objs)
    sim = simulate(objs, kube_version="1.31")
    assert objs == before
    assert sum("kube-proxy configuration:" in n for n in sim.notes) == 6


def test_nftables_mode_honours_the_configuration_too() -> None:
    base = _dump({}, mode="nftables", kube_version="1.31")
    every = _dump({"iptables": {"masqueradeAll": True}, "nftables": {"masqueradeBit": 13}}, mode="nftables",
                  kube_version="1.31")
    svc = lambda text: [x.strip() for x in text.split("chain service-SUSTUHLJ")[1].splitlines()[1:3]]  # noqa: E731
    assert "ip saddr != 10.244.0.0/16" in svc(base)[0]
    assert "ip saddr" not in svc(every)[0] and "jump mark-for-masquerade" in svc(every)[0]
    assert "0x00002000" in every and "0x00004000" not in every
