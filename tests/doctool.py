"""Keep the user guide's examples real: every ```console block in docs/*.md is a command and its output.

`python tests/doctool.py --write` re-runs the commands and rewrites the outputs; the test
(test_docs.py) re-runs them and fails when a page no longer shows what the tool prints.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
BLOCK = re.compile(r"```console\n\$ (?P<cmd>[^\n]+)\n(?P<out>.*?)```", re.S)
WIDTH = "100"


def run_command(cmd: str) -> str:
    argv = shlex.split(cmd)
    if "-o" in argv and argv[:2] == ["svctrace", "simulate"]:
        import shutil

        shutil.rmtree(argv[argv.index("-o") + 1], ignore_errors=True)  # the page writes a fresh bundle
    if argv[:3] == ["svctrace", "learn", "drill"] and "--dir" in argv and "--answer" not in argv:
        import shutil

        shutil.rmtree(argv[argv.index("--dir") + 1], ignore_errors=True)  # the drill writes a fresh snapshot
    exe = Path(sys.executable).parent / argv[0]
    if exe.exists():
        argv[0] = str(exe)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FORCE_COLOR", "CLICOLOR"))}
    env.update({"COLUMNS": WIDTH, "NO_COLOR": "1", "TERM": "dumb"})
    if argv[1:2] == ["learn"]:  # the learner's progress: a scratch directory, never the user's own
        import tempfile

        env["XDG_STATE_HOME"] = os.path.join(tempfile.gettempdir(), "svctrace-doctool-state")
    p = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    out = p.stdout + p.stderr
    if p.returncode:
        out += f"[exit {p.returncode}]\n"
    return "\n".join(line.rstrip() for line in out.splitlines()) + "\n"


def blocks(page: Path) -> list[tuple[str, str]]:
    return [(m.group("cmd"), m.group("out")) for m in BLOCK.finditer(page.read_text())]


def rewrite(page: Path) -> bool:
    text = page.read_text()
    new = BLOCK.sub(lambda m: f"```console\n$ {m.group('cmd')}\n{run_command(m.group('cmd'))}```", text)
    if new != text:
        page.write_text(new)
        return True
    return False


# The pictures in the docs (docs/img/NAME.dot and NAME.svg): each made by the command beside it with `-o dot`;
# the SVG is Graphviz's drawing of that DOT (what `-o svg` prints). tests/test_graphs.py regenerates them.
PICTURES = {
    "web-nodeport-iptables": "svctrace explain svc/web-nodeport --demo --to node-port --node node01",
    "web-nodeport-ipvs": "svctrace explain svc/web-nodeport --demo --to node-port --node node03",
    "web-nodeport-nftables": "svctrace explain svc/web-nodeport --demo --to node-port --node node04",
    "trace-nodeport": "svctrace trace --demo --src 192.168.0.100 --dst 192.168.0.2 --dport 30080",
    "payment-reject": "svctrace explain svc/payment --demo",
}
IMG = DOCS / "img"


def picture_dot(name: str) -> str:
    argv = [*shlex.split(PICTURES[name]), "-o", "dot"]
    exe = Path(sys.executable).parent / argv[0]
    if exe.exists():
        argv[0] = str(exe)
    p = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=120)
    if p.returncode not in (0, 1) or not p.stdout.startswith("digraph"):
        raise RuntimeError(f"{PICTURES[name]} -o dot failed: {p.stderr}")
    return p.stdout


def write_pictures() -> None:
    from svctrace.render.graph import dot_to_svg

    IMG.mkdir(exist_ok=True)
    for name in PICTURES:
        dot = picture_dot(name)
        for ext, text in (("dot", dot), ("svg", dot_to_svg(dot))):
            f = IMG / f"{name}.{ext}"
            if not f.exists() or f.read_text() != text:
                f.write_text(text)
                print(f"updated {f.relative_to(REPO)}")


if __name__ == "__main__":
    if "--write" in sys.argv:
        for page in sorted(DOCS.glob("*.md")):
            if rewrite(page):
                print(f"updated {page.relative_to(REPO)}")
        write_pictures()
