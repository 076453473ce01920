"""`svctrace learn`: every lesson runs to the end on the right answers, and the right answers are the engine's.

The oracles below compute each question's answer through the engine themselves (explain() on the demo
snapshot, trace() on a node's dump, simulate() on the lessons' YAML), never through the lesson's own answer.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from svctrace.dataplane.iptables import Outcome, Ruleset, load_ruleset
from svctrace.errors import InputError
from svctrace.explain import Explanation, Request, explain
from svctrace.kubeproxy.simulate import objects_of, simulate
from svctrace.kubeproxy.walk import trace_iptables as trace
from svctrace.learn import run_learn
from svctrace.learn.lessons import ITP_YAML, LB_YAML, LESSONS, TYPO_YAML, find_lesson
from svctrace.learn.model import Question
from svctrace.learn.progress import Progress, default_dir
from svctrace.learn.runner import sentence
from svctrace.model.packet import NodeFacts, Packet
from svctrace.model.snapshot import Snapshot, load_snapshot

# -- the engine, asked directly -------------------------------------------------------------------------------


@cache
def demo() -> Snapshot:
    return load_snapshot("demo")


def ex(target: str, **kw: Any) -> Explanation:
    return explain(demo(), Request(target, **kw))


@cache
def node_rules(node: str) -> Ruleset:
    text = demo().nodes[node].get("iptables-save")
    assert text is not None
    return load_ruleset(text, f"demo/{node}")


def rules_naming(rs: Ruleset, key: str) -> int:
    pat = re.compile(rf"(^|\s){re.escape(key)}(:|\s|$)")
    return sum(1 for r in rs.iter_rules() if r.comment and pat.search(r.comment))


@cache
def sim(yaml_text: str) -> tuple[list[dict[str, Any]], dict[str, str]]:
    s = simulate(objects_of(list(yaml.safe_load_all(yaml_text))))
    return s.objects, s.dumps


def obj(objs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name)


def node_ip(objs: list[dict[str, Any]], node: str) -> str:
    return str(obj(objs, "Node", node)["status"]["addresses"][0]["address"])


def sim_trace(yaml_text: str, node: str, src: str, dst: str, dport: int) -> list[Outcome]:
    objs, dumps = sim(yaml_text)
    rs = load_ruleset(dumps[node], f"sim/{node}")
    pkt = Packet.make(src=src, dst=dst, proto="tcp", dport=dport)
    return trace(rs, pkt, NodeFacts.make(local_ips=[node_ip(objs, node)])).outcomes


def pct(p: float) -> str:
    return "100%" if p >= 0.9995 else "0%" if p <= 0.0005 else f"{p * 100:.1f}%"


def pick(q: Question, pred: Callable[[str], bool]) -> int:
    hits = [i for i, o in enumerate(q.options) if pred(o)]
    assert len(hits) == 1, f"{q.id}: {len(hits)} options fit the engine's answer: {q.options}"
    return hits[0]


def grab(q: Question, pattern: str) -> str:
    m = re.search(pattern, q.prompt)
    assert m, f"{q.id}: no {pattern!r} in {q.prompt!r}"
    return m.group(1)


def dnat_fits(endpoints: list[str], nodes: set[str], masq: bool) -> Callable[[str], bool]:
    def fits(text: str) -> bool:
        if not text.startswith("DNAT"):
            return False
        many = f"one of {len(endpoints)} endpoints" in text if len(endpoints) > 1 else f"DNAT to {endpoints[0]} " in text
        return many and all(n in text for n in nodes) and ("masqueraded" in text) == masq
    return fits


def fate_fits(outcomes: list[Any], nodes: set[str] | None = None) -> Callable[[str], bool]:
    """The option that says what the engine says happens: REJECT, DROP, no rule, or a DNAT."""
    verdicts = {o.verdict for o in outcomes}
    if verdicts == {"reject"}:
        return lambda t: "REJECT" in t
    if verdicts == {"drop"}:
        return lambda t: "DROP" in t
    dnat = [getattr(o, "endpoint", None) or getattr(o, "dnat", None) for o in outcomes]
    if verdicts == {"accept"} and not any(dnat):
        return lambda t: t.startswith("No rule matches")
    eps = sorted({d for d in dnat if d})
    return dnat_fits(eps, nodes or set(), any(o.masquerade for o in outcomes))


def nodes_of(exp: Explanation) -> set[str]:
    return {o.endpoint_node for o in exp.outcomes if o.endpoint_node and o.pod}


def resolves_to(name: str, namespace: str) -> str | None:
    """Our own resolver: search domains, then the name; a query answers when explain() knows the Service."""
    search = [f"{namespace}.svc.cluster.local", "svc.cluster.local", "cluster.local"]
    queries = [f"{name}.{d}" for d in search] + [name] if name.count(".") < 5 else [name]
    for q in queries:
        if re.fullmatch(r"[a-z0-9-]+\.[a-z0-9-]+\.svc\.cluster\.local", q):
            try:
                return f"{q}.|{ex(q).service.key}"
            except InputError:
                continue
    return None


# -- one oracle per question --------------------------------------------------------------------------------

def o_clusterip_probability(q: Question) -> int:
    ep = grab(q, r"reach (\S+) \(pod")
    e = ex("svc/web", source="pod/client")
    return pick(q, lambda t: t == pct(next(o.probability for o in e.outcomes if o.endpoint == ep)))


def o_clusterip_dnat(q: Question) -> int:
    ep = grab(q, r"to (\S+)\?$")
    e = ex("svc/web", source="pod/client")
    o = next(o for o in e.outcomes if o.endpoint == ep)
    return pick(q, lambda t: t == next(s.chain for s in o.path if s.action.startswith("DNAT")))


def o_clusterip_masq(q: Question) -> int:
    e = ex("svc/web", source="pod/client")
    assert not any(o.masquerade for o in e.outcomes)
    return pick(q, lambda t: t.startswith("No:"))


def o_nodeport_masq_chain(q: Question) -> int:
    e = ex("svc/web-nodeport", to="node-port", node="node02")
    chains = {s.chain for o in e.outcomes for s in o.path if s.action == "jump KUBE-MARK-MASQ"}
    assert len(chains) == 1
    return pick(q, lambda t: t in chains)


def o_nodeport_cross(q: Question) -> int:
    other = grab(q, r"a pod on (\S+) serves")
    e = ex("svc/web-nodeport", to="node-port", node="node02")
    return pick(q, lambda t: t == pct(sum(o.probability for o in e.outcomes if o.endpoint_node == other)))


def o_nodeport_outcome(q: Question) -> int:
    e = ex("svc/web-nodeport", to="node-port", node="node02")
    return pick(q, fate_fits(e.outcomes, nodes_of(e)))


def _lb(src: str) -> list[Outcome]:
    objs, _ = sim(LB_YAML)
    svc = obj(objs, "Service", "shop-lb")
    lb_ip = svc["status"]["loadBalancer"]["ingress"][0]["ip"]
    return sim_trace(LB_YAML, "worker-a", src, lb_ip, svc["spec"]["ports"][0]["port"])


def _pod_nodes(objs: list[dict[str, Any]], outcomes: list[Outcome]) -> set[str]:
    by_ip = {o["status"]["podIP"]: o["spec"]["nodeName"] for o in objs if o["kind"] == "Pod"}
    return {by_ip[d.rsplit(":", 1)[0]] for d in (o.dnat for o in outcomes) if d}


def o_lb_allowed(q: Question) -> int:
    outs = _lb(grab(q, r"client at (\S+) connects"))
    return pick(q, fate_fits(outs, _pod_nodes(sim(LB_YAML)[0], outs)))


def o_lb_blocked(q: Question) -> int:
    outs = _lb(grab(q, r"client at (\S+),"))
    assert {o.verdict for o in outs} == {"drop"}
    return pick(q, lambda t: t == outs[0].path[-1].chain)


def o_lb_node_port(q: Question) -> int:
    port = obj(sim(LB_YAML)[0], "Service", "shop-lb")["spec"]["ports"][0]["nodePort"]
    assert 30000 <= port <= 32767
    # The fact taught is the allocation (random, from the range), not the simulator's pick, which is an example.
    return pick(q, lambda t: "at random" in t and "30000-32767" in t and f"picked {port})" in t)


def o_externalname_dns(q: Question) -> int:
    e = ex("svc/weather-api")
    assert "external-name" in {d.code for d in e.diagnostics} and not e.outcomes
    return pick(q, lambda t: t == f"A CNAME record: {e.service.external_name}")


def o_externalname_count(q: Question) -> int:
    return pick(q, lambda t: t == str(rules_naming(node_rules("node01"), "default/weather-api")))


def o_headless_dns(q: Question) -> int:
    e = ex("svc/db")
    assert "headless-service" in {d.code for d in e.diagnostics}
    ips = [a for s in demo().cluster.slices_for(e.service) for ep in s.endpoints if ep.ready for a in ep.addresses]
    return pick(q, lambda t: "pods' own addresses" in t and all(ip in t for ip in ips))


def o_headless_count(q: Question) -> int:
    node = grab(q, r"does (\S+) hold")
    return pick(q, lambda t: t == str(rules_naming(node_rules(node), "default/db")))


def o_endpoints_diagnose(q: Question) -> int:
    codes = [d.code for d in ex("svc/payment").diagnostics if d.severity == "error"]
    words = {"selector-matches-no-pods": "selector matches no pod", "no-ready-endpoints": "none is ready"}
    return pick(q, lambda t: words[codes[0]] in t)


def o_endpoints_not_ready(q: Question) -> int:
    return pick(q, fate_fits(ex("svc/slow-start").outcomes))


def o_endpoints_no_selector(q: Question) -> int:
    e = ex("svc/legacy-db")
    return pick(q, fate_fits(e.outcomes, nodes_of(e)))


def o_targetport_port(q: Question) -> int:
    ports = {o.endpoint.rsplit(":", 1)[1] for o in ex("svc/web", source="pod/client").outcomes if o.endpoint}
    assert len(ports) == 1
    return pick(q, lambda t: t in ports)


def o_targetport_wrong(q: Question) -> int:
    return pick(q, fate_fits(ex("svc/web", source="pod/client", port="8080").outcomes))


def o_targetport_typo(q: Question) -> int:
    objs, _ = sim(TYPO_YAML)
    client = obj(objs, "Pod", "client")
    svc = obj(objs, "Service", "cache")["spec"]
    outs = sim_trace(TYPO_YAML, client["spec"]["nodeName"], client["status"]["podIP"], svc["clusterIP"],
                     svc["ports"][0]["port"])
    return pick(q, fate_fits(outs))


def o_affinity_new(q: Question) -> int:
    ep = grab(q, r"reaches (\S+) \(pod")
    e = ex("svc/session", source="pod/client")
    return pick(q, lambda t: t == pct(next(o.probability for o in e.outcomes if o.endpoint == ep)))


def o_affinity_back(q: Question) -> int:
    ep = grab(q, r"first reached pod \S+ \((\S+)\)")
    first = next(o for o in ex("svc/session", source="pod/client").outcomes if o.endpoint == ep)
    sep = next(s.chain for s in first.path if s.action.startswith("DNAT"))
    back = ex("svc/session", source="pod/client", returning_client=True)
    again = [o for o in back.outcomes if any("--rcheck" in s.text and f"--name {sep} " in s.text for s in o.path)]
    assert len(again) == 1
    return pick(q, lambda t: f"({again[0].endpoint})" in t and (again[0].pod or "").split("/")[-1] in t)


def o_affinity_timeout(q: Question) -> int:
    svc = ex("svc/session").service
    assert svc.affinity_timeout is not None
    assert any(f"--seconds {svc.affinity_timeout} " in r.text for r in node_rules("node01").iter_rules())
    return pick(q, lambda t: t.startswith(f"{svc.affinity_timeout} seconds"))


def o_policy_far(q: Question) -> int:
    return pick(q, fate_fits(ex("svc/frontend", to="load-balancer", node="node02", source="192.168.56.99").outcomes))


def o_policy_client_ip(q: Question) -> int:
    e = ex("svc/frontend", to="load-balancer", node="node01", source="192.168.56.99")
    assert e.outcomes and not any(o.masquerade for o in e.outcomes)
    return pick(q, lambda t: t.startswith("192.168.56.99,"))


def o_policy_internal(q: Question) -> int:
    objs, _ = sim(ITP_YAML)
    client = obj(objs, "Pod", "client")
    svc = obj(objs, "Service", "cache")["spec"]
    outs = sim_trace(ITP_YAML, client["spec"]["nodeName"], client["status"]["podIP"], svc["clusterIP"],
                     svc["ports"][0]["port"])
    return pick(q, fate_fits(outs))


def o_dns_backend(q: Question) -> int:
    ep = grab(q, r"\((\S+)\) answers")
    e = ex("kube-dns.kube-system.svc.cluster.local", port="dns")
    return pick(q, lambda t: t == pct(next(o.probability for o in e.outcomes if o.endpoint == ep)))


def o_dns_first(q: Question) -> int:
    name = grab(q, r"looks up `([^`]+)`")
    found = resolves_to(name, "default")
    assert found is not None
    return pick(q, lambda t: t == found.split("|")[0])


def o_dns_cross(q: Question) -> int:
    key = grab(q, r"reaches (\S+)\?")
    return pick(q, lambda t: (resolves_to(t, "default") or "").endswith(f"|{key}"))


def o_ping_clusterip(q: Question) -> int:
    return pick(q, fate_fits(ex("svc/web", proto="icmp", source="pod/client").outcomes))


def o_ping_curl(q: Question) -> int:
    e = ex("svc/web", source="pod/client")
    return pick(q, fate_fits(e.outcomes, nodes_of(e)))


def o_ping_reject(q: Question) -> int:
    return pick(q, fate_fits(ex("svc/payment", proto="icmp", source="pod/client").outcomes))


def o_modes_mode(q: Question) -> int:
    return pick(q, lambda t: t == ex("svc/web", source="pod/client").proxy_mode)


def o_modes_unserved(q: Question) -> int:
    return pick(q, fate_fits(ex("svc/web", source="pod/client", port="8080").outcomes))


def o_modes_count(q: Question) -> int:
    return pick(q, lambda t: t == str(rules_naming(node_rules("node01"), "default/web:http")))


ORACLES: dict[str, Callable[[Question], int]] = {
    "clusterip.probability": o_clusterip_probability, "clusterip.dnat-chain": o_clusterip_dnat,
    "clusterip.masquerade": o_clusterip_masq, "nodeport.masq-chain": o_nodeport_masq_chain,
    "nodeport.cross-node": o_nodeport_cross, "nodeport.outcome": o_nodeport_outcome,
    "loadbalancer.allowed": o_lb_allowed, "loadbalancer.blocked-chain": o_lb_blocked,
    "loadbalancer.node-port": o_lb_node_port, "externalname.dns": o_externalname_dns,
    "externalname.rule-count": o_externalname_count, "headless.dns": o_headless_dns,
    "headless.rule-count": o_headless_count, "endpoints.diagnose": o_endpoints_diagnose,
    "endpoints.not-ready": o_endpoints_not_ready, "endpoints.no-selector": o_endpoints_no_selector,
    "targetport.dnat-port": o_targetport_port, "targetport.wrong-port": o_targetport_wrong,
    "targetport.typo": o_targetport_typo, "affinity.new-client": o_affinity_new,
    "affinity.returning-client": o_affinity_back, "affinity.timeout": o_affinity_timeout,
    "traffic-policy.local-elsewhere": o_policy_far, "traffic-policy.client-ip": o_policy_client_ip,
    "traffic-policy.internal-local": o_policy_internal, "dns.backend": o_dns_backend,
    "dns.first-answer": o_dns_first, "dns.cross-namespace": o_dns_cross, "ping.clusterip": o_ping_clusterip,
    "ping.curl": o_ping_curl, "ping.reject-rule": o_ping_reject, "proxy-modes.mode": o_modes_mode,
    "proxy-modes.unserved-port": o_modes_unserved, "proxy-modes.rule-count": o_modes_count,
}

QUESTIONS = [(le.id, q) for le in LESSONS for q in le.build().questions]


def right_letters(lesson_id: str) -> list[str]:
    le = find_lesson(lesson_id)
    assert le is not None
    return [q.letters[ORACLES[q.id](q)] for q in le.build().questions]


def run(lesson: str | None, answers: str, state: Path, **kw: Any) -> tuple[int, str]:
    out = io.StringIO()
    rc = run_learn(lesson, stdin=io.StringIO(answers), stdout=out, state_dir=state, **kw)
    return rc, out.getvalue()


def flat(text: str) -> str:
    return " ".join(text.split())


# -- the answers are the engine's ---------------------------------------------------------------------------

def test_every_question_has_an_oracle() -> None:
    assert sorted(q.id for _, q in QUESTIONS) == sorted(ORACLES)
    assert len({le.id for le in LESSONS}) == len(LESSONS) == 12


@pytest.mark.parametrize(("lesson", "q"), QUESTIONS, ids=[q.id for _, q in QUESTIONS])
def test_answer_agrees_with_the_engine(lesson: str, q: Question) -> None:
    assert len(q.options) >= 3 and len(set(q.options)) == len(q.options)
    assert q.explanation, f"{q.id} explains nothing"
    assert ORACLES[q.id](q) == q.answer, f"{q.id}: the lesson says {q.correct!r}"


def test_answers_are_not_always_in_the_same_place() -> None:
    assert len({q.answer for _, q in QUESTIONS}) >= 3


def test_explanations_come_from_the_engine() -> None:
    """After the answer a learner sees explain()'s own hop sentences and diagnostics."""
    le = find_lesson("nodeport")
    assert le is not None
    e = ex("svc/web-nodeport", to="node-port", node="node02")
    q = next(q for q in le.build().questions if q.id == "nodeport.outcome")
    assert set(h for h in e.hops if not h.lstrip().startswith("•")) <= set(q.explanation)
    le = find_lesson("endpoints")
    assert le is not None
    pay = ex("svc/payment")
    q = next(q for q in le.build().questions if q.id == "endpoints.diagnose")
    assert all(any(d.message in line for line in q.explanation) for d in pay.diagnostics)


