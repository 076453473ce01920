"""`svctrace collect`: a snapshot bundle from a live cluster (API + debug pods or SSH), or from SSH hosts alone."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import typer
from rich.console import Console

from svctrace.cli import app, complete
from svctrace.errors import CollectError, InputError, shorten
from svctrace.limits import SSH_COMMAND_TIMEOUT, SSH_CONNECT_TIMEOUT

VIA = ("auto", "ssh", "debug-pod")


def _progress(console: Console) -> tuple[object, object]:
    """A per-node progress display on stderr (one line per message; thread-safe)."""
    lock = threading.Lock()

    def node_msg(host: str, message: str) -> None:
        with lock:
            console.print(f"[bold]{host}[/bold]: {message}", highlight=False)

    def msg(message: str) -> None:
        with lock:
            console.print(message, highlight=False)

    return msg, node_msg


@app.command("collect")
def collect_cmd(
    output: Path = typer.Option(Path("snapshot.tgz"), "--output", "-o", help="Where the bundle goes: a directory, "
                                "or a .tar.gz / .tgz."),
    nodes: str | None = typer.Option(None, "--nodes", help="Comma-separated node names to dump (default: every node "
                                     "of a cluster of up to 10, else 3 Ready workers)."),
    all_nodes: bool = typer.Option(False, "--all-nodes", help="Dump every node."),
    via: str = typer.Option("auto", "--via", help="How to read the nodes' rules: debug-pod, ssh, or auto (a debug "
                            "pod, SSH when that fails)."),
    context: str | None = typer.Option(None, "--context", help="kubeconfig context (as kubectl).",
                                          autocompletion=complete.contexts),
    kubeconfig: str | None = typer.Option(None, "--kubeconfig", help="kubeconfig file (as kubectl; default: "
                                          "KUBECONFIG, ~/.kube/config, in-cluster)."),
    ssh: list[str] = typer.Option([], "--ssh", help="[USER@]HOST[:PORT] to collect over SSH with no cluster API "
                                  "(repeatable; node names from the hosts' hostnames)."),
    trust_new_host_keys: bool = typer.Option(False, "--trust-new-host-keys", help="Accept and remember SSH host "
                                             "keys seen for the first time (a changed key is always refused)."),
    image: str | None = typer.Option(None, "--image", help="Debug pod image (needs iptables, nft, ipvsadm, ip); "
                                        "repo@sha256:DIGEST pins it."),
    privileged: bool = typer.Option(False, "--privileged", help="Run the debug pod privileged with the host "
                                    "filesystem (only when NET_ADMIN/NET_RAW are not enough)."),
    debug_namespace: str | None = typer.Option(None, "--debug-namespace", help="Namespace for debug pods."),
    parallel: int = typer.Option(4, "--parallel", min=1, max=64, help="Nodes collected at once."),
    timeout: float = typer.Option(SSH_CONNECT_TIMEOUT, "--timeout", help="Per-node connection timeout, seconds."),
    command_timeout: float = typer.Option(SSH_COMMAND_TIMEOUT, "--command-timeout", help="Per-node time for the "
                                          "node's commands once connected, seconds (over SSH; a debug pod's commands "
                                          "get the same); a node that takes longer is reported and the others are "
                                          "still collected."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the bundle at --output if it exists."),
) -> None:
    """Collect Services, EndpointSlices, Pods, Nodes, kube-proxy's config and each node's dataplane into a bundle."""
    console = Console(stderr=True)
    msg, node_msg = _progress(console)
    if via not in VIA:
        raise InputError(f"--via takes one of {', '.join(VIA)}, not {via!r}")
    for name, value in (("--timeout", timeout), ("--command-timeout", command_timeout)):
        if not 0 < value <= 86400:
            raise InputError(f"{name} takes seconds between 0 and 86400, not {value:g}")
    if output.exists() and not overwrite:  # before any connection is made
        raise InputError(f"{shorten(output)} already exists: choose another --output, or add --overwrite to replace it")
    if ssh:
        if nodes or all_nodes or context or kubeconfig:
            raise InputError("--ssh collects the given hosts only, without the cluster API: drop --nodes/--all-nodes/"
                             "--context/--kubeconfig")
        from svctrace.collect.ssh import collect_ssh, parse_host

        for h in ssh:  # a typo is a usage error, before anything connects
            try:
                parse_host(h)
            except ValueError as e:
                raise InputError(f"--ssh: {shorten(e, 200)}") from None
        res_ssh = collect_ssh(list(ssh), out=str(output), parallel=parallel, timeout=timeout,
                              command_timeout=command_timeout, trust_new_host_keys=trust_new_host_keys,
                              progress=node_msg, overwrite=overwrite)  # type: ignore[arg-type]
        for line in res_ssh.summary().splitlines():
            msg(line)  # type: ignore[operator]
        if not res_ssh.ok:
            raise CollectError(f"{len(res_ssh.failed)} of {len(res_ssh.nodes)} host(s) failed: "
                               f"{', '.join(str(getattr(n, 'name', n)) for n in res_ssh.failed)} (see their "
                               f"errors.json in {output})")
        return
    from svctrace.collect.debugpod import DEFAULT_IMAGE, DebugPodOptions, check_image
    from svctrace.collect.live import collect_cluster

    debug = DebugPodOptions(image=check_image(image) if image else DEFAULT_IMAGE, namespace=debug_namespace, privileged=privileged,
                            command_timeout=min(command_timeout, DebugPodOptions.command_timeout),
                            exec_timeout=command_timeout)
    res = collect_cluster(output, nodes=[n.strip() for n in nodes.split(",") if n.strip()] if nodes else None,
                          all_nodes=all_nodes, via=via, context=context, kubeconfig=kubeconfig,
                          progress=msg, debug=debug, parallel=parallel,  # type: ignore[arg-type]
                          ssh_options={"timeout": timeout, "command_timeout": command_timeout,
                                       "trust_new_host_keys": trust_new_host_keys}, overwrite=overwrite)
    for w in res.warnings:
        sys.stderr.write(f"svctrace: warning: {w}\n")
    msg(f"wrote {res.path}: {len(res.nodes) - len(res.failed)} of {len(res.nodes)} node(s)")  # type: ignore[operator]
    if res.failed:
        raise CollectError(f"node(s) {', '.join(res.failed)} could not be read (see nodes/<node>/errors.json in "
                           f"{res.path}); the rest of the bundle is usable")
