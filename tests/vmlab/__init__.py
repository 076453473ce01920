"""VM lab: a throwaway QEMU VM with a Debian distribution kernel, for what this machine's kernel lacks (ip_vs,
br_netfilter).

    lab = VMLab()                 # finds or builds the cached image (kernel + initramfs)
    run = lab.run(script, {"rules.txt": text})
    run.output                    # what the script printed (its stdout and stderr)
    run.rc, run.seconds, run.console

`run` boots the VM once, with the files under /case and the script as /case/run.sh, run by busybox sh as
root in the VM's initial network namespace; the VM powers off when it ends. Tools in the VM: busybox
(static), iproute2 (`ip`, `ip netns`), iptables (nft backend as `iptables*`, legacy as `iptables-legacy*`),
ipset, ipvsadm, conntrack, and `vmprobe` (tests/vmlab/probe.c: servers that answer with the address they were
reached on and the source they saw, TCP/UDP clients that tally the answers, ICMP echo). The netfilter, IPVS,
ipset, bridge (with br_netfilter), veth and dummy modules are loaded before the script starts.

The image is built once from `apt-get download linux-image-cloud-amd64` (the package it depends on holds the
kernel and modules; unpacked with `dpkg-deb -x`) and the host's binaries and their libraries (found with
`ldd`), and kept in the cache directory: $SVCTRACE_VMLAB_CACHE, else $XDG_CACHE_HOME/svctrace/vmlab, else
~/.cache/svctrace/vmlab. `python tests/vmlab build` builds it ahead (CI does, in .ci/run). Only the standard
library is used. `available()` says why the lab cannot run here (no qemu, no apt, no gcc, a failed download):
tests skip with that reason.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["VMLab", "VMRun", "available", "cache_dir"]

HERE = Path(__file__).resolve().parent
IMAGE_VERSION = "7"  # bump when what goes into the image changes
KERNEL_META = "linux-image-cloud-amd64"

# Host binaries copied into the image (with every library ldd names).
BINARIES = {
    "/bin/busybox": "bin/busybox",
    "/bin/ip": "sbin/ip",
    "/usr/sbin/ipvsadm": "sbin/ipvsadm",
    "/usr/sbin/ipset": "sbin/ipset",
    "/usr/sbin/conntrack": "sbin/conntrack",
    "/usr/sbin/xtables-nft-multi": "sbin/xtables-nft-multi",
    "/usr/sbin/xtables-legacy-multi": "sbin/xtables-legacy-multi",
}
XTABLES_DIR = "/usr/lib/x86_64-linux-gnu/xtables"
NFT = ("iptables", "iptables-save", "iptables-restore", "ip6tables", "ip6tables-save", "ip6tables-restore")
# The module trees copied; the modules loaded at boot (modprobe, with their dependencies).
MODULE_DIRS = (
    "net/netfilter",
    "net/ipv4/netfilter",
    "net/ipv6/netfilter",
    "net/bridge",
    "net/802",
    "net/llc",
    "drivers/net/veth.ko",
    "drivers/net/dummy.ko",
    "lib",
)
PRELOAD = [
    "veth",
    "dummy",
    "bridge",
    "br_netfilter",
    "nf_conntrack",
    "nf_nat",
    "nf_tables",
    "nft_compat",
    "nft_chain_nat",
    "nft_ct",
    "nft_masq",
    "nft_reject_ipv4",
    "nft_fib_ipv4",
    "nft_nat",
    "nft_redir",
    "nfnetlink_queue",
    "nf_conntrack_netlink",
    "ip_tables",
    "ip6_tables",
    "iptable_filter",
    "iptable_nat",
    "iptable_mangle",
    "iptable_raw",
    "ip6table_filter",
    "ip6table_nat",
    "ip6table_mangle",
    "ipt_REJECT",
    "ip6t_REJECT",
    "x_tables",
    "xt_comment",
    "xt_mark",
    "xt_MASQUERADE",
    "xt_conntrack",
    "xt_addrtype",
    "xt_physdev",
    "xt_ipvs",
    "xt_set",
    "xt_nat",
    "xt_multiport",
    "xt_statistic",
    "xt_recent",
    "xt_tcpudp",
    "xt_NFLOG",
    "xt_nfacct",
    "xt_state",
    "ip_set",
    "ip_set_hash_ip",
    "ip_set_hash_ipport",
    "ip_set_hash_ipportip",
    "ip_set_hash_ipportnet",
    "ip_set_hash_net",
    "ip_set_hash_netport",
    "ip_set_bitmap_port",
    "ip_set_list_set",
    "ip_vs",
    "ip_vs_rr",
    "ip_vs_wrr",
    "ip_vs_lc",
    "ip_vs_wlc",
    "ip_vs_sh",
    "ip_vs_mh",
    "ip_vs_sed",
    "ip_vs_nq",
    "ip_vs_dh",
    "ip_vs_fo",
    "ip_vs_ovf",
    "ip_vs_lblc",
    "ip_vs_lblcr",
]

_INIT = r"""#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sys /sys
/bin/busybox mount -t devtmpfs dev /dev
/bin/busybox mount -t tmpfs run /run
/bin/busybox mount -t tmpfs tmp /tmp
export PATH=/sbin:/bin HOME=/ TERM=dumb
exec 3>/dev/ttyS1
failed=""
for m in $(cat /etc/vmlab-modules); do modprobe "$m" 2>/dev/null || failed="$failed $m"; done
[ -n "$failed" ] && echo "vmlab: modules not loaded:$failed" >&3
echo /sbin/modprobe > /proc/sys/kernel/modprobe
ip link set lo up
echo "VMLAB-BEGIN $(cut -d' ' -f1 /proc/uptime)" >&3
cd /case && sh /case/run.sh >&3 2>&3
echo "VMLAB-RC $?" >&3
sync
poweroff -f
"""


def cache_dir() -> Path:
    if os.environ.get("SVCTRACE_VMLAB_CACHE"):
        return Path(os.environ["SVCTRACE_VMLAB_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "svctrace" / "vmlab"


def _image_dir() -> Path:
    return cache_dir() / f"image-{IMAGE_VERSION}"


class VMLabUnavailable(RuntimeError):
    """The lab cannot run here; the message says why (tests skip with it)."""


def _prerequisites() -> str | None:
    if not sys.platform.startswith("linux") or os.uname().machine != "x86_64":
        return "the VM lab needs an x86_64 Linux host"
    if shutil.which("qemu-system-x86_64") is None:
        return "qemu-system-x86_64 not found (apt-get install qemu-system-x86)"
    if (_image_dir() / "ready").exists():
        return None
    for tool, pkg in (("apt-get", "apt"), ("dpkg-deb", "dpkg"), ("gcc", "gcc"), ("ldd", "libc-bin")):
        if shutil.which(tool) is None:
            return f"{tool} not found to build the VM image ({pkg})"
    for src in [*BINARIES, XTABLES_DIR]:
        if not Path(src).exists():
            return (
                f"{src} not found to build the VM image (apt-get install busybox-static ipvsadm ipset conntrack "
                "iptables iproute2)"
            )
    if not Path("/usr/lib/x86_64-linux-gnu/libc.a").exists():
        return "libc.a not found to link vmprobe statically (libc6-dev)"
    return None


def available() -> tuple[bool, str]:
    """(True, "") when the lab can run here (the image is built on first use)."""
    why = _prerequisites()
    if why:
        return False, why
    try:
        image()
    except VMLabUnavailable as e:
        return False, str(e)
    return True, ""


# --------------------------------------------------------------------------- the image


def _run(cmd: list[str], cwd: Path | None = None) -> str:
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)
    if res.returncode != 0:
        raise VMLabUnavailable(f"{' '.join(cmd)} failed: {(res.stderr or res.stdout).strip()[-400:]}")
    return res.stdout


def _libraries(paths: Iterable[str]) -> set[str]:
    libs: set[str] = set()
    for p in paths:
        res = subprocess.run(["ldd", p], capture_output=True, text=True)
        for line in res.stdout.splitlines():
            m = re.search(r"(/\S+) \(0x", line)
            if m:
                libs.add(m.group(1))
    return libs


def _modinfo(ko: bytes) -> dict[str, list[str]]:
    """The key=value strings of a module's .modinfo section (found as NUL-separated strings; only the keys
    depends= and alias= are read)."""
    out: dict[str, list[str]] = {}
    for key in (b"depends=", b"alias="):
        for m in re.finditer(rb"\x00" + key + rb"([^\x00]*)\x00", ko):
            out.setdefault(key.decode()[:-1], []).append(m.group(1).decode(errors="replace"))
    return out


def _download_kernel(work: Path) -> tuple[Path, str]:
    _run(["apt-get", "download", KERNEL_META], cwd=work)
    meta = next(work.glob(f"{KERNEL_META}_*.deb"))
    depends = _run(["dpkg-deb", "-f", str(meta), "Depends"])
    pkg = next(
        (d.strip().split()[0] for d in depends.split(",") if d.strip().startswith("linux-image-")), None
    )
    if pkg is None:
        raise VMLabUnavailable(f"{meta.name} depends on no linux-image package: {depends.strip()}")
    _run(["apt-get", "download", pkg], cwd=work)
    deb = next(work.glob(f"{pkg}_*.deb"))
    root = work / "kernel"
    _run(["dpkg-deb", "-x", str(deb), str(root)])
    (mods,) = list((root / "lib" / "modules").iterdir())
    return root, mods.name


class _Cpio:
    """A newc cpio archive (what the kernel unpacks as an initramfs)."""

    def __init__(self) -> None:
        self.buf = io.BytesIO()
        self.ino = 1
        self.seen: set[str] = set()

    def _entry(self, name: str, mode: int, data: bytes = b"") -> None:
        name = name.strip("/")
        hdr = "070701" + "".join(
            f"{v:08x}" for v in (self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name) + 1, 0)
        )
        self.ino += 1
        self.buf.write(hdr.encode() + name.encode() + b"\x00")
        self.buf.write(b"\x00" * (-self.buf.tell() % 4))
        self.buf.write(data)
        self.buf.write(b"\x00" * (-self.buf.tell() % 4))

    def dir(self, name: str) -> None:
        name = name.strip("/")
        parent = name.rpartition("/")[0]
        if parent:
            self.dir(parent)
        if name and name not in self.seen:
            self.seen.add(name)
            self._entry(name, 0o040755)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self.dir(name.strip("/").rpartition("/")[0])
        self._entry(name, 0o100000 | mode, data)

    def link(self, name: str, target: str) -> None:
        self.dir(name.strip("/").rpartition("/")[0])
        self._entry(name, 0o120777, target.encode())

    def gz(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return gzip.compress(self.buf.getvalue(), compresslevel=6, mtime=0)


def _build(dest: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="vmlab-build-") as tmp:
        work = Path(tmp)
        root, kver = _download_kernel(work)
        kernel = next((root / "boot").glob("vmlinuz-*"))
        cp = _Cpio()
        # Modules: the trees in MODULE_DIRS, with a modules.dep and modules.alias made from their .modinfo.
        mroot = root / "lib" / "modules" / kver
        kos: dict[str, Path] = {}
        for d in MODULE_DIRS:
            p = mroot / "kernel" / d
            for ko in [p] if p.is_file() else sorted(p.rglob("*.ko")):
                kos[ko.stem.replace("-", "_")] = ko
        direct: dict[str, list[str]] = {}
        alias_lines = []
        for name, ko in sorted(kos.items()):
            data = ko.read_bytes()
            cp.file(f"lib/modules/{kver}/{ko.relative_to(mroot)}", data)
            info = _modinfo(data)
            direct[name] = [d.replace("-", "_") for dd in info.get("depends", []) for d in dd.split(",") if d]
            alias_lines += [f"alias {a} {name}" for a in info.get("alias", [])]

        def closure(name: str, order: list[str]) -> list[str]:
            # every dependency after the modules that need it, as depmod writes it (modprobe loads from the end)
            for d in direct.get(name, []):
                if d in kos and d not in order:
                    order.append(d)
                    closure(d, order)
                elif d in order:
                    order.remove(d)
                    order.append(d)
                    closure(d, order)
            return order

        dep_lines = [
            f"{ko.relative_to(mroot)}: " + " ".join(str(kos[d].relative_to(mroot)) for d in closure(n, []))
            for n, ko in sorted(kos.items())
        ]
        cp.file(f"lib/modules/{kver}/modules.dep", ("\n".join(dep_lines) + "\n").encode())
        cp.file(f"lib/modules/{kver}/modules.alias", ("\n".join(alias_lines) + "\n").encode())
        missing = [m for m in PRELOAD if m not in kos]
        builtin = (mroot / "modules.builtin").read_text() if (mroot / "modules.builtin").exists() else ""
        missing = [m for m in missing if f"/{m}.ko" not in builtin]
        if {"ip_vs", "br_netfilter"} & set(missing):
            raise VMLabUnavailable(f"the kernel package lacks modules: {' '.join(missing)}")
        cp.file("etc/vmlab-modules", " ".join(m for m in PRELOAD if m in kos).encode())
        # Binaries and their libraries.
        probe = work / "vmprobe"
        _run(["gcc", "-O2", "-static", "-o", str(probe), str(HERE / "probe.c")])
        cp.file("bin/vmprobe", probe.read_bytes(), 0o755)
        xt = sorted(str(p) for p in Path(XTABLES_DIR).glob("*.so"))
        for src, dst in BINARIES.items():
            cp.file(dst, Path(src).read_bytes(), 0o755)
        for lib in sorted(_libraries([*BINARIES, *xt])):
            cp.file(lib.lstrip("/"), Path(lib).resolve().read_bytes(), 0o755)
        for so in xt:
            cp.file(so.lstrip("/"), Path(so).read_bytes(), 0o755)
        for name in NFT:
            cp.link(f"sbin/{name}", "xtables-nft-multi")
        for name in ("iptables-legacy", "iptables-legacy-save", "iptables-legacy-restore"):
            cp.link(f"sbin/{name}", "xtables-legacy-multi")
        applets = _run(["/bin/busybox", "--list"]).split()
        for a in applets:
            if a not in ("ip", "busybox"):
                cp.link(f"bin/{a}", "busybox")
        cp.link("sbin/modprobe", "/bin/busybox")
        for d in ("proc", "sys", "dev", "run", "tmp", "case", "var", "etc/iproute2"):
            cp.dir(d)
        cp.link("var/run", "/run")
        for f in ("/etc/protocols", "/etc/services"):
            if Path(f).exists():
                cp.file(f.lstrip("/"), Path(f).read_bytes())
        cp.file("etc/passwd", b"root:x:0:0:root:/:/bin/sh\n")
        cp.file("etc/group", b"root:x:0:\n")
        cp.file("init", _INIT.encode(), 0o755)
        tmpd = Path(tempfile.mkdtemp(prefix="image-", dir=dest.parent))
        shutil.copyfile(kernel, tmpd / "vmlinuz")
        (tmpd / "initrd.gz").write_bytes(cp.gz())
        (tmpd / "kernel-version").write_text(kver + "\n")
        (tmpd / "modules").write_text("\n".join(sorted(kos)) + "\n")
        (tmpd / "ready").write_text(time.strftime("%Y-%m-%dT%H:%M:%SZ\n", time.gmtime()))
        if dest.exists():
            shutil.rmtree(dest)
        tmpd.rename(dest)


@dataclass(frozen=True)
class Image:
    kernel: Path
    initrd: Path
    kernel_version: str
    modules: frozenset[str]


def image() -> Image:
    """The cached image, built on first use (one builder at a time: a lock file in the cache directory)."""
    dest = _image_dir()
    if not (dest / "ready").exists():
        why = _prerequisites()
        if why:
            raise VMLabUnavailable(why)
        dest.parent.mkdir(parents=True, exist_ok=True)
        with open(dest.parent / "build.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (dest / "ready").exists():
                _build(dest)
    return Image(
        dest / "vmlinuz",
        dest / "initrd.gz",
        (dest / "kernel-version").read_text().strip(),
        frozenset((dest / "modules").read_text().split()),
    )


# --------------------------------------------------------------------------- a run


@dataclass(frozen=True)
class VMRun:
    output: str  # the script's stdout and stderr
    rc: int | None  # the script's exit status; None when the VM ended before the script did
    seconds: float  # the whole run, boot to power-off
    console: str  # the kernel's console (boot messages, oopses)
    modules_failed: tuple[str, ...]  # modules of PRELOAD that did not load


class VMLab:
    def __init__(self, memory_mb: int = 512, cpus: int = 1) -> None:
        self.image = image()
        self.memory_mb, self.cpus = memory_mb, cpus

    @property
    def br_netfilter(self) -> bool:
        return "br_netfilter" in self.image.modules

    def run(self, script: str, files: Mapping[str, str | bytes] | None = None, timeout: float = 300) -> VMRun:
        """Boot the VM, run `script` (busybox sh) with `files` under /case, return what it printed."""
        cp = _Cpio()
        cp.dir("case")
        cp.file("case/run.sh", script.encode(), 0o755)
        for name, data in (files or {}).items():
            cp.file(f"case/{name}", data.encode() if isinstance(data, str) else data, 0o644)
        with tempfile.TemporaryDirectory(prefix="vmlab-run-") as tmp:
            t = Path(tmp)
            initrd = t / "initrd.gz"
            initrd.write_bytes(self.image.initrd.read_bytes() + cp.gz())
            out, con = t / "out", t / "console"
            cmd = [
                "qemu-system-x86_64",
                "-accel",
                "tcg",
                "-m",
                str(self.memory_mb),
                "-smp",
                str(self.cpus),
                "-nodefaults",
                "-no-user-config",
                "-display",
                "none",
                "-no-reboot",
                "-kernel",
                str(self.image.kernel),
                "-initrd",
                str(initrd),
                "-append",
                "console=ttyS0 quiet loglevel=3 panic=-1 rdinit=/init",
                "-serial",
                f"file:{con}",
                "-serial",
                f"file:{out}",
                "-net",
                "none",
            ]
            t0 = time.monotonic()
            with contextlib.suppress(subprocess.TimeoutExpired):  # a hung VM: its output so far tells why
                subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
            seconds = time.monotonic() - t0
            text = out.read_text(errors="replace") if out.exists() else ""
            console = con.read_text(errors="replace") if con.exists() else ""
        failed: tuple[str, ...] = ()
        head, _, body = text.partition("VMLAB-BEGIN")
        body = body.partition("\n")[2]
        m = re.search(r"vmlab: modules not loaded:(.*)", head)
        if m:
            failed = tuple(m.group(1).split())
        rc = None
        m2 = re.search(r"^VMLAB-RC (\d+)\s*$", body, re.M)
        if m2:
            rc = int(m2.group(1))
            body = body[: m2.start()]
        return VMRun(body.replace("\r\n", "\n"), rc, seconds, console, failed)


def main(argv: list[str]) -> int:
    if argv[:1] == ["build"]:
        why = _prerequisites()
        if why:
            print(f"vmlab: cannot build: {why}", file=sys.stderr)
            return 1
        img = image()
        print(
            f"vmlab: image ready: kernel {img.kernel_version}, {len(img.modules)} modules, in {img.kernel.parent}"
        )
        return 0
    if argv[:1] == ["run"] and len(argv) >= 2:
        files = {Path(f).name: Path(f).read_bytes() for f in argv[2:]}
        r = VMLab().run(Path(argv[1]).read_text(), files)
        sys.stdout.write(r.output)
        print(
            f"vmlab: rc {r.rc}, {r.seconds:.1f} s, modules not loaded: {' '.join(r.modules_failed) or 'none'}",
            file=sys.stderr,
        )
        return 0 if r.rc == 0 else 1
    print("usage: python tests/vmlab build | run SCRIPT [FILE...]", file=sys.stderr)
    return 2