def test_lessons_show_real_rules() -> None:
    """The rule lines a lesson shows are lines of the node's dump (or of the simulated one)."""
    from svctrace.learn.model import Rules

    dumps = "\n".join(t for nf in demo().nodes.values() for t in [nf.get("iptables-save") or ""])
    for y in (LB_YAML, TYPO_YAML, ITP_YAML):
        dumps += "\n".join(sim(y)[1].values())
    for le in LESSONS:
        shown = [line for b in le.build().blocks if isinstance(b, Rules) for line in b.lines
                 if line.startswith("-A ")]
        assert shown or le.id in ("externalname", "headless"), le.id
        for line in shown:
            assert line in dumps, f"{le.id}: {line}"


# -- running lessons ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("lesson", [le.id for le in LESSONS])
def test_right_answers_get_full_marks(lesson: str, tmp_path: Path) -> None:
    letters = right_letters(lesson)
    rc, out = run(lesson, "".join(f"{x}\n" for x in letters), tmp_path)
    assert rc == 0
    assert f"Lesson {lesson} done: {len(letters)}/{len(letters)}." in out
    assert "Not quite" not in out and out.count("Right:") == len(letters)
    rec = Progress.load(tmp_path).lessons[lesson]
    assert rec.done and rec.best == rec.total == len(letters)


