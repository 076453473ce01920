"""Build the krew archive of the `kubectl svctrace` plugin and write its manifest (plugins/svctrace.yaml).

    python plugins/krew.py [--out dist] [--base-url URL] [--manifest plugins/svctrace.yaml]

The archive, `svctrace-krew-vVERSION.tar.gz`, holds `kubectl-svctrace` (a Python zip application of the
svctrace package: `python3 kubectl-svctrace ...`, run by kubectl as any plugin binary) and LICENSE. It is
reproducible: the same tree gives the same bytes (sorted members, fixed times and owners), so its sha256 can
be written into the manifest before the archive is uploaded. svctrace is pure Python: one archive serves
every platform. The zip application carries svctrace only; its dependencies (typer, rich, textual,
kubernetes, pyyaml; paramiko for SSH) must be importable by the host's python3 (3.11+), which the manifest's
caveats say, and the plugin says in one line when they are not.

After a release upload: `python plugins/krew.py --base-url https://…/releases/download/vVERSION`, commit the
manifest, and submit it to the krew index. Local install without an upload:
`kubectl krew install --manifest=plugins/svctrace.yaml --archive=dist/svctrace-krew-vVERSION.tar.gz`.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import re
import sys
import tarfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# `.invalid` never resolves (RFC 2606): the manifest names no download place until the project has one.
PLACEHOLDER_BASE = "https://releases.svctrace.invalid/v{version}"
PLATFORMS = (("linux", "amd64"), ("linux", "arm64"), ("darwin", "amd64"), ("darwin", "arm64"))
FIXED = (1980, 1, 1, 0, 0, 0)  # zip's earliest date; the tar's mtime is 0

MAIN = """\
import sys

if sys.version_info < (3, 11):
    sys.exit("kubectl svctrace: needs Python 3.11 or newer (this is %d.%d)" % sys.version_info[:2])
try:
    from svctrace.cli import main
except ImportError as e:
    sys.exit(f"kubectl svctrace: error: a Python package it needs is missing ({e.name}): "
             "pip install --user typer rich textual kubernetes pyyaml paramiko")
sys.argv[0] = "kubectl-svctrace"
main()
"""


def version() -> str:
    text = (REPO / "svctrace" / "__init__.py").read_text()
    m = re.search(r'__version__\s*=\s*"([^"]+)"', text)
    if not m:
        raise SystemExit("svctrace/__init__.py has no __version__")
    return m.group(1)


def zipapp_bytes() -> bytes:
    """`#!/usr/bin/env python3` + a zip of svctrace/ (sources and data, no caches) and __main__.py."""
    buf = io.BytesIO()
    buf.write(b"#!/usr/bin/env python3\n")
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        files = sorted(
            p
            for p in (REPO / "svctrace").rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".pyo")
        )
        for p in files:
            info = zipfile.ZipInfo(p.relative_to(REPO).as_posix(), FIXED)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, p.read_bytes())
        info = zipfile.ZipInfo("__main__.py", FIXED)
        info.external_attr = 0o644 << 16
        info.compress_type = zipfile.ZIP_DEFLATED
        z.writestr(info, MAIN)
    return buf.getvalue()


def archive_bytes() -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data, mode in (
            ("kubectl-svctrace", zipapp_bytes(), 0o755),
            ("LICENSE", (REPO / "LICENSE").read_bytes(), 0o644),
        ):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tf.addfile(info, io.BytesIO(data))
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0, filename="") as gz:
        gz.write(raw.getvalue())
    return out.getvalue()


def manifest(ver: str, sha256: str, base_url: str) -> str:
    uri = f"{base_url.rstrip('/')}/svctrace-krew-v{ver}.tar.gz"
    platforms = "".join(
        f"""\
  - selector:
      matchLabels:
        os: {os_}
        arch: {arch}
    uri: {uri}
    sha256: {sha256}
    files:
    - from: kubectl-svctrace
      to: .
    - from: LICENSE
      to: .
    bin: kubectl-svctrace
"""
        for os_, arch in PLATFORMS
    )
    return f"""\
# krew plugin manifest (https://krew.sigs.k8s.io/docs/developer-guide/plugin-manifest/), written by
# plugins/krew.py: version and sha256 follow the archive it builds; uri follows --base-url.
apiVersion: krew.googlecontainertools.github.com/v1alpha2
kind: Plugin
metadata:
  name: svctrace
spec:
  version: v{ver}
  shortDescription: Trace Service packets through kube-proxy's rules
  description: |
    Where does a packet sent to a Kubernetes Service really go, with what probability, and why does
    it fail? svctrace reads a node's kube-proxy dataplane (iptables, IPVS or nftables), walks it the way
    the kernel does (every branch at once) and tells the DNAT target, each backend's real probability,
    masquerade, drops and rejects, and the rules that decided; joined with the cluster's objects it names
    the pods and says what is wrong. `kubectl svctrace explain svc/web --demo` tries it on a bundled
    demo cluster; `kubectl svctrace tui` browses a live cluster.
  caveats: |
    svctrace is written in Python: it needs python3 (3.11 or newer) with its packages:
      pip install --user typer rich textual kubernetes pyyaml paramiko
    Reading a node's rules starts a debug pod on that node (hostNetwork, NET_ADMIN) or uses SSH.
  platforms:
{platforms}"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(REPO / "dist"), help="where the archive goes")
    ap.add_argument("--base-url", default=None, help="where the archive will be downloaded from")
    ap.add_argument(
        "--manifest", default=str(REPO / "plugins" / "svctrace.yaml"), help="the manifest to write"
    )
    args = ap.parse_args(argv)
    ver = version()
    data = archive_bytes()
    sha = hashlib.sha256(data).hexdigest()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"svctrace-krew-v{ver}.tar.gz"
    path.write_bytes(data)
    Path(args.manifest).write_text(manifest(ver, sha, args.base_url or PLACEHOLDER_BASE.format(version=ver)))
    sys.stdout.write(f"{path}  sha256 {sha}\n{args.manifest}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
