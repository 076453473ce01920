#!/usr/bin/env python3
"""The scale curve: svctrace next to the kernel's own tools, 1k to 20k Services, in one run.

    python bench/scale.py                         # 1k, 5k, 10k, 20k; best of 3; writes docs/performance.md
    python bench/scale.py --sizes 1000,5000 --repeat 1 --no-write

For each size, on the same generated kube-proxy dump (``bench/gen_kube_proxy_dump.py``, kept in ``bench/out/``):

* ``iptables-restore --test < dump`` in a fresh network namespace (``unshare -n``): the kernel tool's floor;
* ``svctrace trace DUMP ... -o json``: one question, the installed command as a user runs it (interpreter
  start, imports, reading, parsing, the walk, the JSON);
* ``svctrace trace DUMP --batch FILE``: as many questions as the dump has Services (one JSON line each), and
  what they add to one question's run;
* ``svctrace explain svc/... --snapshot DIR -o json`` on a 3-node snapshot of that dump (cold process);
* the TUI's first screen: from process start until the Service list shows its rows (Textual's Pilot,
  headless, in a child process).

Every figure is the best of ``--repeat`` runs, taken in this one run; ratios are to ``iptables-restore --test``
of the same (one node's) dump.  The other helpers' scripts (``bench/simulate_scale.py``, ``bench/ipvs_scale.py``,
``bench/nft_scale.py``) run afterwards when present, and their output is appended as they print it.

The command measured is the ``svctrace`` entry point next to this interpreter; PYTHONPATH is set to this
checkout, so the code measured is the code beside this script.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))
os.environ["PYTHONPATH"] = str(REPO)  # the installed command imports this checkout

import gen_kube_proxy_dump as gen  # noqa: E402

DOC = REPO / "docs" / "performance.md"
BEGIN, END = "<!-- scale:begin (written by bench/scale.py) -->", "<!-- scale:end -->"
OTHER_SCRIPTS = ("simulate_scale.py", "bench_ipvs_nft.py")
CHART = REPO / "docs" / "img" / "scale.svg"
NODES = ("node-a", "node-b", "node-c")


def label(n: int) -> str:
    return f"{n // 1000}k" if n % 1000 == 0 else str(n)


def measure(argv: list[str], repeat: int, *, stdin: Path | None = None,
            ok: tuple[int, ...] = (0, 1)) -> tuple[float, int]:
    """Best wall time of `repeat` runs of a command (stdout discarded), and the largest peak RSS (bytes) of
    those runs (os.wait4: this child's own figure, not the bench's); a failing run stops the bench."""
    times, rss = [], 0
    for _ in range(repeat):
        with open(stdin, "rb") if stdin else open(os.devnull, "rb") as inp:
            t0 = time.perf_counter()
            p = subprocess.Popen(argv, stdin=inp, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            assert p.stderr is not None
            err = p.stderr.read()
            _, status, usage = os.wait4(p.pid, 0)
            times.append(time.perf_counter() - t0)
            p.returncode = os.waitstatus_to_exitcode(status)
            rss = max(rss, usage.ru_maxrss * 1024)  # Linux: kilobytes
        if p.returncode not in ok:
            raise SystemExit(f"{' '.join(argv[:4])}...: exit {p.returncode}: {err.decode()[-400:]}")
    return min(times), rss


def best(argv: list[str], repeat: int, *, stdin: Path | None = None, ok: tuple[int, ...] = (0, 1)) -> float:
    return measure(argv, repeat, stdin=stdin, ok=ok)[0]


def svctrace() -> list[str]:
    exe = Path(sys.executable).parent / "svctrace"
    return [str(exe)] if exe.exists() else [sys.executable, "-c", "from svctrace.cli import main; main()"]


# -- inputs ----------------------------------------------------------------------------------------

def dump_for(n: int, seed: int) -> tuple[Path, gen.Cluster]:
    out = HERE / "out"
    out.mkdir(exist_ok=True)
    dump = out / f"kube-proxy-{label(n)}-seed{seed}.iptables-save"
    cluster = gen.generate(n, seed)
    if not dump.exists():
        tmp = dump.with_suffix(".tmp")
        with open(tmp, "w") as f:
            f.writelines(line + "\n" for line in gen.render_lines(cluster))
        tmp.replace(dump)
    return dump, cluster


def questions(cluster: gen.Cluster, count: int) -> list[dict[str, Any]]:
    """`count` batch lines: each Service port's ClusterIP from a pod, round robin."""
    ports = [(s, sp) for s in cluster.services for sp in s.ports]
    out = []
    for i in range(count):
        s, sp = ports[i % len(ports)]
        out.append({"src": "10.244.0.5", "dst": s.cluster_ip, "proto": sp.protocol, "dport": sp.port,
                    "local_ip": [gen.NODE_IP]})
    return out