@pytest.mark.parametrize("lesson", [le.id for le in LESSONS])
def test_wrong_answers_show_the_answer_and_why(lesson: str, tmp_path: Path) -> None:
    le = find_lesson(lesson)
    assert le is not None
    qs = le.build().questions
    wrong = [q.letters[(ORACLES[q.id](q) + 1) % len(q.options)] for q in qs]
    rc, out = run(lesson, "".join(f"{x}\n" for x in wrong), tmp_path)
    assert rc == 0 and f"Lesson {lesson}: 0/{len(qs)} — not done yet" in out
    for q in qs:
        right = ORACLES[q.id](q)
        assert flat(sentence(f"The answer is {q.letters[right]}) {q.options[right]}")) in flat(out)
        for line in q.explanation:
            assert flat(line) in flat(out)
    rec = Progress.load(tmp_path).lessons[lesson]
    assert not rec.done and rec.last_score == 0 and rec.last_answered == len(qs)


def test_pipe_transcript_shows_what_was_answered(tmp_path: Path) -> None:
    rc, out = run("clusterip", "b\n", tmp_path)
    assert rc == 0 and "Your answer (a-d, q to quit): b\n" in out


def test_end_of_input_ends_cleanly(tmp_path: Path) -> None:
    first = right_letters("dns")[0]
    rc, out = run("dns", f"{first}\n", tmp_path)
    assert rc == 0
    assert "Question 2 of 3" in out and "End of input: progress saved." in out
    rec = Progress.load(tmp_path).lessons["dns"]
    assert not rec.done and rec.last_answered == 1 and rec.last_score == 1
    rc, out = run("dns", "", tmp_path)
    assert rc == 0 and "End of input" in out


