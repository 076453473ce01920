"""`svctrace simulate`: the rules kube-proxy would program for objects you have (or are about to apply)."""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer

from svctrace import __version__
from svctrace.cli import app
from svctrace.cli.trace import read_input
from svctrace.errors import InputError
from svctrace.kubeproxy.versions import DEFAULT_VERSION, FEATURES


class Mode(StrEnum):
    iptables = "iptables"
    nftables = "nftables"
    ipvs = "ipvs"


def read_objects(path: str) -> list[dict[str, Any]]:
    """Objects from a YAML or JSON file: one, several (`---`), or a List as `kubectl get -o json` prints it."""
    from svctrace.kubeproxy.simulate import objects_of

    text, name = read_input(path)
    stripped = text.lstrip()
    if stripped.startswith(("{", "[")):
        try:
            doc: Any = json.loads(text)
        except json.JSONDecodeError as e:
            raise InputError(f"broken JSON: {e.msg}", source=name, line=e.lineno) from None
    else:
        import yaml  # PyYAML comes with the kubernetes client

        try:
            doc = [d for d in yaml.safe_load_all(text) if d is not None]
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            raise InputError(f"broken YAML: {getattr(e, 'problem', None) or e}", source=name,
                             line=mark.line + 1 if mark else None) from None
    objs = objects_of(doc)
    if not objs:
        raise InputError("no Kubernetes objects in it (expected YAML/JSON with `kind:`)", source=name)
    return objs


@app.command("simulate")
def simulate_cmd(
    files: list[str] = typer.Option(..., "--filename", "-f", help="YAML or JSON with Services, Pods, Deployments, "
                                    "EndpointSlices, Nodes, the kube-proxy ConfigMap... (repeatable; - for stdin; "
                                    "a snapshot's cluster.json works as is)."),
    node: list[str] = typer.Option([], "--node", help="Node(s) whose rules to generate (default: every node; "
                                   "Local traffic policies differ per node)."),
    mode: Mode = typer.Option(Mode.iptables, "--mode", help="kube-proxy mode to simulate."),
    kube_version: str = typer.Option(DEFAULT_VERSION, "--kube-version", help="kube-proxy version: spellings and "
                                     f"chains differ (KUBE-XLB before {FEATURES['ext-svl-chains'].since_text}, "
                                     f"KUBE-MARK-DROP before {FEATURES['proxy-firewall-chain'].since_text}, ...)."),
    cluster_cidr: str | None = typer.Option(None, "--cluster-cidr", help="Pod CIDR (default: the kube-proxy "
                                            "ConfigMap among the inputs, else the nodes' podCIDRs)."),
    service_cidr: str = typer.Option("10.96.0.0/12", "--service-cidr", help="Where missing cluster IPs are "
                                     "allocated from."),
    random_fully: bool = typer.Option(True, "--random-fully/--no-random-fully", help="The node's iptables has "
                                      "MASQUERADE --random-fully (1.6.2+, every current distribution): kube-proxy "
                                      "1.16+ then writes it."),
    nfacct: bool = typer.Option(True, "--nfacct/--no-nfacct", help="The node's kernel has nfnetlink_acct: "
                                "kube-proxy 1.30+ then counts INVALID drops and (1.31+) localhost NodePorts."),
    out: Path | None = typer.Option(None, "--output-dir", "-o", help="Write a snapshot bundle here (explain and "
                                    "tui can open it) instead of printing iptables-save."),
    node_facts: list[str] = typer.Option([], "--node-facts", help="NODE=DIR: copy that node's network facts "
                                         "(sysctl, ip-addr.json, ip-route.json, ip-rule.json, hairpin-mode, "
                                         "modules: a snapshot's nodes/NODE, or files collected by hand) into the "
                                         "bundle, checked first (repeatable; needs -o)."),
) -> None:
    """Generate the rules kube-proxy would program for these objects, as iptables-save or as a snapshot."""
    from svctrace.kubeproxy.simulate import simulate
    from svctrace.model.version import parse_version

    if mode is Mode.nftables:
        import importlib.util

        if importlib.util.find_spec("svctrace.kubeproxy.render.nft") is None:
            raise InputError("--mode nftables: nftables-mode rules cannot be generated in this version")
    try:
        parse_version(kube_version)
    except ValueError as e:
        raise InputError(f"--kube-version: {e}") from None
    if node_facts and out is None:
        raise InputError("--node-facts needs --output-dir: node facts go into a snapshot bundle")
    facts = _node_facts(node_facts)
    objs: list[dict[str, Any]] = []
    for f in files:
        objs += read_objects(f)
    try:
        sim = simulate(objs, nodes=node or None, kube_version=kube_version.lstrip("v"), cluster_cidr=cluster_cidr,
                       service_cidr=service_cidr, mode=mode.value, random_fully=random_fully, nfacct=nfacct)
    except ValueError as e:
        raise InputError(str(e)) from None
    shown = sim.notes if len(sim.notes) <= NOTES_SHOWN + 2 else sim.notes[:NOTES_SHOWN]
    for n in shown:
        sys.stderr.write(f"svctrace: note: {n}\n")
    if len(shown) < len(sim.notes):
        # A big input fills in the same things for every object: a few examples say what, the count how often.
        sys.stderr.write(f"svctrace: note: ... and {len(sim.notes) - len(shown):,} more notes of the same kinds "
                         "(cluster IPs, node ports, pods and EndpointSlices filled in)\n")
    if out is None:
        for i, (name, dump) in enumerate(sim.dumps.items()):
            if len(sim.dumps) > 1:
                sys.stdout.write(("\n" if i else "") + f"# node {name}\n")
            sys.stdout.write(dump)
        return
    for n in facts:
        if n not in sim.files:
            raise InputError(f"--node-facts {n}=...: no node {n} among the simulated nodes "
                             f"({', '.join(sim.files) or 'none'})")
        sim.files[n].update(facts[n])
    write_bundle(out, sim)
    sys.stderr.write(f"svctrace: wrote {out} ({len(sim.dumps)} node(s)); try: svctrace explain svc/NAME "
                     f"--snapshot {out}\n")


NOTES_SHOWN = 10  # simulate's notes printed one by one; the rest are counted


def _node_facts(specs: list[str]) -> dict[str, dict[str, str]]:
    """`NODE=DIR` -> that node's fact files (every known file in DIR; parsed, so damage stops here)."""
    from svctrace.dataplane.host import HOST_FILES, check_host_files

    out: dict[str, dict[str, str]] = {}
    for spec in specs:
        node, sep, d = spec.partition("=")
        if not sep or not node or not d:
            raise InputError(f"--node-facts takes NODE=DIR, not {spec!r}")
        p = Path(d)
        if not p.is_dir():
            raise InputError("not a directory (--node-facts NODE=DIR)", source=d)
        got = {f: read_input(str(p / f))[0] for f in HOST_FILES if (p / f).is_file()}
        if not got:
            raise InputError(f"no node fact file here (expected one of {', '.join(HOST_FILES)})", source=d)
        out[node] = check_host_files(got, d.rstrip("/"))
    return out


def write_bundle(out: Path, sim: Any) -> None:
    if out.exists() and any(out.iterdir()):
        raise InputError("exists and is not empty: choose a new directory", source=str(out))
    for rel, text in sim.bundle_files(__version__).items():
        f = out / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)