def objects(cluster: gen.Cluster) -> list[dict[str, Any]]:
    """The API objects behind a generated dump: three Nodes, the Services and their EndpointSlices."""
    objs: list[dict[str, Any]] = []
    for i, name in enumerate(NODES):
        objs.append({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name}}, "spec": {"podCIDR": f"10.244.{i}.0/24"},
            "status": {"addresses": [{"type": "InternalIP", "address": f"192.168.0.{i + 2}"}],
                       "conditions": [{"type": "Ready", "status": "True"}]}})
    for s in cluster.services:
        spec: dict[str, Any] = {"type": s.type, "clusterIP": s.cluster_ip, "clusterIPs": [s.cluster_ip],
                                "ports": [{**({"name": p.name} if p.name else {}), "port": p.port,
                                           "targetPort": p.target_port, "protocol": p.protocol.upper(),
                                           **({"nodePort": p.node_port} if p.node_port else {})}
                                          for p in s.ports]}
        if s.etp_local:
            spec["externalTrafficPolicy"] = "Local"
        if s.affinity:
            spec["sessionAffinity"] = "ClientIP"
        if s.external_ips:
            spec["externalIPs"] = s.external_ips
        if s.source_ranges:
            spec["loadBalancerSourceRanges"] = s.source_ranges
        if s.health_check_node_port:
            spec["healthCheckNodePort"] = s.health_check_node_port
        status = {"loadBalancer": {"ingress": [{"ip": ip} for ip in s.lb_ips]}} if s.lb_ips else {}
        objs.append({"apiVersion": "v1", "kind": "Service", "metadata": {"name": s.name, "namespace": s.namespace},
                     "spec": spec, "status": status})
        eps = sorted({e.ip for p in s.ports for e in p.endpoints})
        objs.append({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
                     "metadata": {"name": f"{s.name}-abcde", "namespace": s.namespace,
                                  "labels": {"kubernetes.io/service-name": s.name}},
                     # an unnamed Service port's slice port is named "" (kube-proxy ignores a port whose
                     # name is nil: pkg/proxy/endpointslicecache.go)
                     "ports": [{"name": p.name or "", "port": p.target_port,
                                "protocol": p.protocol.upper()} for p in s.ports],
                     "endpoints": [{"addresses": [ip], "conditions": {"ready": True, "serving": True,
                                                                       "terminating": False},
                                    "nodeName": NODES[0] if ip.startswith("10.244.0.") else NODES[1]}
                                   for ip in eps]})
    return objs


def snapshot_for(n: int, seed: int, dump: Path, cluster: gen.Cluster) -> Path:
    """A 3-node snapshot: the API objects, and the same dump on every node (they agree, as they should)."""
    root = HERE / "out" / f"snapshot-{label(n)}-seed{seed}"
    if (root / "cluster.json").exists():
        return root
    for name in NODES:
        d = root / "nodes" / name
        d.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(dump, d / "iptables-save")
        (d / "proxy-mode").write_text("iptables\n")
    (root / "cluster.json").write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": objects(cluster)}))
    (root / "meta.json").write_text(json.dumps({"format": "svctrace-snapshot/1", "proxy_mode": "iptables",
                                                "cluster_cidr": gen.CLUSTER_CIDR,
                                                "service_cidr": str(gen.SERVICE_CIDR),
                                                "nodes": {m: {"ok": True, "proxy_mode": "iptables"}
                                                          for m in NODES}}))
    return root


# -- measurements --------------------------------------------------------------------------------------

def kernel(dump: Path, repeat: int) -> float:
    exe = shutil.which("iptables-restore") or "/usr/sbin/iptables-restore"
    return best(["unshare", "-n", exe, "--test"], repeat, stdin=dump, ok=(0,))


def trace_argv(dump: Path, cluster: gen.Cluster) -> list[str]:
    q = questions(cluster, 1)[0]
    return [*svctrace(), "trace", str(dump), "--src", q["src"], "--dst", q["dst"], "--proto", q["proto"],
            "--dport", str(q["dport"]), "--local-ip", gen.NODE_IP, "-o", "json"]


