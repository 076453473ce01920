"""How SSH collection scales: one node against N nodes at once, over real SSH (tests/sshlab.py).

Run from the repository root, as root (network namespaces, sshd):

    .venv/bin/python bench/collect_ssh_scale.py                 # 1 vs 20 nodes, 5 runs each
    .venv/bin/python bench/collect_ssh_scale.py --nodes 40 --parallel 40 --repeat 3
    .venv/bin/python bench/collect_ssh_scale.py --rules bench/out/kube-proxy-1000-seed1.iptables-save

Every "node" is a network namespace with its own sshd, hostname and iptables rules (the demo cluster's
node01 dump by default), reached from a client namespace over veth pairs. Prints the median wall time of
`collect_nodes_ssh` for 1 node, for N nodes at once (--parallel, default N) and for N nodes one at a
time (parallel=1), the ratios, and where the CPU went: the collector's process (paramiko, parsing) and the nodes' side (sshd, the shell and
the dump tools, read from each sshd's /proc/PID/stat including its reaped children). All "nodes" share
this machine's CPUs, so N nodes cost N times the node-side CPU here, unlike a real cluster.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from sshlab import KUBELET_HINTS, SSHLab, lab_available  # noqa: E402

from svctrace.collect.ssh import collect_nodes_ssh  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def node_cpu(lab: SSHLab) -> float:
    """CPU seconds used so far by every lab sshd and its finished children (sessions, shells, tools)."""
    total = 0
    for node in lab.nodes.values():
        for p in node.procs:
            try:
                fields = Path(f"/proc/{p.pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    return total / TICK


def self_cpu() -> float:
    t = os.times()
    return t.user + t.system


def run(lab: SSHLab, hosts: list[str], opts: dict[str, str], parallel: int) -> tuple[float, float, float]:
    n0, s0, t0 = node_cpu(lab), self_cpu(), time.perf_counter()
    with lab.client():
        nodes = collect_nodes_ssh(hosts, parallel=parallel, known_hosts=opts["known_hosts"],
                                  ssh_config=opts["ssh_config"])
    wall = time.perf_counter() - t0
    bad = [n for n in nodes if not n.ok]
    if bad:
        raise SystemExit(f"collection failed: {bad[0].host}: {bad[0].errors[0].error}")
    return wall, self_cpu() - s0, node_cpu(lab) - n0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=20)
    ap.add_argument("--parallel", type=int, default=0, help="nodes at a time (default: all of them)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--rules", type=Path, default=ROOT / "svctrace/data/demo/nodes/node01/iptables-save")
    args = ap.parse_args()
    ok, why = lab_available()
    if not ok:
        raise SystemExit(f"cannot run the SSH lab here: {why}")
    rules = args.rules.read_text() + KUBELET_HINTS
    parallel = args.parallel or args.nodes
    t_setup = time.perf_counter()
    with SSHLab() as lab, tempfile.TemporaryDirectory() as tmp:
        os.environ.pop("SSH_AUTH_SOCK", None)
        os.environ["HOME"] = tmp
        nodes = [lab.add_node(f"bench-{i:03d}", rules=rules) for i in range(args.nodes)]
        setup = time.perf_counter() - t_setup
        opts = {"known_hosts": str(lab.known_hosts(Path(tmp) / "known_hosts", nodes)),
                "ssh_config": str(lab.ssh_config(Path(tmp) / "ssh_config"))}
        run(lab, [nodes[0].addr], opts, 1)  # warm-up (imports, page cache)
        one = [run(lab, [nodes[0].addr], opts, 1) for _ in range(args.repeat)]
        many = [run(lab, [n.addr for n in nodes], opts, parallel) for _ in range(args.repeat)]
        seq = [run(lab, [n.addr for n in nodes], opts, 1) for _ in range(max(1, args.repeat // 2))]
    cpus = len(os.sched_getaffinity(0))
    med = [statistics.median(x[i] for x in one) for i in range(3)]
    medn = [statistics.median(x[i] for x in many) for i in range(3)]
    meds = [statistics.median(x[i] for x in seq) for i in range(3)]
    print(f"{cpus} CPUs, {args.nodes} lab nodes (set up in {setup:.1f} s), rules: {args.rules.name} "
          f"({len(rules.splitlines())} lines), parallel={parallel}, median of {args.repeat} runs\n")
    print("| nodes | wall | collector CPU | node-side CPU (sshd, shell, tools) |")
    print("|---|---|---|---|")
    print(f"| 1 | {med[0]:.3f} s | {med[1]:.3f} s | {med[2]:.3f} s |")
    print(f"| {args.nodes}, {parallel} at a time | {medn[0]:.3f} s | {medn[1]:.3f} s | {medn[2]:.3f} s |")
    print(f"| {args.nodes}, one at a time | {meds[0]:.3f} s | {meds[1]:.3f} s | {meds[2]:.3f} s |")
    print(f"\nratio {args.nodes} / 1 nodes: {medn[0] / med[0]:.2f}x wall "
          f"(runs: 1 node {', '.join(f'{x[0]:.2f}' for x in one)}; "
          f"{args.nodes} nodes {', '.join(f'{x[0]:.2f}' for x in many)})")
    print(f"{args.nodes} nodes at once vs one at a time: {meds[0] / medn[0]:.1f}x faster")
    floor = (medn[1] + medn[2]) / cpus
    print(f"CPU floor for {args.nodes} nodes on {cpus} CPUs: {floor:.2f} s "
          f"({floor / med[0]:.1f}x the 1-node wall time)")


if __name__ == "__main__":
    main()
