"""Collect a node's dataplane through a short-lived pod pinned to that node.

The pod (like ``kubectl debug node/NAME --profile=netadmin``): ``nodeName`` set (no scheduler), host
network namespace, every capability dropped but NET_ADMIN and NET_RAW (what iptables-save,
iptables-legacy-save, nft, ipset and ipvsadm need to read the rules), seccomp RuntimeDefault, a read-only root
filesystem, the image pinned by digest when given one, no service account token, tolerates every taint, and dies on its own after
``active_deadline`` seconds even if svctrace is killed with SIGKILL. ``privileged=True`` adds the host's
filesystem read-only at /host and a privileged container, for nodes where that is needed.

Commands run through the exec API (a WebSocket, ``kubernetes.stream``). The iptables backend is detected
as the iptables-wrappers do: kubelet's ``KUBE-IPTABLES-HINT`` / ``KUBE-KUBELET-CANARY`` chains in the
mangle table of iptables-nft, then of iptables-legacy, else whichever holds more rules.

The pod is deleted afterwards whatever happens: success, an error, a timeout, Ctrl-C or SIGTERM
(try/finally, and SIGTERM/SIGHUP turned into KeyboardInterrupt while a pod exists). If even that fails,
the error says how to delete it by hand (``kubectl delete pod -l app.kubernetes.io/managed-by=svctrace``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from svctrace.collect.bundle import NodeDump, NodeError
from svctrace.collect.kube import Kube, NotFound, PermissionDenied, status_error, status_message
from svctrace.errors import CollectError, InputError, shorten

# A Kubernetes build image with both iptables backends (iptables-nft-save and iptables-legacy-save), ipset,
# conntrack and a shell. Any image with those tools works (--image).
DEFAULT_IMAGE = "registry.k8s.io/build-image/debian-iptables:bookworm-v1.0.0"
CONTAINER = "svctrace"
MANAGED_BY = ("app.kubernetes.io/managed-by", "svctrace")
NODE_LABEL = "svctrace.io/node"

Progress = Callable[[str], None]
CAPABILITIES = ("NET_ADMIN", "NET_RAW")  # all the dump tools need (see pod_manifest)
_DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")


def check_image(image: str) -> str:
    """The --image as given: a tag, or pinned by digest (`repo@sha256:<64 hex>`, used as is, so the node runs
    exactly that image). A malformed digest is a usage error rather than an ImagePullBackOff on every node."""
    image = image.strip()
    if not image or any(c.isspace() for c in image):
        raise InputError(f"--image {image!r} is not an image reference")
    if "@" in image and not _DIGEST.search(image):
        raise InputError(f"--image {image!r}: a digest is written repo@sha256:<64 hex digits>")
    return image


@dataclass
class DebugPodOptions:
    image: str = DEFAULT_IMAGE
    namespace: str | None = None  # default: the context's namespace, as kubectl debug does
    privileged: bool = False
    start_timeout: float = 120.0  # seconds to wait for the pod to run
    command_timeout: float = 60.0  # seconds for one node command (the node's `timeout` enforces it)
    exec_timeout: float = 300.0  # seconds for all the node commands together
    active_deadline: int = 900  # the pod stops by itself after this many seconds
    poll_interval: float = 0.25


@dataclass
class ExecResult:
    argv: list[str]
    rc: int | None  # None: the command did not run (or did not finish)
    stdout_bytes: bytes = b""
    stderr_bytes: bytes = b""
    error: str | None = None  # why it did not run / finish
    seconds: float = 0.0

    @property
    def stdout(self) -> str:
        return self.stdout_bytes.decode("utf-8", "replace")

    @property
    def stderr(self) -> str:
        return self.stderr_bytes.decode("utf-8", "replace")

    @property
    def ok(self) -> bool:
        return self.rc == 0 and self.error is None

    def describe_failure(self) -> str:
        if self.error:
            return self.error
        err = self.stderr.strip().splitlines()
        return f"exit code {self.rc}" + (f": {shorten(err[-1], 300)}" if err else "")


class DebugPodError(CollectError):
    """The debug pod could not be created, did not start, or could not be used."""


# -- signals ----------------------------------------------------------------------------------------

class _Guard:
    """What the signal handler knows (main thread only): how many signals came, the cancel events to set,
    whether the main thread is in a critical section (a pod being created or deleted)."""

    def __init__(self) -> None:
        self.depth = 0
        self.seen = 0
        self.critical = 0
        self.held: str | None = None  # a first signal that came during a critical section
        self.first: str | None = None  # the first signal's name
        self.cancels: list[threading.Event] = []
        self.old: dict[signal.Signals, Any] = {}


_GUARD = _Guard()
_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
ESCAPE_AFTER = 5  # signals: the fifth leaves at once, naming how to delete what may be left


def _on_signal(signum: int, frame: object) -> None:
    g = _GUARD
    g.seen += 1
    name = signal.Signals(signum).name
    for c in g.cancels:
        c.set()
    if g.seen == 1:
        g.first = name
        if g.critical:
            g.held = name  # raised when the pod's create or delete has its answer
            return
        raise KeyboardInterrupt(f"signal {name}")
    if g.seen == 2:
        os.write(2, b"svctrace: interrupted again: deleting the debug pods first (they are counted when done; "
                    b"interrupt 3 more times to leave at once)\n")
    if g.seen >= ESCAPE_AFTER:
        os.write(2, ("svctrace: interrupted: left at once; debug pods may remain: `kubectl delete pod -A -l "
                     f"{MANAGED_BY[0]}={MANAGED_BY[1]}` (they stop by themselves)\n").encode())
        os._exit(130)


@contextlib.contextmanager
def signals_interrupt(cancel: threading.Event | None = None) -> Iterator[None]:
    """While inside: SIGINT, SIGTERM and SIGHUP interrupt once. The first sets `cancel` (worker threads stop
    at their next step and delete their pods) and raises KeyboardInterrupt in the main thread, unless it is
    inside `critical()` (then when that ends); the second and third only say that the cleanup goes on: a
    pod's deletion is never broken by an impatient Ctrl-C. Nested uses share one handler. Only in the main
    thread (signals cannot be handled elsewhere)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    g = _GUARD
    if cancel is not None:
        g.cancels.append(cancel)
    g.depth += 1
    if g.depth == 1:
        g.seen, g.held, g.first = 0, None, None
        for sig in _SIGNALS:
            with contextlib.suppress(ValueError, OSError):
                g.old[sig] = signal.signal(sig, _on_signal)
    try:
        yield
    finally:
        g.depth -= 1
        if cancel is not None and cancel in g.cancels:
            g.cancels.remove(cancel)
        if g.depth == 0:
            for sig, h in g.old.items():
                with contextlib.suppress(ValueError, OSError):
                    signal.signal(sig, h)
            g.old.clear()


