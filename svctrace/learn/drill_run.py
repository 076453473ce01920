"""`svctrace learn drill` and `svctrace learn show`: starting a drill (its snapshot written to a directory, its
ticket printed), answering it (interactively, or with --answer and --fix for scripts), and a kubectl-like view of
a snapshot's objects. Plain text or JSON; exit 0 when the answer is right, 1 when it is not.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any, TextIO

from svctrace import __version__
from svctrace.errors import InputError
from svctrace.learn import drills as D
from svctrace.learn.progress import DrillRecord, Progress

TIME_LIMIT = 8 * 60  # seconds per timed drill: the CKA gives about 7 minutes per task (17 tasks, 2 hours)


def _write_bundle(directory: Path, run: D.Run) -> None:
    if directory.exists() and any(directory.iterdir()):
        raise InputError("exists and is not empty: choose another --dir, or remove it", source=str(directory))
    for rel, text in run.sim.bundle_files(__version__).items():
        f = directory / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text, encoding="utf-8")


def _para(text: str, indent: str = "") -> str:
    """A paragraph wrapped to the terminal (at most 100 columns), never breaking a word or a command."""
    import shutil
    import textwrap

    width = max(40, min(shutil.get_terminal_size((100, 24)).columns, 100))
    return textwrap.fill(text, width, initial_indent=indent, subsequent_indent=indent, break_long_words=False,
                         break_on_hyphens=False) + "\n"


def _choices(d: D.Drill) -> list[str]:
    return [f"  {'abcdefgh'[i]}) {c}" for i, c in enumerate(d.choices)]


def start(seed: int | None, cls: str | None, directory: str | None, timed: bool, progress: Progress,
          out: TextIO, as_json: bool) -> D.Drill:
    """Build a drill, write its snapshot, remember it as the current drill, and print its ticket."""
    if seed is None:
        seed = random.SystemRandom().randrange(1, 100_000)
    d = D.make(seed, cls)
    where = Path(directory) if directory else Path(f"svctrace-drill-{d.id}")
    _write_bundle(where, D.run(d.world))
    progress.current = {"seed": seed, "class": d.cls.id, "dir": str(where), "started": time.time(),
                        "limit": TIME_LIMIT if timed else 0}
    rec = progress.drills.setdefault(d.cls.id, DrillRecord())
    rec.tried += 1
    if as_json:
        doc = d.to_json()
        doc["commands"] = D.commands(d, str(where))
        doc["snapshot"] = str(where)
        doc["time_limit_seconds"] = TIME_LIMIT if timed else None
        out.write(json.dumps(doc, indent=2) + "\n")
        return d
    w = out.write
    w(f"Drill {d.id} (seed {seed}){' — timed: ' + str(TIME_LIMIT // 60) + ' minutes' if timed else ''}\n\n")
    w(_para(f"Ticket: {d.question.ticket}") + "\n")
    w(_para(f"The cluster is in {where}/ (a snapshot: its names, addresses and ports are examples the seed chose)."))
    w("Investigate with:\n")
    for c in D.commands(d, str(where)):
        w(f"  {c}\n")
    w("\nRoot cause — one of:\n")
    w("\n".join(_choices(d)) + "\n\n")
    w("Answer with the letter and a fix — a YAML file that patches the object(s) as `kubectl patch` would, e.g.\n"
      f"  kind: Service\n  metadata: {{name: {d.world.app}, namespace: {d.world.ns}}}\n  spec: {{...}}\n"
      f"then: svctrace learn drill --answer LETTER --fix fix.yaml\n")
    return d


def _read_fix(path: str, stdin: TextIO) -> list[dict[str, Any]]:
    import yaml

    if path == "-":
        text, source = stdin.read(), "<stdin>"
    else:
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise InputError(f"cannot read the fix ({type(e).__name__})", source=path) from e
        source = path
    try:
        docs = [x for x in yaml.safe_load_all(text) if x is not None]
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise InputError(f"not YAML: {getattr(e, 'problem', None) or e}", source=source,
                         line=mark.line + 1 if mark is not None else None) from e
    flat: list[dict[str, Any]] = []
    for x in docs:
        flat.extend(x.get("items") or [] if isinstance(x, dict) and x.get("kind") == "List" else [x])
    if not flat:
        raise InputError("the fix is empty", source=source)
    return flat


def answer(seed: int | None, cls: str | None, cause_text: str | None, fix: str | None, progress: Progress,
           out: TextIO, stdin: TextIO, as_json: bool) -> int:
    """Grade an answer to the current drill (or the one `seed`/`cls` name). 0 right, 1 wrong."""
    cur = progress.current
    if seed is None:
        if cur is None:
            raise InputError("no drill in progress: start one with `svctrace learn drill` (or give --seed)")
        seed, cls = int(cur["seed"]), str(cur["class"])
    d = D.make(seed, cls)
    cause = D.parse_cause(cause_text, d) if cause_text is not None else None
    if cause_text is not None and cause is None:
        raise InputError(f"--answer {cause_text!r} is not one of {', '.join('abcdefgh'[:len(d.choices)])}")
    patches = _read_fix(fix, stdin) if fix is not None else None
    g = D.grade(d, cause, patches, fix or "fix")
    elapsed = None
    late = False
    if cur is not None and cur.get("seed") == seed and cur.get("class") == d.cls.id:
        elapsed = int(time.time() - float(cur["started"]))
        late = bool(cur.get("limit")) and elapsed > int(cur["limit"])
        rec = progress.drills.setdefault(d.cls.id, DrillRecord())
        if g.passed and not late:
            rec.solved += 1
            if cur.get("limit"):
                rec.best_seconds = elapsed if not rec.best_seconds else min(rec.best_seconds, elapsed)
            progress.current = None
    passed = g.passed and not late
    if as_json:
        doc = {"drill": d.id, "class": d.cls.id, **g.to_json(), "passed": passed, "fix_is_intended": g.intended,
               "right_cause": d.cls.cause, "intended_fix": d.cls.fix, "elapsed_seconds": elapsed,
               "out_of_time": late}
        out.write(json.dumps(doc, indent=2) + "\n")
        return 0 if passed else 1
    w = out.write
    if cause is None:
        w("Root cause: not answered.\n")
    else:
        w(f"Root cause: {'right' if g.cause_right else 'not quite'} — {d.cls.cause}.\n")
    if patches is None:
        w("Fix: not given.\n")
    elif g.fix_works:
        w(_para("Fix: it works — the engine applied it, simulated the cluster again, and the ticket's packet now "
                "reaches a ready pod on the port its application listens on"
                + ("." if g.intended else f" (not the intended fix, which is to {d.cls.fix}; any working fix "
                   "counts).")))
    else:
        w("Fix: it does not work yet. After applying it the engine still finds:\n")
        for r in g.reasons[:5]:
            w(_para(f"- {r}", "  ").replace("  - ", "  - ", 1))
        w(f"(The intended fix: {d.cls.fix}.)\n" if g.cause_right else "")
    if late and elapsed is not None:
        w(f"Time: {elapsed // 60}:{elapsed % 60:02d}, over the {int(cur['limit']) // 60} minutes of a timed drill "
          "(not counted as solved).\n" if cur else "")
    elif elapsed is not None and cur is not None and cur.get("limit"):
        w(f"Time: {elapsed // 60}:{elapsed % 60:02d} of {int(cur['limit']) // 60}:00.\n")
    w("Passed.\n" if passed else "Not passed.\n")
    return 0 if passed else 1


def ask_interactively(d: D.Drill, stdin: TextIO, out: TextIO) -> tuple[str | None, str | None]:
    """On a terminal: the letter, then the fix file's path (empty: answer later)."""
    out.write("Your root cause (letter, empty to answer later): ")
    out.flush()
    cause = stdin.readline().strip()
    if not cause:
        return None, None
    out.write("Your fix (path to a YAML patch; empty to answer later): ")
    out.flush()
    fix = stdin.readline().strip()
    return cause, fix or None