def test_quit(tmp_path: Path) -> None:
    rc, out = run("ping", "q\n", tmp_path)
    assert rc == 0 and "Quit: progress saved." in out and "Question 2" not in out
    assert not Progress.load(tmp_path).lessons["ping"].done


def test_a_bad_answer_is_asked_again_once(tmp_path: Path) -> None:
    ok = right_letters("headless")
    rc, out = run("headless", f"zz\n{ok[0]}\n\n{ok[1]}\n", tmp_path)
    assert rc == 0
    assert out.count("is not one of a, b, c, d") == 2
    assert "moving on" not in out and "done: 2/2" in out
    rc, out = run("headless", "zz\n9\nb\n", tmp_path)
    assert rc == 0 and out.count("is not one of") == 1 and "Still not an option: moving on." in out
    assert "Question 2 of 2" in out


def test_numbers_and_capitals_are_answers(tmp_path: Path) -> None:
    letters = right_letters("externalname")
    answers = [str("abcd".index(letters[0]) + 1), letters[1].upper() + ")"]
    rc, out = run("externalname", "\n".join(answers) + "\n", tmp_path)
    assert rc == 0 and "done: 2/2" in out


def test_progress_round_trip_and_list(tmp_path: Path) -> None:
    run("headless", "".join(f"{x}\n" for x in right_letters("headless")), tmp_path)
    run("ping", "a\n", tmp_path)
    doc = json.loads((tmp_path / "learn.json").read_text())
    assert doc["version"] == 1 and doc["lessons"]["headless"]["done"] is True
    assert doc["lessons"]["ping"] == {"done": False, "best": 0, "total": 3, "last_score": doc["lessons"]["ping"]
                                      ["last_score"], "last_answered": 1}
    p = Progress.load(tmp_path)
    assert p.to_json() == doc
    rc, out = run(None, "", tmp_path, list_only=True)
    assert rc == 0
    rows = [re.match(r"^ [✓ ] +\d+ (\S+) ", line) for line in out.splitlines()]
    lines = {m.group(1): m.string for m in rows if m}
    assert len(lines) == 12
    assert lines["headless"].startswith(" ✓") and "[2/2]" in lines["headless"]
    assert not lines["ping"].startswith(" ✓") and not lines["clusterip"].startswith(" ✓")
    assert str(tmp_path) not in (tmp_path / "learn.json").read_text()  # no path of this machine in the file


