"""IPVS against a real kernel, in a throwaway VM (tests/vmlab, tests/ipvs_vm.py).

This machine's kernel may have no ip_vs module; the VM boots Debian's cloud kernel, which has it. Every node case
(kube-proxy's IPVS rules as svctrace's `generate_ipvs` writes them, some edited as an operator would) is restored
with the real `ipset restore`, `iptables-restore` and `ipvsadm -R` in its own network namespace, real TCP/UDP
connections and pings are sent from client, node and endpoint namespaces, and each endpoint answers with the
address it was reached on and the source it saw. svctrace walks the same packets through the same files; the
kernel must do what svctrace predicts (tests/ipvs_vm.py `compare`: the fates it showed were predicted, exact
counts for rr and wrr, one server per client where sh or persistence promise it).

All cases run in one VM boot: the fixed cases, random clusters of a fixed seed, and random clusters of a fresh
seed (printed; `SVCTRACE_VM_SEED=<n>` repeats it). `SVCTRACE_VM_TABLE=<file>` writes the agreement table as
Markdown. Without qemu or the kernel package the tests skip with the reason, unless `SVCTRACE_VMLAB_REQUIRED=1`
(CI sets it), where they fail.
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from typing import Any

import ipvs_vm as iv
import pytest
import vmlab
from conftest import WILD

FIXED_SEED = 1
RANDOM_CASES = 3
FRESH_CASES = 2
FRESH_SEED = int(os.environ.get("SVCTRACE_VM_SEED") or random.SystemRandom().randrange(2, 10**6))


def vm(f: Any) -> Any:
    """A test that boots the VM (marker `vm`; slow)."""
    return pytest.mark.vm(pytest.mark.slow(f))


def _lab() -> vmlab.VMLab:
    ok, why = vmlab.available()
    if not ok:
        if os.environ.get("SVCTRACE_VMLAB_REQUIRED") == "1":
            pytest.fail(f"the VM lab is required here but cannot run: {why}")
        pytest.skip(f"VM lab unavailable: {why}")
    return vmlab.VMLab()


# The fixed cases, and a listing from the wild restored as it stands (tests/corpus/wild, ipvsadm/001).
FIXED = [*iv.fixed_cases(), iv.wild_case(WILD)]


@pytest.fixture(scope="module")
def run() -> dict[str, Any]:
    lab = _lab()
    cases = [
        *FIXED,
        *(iv.random_case(FIXED_SEED, i) for i in range(RANDOM_CASES)),
        *(iv.random_case(FRESH_SEED, i) for i in range(FRESH_CASES)),
    ]
    script, files = iv.script(cases)
    t0 = time.monotonic()
    res = lab.run(script, files)
    assert res.rc == 0 and "END" in res.output, (res.rc, res.output[-2000:], res.console[-2000:])
    assert res.modules_failed == (), res.modules_failed
    tallies, errors = iv.parse_output(res.output)
    assert errors == [], errors
    rows = [iv.compare(c, p, tallies.get((i, p.id), {})) for i, c in enumerate(cases) for p in c.probes]
    if os.environ.get("SVCTRACE_VM_TABLE"):
        with open(os.environ["SVCTRACE_VM_TABLE"], "w") as f:
            f.write(
                f"<!-- one VM boot, {res.seconds:.1f} s, kernel {lab.image.kernel_version}, "
                f"seeds {FIXED_SEED} and {FRESH_SEED} -->\n"
            )
            f.write(iv.markdown(rows))
            f.write(
                "\n<!-- "
                + " ".join(line for line in res.output.splitlines() if line.startswith("T "))
                + " -->\n"
            )
    return {
        "rows": rows,
        "cases": cases,
        "seconds": time.monotonic() - t0,
        "listings": iv.listings(res.output),
    }


@vm
@pytest.mark.parametrize(
    ("ci", "probe"),
    [pytest.param(ci, p.id, id=f"{c.name}:{p.id}") for ci, c in enumerate(FIXED) for p in c.probes],
)
def test_fixed_case_agrees_with_the_kernel(run: dict[str, Any], ci: int, probe: str) -> None:
    (row,) = [r for r in run["rows"] if r.case == FIXED[ci].name and r.probe.id == probe]
    assert row.agree, f"{row.probe.what}: svctrace {row.predicted}; kernel {row.kernel}: {row.why}"


@vm
def test_the_kernels_own_listing_reads_as_the_restored_table(run: dict[str, Any]) -> None:
    """`ipvsadm -Ln` as the kernel prints it (sorted, `Masq`, `persistent 600`, `mh-port`) reads back, through
    svctrace's listing reader, as the same services, schedulers, persistence, flags and real servers as the
    `ipvsadm -Sn` that was restored (which svctrace's other reader parsed)."""
    cases, listings = run["cases"], run["listings"]
    assert sorted(listings) == list(range(len(cases)))
    for i, case in enumerate(cases):
        assert iv.table_facts(listings[i]) == iv.table_facts(case.ipvsadm), case.name


@vm
@pytest.mark.parametrize("seed", [pytest.param(FIXED_SEED, id="fixed-seed"), pytest.param(FRESH_SEED, id="fresh-seed")])
def test_random_ipvs_clusters_agree_with_the_kernel(run: dict[str, Any], seed: int) -> None:
    rows = [r for r in run["rows"] if r.case.startswith(f"random {seed}/")]
    assert len(rows) >= 5, [r.case for r in run["rows"]][-5:]
    bad = [
        f"{r.case} {r.probe.id}: svctrace {r.predicted}; kernel {r.kernel}: {r.why}"
        for r in rows
        if not r.agree
    ]
    assert not bad, f"seed {seed} (SVCTRACE_VM_SEED={seed} repeats it): " + "\n".join(bad)


_FACTS = r"""cat /proc/sys/net/bridge/bridge-nf-call-iptables; ls /proc/sys/net/ipv4/vs/conntrack
ipvsadm -v; ipset -v | head -1; iptables -V; conntrack -V; /sbin/ip -V; cat in.txt
ip() { /sbin/ip "$@"; }
ip netns add n; ip netns add b
ip link add v netns n type veth peer name e netns b
ip -n n link set v up; ip -n n link set lo up; ip -n n addr add 10.0.0.1/24 dev v
ip -n b link set e up; ip -n b link set lo up; ip -n b route add 10.0.0.0/24 dev e
for k in 1 2 3; do ip -n b addr add 10.0.0.1$k/32 dev e; done
ip -n n link add dum type dummy; ip -n n addr add 10.96.0.1/32 dev dum
vmprobe -n b serve 80 >/dev/null &
ip netns exec n ipvsadm -A -t 10.96.0.1:80 -s rr
for k in 2 3 1; do ip netns exec n ipvsadm -a -t 10.96.0.1:80 -r 10.0.0.1$k:80 -m; done
echo SAVE; ip netns exec n ipvsadm -Sn; echo ORDER
sleep 0.3
for i in 1 2 3 4; do vmprobe -n n tcp 10.0.0.1 10.96.0.1 80 1; done
echo BRIDGE
ip netns add br; ip netns add p1; ip netns add p2
ip -n br link add br0 type bridge; ip -n br link set br0 up; ip -n br link set lo up
for k in 1 2; do
  ip link add e$k netns br type veth peer name eth0 netns p$k
  ip -n br link set e$k master br0; ip -n br link set e$k up
  ip -n p$k link set eth0 up; ip -n p$k addr add 10.1.0.$k/24 dev eth0
done
ip netns exec br sh -c 'echo 1 > /proc/sys/net/bridge/bridge-nf-call-iptables'
ip netns exec br iptables -A FORWARD -s 10.1.0.1 -d 10.1.0.2 -m physdev --physdev-is-bridged -j ACCEPT
vmprobe -n p2 serve 80 >/dev/null &
sleep 0.3
vmprobe -n p1 tcp 10.1.0.1 10.1.0.2 80 3
ip netns exec br iptables -L FORWARD -v -n -x | grep physdev
"""


@vm
def test_the_lab_its_tools_br_netfilter_and_the_rr_order() -> None:
    lab = _lab()
    res = lab.run(_FACTS, {"in.txt": "files arrive\n"})
    assert res.rc == 0, res.output
    # br_netfilter is there for bridge cases (bridged IPv4 goes through iptables).
    assert lab.br_netfilter and res.output.startswith("1\n"), res.output
    for word in (
        "/proc/sys/net/ipv4/vs/conntrack",
        "ipvsadm v1.",
        "ipset v",
        "(nf_tables)",
        "conntrack v",
        "iproute2",
        "files arrive",
    ):
        assert word in res.output, (word, res.output)
    # Real servers added in the order .12, .13, .11: `ipvsadm -Sn` prints them sorted, and rr walks the kernel's
    # list, where each new server goes to the front (list_add_rcu in ip_vs_ctl.c): the last added first, then
    # backwards through the insertion order. So no dump tells which server gets the next connection; svctrace
    # gives rr's shares only.
    save = res.output.split("SAVE\n")[1].split("ORDER\n")[0].split()
    assert [w for w in save if w.startswith("10.0.0.1")] == [
        "10.0.0.11:80",
        "10.0.0.12:80",
        "10.0.0.13:80",
    ]
    # A bridged TCP connection (two pods on one bridge, in a third namespace) passes iptables FORWARD there,
    # as br_netfilter makes it: the rule's packet counter moved.
    bridged = res.output.split("BRIDGE\n")[1]
    assert bridged.count("1 ok 10.1.0.2:80 10.1.0.1:") == 3, bridged
    counter = bridged.strip().splitlines()[-1].split()
    assert counter[-1] == "--physdev-is-bridged" and int(counter[0]) >= 3, bridged
    order = [
        line.split()[2]
        for line in res.output.split("ORDER\n")[1].split("BRIDGE\n")[0].splitlines()
        if " ok " in f" {line}"
    ]
    assert order == ["10.0.0.11:80", "10.0.0.13:80", "10.0.0.12:80", "10.0.0.11:80"], res.output


# --------------------------------------------------------------------------- the judge can say no


@pytest.mark.parametrize("kernel", ["one backend", "masquerade", "a refusal", "too few"])
def test_compare_fails_when_the_kernel_disagrees(kernel: str) -> None:
    """Controls (no VM): the comparison rejects a tally that contradicts the prediction."""
    case = FIXED[0]
    probe = next(p for p in case.probes if p.id == "cip-pod")  # rr over three, from a pod: no masquerade
    src = probe.srcs[0]
    good = Counter(
        {
            f"ok 10.244.1.11:8080 {src}:40000": 8,
            f"ok 10.244.2.12:8080 {src}:40001": 8,
            f"ok 10.244.3.13:8080 {src}:40002": 8,
        }
    )
    assert iv.compare(case, probe, {src: good}).agree
    bad = {
        "one backend": Counter({f"ok 10.244.1.11:8080 {src}:40000": 16, f"ok 10.244.2.12:8080 {src}:1": 8}),
        "masquerade": Counter(
            {
                f"ok 10.244.1.11:8080 {iv.NODE_IP}:40000": 8,
                f"ok 10.244.2.12:8080 {src}:1": 8,
                f"ok 10.244.3.13:8080 {src}:2": 8,
            }
        ),
        "a refusal": Counter(
            {"refused": 1, f"ok 10.244.2.12:8080 {src}:1": 8, f"ok 10.244.3.13:8080 {src}:2": 15}
        ),
        "too few": Counter({f"ok 10.244.2.12:8080 {src}:1": 8}),
    }[kernel]
    assert not iv.compare(case, probe, {src: bad}).agree