def first_signal() -> str | None:
    """The signal that interrupted the run inside signals_interrupt (SIGINT, SIGTERM, SIGHUP), if any."""
    return _GUARD.first


@contextlib.contextmanager
def critical() -> Iterator[None]:
    """A section no signal breaks (creating or deleting a pod, the final sweep): a first signal is held and
    raised as KeyboardInterrupt when the section ends. A no-op outside the main thread or the guard."""
    g = _GUARD
    if g.depth == 0 or threading.current_thread() is not threading.main_thread():
        yield
        return
    g.critical += 1
    try:
        yield
    finally:
        g.critical -= 1
        if g.critical == 0 and g.held is not None:
            held, g.held = g.held, None
            raise KeyboardInterrupt(f"signal {held}")


# -- the pod --------------------------------------------------------------------------------------

def pod_name(node: str) -> str:
    base = re.sub(r"[^a-z0-9-]", "-", node.lower()).strip("-")[:40].strip("-") or "node"
    return f"svctrace-{base}-{secrets.token_hex(3)}"


def pod_manifest(name: str, node: str, opts: DebugPodOptions) -> dict[str, Any]:
    sc: dict[str, Any]
    if opts.privileged:
        sc = {"privileged": True}
    else:
        # Least privilege: every capability dropped but the two the dump tools need, measured with each
        # tool under `setpriv --bounding-set` in a network namespace: iptables-legacy-save opens a raw socket
        # (NET_RAW) to read the tables by getsockopt (NET_ADMIN); iptables-nft-save, nft and ipset ask
        # nfnetlink, which wants NET_ADMIN; ipvsadm opens a raw socket and asks IP_VS_SO_GET_* (both).
        # The runtime's default seccomp profile, and nothing written to the image's filesystem (the
        # node script writes nothing; /tmp is an emptyDir for tools that want one).
        sc = {"privileged": False, "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
              "capabilities": {"drop": ["ALL"], "add": list(CAPABILITIES)},
              "seccompProfile": {"type": "RuntimeDefault"}}
    container: dict[str, Any] = {
        "name": CONTAINER, "image": opts.image, "imagePullPolicy": "IfNotPresent",
        # sleep for as long as the pod may live; every command arrives through exec
        "command": ["sleep", str(opts.active_deadline)],
        "securityContext": sc,
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "256Mi"}},
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    spec: dict[str, Any] = {
        "nodeName": node,
        "hostNetwork": True,
        "dnsPolicy": "ClusterFirstWithHostNet",
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": 0,
        "activeDeadlineSeconds": opts.active_deadline,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "tolerations": [{"operator": "Exists"}],
        "containers": [container],
    }
    if opts.privileged:
        container["volumeMounts"] = [{"name": "host-root", "mountPath": "/host", "readOnly": True}]
        spec["volumes"] = [{"name": "host-root", "hostPath": {"path": "/", "type": "Directory"}}]
    else:
        container["volumeMounts"] = [{"name": "tmp", "mountPath": "/tmp"}]
        spec["volumes"] = [{"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}}]
        spec["securityContext"] = {"seccompProfile": {"type": "RuntimeDefault"}}
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {MANAGED_BY[0]: MANAGED_BY[1], NODE_LABEL: node[:63].strip("-.")},
                     "annotations": {"svctrace.io/purpose": "read this node's netfilter rules; deleted after use"}},
        "spec": spec,
    }