def test_reset(tmp_path: Path) -> None:
    run("headless", "".join(f"{x}\n" for x in right_letters("headless")), tmp_path)
    assert (tmp_path / "learn.json").exists()
    rc, out = run(None, "", tmp_path, reset=True)
    assert rc == 0 and "Progress cleared" in out and "Lesson" not in out
    assert not (tmp_path / "learn.json").exists()
    rc, out = run(None, "", tmp_path, list_only=True, reset=True)
    assert "✓" not in out and "(0 of 12 done)" in out


def test_the_course_continues_where_it_stopped(tmp_path: Path) -> None:
    run("clusterip", "".join(f"{x}\n" for x in right_letters("clusterip")), tmp_path)
    rc, out = run(None, "", tmp_path)
    assert rc == 0 and "Lesson 2 of 12" in out and "Lesson 1 of 12" not in out
    both = right_letters("nodeport") + right_letters("loadbalancer")
    rc, out = run(None, "".join(f"{x}\n" for x in both), tmp_path)
    assert "Lesson nodeport done" in out and "Lesson loadbalancer done" in out and "Lesson 4 of 12" in out


def test_all_done(tmp_path: Path) -> None:
    p = Progress.load(tmp_path)
    for le in LESSONS:
        p.finished(le.id, 1, 3)
    p.save()
    rc, out = run(None, "", tmp_path)
    assert rc == 0 and "Every lesson is done" in out and "[1/3]" in out


