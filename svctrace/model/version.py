"""Kubernetes versions: the one parser. "1.28", "v1.28.3", "1.28.0-gke.1" and (1, 28) all read as (1, 28)."""

from __future__ import annotations

import re

Version = tuple[int, int]

_VERSION_RE = re.compile(r"^\s*[vV]?(\d+)\.(\d+)")


def parse_version(version: str | tuple[int, ...]) -> Version:
    """(major, minor) of a Kubernetes version; ValueError (naming the text) when it is not one."""
    if isinstance(version, tuple):
        if len(version) >= 2 and all(isinstance(x, int) for x in version[:2]):
            return int(version[0]), int(version[1])
        raise ValueError(f"not a Kubernetes version: {version!r}")
    m = _VERSION_RE.match(str(version))
    if not m:
        raise ValueError(f"not a Kubernetes version: {version!r} (like 1.30 or v1.30.2)")
    return int(m.group(1)), int(m.group(2))


def version_text(version: Version) -> str:
    """(1, 30) -> "1.30", the spelling svctrace prints and its options take."""
    return f"{version[0]}.{version[1]}"
