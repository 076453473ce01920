#!/usr/bin/env python3
"""svctrace in IPVS and nftables mode next to the kernel's own tools, on generated nodes.

    python bench/bench_ipvs_nft.py                                # 1k,5k,10k,20k; both modes; best of 3
    python bench/bench_ipvs_nft.py --sizes 1000,10000 --modes ipvs --repeat 1

For each size and mode it writes one node's snapshot directory (``bench/out/<mode>-<N>/``, kept; the
files come from ``svctrace.kubeproxy.render``: kube-proxy's IPVS table, ipsets and iptables rules, or
its nftables table) and measures, on those same files:

* the kernel tools, each in a fresh network namespace: IPVS mode ``ipset restore`` + ``iptables-restore
  --test`` of the node's files; nftables mode ``nft -c -f`` of the node's ruleset;
* ``svctrace trace nodes/<node> --dst .. --dport ..`` as a subprocess (interpreter start, load, walk, JSON);
* in-process: loading the node's files, the first question, and further questions (median and max
  over ``--probes`` different Services).

Every figure is the best of ``--repeat`` runs; the ratios are taken within one run.  Nothing here asserts:
it measures.  Needs root (network namespaces, ipset, nft).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

NODE = "node-1"
NODE_IP = "192.168.0.10"


def objects(n: int, seed: int = 1) -> list[dict[str, Any]]:
    """n Services (15% with two ports, 20% NodePort, 3% ClientIP affinity, 2% without endpoints, 5% UDP), each
    with an EndpointSlice of 1-5 endpoints spread over three nodes, and the nodes."""
    rng = random.Random(seed)
    nodes = [(f"node-{i}", f"192.168.0.{9 + i}") for i in (1, 2, 3)]
    out: list[dict[str, Any]] = [{"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
                                  "spec": {"podCIDR": f"10.244.{i}.0/24"},
                                  "status": {"addresses": [{"type": "InternalIP", "address": ip}]}}
                                 for i, (name, ip) in enumerate(nodes)]
    base = int(ipaddress.ip_address("10.96.0.10"))
    pod = int(ipaddress.ip_address("10.245.0.2"))
    node_port = 30000
    for i in range(n):
        ns, name = f"ns{i % 50}", f"svc-{i}"
        proto = "UDP" if rng.random() < 0.05 else "TCP"
        ports = [{"name": "p0", "port": 80, "targetPort": 8080, "protocol": proto}]
        if rng.random() < 0.15:
            ports.append({"name": "p1", "port": 443, "targetPort": 8443, "protocol": proto})
        spec: dict[str, Any] = {"clusterIP": str(ipaddress.ip_address(base + i)), "ports": ports, "type": "ClusterIP",
                                "selector": {"app": name}}
        if rng.random() < 0.2 and node_port < 32767 - 2:
            spec["type"] = "NodePort"
            for p in ports:
                p["nodePort"] = node_port
                node_port += 1
        if rng.random() < 0.03:
            spec["sessionAffinity"] = "ClientIP"
        spec["clusterIPs"] = [spec["clusterIP"]]
        out.append({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns}, "spec": spec})
        eps = [] if rng.random() < 0.02 else [
            {"addresses": [str(ipaddress.ip_address(pod + 3 * i + k))], "conditions": {"ready": True},
             "nodeName": nodes[rng.randrange(3)][0]} for k in range(rng.randint(1, 5))]
        out.append({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
                    "metadata": {"name": f"{name}-abcde", "namespace": ns,
                                 "labels": {"kubernetes.io/service-name": name}},
                    "endpoints": eps,
                    "ports": [{"name": p["name"], "port": p["targetPort"], "protocol": proto} for p in ports]})
    return out


def node_dir(mode: str, n: int, regenerate: bool) -> Path:
    d = HERE / "out" / f"{mode}-{n}" / "nodes" / NODE
    if d.is_dir() and not regenerate:
        return d
    from svctrace.kubeproxy.simulate import simulate

    t0 = time.perf_counter()
    sim = simulate(objects(n), nodes=[NODE], mode=mode, kube_version="1.31")
    print(f"  generated {mode} {n}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    d.mkdir(parents=True, exist_ok=True)
    for name, text in sim.files[NODE].items():
        if name != "nft.json":  # the text `nft -c -f` reads; svctrace would read nft.json first
            (d / name).write_text(text)
    (d.parent.parent / "cluster.json").write_text(json.dumps(sim.objects))
    return d


def probes(n: int, count: int, seed: int = 7) -> list[tuple[str, int]]:
    """(ClusterIP, port 80) of `count` different Services."""
    rng = random.Random(seed)
    base = int(ipaddress.ip_address("10.96.0.10"))
    return [(str(ipaddress.ip_address(base + i)), 80) for i in rng.sample(range(n), min(count, n))]


def kernel_time(mode: str, d: Path) -> float:
    """The kernel tools' own parse of the same files, in a fresh namespace (set-up and tear-down not timed)."""
    ns = f"svctrace-bench-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        def run(argv: list[str], stdin: Path | None) -> float:
            with open(stdin, "rb") if stdin else open(os.devnull, "rb") as f:
                t0 = time.perf_counter()
                r = subprocess.run(["ip", "netns", "exec", ns, *argv], stdin=f, capture_output=True)
                t = time.perf_counter() - t0
            if r.returncode:
                raise RuntimeError(f"{' '.join(argv)}: {r.stderr.decode()[-400:]}")
            return t

        if mode == "ipvs":
            t = run(["ipset", "restore", "-exist"], d / "ipset")
            t += run(["iptables-restore", "--test"], d / "iptables-save")
            subprocess.run(["ip", "netns", "exec", ns, "ipset", "destroy"], capture_output=True)
            return t
        return run(["nft", "-c", "-f", str(d / "nft")], None)
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=True)


