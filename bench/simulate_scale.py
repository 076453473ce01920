#!/usr/bin/env python3
"""`svctrace simulate` next to the kernel's own tools, at scale (a bench script: it measures and prints).

    python bench/simulate_scale.py                          # 5k and 20k Services, every mode, best of 3
    python bench/simulate_scale.py --sizes 1000,2000 --modes iptables --repeat 1

For each size it builds the objects of a cluster -- 3 Nodes, N Services (a tenth of them NodePort), and
for each Service a Deployment of 3 replicas, so ``simulate`` schedules 3N pods over the nodes and builds
the EndpointSlices itself -- and writes them to ``bench/out/simulate-<N>/objects.json``. Then, per mode:

* the installed ``svctrace simulate -f objects.json --mode M -o DIR`` (every node's files, as a user runs
  it: interpreter start-up included), best of ``--repeat``;
* the kernel's tool on one node's output, each run in a fresh network namespace: ``iptables-restore
  --test`` (iptables), ``nft -c -f`` (nftables), ``ipset restore`` then ``iptables-restore --test``
  (IPVS), best of ``--repeat``;

and prints the ratio table (simulate / kernel tool; the goal is <= 3x). Needs root for the namespaces.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
NODES = 3
REPLICAS = 3
#: A kube-proxy version every mode models (nftables mode needs 1.31+).
VERSION = "1.31"


def objects(n: int) -> dict[str, Any]:
    """3 Nodes (a /16 of pods each), N Services with a Deployment of 3 replicas each."""
    items: list[dict[str, Any]] = []
    for i in range(NODES):
        name = f"node-{i + 1}"
        cidr = f"10.{64 + i}.0.0/16"
        items.append({"apiVersion": "v1", "kind": "Node",
                      "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
                      "spec": {"podCIDR": cidr, "podCIDRs": [cidr]},
                      "status": {"addresses": [{"type": "InternalIP", "address": f"192.168.0.{10 + i}"}]}})
    for i in range(n):
        ns = f"ns-{i % 50}"
        name = f"svc-{i}"
        labels = {"app": name}
        items.append({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
                      "spec": {"type": "NodePort" if i % 10 == 0 else "ClusterIP", "selector": labels,
                               "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]}})
        items.append({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": ns},
                      "spec": {"replicas": REPLICAS, "selector": {"matchLabels": labels},
                               "template": {"metadata": {"labels": labels},
                                            "spec": {"containers": [{"name": "app", "image": "app"}]}}}})
    return {"apiVersion": "v1", "kind": "List", "items": items}


def svctrace_exe() -> str:
    for c in (Path(sys.executable).parent / "svctrace", shutil.which("svctrace")):
        if c and Path(c).exists():
            return str(c)
    raise SystemExit("no installed `svctrace` command (pip install -e .)")


def timed(argv: list[str], stdin: Path | None = None) -> float:
    """Wall time of one run; exits loudly when the command fails."""
    with open(stdin, "rb") if stdin else open(os.devnull, "rb") as f:
        t = time.perf_counter()
        p = subprocess.run(argv, stdin=f, capture_output=True, check=False)
        wall = time.perf_counter() - t
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(argv)}: exit {p.returncode}: {p.stderr.decode(errors='replace')[-400:]}")
    return wall


def in_fresh_netns(script: str) -> float:
    """Wall time of a shell script run in a network namespace of its own (made and removed around it)."""
    ns = f"svctrace-bench-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        return timed(["ip", "netns", "exec", ns, "sh", "-ec", script])
    finally:
        subprocess.run(["ip", "netns", "delete", ns], check=False)


def kernel_script(mode: str, node_dir: Path) -> str:
    if mode == "iptables":
        return f"iptables-restore --test < {node_dir / 'iptables-save'}"
    if mode == "nftables":
        return f"nft -c -f {node_dir / 'nft'}"
    return f"ipset restore < {node_dir / 'ipset'}; iptables-restore --test < {node_dir / 'iptables-save'}"


def bench(n: int, mode: str, repeat: int, exe: str) -> dict[str, Any]:
    base = OUT / f"simulate-{n}"
    base.mkdir(parents=True, exist_ok=True)
    objs = base / "objects.json"
    if not objs.exists():
        objs.write_text(json.dumps(objects(n)))
    sim_runs: list[float] = []
    out_dir = base / mode
    for _ in range(repeat):
        with tempfile.TemporaryDirectory(dir=base) as tmp:
            target = Path(tmp) / "bundle"
            sim_runs.append(timed([exe, "simulate", "-f", str(objs), "--mode", mode, "--kube-version", VERSION,
                                   "-o", str(target)]))
            shutil.rmtree(out_dir, ignore_errors=True)
            shutil.move(str(target), out_dir)
    node_dir = out_dir / "nodes" / "node-1"
    kernel_runs = [in_fresh_netns(kernel_script(mode, node_dir)) for _ in range(repeat)]
    main_file = {"iptables": "iptables-save", "nftables": "nft", "ipvs": "ipset"}[mode]
    return {"services": n, "mode": mode, "simulate_s": min(sim_runs), "kernel_s": min(kernel_runs),
            "simulate_runs": sim_runs, "kernel_runs": kernel_runs,
            "lines": sum(1 for _ in open(node_dir / main_file, "rb"))}


KERNEL_TOOL = {"iptables": "iptables-restore --test", "nftables": "nft -c -f",
               "ipvs": "ipset restore + iptables-restore --test"}


def table(results: list[dict[str, Any]]) -> str:
    rows = ["| Services | mode | one node's lines (IPVS: ipset) | svctrace simulate (3 nodes) | kernel tool (one node) | ratio |",
            "|---|---|---|---|---|---|"]
    for r in results:
        rows.append(f"| {r['services']:,} | {r['mode']} | {r['lines']:,} | {r['simulate_s']:.2f} s | "
                    f"{r['kernel_s']:.2f} s ({KERNEL_TOOL[r['mode']]}) | {r['simulate_s'] / r['kernel_s']:.2f}x |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="5000,20000", help="comma-separated Service counts")
    ap.add_argument("--modes", default="iptables,nftables,ipvs", help="comma-separated proxy modes")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each command (the best is reported)")
    args = ap.parse_args(argv)
    exe = svctrace_exe()
    results = []
    for n in (int(s) for s in args.sizes.split(",")):
        for mode in args.modes.split(","):
            r = bench(n, mode, args.repeat, exe)
            results.append(r)
            print(f"{n} {mode}: simulate {r['simulate_runs']}, kernel {r['kernel_runs']}", file=sys.stderr,
                  flush=True)
    print(f"{os.cpu_count()} CPUs, best of {args.repeat}, {NODES} nodes, {REPLICAS} endpoints per Service\n")
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
