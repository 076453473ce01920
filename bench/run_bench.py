#!/usr/bin/env python3
"""svctrace vs iptables-restore on generated kube-proxy dumps (1k / 10k / 50k Services).

    python bench/run_bench.py                      # all sizes, 3 runs each, 50 probes
    python bench/run_bench.py --sizes 1000 --repeat 1 --skip-iptables

For each size, on the same file in ``bench/out/``:

* ``iptables-restore --test < dump`` (nf_tables backend) and ``iptables-legacy-restore --test``: wall
  time, median of ``--repeat`` runs, and the child's max RSS;
* ``svctrace trace DUMP --src .. --dst .. --proto .. --dport .. -o json`` as a subprocess (process
  start, parse, walk, print): wall time, median of ``--repeat``, and max RSS (``os.wait4``) against the
  dump size (target: RSS < 10x dump);
* in-process, against a ruleset already loaded and asked one question: the median over ``--probes``
  different probes of one ``trace()`` (target < 10 ms), and whether svctrace's answers agree with what
  the generator knows kube-proxy's rules do.

Writes ``bench/out/results.md`` and ``bench/out/results.json`` and prints the table.  Nothing here
asserts on time; it measures.  ``iptables-restore --test`` parses and checks without committing, but
the nf_tables one still needs root (CAP_NET_ADMIN) to talk to the kernel.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
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

import gen_kube_proxy_dump as gen  # noqa: E402

NODE_LOCAL_IPS = [gen.NODE_IP]


def label(n: int) -> str:
    return f"{n // 1000}k" if n % 1000 == 0 else str(n)


# A small launcher process starts every measured command.  Linux carries the high-water RSS of the
# memory image a process exec()s from into its ru_maxrss, so a child forked straight from this (large)
# benchmark process would report at least this process's RSS.  From the launcher it reports at least
# the launcher's few MB (measured as "launcher_floor" with /bin/true).
_LAUNCHER = r"""
import json, os, sys, time
out, argv = sys.argv[1], sys.argv[2:]
t0 = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(argv[0], argv)
    finally:
        os._exit(127)
_, status, ru = os.wait4(pid, 0)
wall = time.perf_counter() - t0
with open(out, "w") as f:
    json.dump({"wall_s": wall, "rc": os.waitstatus_to_exitcode(status), "maxrss_kib": ru.ru_maxrss}, f)
"""


def run_child(argv: list[str], stdin_path: Path | None = None, timeout: float = 1800) -> dict[str, Any]:
    """Run a command through the launcher: wall time, exit code, the child's max RSS, stderr tail."""
    with contextlib.ExitStack() as stack:
        stdin = stack.enter_context(open(stdin_path, "rb")) if stdin_path else subprocess.DEVNULL
        out = stack.enter_context(tempfile.TemporaryFile())
        err = stack.enter_context(tempfile.TemporaryFile())
        tmpdir = stack.enter_context(tempfile.TemporaryDirectory())
        result = Path(tmpdir) / "r.json"
        subprocess.run(
            [sys.executable, "-S", "-c", _LAUNCHER, str(result), *argv],
            stdin=stdin,
            stdout=out,
            stderr=err,
            timeout=timeout,
            check=False,
        )
        out.seek(0)
        err.seek(0)
        stdout = out.read()
        stderr = err.read().decode(errors="replace")
        res = (
            json.loads(result.read_text())
            if result.exists()
            else {"wall_s": float("nan"), "rc": -1, "maxrss_kib": 0}
        )
    return {
        "wall_s": res["wall_s"],
        "rc": res["rc"],
        "maxrss_bytes": res["maxrss_kib"] * 1024,
        "stdout": stdout,
        "stderr_tail": stderr[-400:],
    }


def median_runs(argv: list[str], repeat: int, stdin_path: Path | None = None) -> dict[str, Any]:
    runs = [run_child(argv, stdin_path) for _ in range(repeat)]
    return {
        "median_s": statistics.median(r["wall_s"] for r in runs),
        "runs_s": [round(r["wall_s"], 4) for r in runs],
        "rc": [r["rc"] for r in runs],
        "max_rss_bytes": max(r["maxrss_bytes"] for r in runs),
        "stderr_tail": next((r["stderr_tail"] for r in runs if r["rc"] != 0), ""),
        "last_stdout": runs[-1]["stdout"],
    }