def cli_time(d: Path, dst: str, port: int) -> float:
    exe = Path(sys.executable).with_name("svctrace")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    t0 = time.perf_counter()
    r = subprocess.run([str(exe), "trace", str(d), "--dst", dst, "--dport", str(port), "--src", "10.245.0.1",
                        "-o", "json"], capture_output=True, env=env)
    t = time.perf_counter() - t0
    if r.returncode not in (0, 1):
        raise RuntimeError(f"svctrace trace: {r.stderr.decode()[-400:]}")
    return t


def in_process(mode: str, d: Path, qs: list[tuple[str, int]]) -> dict[str, float]:
    from svctrace.dataplane.node import load_dataplane
    from svctrace.kubeproxy.walk import trace_dataplane
    from svctrace.model.packet import NodeFacts, Packet
    from svctrace.model.snapshot import load_snapshot

    t0 = time.perf_counter()
    snap = load_snapshot(str(d.parent.parent))
    dp = load_dataplane(snap, NODE, 4)
    load = time.perf_counter() - t0

    local = frozenset(ipaddress.ip_address(x) for x in [NODE_IP, *dp.extra_local_ips])

    def ask(dst: str, port: int) -> float:
        pkt = Packet(4, "tcp", ipaddress.ip_address("10.245.0.1"), ipaddress.ip_address(dst), 40000, port)
        facts = NodeFacts(local_ips=local)
        t = time.perf_counter()
        r = trace_dataplane(dp, pkt, facts)
        t = time.perf_counter() - t
        assert r.outcomes
        return t

    first = ask(*qs[0])
    further = [ask(*q) for q in qs[1:]]
    return {"load": load, "first": first, "further_median": statistics.median(further), "further_max": max(further)}


def fmt(t: float) -> str:
    return f"{t * 1000:.1f} ms" if t < 1 else f"{t:.2f} s"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1000,5000,10000,20000")
    ap.add_argument("--modes", default="ipvs,nftables")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--probes", type=int, default=30)
    ap.add_argument("--regenerate", action="store_true")
    ap.add_argument("--no-cli", action="store_true", help="skip the subprocess `svctrace trace` column")
    args = ap.parse_args(argv)
    rows = []
    print("| mode | Services | kernel tools | svctrace trace (CLI) | ratio | load (in-process) | first question "
          "| further question (median / max) |")
    print("|---|---|---|---|---|---|---|---|")
    for mode in args.modes.split(","):
        for n in (int(x) for x in args.sizes.split(",")):
            d = node_dir(mode, n, args.regenerate)
            qs = probes(n, args.probes)
            kern = min(kernel_time(mode, d) for _ in range(args.repeat))
            cli = float("nan") if args.no_cli else min(cli_time(d, *qs[0]) for _ in range(args.repeat))
            runs = [subprocess_in_process(mode, d, n, args.probes) for _ in range(args.repeat)]
            ip = {k: min(r[k] for r in runs) for k in runs[0]}
            row = {"mode": mode, "services": n, "kernel_s": kern, "cli_s": cli, **ip}
            rows.append(row)
            print(f"| {mode} | {n:,} | {fmt(kern)} | {fmt(cli)} | {cli / kern:.2f}x | {fmt(ip['load'])} | "
                  f"{fmt(ip['first'])} | {ip['further_median'] * 1000:.2f} / {ip['further_max'] * 1000:.2f} ms |",
                  flush=True)
    (HERE / "out").mkdir(exist_ok=True)
    (HERE / "out" / "ipvs_nft_results.json").write_text(json.dumps(rows, indent=1))
    return 0


def subprocess_in_process(mode: str, d: Path, n: int, count: int) -> dict[str, float]:
    """The in-process figures from a fresh interpreter (a cold cache, like a user's first run)."""
    code = (f"import json,sys; sys.path.insert(0, {str(HERE)!r}); import bench_ipvs_nft as b; from pathlib import "
            f"Path; print(json.dumps(b.in_process({mode!r}, Path({str(d)!r}), b.probes({n}, {count}))))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=str(REPO)))
    if r.returncode:
        raise RuntimeError(r.stderr[-800:])
    return json.loads(r.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    raise SystemExit(main())