def _note(progress: Progress | None, msg: str) -> None:
    if progress is not None:
        progress(msg)


class DebugPod:
    """A pod on one node, as a context manager: created and running inside, deleted on the way out."""

    def __init__(self, kube: Kube, node: str, opts: DebugPodOptions | None = None,
                 progress: Progress | None = None, cancel: threading.Event | None = None) -> None:
        self.kube = kube
        self.cancel = cancel  # set by another thread: stop at the next step (the pod is still deleted)
        self.node = node
        self.opts = opts or DebugPodOptions()
        self.namespace = self.opts.namespace or kube.conn.namespace or "default"
        self.name = pod_name(node)
        self.progress = progress
        self.created = False
        self.deleted = False
        self._signals: contextlib.ExitStack | None = None
        self._ws_client: Any = None  # an ApiClient of its own for exec (see _exec_api)

    # lifecycle
    def __enter__(self) -> DebugPod:
        self._signals = contextlib.ExitStack()
        self._signals.enter_context(signals_interrupt())
        try:
            self.create()
            self.wait_running()
        except BaseException:
            self._cleanup()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._cleanup()

    def _cleanup(self) -> None:
        try:
            self.delete()
        finally:
            if self._ws_client is not None:
                with contextlib.suppress(Exception):
                    self._ws_client.close()
                self._ws_client = None
            if self._signals is not None:
                self._signals.close()
                self._signals = None

    def create(self) -> None:
        _note(self.progress, f"{self.node}: starting pod {self.namespace}/{self.name} ({self.opts.image})")
        body = pod_manifest(self.name, self.node, self.opts)
        try:
            with critical():  # a Ctrl-C waits for the answer: then the pod is known, and deleted
                self.created = True  # from here on, delete it: the POST may succeed even if its answer is lost
                self.kube.pod_created(self.namespace, self.name)
                self.kube.call("create", "pods", self.namespace, self.kube.core.create_namespaced_pod,
                               self.namespace, body)
        except CollectError as e:
            if isinstance(e, PermissionDenied):
                self.created = False  # refused: nothing to delete (else it may exist: deleting is harmless)
                self.kube.pod_deleted(self.namespace, self.name, existed=False)
            detail = e.detail if isinstance(e, PermissionDenied) else str(e)
            if "PodSecurity" in detail:  # admission says no (also a 403), not RBAC
                raise DebugPodError(
                    f"{self.node}: namespace {self.namespace} does not admit the debug pod (Pod Security "
                    f"admission: {detail}); it needs hostNetwork and NET_ADMIN/NET_RAW, so use a namespace whose "
                    "pod-security level is privileged (--debug-namespace kube-system) or --via ssh") from None
            raise DebugPodError(f"{self.node}: cannot create the debug pod: {e}") from None

    def wait_running(self) -> None:
        deadline = time.monotonic() + self.opts.start_timeout
        last = "Pending"
        while True:
            pod = self.kube.get("pods", self.name, self.namespace)
            if pod is None:
                raise DebugPodError(f"{self.node}: the debug pod {self.namespace}/{self.name} disappeared while "
                                    "starting (deleted, or evicted)")
            done, last = self._judge(pod)
            if done:
                return
            self._check_cancel()
            if time.monotonic() >= deadline:
                raise DebugPodError(
                    f"{self.node}: the debug pod {self.namespace}/{self.name} did not start within "
                    f"{self.opts.start_timeout:g} s (last state: {last}); is the node Ready and its kubelet "
                    f"running? (kubectl describe pod -n {self.namespace} {self.name})")
            time.sleep(self.opts.poll_interval)

    def _judge(self, pod: dict[str, Any]) -> tuple[bool, str]:
        """(running?, state text); raises DebugPodError for states it will not leave."""
        st = pod.get("status") or {}
        phase = str(st.get("phase") or "Pending")
        where = f"{self.node}: debug pod {self.namespace}/{self.name}"
        for c in st.get("conditions") or []:
            if c.get("type") == "PodScheduled" and c.get("status") == "False" and c.get("reason") == "Unschedulable":
                raise DebugPodError(f"{where} is unschedulable: {c.get('message') or 'no reason given'}")
        if phase in ("Failed", "Succeeded"):
            why = " ".join(str(x) for x in (st.get("reason"), st.get("message")) if x) or "no reason given"
            raise DebugPodError(f"{where} ended ({phase}): {why}")
        label = phase
        for cs in (st.get("containerStatuses") or []) + (st.get("initContainerStatuses") or []):
            state = cs.get("state") or {}
            waiting = state.get("waiting") or {}
            reason = str(waiting.get("reason") or "")
            message = waiting.get("message") or "no message"
            if reason in ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull",
                          "RegistryUnavailable"):
                raise DebugPodError(
                    f"{where}: image {self.opts.image} cannot be pulled on the node ({reason}: {message}); give "
                    "an image the node can pull with --image (it needs sh and iptables-nft-save/iptables-legacy-save)")
            if reason in ("CreateContainerConfigError", "CreateContainerError", "RunContainerError",
                          "CrashLoopBackOff"):
                raise DebugPodError(f"{where}: the container cannot start ({reason}: {message})")
            term = state.get("terminated")
            if term:
                why = " ".join(str(x) for x in (term.get("reason"), term.get("message")) if x) or "Terminated"
                raise DebugPodError(f"{where}: the container exited (exit code {term.get('exitCode')}: {why})")
            if state.get("running") and phase == "Running":
                return True, "Running"
            if reason:
                label = f"{phase} ({reason})"
        if phase == "Running" and not st.get("containerStatuses"):
            return True, "Running"
        return False, label

    def delete(self) -> None:
        """Delete the pod (idempotent). A Ctrl-C during the deletion is absorbed once (the deletion is
        retried), and an exception of the progress callback is raised only after the deletion."""
        if not self.created or self.deleted:
            return
        pending: BaseException | None = None
        try:
            _note(self.progress, f"{self.node}: deleting pod {self.namespace}/{self.name}")
        except BaseException as e:
            pending = e
        for attempt in range(2):
            try:
                with critical():  # a Ctrl-C never breaks a deletion (held until it has its answer)
                    with contextlib.suppress(NotFound):
                        self.kube.call("delete", "pods", self.namespace, self.kube.core.delete_namespaced_pod,
                                       self.name, self.namespace, grace_period_seconds=0, name=self.name)
                    self.deleted = True
                    self.kube.pod_deleted(self.namespace, self.name)
                break
            except KeyboardInterrupt:
                if attempt == 1:
                    raise
            except CollectError as e:
                raise DebugPodError(f"{self.node}: the debug pod {self.namespace}/{self.name} could not be deleted "
                                    f"({e}); delete it with `kubectl delete pod -n {self.namespace} {self.name}` "
                                    f"(it stops by itself after {self.opts.active_deadline} s)") from None
        if pending is not None:
            raise pending

    def _check_cancel(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise KeyboardInterrupt("interrupted")

    def _exec_api(self) -> Any:
        """A CoreV1Api on an ApiClient used for nothing else: `kubernetes.stream` swaps the client's
        `call_api` while it connects, which would send other threads' requests through the WebSocket."""
        from kubernetes import client

        if self._ws_client is None:
            self._ws_client = client.ApiClient(configuration=self.kube.conn.configuration)
        return client.CoreV1Api(self._ws_client)

    # exec
    def exec(self, argv: Sequence[str], timeout: float | None = None) -> ExecResult:
        """Run argv in the pod through the exec API; never raises for the command's own failure."""
        from kubernetes.client.rest import ApiException
        from kubernetes.stream import stream

        limit = self.opts.command_timeout if timeout is None else timeout
        t0 = time.monotonic()
        res = ExecResult(list(argv), None)
        try:
            ws = stream(self._exec_api().connect_get_namespaced_pod_exec, self.name, self.namespace,
                        command=list(argv), container=CONTAINER, stderr=True, stdin=False, stdout=True, tty=False,
                        _preload_content=False, binary=True)
        except ApiException as e:
            ctx = e.__context__
            if isinstance(ctx, (KeyboardInterrupt, SystemExit)):
                raise ctx from None
            raise self._exec_error(e) from None
        out, err = bytearray(), bytearray()
        try:
            while ws.is_open():
                left = t0 + limit - time.monotonic()
                if left <= 0:
                    res.error = f"timed out after {limit:g} s"
                    break
                self._check_cancel()
                ws.update(timeout=min(left, 0.5))
                out += _bytes(ws.read_channel(1))
                err += _bytes(ws.read_channel(2))
            out += _bytes(ws.read_channel(1))
            err += _bytes(ws.read_channel(2))
            status = _bytes(ws.read_channel(3))
        finally:
            with contextlib.suppress(Exception):
                ws.close()
        res.stdout_bytes, res.stderr_bytes = bytes(out), bytes(err)
        res.seconds = time.monotonic() - t0
        if res.error is None:
            res.rc, res.error = _exit_status(status)
        return res

    def _exec_error(self, e: BaseException) -> CollectError:
        """The WebSocket handshake's failure (the client wraps it in an ApiException with status 0)."""
        ctx = e.__context__
        code = getattr(ctx, "status_code", None)
        if code is None:
            m = re.search(r"Handshake status (\d{3})", str(getattr(e, "reason", "") or e))
            code = int(m.group(1)) if m else None
        detail = status_message(getattr(ctx, "resp_body", None))
        if code == 403:
            return PermissionDenied("create", "pods/exec", self.namespace, detail)
        return status_error(code, detail, str(getattr(e, "reason", None) or e), "exec in", "pods", self.namespace,
                            self.kube.conn, self.name)


def _bytes(v: Any) -> bytes:
    if not v:
        return b""
    return v if isinstance(v, bytes) else str(v).encode()


def _exit_status(raw: bytes) -> tuple[int | None, str | None]:
    """The exec status (channel 3) as (exit code, error). No status: the stream ended early."""
    if not raw.strip():
        return None, "the exec stream ended without an exit status"
    try:
        st = json.loads(raw)
    except ValueError:
        return None, f"unreadable exec status: {shorten(repr(raw), 200)}"
    if st.get("status") == "Success":
        return 0, None
    if st.get("reason") == "NonZeroExitCode":
        for c in (st.get("details") or {}).get("causes") or []:
            if c.get("reason") == "ExitCode":
                try:
                    return int(c.get("message")), None
                except (TypeError, ValueError):
                    break
    msg = str(st.get("message") or "exec failed")
    if "executable file not found" in msg or "no such file or directory" in msg.lower():
        return 127, msg
    return None, msg


# -- collecting a node ---------------------------------------------------------------------------------

def collect_node(kube: Kube, node: str, opts: DebugPodOptions | None = None,
                 progress: Progress | None = None, cancel: threading.Event | None = None) -> NodeDump:
    """One node's dumps through a debug pod (deleted afterwards, whatever happens).

    The node commands (commands.py, shared with SSH) run as one `sh -c` script through exec; the pod runs
    as root with NET_ADMIN/NET_RAW, so no sudo. Raises DebugPodError when the pod cannot be used (it never
    started, exec is refused, the script timed out); a missing tool or a failing command is an entry of the
    node's errors.json instead.
    """
    from svctrace.collect import commands

    opts = opts or DebugPodOptions()
    t0 = time.monotonic()
    with DebugPod(kube, node, opts, progress, cancel) as pod:
        def run(script: str) -> commands.RunResult:
            _note(progress, f"{node}: running the node commands in {pod.namespace}/{pod.name}")
            r = pod.exec(["sh", "-c", script], timeout=opts.exec_timeout)
            if r.error is not None and r.rc is None:
                raise DebugPodError(f"{node}: the node commands in pod {pod.namespace}/{pod.name} failed: {r.error}")
            return commands.RunResult(r.rc, r.stdout_bytes, r.stderr_bytes)

        dump = commands.collect_node(run, host=node, transport="debug-pod", use_sudo=False,
                                     command_timeout=opts.command_timeout)
    dump.name = node  # the Kubernetes node name (the pod shares the host's hostname, which may differ)
    dump.host = node
    if not dump.ok and any(e.exit_code == 127 for e in dump.errors):
        dump.errors.insert(0, NodeError("node", f"the image {opts.image} lacks the dump tools (iptables-nft-save, "
                                                "iptables-legacy-save, sh)", hint="choose another with --image"))
    dump.elapsed = time.monotonic() - t0
    return dump