def bench_iptables(dump: Path, repeat: int) -> dict[str, Any]:
    res: dict[str, Any] = {}
    for key, tool in (("nft", "iptables-restore"), ("legacy", "iptables-legacy-restore")):
        exe = shutil.which(tool) or (f"/usr/sbin/{tool}" if Path(f"/usr/sbin/{tool}").exists() else None)
        if not exe:
            res[key] = {"error": f"{tool} not found"}
            continue
        r = median_runs([exe, "--test"], repeat, stdin_path=dump)
        r.pop("last_stdout")
        if any(r["rc"]):
            r["error"] = f"exit {r['rc']}: {r['stderr_tail'].strip()[-200:]}"
        res[key] = r
    return res


def roundtrip(dump: Path) -> dict[str, Any]:
    """Load the dump into a fresh network namespace (real kernel, nf_tables) and save it back.

    Equal text (``#`` lines aside) means the generator writes exactly what iptables-save prints.
    Needs root and ``unshare``; the namespace disappears with the process.
    """
    if not shutil.which("unshare"):
        return {"error": "unshare not found"}
    t0 = time.perf_counter()
    p = subprocess.run(
        ["unshare", "-n", "sh", "-c", 'iptables-restore < "$1" && iptables-save', "sh", str(dump)],
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        return {"error": p.stderr.strip()[-300:], "wall_s": wall}
    want = [ln for ln in dump.read_text().splitlines() if not ln.startswith("#")]
    got = [ln for ln in p.stdout.splitlines() if not ln.startswith("#")]
    diff = next((i for i, (a, b) in enumerate(zip(want, got, strict=False)) if a != b), None)
    same = diff is None and len(want) == len(got)
    return {"identical": same, "wall_s": wall, "first_difference_line": diff}


def svctrace_argv() -> list[str] | None:
    """How to start the CLI: the venv's entry point if it has a `trace` command, else None."""
    candidates = [Path(sys.executable).parent / "svctrace", shutil.which("svctrace")]
    for c in candidates:
        if c and Path(c).exists():
            probe = subprocess.run([str(c), "trace", "--help"], capture_output=True, text=True)
            if probe.returncode == 0 and "--dport" in probe.stdout + probe.stderr:
                return [str(c)]
    return None


def bench_cli(cli: list[str], dump: Path, probe: dict[str, Any], repeat: int) -> dict[str, Any]:
    argv = [
        *cli, "trace", str(dump),
        "--src", str(probe["src"]), "--dst", str(probe["dst"]),
        "--proto", str(probe["proto"]), "--dport", str(probe["dport"]),
        *[a for ip in NODE_LOCAL_IPS for a in ("--local-ip", ip)],
        "-o", "json",
    ]  # fmt: skip
    r = median_runs(argv, repeat)
    out = r.pop("last_stdout")
    r["argv"] = " ".join(argv[len(cli) :])
    r["rss_over_dump"] = r["max_rss_bytes"] / dump.stat().st_size
    try:
        doc = json.loads(out)
        r["agrees"] = agrees(probe["expect"], doc.get("outcomes", []))
    except (ValueError, AttributeError):
        r["agrees"] = None
        r["stdout_head"] = out[:300].decode(errors="replace")
    if any(rc not in (0, 1) for rc in r["rc"]):
        r["error"] = f"exit {r['rc']}: {r['stderr_tail'].strip()[-200:]}"
    return r


def agrees(expect: dict[str, Any], outcomes: list[dict[str, Any]]) -> bool:
    """Does a trace's outcome list (JSON form) say what kube-proxy's rules do?"""
    live = [o for o in outcomes if float(o.get("probability", 0)) > 0]
    if not live:
        return False
    if expect["verdict"] == "dnat":
        return all(o.get("verdict") == "accept" for o in live) and {o.get("dnat") for o in live} == set(
            expect["endpoints"]
        )
    return all(o.get("verdict") == expect["verdict"] for o in live)


def bench_inprocess(dump: Path, probes: list[dict[str, Any]]) -> dict[str, Any]:
    try:
        from svctrace.dataplane.iptables import load_ruleset
        from svctrace.dataplane.iptables.walker import trace
        from svctrace.model.packet import NodeFacts, Packet
    except ImportError as e:
        return {"error": f"svctrace API not available: {e}"}
    text = dump.read_text()
    t0 = time.perf_counter()
    rs = load_ruleset(text, str(dump.name))
    load_s = time.perf_counter() - t0
    node = NodeFacts.make(local_ips=NODE_LOCAL_IPS)

    def packet(p: dict[str, Any]) -> Any:
        return Packet.make(src=p["src"], dst=p["dst"], proto=p["proto"], dport=p["dport"])

    # The first question pays for whatever the parser left lazy; it is reported on its own.
    warm = {"src": "10.244.0.5", "dst": "10.96.0.10", "proto": "udp", "dport": 53}
    t0 = time.perf_counter()
    trace(rs, packet(warm), node)
    first_s = time.perf_counter() - t0

    times: list[float] = []
    ok = 0
    bad: list[str] = []
    for p in probes:
        pkt = packet(p)
        t0 = time.perf_counter()
        res = trace(rs, pkt, node)
        times.append(time.perf_counter() - t0)
        if agrees(p["expect"], [o.to_json() for o in res.outcomes]):
            ok += 1
        elif len(bad) < 5:
            bad.append(str(p["name"]))
    # the same probes again: everything the walk needs is now parsed
    again: list[float] = []
    for p in probes:
        pkt = packet(p)
        t0 = time.perf_counter()
        trace(rs, pkt, node)
        again.append(time.perf_counter() - t0)
    return {
        "load_s": load_s,
        "first_trace_s": first_s,
        "trace_median_ms": statistics.median(times) * 1000,
        "trace_p95_ms": sorted(times)[int(0.95 * (len(times) - 1))] * 1000,
        "trace_max_ms": max(times) * 1000,
        "repeat_median_ms": statistics.median(again) * 1000,
        "probes": len(probes),
        "agree": ok,
        "disagree_examples": bad,
    }


def fmt_s(x: float | None) -> str:
    if x is None:
        return "n/a"
    return f"{x * 1000:.0f} ms" if x < 1 else f"{x:.2f} s"


def fmt_mb(b: float | None) -> str:
    return "n/a" if b is None else f"{b / 1e6:.1f} MB"


def table(results: list[dict[str, Any]]) -> str:
    cols = [
        "Services", "rules", "dump", "iptables-restore --test (nft)", "iptables-legacy-restore --test",
        "svctrace trace (CLI)", "CLI max RSS", "RSS / dump", "load_ruleset", "trace, 2nd question (median)",
        "p95", "agrees",
    ]  # fmt: skip
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in results:
        ipt = r.get("iptables", {})
        cli = r.get("cli", {})
        inp = r.get("inprocess", {})

        def ipt_cell(key: str, ipt: dict[str, Any] = ipt) -> str:
            d = ipt.get(key)
            if not d:
                return "skipped"
            if "error" in d:
                return "error"
            return f"{fmt_s(d['median_s'])} ({fmt_mb(d['max_rss_bytes'])})"

        cli_ok = cli and "median_s" in cli
        agree = []
        if inp.get("probes"):
            agree.append(f"{inp['agree']}/{inp['probes']}")
        if cli_ok and cli.get("agrees") is not None:
            agree.append("CLI " + ("yes" if cli["agrees"] else "NO"))
        lines.append(
            "| "
            + " | ".join(
                [
                    f"{r['services']:,}",
                    f"{r['rules']:,}",
                    fmt_mb(r["dump_bytes"]),
                    ipt_cell("nft"),
                    ipt_cell("legacy"),
                    fmt_s(cli["median_s"]) if cli_ok else cli.get("error", "skipped"),
                    fmt_mb(cli["max_rss_bytes"]) if cli_ok else "n/a",
                    f"{cli['rss_over_dump']:.1f}x" if cli_ok else "n/a",
                    fmt_s(inp["load_s"]) if "load_s" in inp else "n/a",
                    f"{inp['trace_median_ms']:.2f} ms"
                    if "trace_median_ms" in inp
                    else inp.get("error", "n/a"),
                    f"{inp['trace_p95_ms']:.2f} ms" if "trace_p95_ms" in inp else "n/a",
                    ", ".join(agree) or "n/a",
                ]
            )
            + " |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1000,10000,50000", help="comma-separated Service counts")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3, help="runs per subprocess measurement (median)")
    ap.add_argument("--probes", type=int, default=50, help="probes for the in-process measurement")
    ap.add_argument("--out", default=str(HERE / "out"), help="where dumps and results go")
    ap.add_argument("--skip-iptables", action="store_true")
    ap.add_argument("--skip-cli", action="store_true")
    ap.add_argument("--skip-inprocess", action="store_true")
    ap.add_argument(
        "--roundtrip",
        action="store_true",
        help="also load each dump into a throwaway netns and check iptables-save prints it back unchanged",
    )
    ap.add_argument("--regenerate", action="store_true", help="rewrite dumps that already exist")
    args = ap.parse_args(argv)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cli = None if args.skip_cli else svctrace_argv()
    results: list[dict[str, Any]] = []
    for n in (int(s) for s in args.sizes.split(",") if s.strip()):
        dump = out / f"kube-proxy-{label(n)}-seed{args.seed}.iptables-save"
        t0 = time.perf_counter()
        cluster = gen.generate(n, args.seed)
        gen_s = None
        if args.regenerate or not dump.exists():
            tmp = dump.with_suffix(".tmp")
            with open(tmp, "w") as f:
                f.writelines(line + "\n" for line in gen.render_lines(cluster))
            tmp.replace(dump)
            gen_s = time.perf_counter() - t0
        rules = 0
        with open(dump, "rb") as f:
            for line in f:
                rules += line.startswith(b"-A ")
        probes = gen.probes(cluster, args.probes)
        r: dict[str, Any] = {
            "services": n,
            "service_ports": sum(len(s.ports) for s in cluster.services),
            "endpoints": cluster.endpoint_count,
            "rules": rules,
            "dump": dump.name,
            "dump_bytes": dump.stat().st_size,
            "generate_s": gen_s,
        }
        print(
            f"== {label(n)} Services: {rules:,} rules, {fmt_mb(r['dump_bytes'])}", file=sys.stderr, flush=True
        )
        if not args.skip_iptables:
            r["iptables"] = bench_iptables(dump, args.repeat)
            for k, v in r["iptables"].items():
                print(f"   iptables {k}: {v.get('runs_s', v.get('error'))}", file=sys.stderr, flush=True)
        if args.roundtrip:
            r["roundtrip"] = roundtrip(dump)
            print(f"   roundtrip: {r['roundtrip']}", file=sys.stderr, flush=True)
        if cli:
            r["cli"] = bench_cli(cli, dump, probes[0], args.repeat)
            print(
                f"   cli: {r['cli'].get('runs_s')} rss {fmt_mb(r['cli']['max_rss_bytes'])}", file=sys.stderr
            )
        elif not args.skip_cli:
            r["cli"] = {"error": "no `svctrace trace` command yet"}
        if not args.skip_inprocess:
            r["inprocess"] = bench_inprocess(dump, probes)
            print(f"   in-process: {json.dumps(r['inprocess'])[:300]}", file=sys.stderr, flush=True)
        results.append(r)

    meta = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Linux {platform.release()}",
        "python": platform.python_version(),
        "iptables": subprocess.run(
            ["iptables-restore", "--version"], capture_output=True, text=True
        ).stdout.strip()
        if shutil.which("iptables-restore")
        else None,
        "repeat": args.repeat,
        "launcher_floor_rss_bytes": run_child(["/bin/true"])["maxrss_bytes"],
        "seed": args.seed,
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    md = table(results)
    note = (
        f"\n\n{meta['machine']}; Python {meta['python']}; {meta['iptables']}; median of {args.repeat} runs "
        f"(subprocesses), {args.probes} probes (in-process). RSS in parentheses is the child's max RSS "
        f"(floor {fmt_mb(meta['launcher_floor_rss_bytes'])}: what /bin/true reports from the launcher). "
        "Targets: CLI RSS < 10x the dump, second question < 10 ms.\n"
    )
    (out / "results.md").write_text("# svctrace benchmark\n\n" + md + note)
    (out / "results.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1) + "\n")
    print(md + note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