def test_lesson_names(tmp_path: Path) -> None:
    assert find_lesson("3") is LESSONS[2]
    assert find_lesson("selectors") is find_lesson("endpoints") is find_lesson("endp")
    assert find_lesson("d") is find_lesson("dns") and find_lesson("p") is None  # ping or proxy-modes
    assert find_lesson("0") is None and find_lesson("99") is None and find_lesson("") is None
    with pytest.raises(InputError, match="no lesson 'nope'"):
        run("nope", "", tmp_path)


def test_state_dir_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert default_dir() == tmp_path / "svctrace"
    monkeypatch.setenv("XDG_STATE_HOME", "relative/ignored")
    assert default_dir() == Path.home() / ".local" / "state" / "svctrace"
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_dir() == tmp_path / ".local" / "state" / "svctrace"


def test_a_damaged_progress_file_is_replaced(tmp_path: Path) -> None:
    (tmp_path / "learn.json").write_text("{not json")
    rc, out = run("headless", "".join(f"{x}\n" for x in right_letters("headless")), tmp_path)
    assert rc == 0 and "starting afresh" in flat(out)
    assert Progress.load(tmp_path).lessons["headless"].done
    (tmp_path / "learn.json").write_text('{"lessons": {"ping": {"done": "yes", "best": -4}}, "version": 1}')
    rec = Progress.load(tmp_path).lessons["ping"]
    assert not rec.done and rec.best == 0