def batch(dump: Path, cluster: gen.Cluster, count: int, repeat: int, tmp: Path) -> float:
    qfile = tmp / f"questions-{count}.jsonl"
    qfile.write_text("".join(json.dumps(q) + "\n" for q in questions(cluster, count)))
    return best([*svctrace(), "trace", str(dump), "--batch", str(qfile)], repeat)


def explain(snap: Path, cluster: gen.Cluster, repeat: int) -> tuple[float, int]:
    s = next(s for s in cluster.services if s.namespace != "default" and s.ports[0].endpoints)
    return measure([*svctrace(), "explain", f"svc/{s.name}", "-n", s.namespace, "--snapshot", str(snap),
                 "--from", "10.244.0.5", "-o", "json"], repeat)


_TUI = r"""
import asyncio, sys, time
t0 = float(sys.argv[2])
from svctrace.tui.app import SvctraceApp

async def main():
    app = SvctraceApp(sys.argv[1])
    async with app.run_test(size=(160, 50)) as pilot:
        while app.state != "ready" or not app.services_screen.query("#table").first().rows:
            if app.state == "failed":
                raise SystemExit(app.error)
            await pilot.pause(0.01)
        print(time.time() - t0)
        app.exit(0)

asyncio.run(main())
"""


def tui_first_screen(path: Path, repeat: int) -> float:
    """Seconds from process start until the Service list has its rows."""
    times = []
    for _ in range(repeat):
        p = subprocess.run([sys.executable, "-c", _TUI, str(path), repr(time.time())], capture_output=True,
                           text=True, check=False)
        if p.returncode != 0:
            raise SystemExit(f"tui: {p.stderr[-600:]}")
        times.append(float(p.stdout.strip().splitlines()[-1]))
    return min(times)


# -- the table -----------------------------------------------------------------------------------------

def fmt(s: float | None) -> str:
    if s is None:
        return "–"
    return f"{s * 1000:.0f} ms" if s < 1 else f"{s:.2f} s"


def cell(s: float | None, floor: float) -> str:
    return "–" if s is None else f"{fmt(s)} ({s / floor:.2f}×)"


def mem(rss: int | None, dump_bytes: int) -> str:
    return "–" if not rss else f"{rss / 1e6:.0f} MB ({rss / dump_bytes:.1f}×)"


