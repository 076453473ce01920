"""CKA troubleshooting drills (`svctrace learn drill`): each failure class played end to end, non-interactively,
through the real command line: the broken cluster fails and explain names it, the right cause with the intended
fix passes, a wrong cause fails, a fix that changes nothing fails, and another working fix passes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from svctrace.explain import explain
from svctrace.learn import drills as D
from svctrace.model.snapshot import load_snapshot

ROOT = Path(__file__).resolve().parents[1]
SEEDS = (11, 12)

# Another fix that works, per class: not the drill's own.
ALTERNATIVES = {
    "selector": lambda w: [{"kind": "Service", "metadata": {"name": w.app, "namespace": w.ns},
                            "spec": {"selector": {"app": None, "tier": "backend"}}}],
    "target-port": lambda w: [{"kind": "Service", "metadata": {"name": w.app, "namespace": w.ns},
                               "spec": {"ports": [{"port": w.port, "targetPort": "http"}]}}],
    "named-port": lambda w: [{"kind": "Service", "metadata": {"name": w.app, "namespace": w.ns},
                              "spec": {"ports": [{"port": w.port, "targetPort": w.listen}]}}],
    "readiness": lambda w: [{"kind": "Deployment", "metadata": {"name": w.app, "namespace": w.ns},
                             "spec": {"template": {"spec": {"containers": [
                                 {"name": w.app, "readinessProbe": {"httpGet": {"port": "http"}}}]}}}}],
    "no-endpoints": lambda w: [{"kind": "Deployment", "metadata": {"name": w.app, "namespace": w.ns},
                                "spec": {"replicas": 3}}],
    "etp-local": lambda w: [{"kind": "Deployment", "metadata": {"name": w.app, "namespace": w.ns},
                             "spec": {"replicas": 2}}],
    "netpol-port": lambda w: [{"kind": "NetworkPolicy", "metadata": {"name": f"{w.app}-allow-clients",
                                                                      "namespace": w.ns}, "$patch": "delete"}],
    "port-protocol": lambda w: [{"kind": "Service", "metadata": {"name": w.app, "namespace": w.ns},
                                 "spec": {"ports": [{"port": w.port, "targetPort": w.listen}]}}],
    "source-range": lambda w: [{"kind": "Service", "metadata": {"name": w.app, "namespace": w.ns},
                                "spec": {"loadBalancerSourceRanges": None}}],
}


def cli(args: list[str], state: Path, cwd: Path, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "XDG_STATE_HOME": str(state), "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-c", "from svctrace.cli import main; main()", *args], cwd=cwd,
                          env=env, input=stdin, capture_output=True, text=True, timeout=120)


def test_every_class_is_tested() -> None:
    assert set(ALTERNATIVES) == set(D.CLASSES) and len(D.CLASSES) >= 7


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("cls", sorted(D.CLASSES))
def test_each_class_broken_named_and_graded(cls: str, seed: int) -> None:
    d = D.make(seed, cls)
    healthy = D.world(seed)
    # The healthy world answers the ticket, except where the ticket itself needs the broken object (a NodePort, a
    # LoadBalancer, a UDP port).
    assert D.works(healthy, D.make(seed, cls).question).works or cls in ("etp-local", "source-range", "port-protocol")
    broken = D.works(d.world, d.question)
    assert not broken.works and broken.reasons
    assert broken.exp is not None and set(d.cls.codes) <= {x.code for x in broken.exp.diagnostics}
    # Right cause, intended fix: passes; its world is the drill's own.
    g = D.grade(d, d.answer, d.cls.patch(d.world))
    assert g.passed and g.intended, g.reasons
    # A wrong cause with the right fix, the right cause with a fix that changes nothing: both fail.
    wrong = (d.answer + 1) % len(d.choices)
    assert not D.grade(d, wrong, d.cls.patch(d.world)).passed
    noop = [{"kind": "Service", "metadata": {"name": d.world.app, "namespace": d.world.ns}}]
    g = D.grade(d, d.answer, noop)
    assert not g.passed and not g.fix_works and g.reasons
    # Another fix that works passes, and is not taken for the intended one.
    g = D.grade(d, d.answer, ALTERNATIVES[cls](d.world))
    assert g.passed and not g.intended, g.reasons


def test_the_same_seed_gives_the_same_drill_and_seeds_vary_the_examples() -> None:
    a, b = D.make(5, "selector"), D.make(5, "selector")
    assert a.to_json() == b.to_json() and D.run(a.world).sim.dumps == D.run(b.world).sim.dumps
    worlds = {(D.world(s).ns, D.world(s).app, D.world(s).listen, D.world(s).nodes[1][1]) for s in range(1, 30)}
    assert len(worlds) > 10
    assert {D.make(s).cls.id for s in range(1, 60)} == set(D.CLASSES)


@pytest.mark.slow
@pytest.mark.parametrize("cls", sorted(D.CLASSES))
def test_played_end_to_end_on_the_command_line(cls: str, tmp_path: Path) -> None:
    """Start the drill, investigate with the printed commands on the written snapshot, answer wrong, answer with
    another working fix, answer right — as a script would."""
    state = tmp_path / "state"
    p = cli(["learn", "drill", "--class", cls, "--seed", "21", "-o", "json"], state, tmp_path)
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert doc["class"] == cls and len(doc["choices"]) == 4 and Path(tmp_path / doc["snapshot"]).is_dir()
    d = D.make(21, cls)
    # The explain command the drill prints, on the snapshot it wrote: exit 1 and the class's diagnostics.
    explain_cmd = doc["commands"][0].split()[1:]
    p = cli([*explain_cmd, "-o", "json"], state, tmp_path)
    assert p.returncode in (0, 1), p.stderr
    codes = {x["code"] for x in json.loads(p.stdout)["diagnostics"]}
    assert set(d.cls.codes) <= codes
    # `svctrace check` on the drill's namespace: not healthy (exit 1) for a cluster-IP ticket, naming the class's code
    # (its default question is the cluster IP one: a NodePort or load-balancer ticket may look ok there).
    p = cli([*doc["commands"][1].split()[1:], "-o", "json"], state, tmp_path)
    assert doc["commands"][1].startswith("svctrace check") and p.returncode in (0, 1), p.stderr
    if d.question.request.to is None and d.question.request.proto is None:
        report = json.loads(p.stdout)
        assert p.returncode == 1 and not report["healthy"]
        assert set(d.cls.codes) <= {c for item in report["items"] for c in item["codes"]}
    # The snapshot on disk is what the engine grades: explain() on it agrees with the in-memory world.
    exp = explain(load_snapshot(str(tmp_path / doc["snapshot"])), d.question.request)
    assert {x.code for x in exp.diagnostics} == {x.code for x in D.works(d.world, d.question).exp.diagnostics}
    letter = "abcd"[d.answer]
    wrong_letter = "abcd"[(d.answer + 1) % 4]
    fix = tmp_path / "fix.yaml"
    fix.write_text(yaml.safe_dump_all(d.cls.patch(d.world)))
    alt = tmp_path / "alt.yaml"
    alt.write_text(yaml.safe_dump_all(ALTERNATIVES[cls](d.world)))
    p = cli(["learn", "drill", "--answer", wrong_letter, "--fix", str(fix)], state, tmp_path)
    assert p.returncode == 1 and "Root cause: not quite" in p.stdout and "Not passed." in p.stdout
    p = cli(["learn", "drill", "--answer", letter, "--fix", str(alt)], state, tmp_path)
    assert p.returncode == 0 and "not the intended fix" in p.stdout and "Passed." in p.stdout, p.stdout + p.stderr
    p = cli(["learn", "drill", "--seed", "21", "--class", cls, "--answer", letter, "--fix", "-", "-o", "json"],
            state, tmp_path, stdin=fix.read_text())
    assert p.returncode == 0 and json.loads(p.stdout)["fix_is_intended"] is True
    rec = json.loads((state / "svctrace" / "learn.json").read_text())["drills"][cls]
    assert rec == {"tried": 1, "solved": 1, "best_seconds": 0}


def test_timed_drill_out_of_time_is_not_solved(tmp_path: Path) -> None:
    state = tmp_path / "state"
    p = cli(["learn", "drill", "--class", "readiness", "--seed", "3", "--timed"], state, tmp_path)
    assert p.returncode == 0 and "timed: 8 minutes" in p.stdout
    f = state / "svctrace" / "learn.json"
    doc = json.loads(f.read_text())
    assert doc["current_drill"]["limit"] == 480
    doc["current_drill"]["started"] = time.time() - 600  # ten minutes ago
    f.write_text(json.dumps(doc))
    d = D.make(3, "readiness")
    fix = tmp_path / "fix.yaml"
    fix.write_text(yaml.safe_dump_all(d.cls.patch(d.world)))
    p = cli(["learn", "drill", "--answer", "abcd"[d.answer], "--fix", str(fix), "-o", "json"], state, tmp_path)
    out = json.loads(p.stdout)
    assert p.returncode == 1 and out["out_of_time"] is True and out["fix_works"] and not out["passed"]
    assert json.loads(f.read_text())["drills"]["readiness"]["solved"] == 0


def test_bad_answers_and_fixes_are_one_line_errors(tmp_path: Path) -> None:
    state = tmp_path / "state"
    p = cli(["learn", "drill", "--answer", "a"], state, tmp_path)
    assert p.returncode == 2 and p.stderr.startswith("svctrace: error: no drill in progress")
    assert cli(["learn", "drill", "--seed", "4", "--class", "selector", "--dir", "d"], state, tmp_path).returncode == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: Service\nmetadata: {name: x\n")
    p = cli(["learn", "drill", "--answer", "a", "--fix", str(bad)], state, tmp_path)
    assert p.returncode == 2 and f"{bad}:" in p.stderr and "Traceback" not in p.stderr
    p = cli(["learn", "drill", "--answer", "z", "--fix", str(bad)], state, tmp_path)
    assert p.returncode == 2 and "not one of a, b, c, d" in p.stderr
    p = cli(["learn", "drill", "--class", "nope"], state, tmp_path)
    assert p.returncode == 2 and "no drill class 'nope'" in p.stderr
    p = cli(["learn", "drill", "--seed", "4", "--class", "selector", "--dir", "d"], state, tmp_path)
    assert p.returncode == 2 and "not empty" in p.stderr


def test_learn_show_is_kubectl_get(tmp_path: Path) -> None:
    state = tmp_path / "state"
    assert cli(["learn", "drill", "--seed", "8", "--class", "readiness", "--dir", "snap"], state,
               tmp_path).returncode == 0
    w = D.make(8, "readiness").world
    p = cli(["learn", "show", f"deploy/{w.app}", "-n", w.ns, "--snapshot", "snap", "-o", "yaml"], state, tmp_path)
    assert p.returncode == 0
    dep = yaml.safe_load(p.stdout)
    assert dep["kind"] == "Deployment" and dep["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    p = cli(["learn", "show", "pods", "-n", w.ns, "--snapshot", "snap"], state, tmp_path)
    lines = p.stdout.splitlines()
    assert lines[0].split() == ["NAME", "READY", "STATUS", "IP", "NODE"]
    assert sum(1 for x in lines if "0/1" in x) == w.replicas  # the probe asks the wrong port: none ready
    p = cli(["learn", "show", "svc", w.app, "-n", w.ns, "--snapshot", "snap", "-o", "json"], state, tmp_path)
    assert json.loads(p.stdout)["metadata"]["name"] == w.app
    p = cli(["learn", "show", "svc", "-A", "--snapshot", "snap", "-o", "json"], state, tmp_path)
    assert json.loads(p.stdout)["kind"] == "List"
    p = cli(["learn", "show", "gadgets", "--snapshot", "snap"], state, tmp_path)
    assert p.returncode == 2 and "unknown kind 'gadgets'" in p.stderr


def test_lessons_non_interactively(tmp_path: Path) -> None:
    """`learn LESSON -o json` gives the questions without answers; `--answer` grades: 0 all right, 1 not."""
    from svctrace.learn.lessons import find_lesson

    state = tmp_path / "state"
    p = cli(["learn", "ping", "-o", "json"], state, tmp_path)
    doc = json.loads(p.stdout)
    assert p.returncode == 0 and doc["lesson"] == "ping"
    assert all(set(q) == {"id", "prompt", "options"} for q in doc["questions"])  # no answer, no explanation
    le = find_lesson("ping")
    assert le is not None
    qs = le.build().questions
    right = ",".join(q.letters[q.answer] for q in qs)
    wrong = ",".join(q.letters[(q.answer + 1) % len(q.options)] for q in qs)
    p = cli(["learn", "ping", "--answer", wrong], state, tmp_path)
    assert p.returncode == 1 and f"0/{len(qs)} right." in p.stdout
    assert not json.loads((state / "svctrace" / "learn.json").read_text())["lessons"]["ping"]["done"]
    p = cli(["learn", "ping", "--answer", right, "-o", "json"], state, tmp_path)
    assert p.returncode == 0 and json.loads(p.stdout)["passed"] is True
    assert json.loads((state / "svctrace" / "learn.json").read_text())["lessons"]["ping"]["done"]
    p = cli(["learn", "ping", "--answer", "a"], state, tmp_path)
    assert p.returncode == 2 and "give one answer each" in p.stderr


def test_interactive_on_a_terminal(tmp_path: Path) -> None:
    """On a terminal the drill asks for the cause and the fix after the ticket, and grades at once."""
    import pty
    import select

    d = D.make(9, "no-endpoints")
    fix = tmp_path / "fix.yaml"
    fix.write_text(yaml.safe_dump_all(d.cls.patch(d.world)))
    master, slave = pty.openpty()
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state"), "PYTHONPATH": str(ROOT), "COLUMNS": "100"}
    p = subprocess.Popen([sys.executable, "-c", "from svctrace.cli import main; main()", "learn", "drill", "--seed",
                          "9", "--class", "no-endpoints", "--dir", "snap"], cwd=tmp_path, env=env, stdin=slave,
                         stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    out = b""
    sent: set[str] = set()
    deadline = time.time() + 60
    while time.time() < deadline:
        r, _, _ = select.select([master], [], [], 1)
        if r:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        text = out.decode(errors="replace")
        if "Your root cause" in text and "cause" not in sent:
            os.write(master, f"{'abcd'[d.answer]}\n".encode())
            sent.add("cause")
        if "Your fix" in text and "fix" not in sent:
            os.write(master, f"{fix}\n".encode())
            sent.add("fix")
        if p.poll() is not None and not r:
            break
    p.wait(timeout=30)
    os.close(master)
    text = out.decode(errors="replace")
    assert p.returncode == 0, text
    assert "Ticket:" in text and "Root cause: right" in text and "Passed." in text