def test_an_unwritable_state_dir_does_not_stop_the_lesson(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    rc, out = run("headless", "".join(f"{x}\n" for x in right_letters("headless")), blocker / "state")
    assert rc == 0 and flat(out).count("could not save progress") == 1 and "done: 2/2" in out


def test_a_terminal_gets_the_rich_view(tmp_path: Path) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Tty()
    rc = run_learn("affinity", stdin=io.StringIO("".join(f"{x}\n" for x in right_letters("affinity"))),
                   stdout=out, state_dir=tmp_path)
    text = re.sub(r"\x1b\[[0-9;]*m", "", out.getvalue())
    assert rc == 0 and "Lesson 8 of 12" in text and "✓ Right" in text and "done: 3/3" in text
    assert "-A KUBE-SVC-" in text  # the rules, whole


def test_the_lessons_import_no_ui() -> None:
    code = ("import sys, svctrace.learn, svctrace.learn.lessons, svctrace.learn.engine, svctrace.learn.runner, "
            "svctrace.learn.progress, svctrace.learn.model\n"
            "print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in ('rich', 'textual', 'typer', "
            "'click'))))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert p.stdout.strip() == ""


ANSWER = st.one_of(st.sampled_from(["a", "b", "c", "d", "e", "q", "Q", "1", "4", "0", "", " ", "a)", "quit", "zz"]),
                   st.text(max_size=30))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lesson=st.sampled_from([None, *[le.id for le in LESSONS]]), lines=st.lists(ANSWER, max_size=14),
       newline=st.sampled_from(["\n", "\r\n"]), tail=st.booleans())
def test_no_input_breaks_it(lesson: str | None, lines: list[str], newline: str, tail: bool) -> None:
    text = newline.join(lines) + (newline if tail else "")
    with tempfile.TemporaryDirectory() as d:
        rc, out = run(lesson, text, Path(d))
        assert rc == 0 and "Traceback" not in out
        assert (out.rstrip().endswith(("progress saved.", "That was the last lesson.")) or "done:" in out
                or "not done yet" in out)
        if (Path(d) / "learn.json").exists():
            json.loads((Path(d) / "learn.json").read_text())