def table(rows: list[dict[str, Any]]) -> str:
    head = ["Services", "rules", "dump", "`iptables-restore --test`", "`trace` (1 question)",
            "`trace --batch` (N questions)", "N questions add", "`explain` (3 nodes, cold)", "TUI first screen",
            "`trace` peak RSS (× dump)", "`explain` peak RSS (× dump)"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        k = r["kernel"]
        out.append("| " + " | ".join([
            f"{r['services']:,}", f"{r['rules']:,}", f"{r['bytes'] / 1e6:.1f} MB", fmt(k), cell(r.get("trace"), k),
            cell(r.get("batch"), k), "–" if r.get("batch") is None else fmt(max(0.0, r["batch"] - r["trace"])),
            cell(r.get("explain"), k), cell(r.get("tui"), k), mem(r.get("trace_rss"), r["bytes"]),
            mem(r.get("explain_rss"), r["bytes"])]) + " |")
    return "\n".join(out)


def chart(rows: list[dict[str, Any]], path: Path) -> bool:
    """The curves as an SVG (matplotlib, the dev extra): seconds against Services, and the ratio to the kernel's
    tool. False when matplotlib is missing (the table is still written)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    matplotlib.rcParams["svg.hashsalt"] = "svctrace"  # the same figures give the same file
    matplotlib.rcParams["svg.fonttype"] = "none"
    xs = [r["services"] for r in rows]
    series = [("kernel", "iptables-restore --test", "k--"), ("trace", "svctrace trace (1 question)", "o-"),
              ("batch", "trace --batch (N questions)", "s-"), ("explain", "explain (3 nodes, cold)", "^-"),
              ("tui", "TUI first screen", "d-")]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for key, label_, style in series:
        pts = [(r["services"], r[key]) for r in rows if r.get(key) is not None]
        if not pts:
            continue
        ax1.plot([p[0] for p in pts], [p[1] for p in pts], style, label=label_)
        if key != "kernel":
            ax2.plot([p[0] for p in pts], [p[1] / r["kernel"] for p, r in zip(pts, [r for r in rows
                                                                                      if r.get(key) is not None],
                                                                            strict=True)], style, label=label_)
    for ax in (ax1, ax2):
        ax.set_xscale("log")
        ax.set_xticks(xs, [label(x) for x in xs])
        ax.set_xlabel("Services")
        ax.grid(True, which="both", alpha=0.3)
    ax1.set_yscale("log")
    ax1.set_ylabel("seconds (best of runs)")
    ax1.set_title("Time")
    ax2.axhline(1.0, color="grey", lw=0.8)
    ax2.set_ylabel("× iptables-restore --test")
    ax2.set_title("Ratio to the kernel's tool")
    ax1.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="svg", metadata={"Date": None})
    plt.close(fig)
    return True


def write_doc(text: str) -> None:
    doc = DOC.read_text()
    if BEGIN in doc and END in doc:
        doc = doc[:doc.index(BEGIN)] + text + doc[doc.index(END) + len(END):]
    else:
        doc = doc.rstrip() + "\n\n" + text + "\n"
    DOC.write_text(doc)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1000,5000,10000,20000")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3, help="runs per measurement (the best is kept)")
    ap.add_argument("--others-repeat", type=int, default=None,
                    help="runs per measurement of the other scripts (default: --repeat; the kernel's nft -c at 20k "
                         "takes minutes a run)")
    ap.add_argument("--skip", default="", help="comma-separated: trace,batch,explain,tui,others")
    ap.add_argument("--no-write", action="store_true", help="print the table; leave docs/performance.md alone")
    args = ap.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    if os.geteuid() != 0 or not shutil.which("unshare"):
        raise SystemExit("needs root and unshare (iptables-restore --test runs in a fresh network namespace)")
    rows = []
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        for n in (int(x) for x in args.sizes.split(",") if x.strip()):
            dump, cluster = dump_for(n, args.seed)
            with open(dump, "rb") as f:
                rules = sum(line.startswith(b"-A ") for line in f)
            r: dict[str, Any] = {"services": n, "rules": rules, "bytes": dump.stat().st_size,
                                 "kernel": kernel(dump, args.repeat)}
            if "trace" not in skip:
                r["trace"], r["trace_rss"] = measure(trace_argv(dump, cluster), args.repeat)
            if "batch" not in skip and "trace" not in skip:
                r["batch"] = batch(dump, cluster, n, args.repeat, tmp)
            if "explain" not in skip:
                r["explain"], r["explain_rss"] = explain(snapshot_for(n, args.seed, dump, cluster), cluster,
                                                         args.repeat)
            if "tui" not in skip:
                r["tui"] = tui_first_screen(dump, args.repeat)
            print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()}),
                  file=sys.stderr, flush=True)
            rows.append(r)
    machine = (f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
               + subprocess.run(["iptables-restore", "--version"], capture_output=True, text=True).stdout.strip())
    others: list[str] = []
    others_repeat = args.repeat if args.others_repeat is None else args.others_repeat
    if "others" not in skip:
        for name in OTHER_SCRIPTS:
            script = HERE / name
            if script.exists():
                print(f"running {name} ...", file=sys.stderr, flush=True)
                p = subprocess.run([sys.executable, str(script), "--sizes", args.sizes, "--repeat", str(others_repeat)],
                                   capture_output=True, text=True, check=False)
                sys.stderr.write(p.stderr)
                others += [f"### `python bench/{name}`", "", p.stdout.strip() or f"(exit {p.returncode})", ""]
    text = "\n".join([
        BEGIN, "",
        f"Best of {args.repeat}, one run of `python bench/scale.py` ({machine}; the other scripts' tables below: "
        f"best of {others_repeat}). In brackets: the ratio to "
        "`iptables-restore --test` of the same dump in a fresh network namespace. \"N questions\": as many "
        "`--batch` lines as the dump has Services; \"add\" is the batch run minus the one-question run. Peak RSS "
        "is the process's own maximum resident set, against the dump's size.",
        "", table(rows), ""]
        + ([f"![The scale curve: seconds and ratio to iptables-restore --test]({CHART.relative_to(DOC.parent)})", ""]
           if not args.no_write and chart(rows, CHART) else [])
        + others + [END])
    print(text)
    if not args.no_write:
        write_doc(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