def list_classes(progress: Progress, out: TextIO) -> None:
    idw = max(len(c) for c in D.CLASSES)
    out.write(f"Drill classes ({len(D.CLASSES)}):\n")
    for c in D.CLASSES.values():
        r = progress.drills.get(c.id)
        done = f"  [solved {r.solved}/{r.tried}]" if r else ""
        out.write(f"  {c.id:<{idw}}  {c.title}{done}\n")
    out.write("Start one with `svctrace learn drill [--class CLASS] [--seed N] [--timed]`.\n")


# -- learn show: kubectl get -o yaml on a snapshot -----------------------------------------------------------

def show(what: str, namespace: str | None, snapshot: str, output: str, out: TextIO) -> int:
    from svctrace.model.cluster import find_objects
    from svctrace.model.snapshot import load_snapshot

    snap = load_snapshot(snapshot)
    objs = find_objects(snap.cluster, what, namespace)
    if not objs:
        where = f" in namespace {namespace}" if namespace else ""
        raise InputError(f"no {what}{where} in {snapshot}")
    if output == "json":
        doc: Any = objs[0] if "/" in what.replace(" ", "/", 1) and len(objs) == 1 else {
            "apiVersion": "v1", "kind": "List", "items": objs}
        out.write(json.dumps(doc, indent=2) + "\n")
    elif output == "yaml":
        import yaml

        doc = objs[0] if "/" in what.replace(" ", "/", 1) and len(objs) == 1 else {
            "apiVersion": "v1", "kind": "List", "items": objs}
        out.write(yaml.safe_dump(doc, sort_keys=False, default_flow_style=False))
    else:
        out.write(_table(objs))
    return 0


def _table(objs: list[dict[str, Any]]) -> str:
    rows: list[list[str]] = []
    kind = objs[0].get("kind")
    for o in objs:
        m = o.get("metadata") or {}
        spec, status = o.get("spec") or {}, o.get("status") or {}
        if kind == "Pod":
            ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
            rows.append([m.get("name", ""), "1/1" if ready else "0/1", status.get("phase", ""),
                         status.get("podIP", ""), spec.get("nodeName", "")])
        elif kind == "Service":
            ports = ",".join(f"{p.get('port')}{':' + str(p['nodePort']) if p.get('nodePort') else ''}/"
                             f"{p.get('protocol', 'TCP')}" for p in spec.get("ports") or [])
            ext = ",".join(i.get("ip", "") for i in (status.get("loadBalancer") or {}).get("ingress") or [])
            rows.append([m.get("name", ""), spec.get("type", "ClusterIP"), spec.get("clusterIP", ""),
                         ext or "<none>", ports])
        elif kind == "Deployment":
            rows.append([m.get("name", ""), str(spec.get("replicas", 1))])
        else:
            rows.append([m.get("name", "")])
    head = {"Pod": ["NAME", "READY", "STATUS", "IP", "NODE"],
            "Service": ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)"],
            "Deployment": ["NAME", "REPLICAS"]}.get(str(kind), ["NAME"])
    table = [head, *rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(head))]
    return "".join("   ".join(c.ljust(widths[i]) for i, c in enumerate(r)).rstrip() + "\n" for r in table)
