"""Hostile and broken inputs (issue 17): archives that would exhaust memory or climb out, rule sets whose
gotos loop or chain a thousand deep, cluster.json of the wrong types, huge lines. Each ends in a result or
in svctrace's own one-line error naming the file and the limit, never a traceback or exit 70."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import time
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from svctrace import limits
from svctrace.errors import InputError, WalkError, shorten
from svctrace.model import cluster, snapshot
from svctrace.model.snapshot import load_snapshot

CLUSTER = json.dumps({"apiVersion": "v1", "kind": "List", "items": [
    {"kind": "Service", "metadata": {"name": "web", "namespace": "default"},
     "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 80, "targetPort": 8080}], "selector": {"app": "web"}}},
]})
DUMP = """*nat
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
-A PREROUTING -j KUBE-SERVICES
-A OUTPUT -j KUBE-SERVICES
COMMIT
"""


def _gz(data: bytes) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    return c.compress(data) + c.flush()


def _member(name: str, data: bytes) -> bytes:
    ti = tarfile.TarInfo(name)
    ti.size = len(data)
    return ti.tobuf(format=tarfile.GNU_FORMAT) + data + b"\0" * ((-len(data)) % 512)


def zero_bomb(path: Path, n: int, size: int, name: str) -> None:
    """A .tgz of `n` members of `size` zero bytes each, written as concatenated gzip members (gzip allows
    it): the zeros are compressed once, so a 3 MB file holds gigabytes."""
    zeros = _gz(b"\0" * size)
    with open(path, "wb") as out:
        out.write(_gz(_member("cluster.json", CLUSTER.encode())))
        for i in range(n):
            ti = tarfile.TarInfo(name.format(i=i))
            ti.size = size
            out.write(_gz(ti.tobuf(format=tarfile.GNU_FORMAT)))
            out.write(zeros)
            if size % 512:
                out.write(_gz(b"\0" * ((-size) % 512)))
        out.write(_gz(b"\0" * 1024))


def tgz(path: Path, members: list[tarfile.TarInfo | tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for m in members:
            if isinstance(m, tarfile.TarInfo):
                tf.addfile(m)
            else:
                ti = tarfile.TarInfo(m[0])
                ti.size = len(m[1])
                tf.addfile(ti, io.BytesIO(m[1]))
    return path


# -- 1. archives: only used paths are read, per-member and total caps ---------------------------------------

@pytest.mark.slow
def test_zero_filled_bomb_stops_at_the_total_cap(tmp_path: Path) -> None:
    """Issue 17 #1: before, every member up to 256 MiB was read (12 x 250 MiB: 2.3 GB resident, then a
    MemoryError, exit 70); now the unused members are skipped and the total cap ends the read."""
    bomb = tmp_path / "bomb.tgz"
    zero_bomb(bomb, 12, 250 * limits.MiB, "nodes/n{i}/junk{i}")
    assert bomb.stat().st_size < 10 * limits.MiB
    script = ("import resource, sys; from svctrace.model.snapshot import load_snapshot\n"
              "from svctrace.errors import InputError\n"
              f"try:\n    load_snapshot({str(bomb)!r})\nexcept InputError as e:\n    print(e)\n"
              "print(next(ln.split()[1] for ln in open('/proc/self/status') if ln.startswith('VmHWM')))")
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    took = time.monotonic() - t0
    assert p.returncode == 0, p.stderr
    msg, rss = p.stdout.splitlines()
    assert "more than 1024 MiB once decompressed" in msg and "MAX_TOTAL" in msg, msg
    assert int(rss) < 200 * 1024, f"{rss} KB resident"  # VmHWM: the peak resident set, in kB
    assert took < 30


def test_unused_members_are_never_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A member svctrace does not use is skipped, whatever its size (it only counts towards the total)."""
    monkeypatch.setattr(snapshot, "MAX_MEMBER", 1000)
    a = tgz(tmp_path / "a.tgz", [("cluster.json", CLUSTER.encode()), ("nodes/n1/iptables-save", DUMP.encode()),
                                 ("nodes/n1/pcap", b"x" * 5000), ("README", b"y" * 5000)])
    snap = load_snapshot(str(a))
    assert snap.nodes["n1"].files["iptables-save"] == DUMP


def test_used_member_over_the_cap_is_refused_by_its_header(tmp_path: Path) -> None:
    """The header's size is checked before a byte of the member is read (the data need not even be there)."""
    ti = tarfile.TarInfo("nodes/n1/iptables-save")
    ti.size = limits.MAX_MEMBER + 1
    raw = _member("cluster.json", CLUSTER.encode()) + ti.tobuf(format=tarfile.GNU_FORMAT)
    (tmp_path / "big.tgz").write_bytes(_gz(raw))
    with pytest.raises(InputError) as e:
        load_snapshot(str(tmp_path / "big.tgz"))
    assert "nodes/n1/iptables-save is larger than 256 MiB" in str(e.value) and "MAX_MEMBER" in str(e.value)


def test_total_of_used_members_is_capped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(snapshot, "MAX_TOTAL", 3000)
    a = tgz(tmp_path / "a.tgz", [("cluster.json", CLUSTER.encode())] +
            [(f"nodes/n{i}/iptables-save", DUMP.encode() + b"#" * 1000) for i in range(5)])
    with pytest.raises(InputError, match="MAX_TOTAL"):
        load_snapshot(str(a))


def test_member_count_is_capped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(snapshot, "MAX_MEMBERS", 10)
    a = tgz(tmp_path / "a.tgz", [("cluster.json", CLUSTER.encode())] + [(f"x{i}", b"") for i in range(20)])
    with pytest.raises(InputError, match="more than 10 members"):
        load_snapshot(str(a))


def test_binary_member_stops_at_its_first_chunk(tmp_path: Path) -> None:
    bomb = tmp_path / "b.tgz"
    zero_bomb(bomb, 1, 200 * limits.MiB, "nodes/n{i}/iptables-save")
    t0 = time.monotonic()
    with pytest.raises(InputError) as e:
        load_snapshot(str(bomb))
    assert str(e.value).endswith("b.tgz/nodes/n0/iptables-save: binary data where text was expected")
    assert time.monotonic() - t0 < 5


# -- 11. archive names: normalized, `..` refused, skipped members said --------------------------------------

@pytest.mark.parametrize("name", ["../../nodes/x/iptables-save", "snap/../../nodes/x/iptables-save",
                                  "nodes/x/../../../etc/iptables-save", "/nodes/x/iptables-save", ".."])
def test_climbing_member_names_are_refused(tmp_path: Path, name: str) -> None:
    """Issue 17 #11: before, `lstrip("./")` read `../../nodes/x/iptables-save` as `nodes/x/iptables-save`."""
    a = tgz(tmp_path / "a.tgz", [("cluster.json", CLUSTER.encode()), (name, DUMP.encode())])
    with pytest.raises(InputError) as e:
        load_snapshot(str(a))
    msg = str(e.value)
    assert "climbs out of the archive" in msg and repr(name) in msg and "\n" not in msg


def test_member_names_are_normalized(tmp_path: Path) -> None:
    a = tgz(tmp_path / "a.tgz", [("./cluster.json", CLUSTER.encode()),
                                 ("./nodes//n1/./iptables-save", DUMP.encode()),
                                 (".hidden/nodes/n2/iptables-save", DUMP.encode())])
    snap = load_snapshot(str(a))
    assert sorted(snap.nodes) == ["n1"]  # `.hidden/...` is under another folder, not `nodes/` stripped of dots


def test_one_top_folder_is_stripped(tmp_path: Path) -> None:
    a = tgz(tmp_path / "a.tgz", [("snap/cluster.json", CLUSTER.encode()), ("snap/nodes/n1/iptables-save",
                                                                            DUMP.encode())])
    assert sorted(load_snapshot(str(a)).nodes) == ["n1"]


def test_links_and_devices_are_skipped_with_a_warning(tmp_path: Path) -> None:
    link = tarfile.TarInfo("nodes/n1/iptables-save")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/shadow"
    hard = tarfile.TarInfo("nodes/n2/iptables-save")
    hard.type, hard.linkname = tarfile.LNKTYPE, "cluster.json"
    dev = tarfile.TarInfo("nodes/n3/nft")
    dev.type = tarfile.CHRTYPE
    a = tgz(tmp_path / "a.tgz", [("cluster.json", CLUSTER.encode()), link, hard, dev])
    snap = load_snapshot(str(a))
    assert snap.nodes == {}
    (w,) = [w for w in snap.warnings if "not regular files" in w.message]
    assert "skipped 3 archive member(s)" in w.message
    assert "nodes/n1/iptables-save (symlink to /etc/shadow)" in w.message and "(device)" in w.message


def test_directory_bundle_does_not_follow_symlinks_out(tmp_path: Path) -> None:
    """Issue 17 #11: before, a directory bundle read `nodes/n1/iptables-save -> /outside/file` and walked a
    `nodes/n2 -> /outside` folder (and rglob went through every file under the bundle, used or not)."""
    outside = tmp_path / "outside"
    (outside / "n9").mkdir(parents=True)
    (outside / "secret").write_text("*nat\n-A SECRET\nCOMMIT\n")
    (outside / "n9" / "iptables-save").write_text(DUMP)
    b = tmp_path / "snap"
    (b / "nodes" / "n1").mkdir(parents=True)
    (b / "nodes" / "n0").mkdir(parents=True)
    (b / "cluster.json").write_text(CLUSTER)
    (b / "nodes" / "n0" / "iptables-save").write_text(DUMP)
    (b / "nodes" / "n1" / "iptables-save").symlink_to(outside / "secret")
    (b / "nodes" / "n2").symlink_to(outside / "n9")
    (b / "nodes" / "n3").mkdir()
    (b / "nodes" / "n3" / "iptables-save").symlink_to(b / "nodes" / "n0" / "iptables-save")  # inside: fine
    snap = load_snapshot(str(b))
    assert sorted(snap.nodes) == ["n0", "n3"]
    (w,) = [w for w in snap.warnings if "not followed" in w.message]
    assert "nodes/n1/iptables-save" in w.message and "nodes/n2" in w.message


def test_directory_bundle_member_cap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(snapshot, "MAX_MEMBER", 100)
    b = tmp_path / "snap"
    (b / "nodes" / "n0").mkdir(parents=True)
    (b / "cluster.json").write_text(CLUSTER[:90])
    (b / "nodes" / "n0" / "iptables-save").write_text(DUMP)
    with pytest.raises(InputError, match=r"iptables-save: larger than 0 MiB .*MAX_MEMBER"):
        load_snapshot(str(b))


# -- 3. goto loops, 4. long chains of gotos and jumps, long paths ---------------------------------------------

def _ipt(*rules: str, chains: list[str]) -> str:
    decl = "".join(f":{c} - [0:0]\n" for c in chains)
    return "*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n" + decl + "\n".join(rules) + "\nCOMMIT\n"


def _trace_ipt(text: str):
    from svctrace.dataplane.iptables import load_ruleset
    from svctrace.kubeproxy.walk import trace_iptables
    from svctrace.model.packet import NodeFacts, Packet

    pkt = Packet.make(src="10.0.0.2", dst="172.30.0.1", proto="tcp", dport=80, local_ips=["192.168.0.2"])
    return trace_iptables(load_ruleset(text, "t.dump"), pkt, NodeFacts.make(local_ips=["192.168.0.2"]))


def _trace_nft(text: str):
    from svctrace.dataplane.nftables import load_nft
    from svctrace.kubeproxy.walk import trace_nft
    from svctrace.model.packet import NodeFacts, Packet

    pkt = Packet.make(src="10.0.0.2", dst="172.30.0.1", proto="tcp", dport=80, local_ips=["192.168.0.2"])
    return trace_nft(load_nft(text, "t.nft"), pkt, NodeFacts.make(local_ips=["192.168.0.2"]))


def _nft(body: str) -> str:
    return ("table ip t {\n  chain pre { type nat hook prerouting priority -100; policy accept; jump a }\n"
            + body + "\n}\n")


GOTO_LOOPS = [
    ("iptables -g", lambda: _trace_ipt(_ipt("-A PREROUTING -j A", "-A A -g B", "-A B -g C", "-A C -g A",
                                            chains=["A", "B", "C"])), "PREROUTING -> A -> B -> C -> A"),
    ("iptables -j then -g", lambda: _trace_ipt(_ipt("-A PREROUTING -j A", "-A A -j B", "-A B -g C", "-A C -g A",
                                                    chains=["A", "B", "C"])), "PREROUTING -> A -> B -> C -> A"),
    ("iptables -g to itself", lambda: _trace_ipt(_ipt("-A PREROUTING -j A", "-A A -p tcp -g A", chains=["A"])),
     "PREROUTING -> A -> A"),
    ("nft goto", lambda: _trace_nft(_nft("  chain a { goto b }\n  chain b { goto c }\n  chain c { goto a }")),
     "pre -> a -> b -> c -> a"),
    ("nft jump then goto", lambda: _trace_nft(_nft("  chain a { jump b }\n  chain b { goto c }\n"
                                                   "  chain c { goto a }")), "pre -> a -> b -> c -> a"),
]


@pytest.mark.parametrize(("case", "walk", "names"), GOTO_LOOPS, ids=[c[0] for c in GOTO_LOOPS])
def test_goto_loops_are_reported_at_once(case: str, walk, names: str) -> None:
    """Issue 17 #3: before, a three-rule goto loop ran the walk to MAX_STEPS (32-41 s, 540 MB) before "the
    walk did not end"; now gotos get the loop check jumps get, and it is immediate."""
    t0 = time.monotonic()
    with pytest.raises(WalkError) as e:
        walk()
    assert time.monotonic() - t0 < 1.0
    assert f"loop in the rules: {names}" in str(e.value) and "the kernel refuses such a ruleset" in str(e.value)


def test_goto_back_after_return_is_no_loop() -> None:
    """A chain reached again after the frame that went there returned is no loop."""
    r = _trace_ipt(_ipt("-A PREROUTING -j A", "-A PREROUTING -j A", "-A A -g B",
                        "-A B -j MARK --set-xmark 0x1/0x1", chains=["A", "B"]))
    assert [o.verdict for o in r.outcomes] == ["accept"]


def _chain_of(n: int, goto: bool) -> str:
    names = [f"G{i}" for i in range(n + 1)]
    op = "-g" if goto else "-j"
    rules = ["-A PREROUTING -j G0"] + [f"-A G{i} {op} G{i + 1}" for i in range(n)]
    return _ipt(*rules, f"-A G{n} -p tcp -j DNAT --to-destination 10.0.0.9:80", chains=names)


@pytest.mark.parametrize("goto", [True, False], ids=["gotos", "jumps"])
def test_a_thousand_chained_gotos_or_jumps_hit_the_depth_limit(goto: bool) -> None:
    """Issue 17 #4: before, 1000 chained gotos crashed the text renderer (RecursionError, exit 70); the depth
    limit now counts gotos as nf_tables does, so the walk stops with svctrace's own error."""
    with pytest.raises(WalkError) as e:
        _trace_ipt(_chain_of(1000, goto))
    assert f"nest deeper than {limits.MAX_DEPTH} chains" in str(e.value) and "MAX_DEPTH" in str(e.value)
    # at the limit, the walk goes through
    r = _trace_ipt(_chain_of(limits.MAX_DEPTH - 2, goto))
    assert r.outcomes[0].dnat is not None


def test_nft_thousand_chained_gotos_hit_the_depth_limit() -> None:
    body = "\n".join(f"  chain {'a' if i == 0 else f'g{i}'} {{ goto g{i + 1} }}" for i in range(1000))
    with pytest.raises(WalkError, match="nest deeper than"):
        _trace_nft(_nft(body + "\n  chain g1000 { dnat to 10.0.0.1:80 }"))


def test_text_renderer_draws_a_path_of_thousands_of_steps() -> None:
    """Issue 17 #4, the renderer's own half: 1,500 MARK rules make a 1,500-step path, which the recursive
    tree builder could not draw (RecursionError, exit 70, with or without gotos). Now it is drawn in bounded
    depth and width."""
    from rich.console import Console

    from svctrace.render.text import render_trace

    text = "*mangle\n:PREROUTING ACCEPT [0:0]\n" + "".join(
        f"-A PREROUTING -j MARK --set-xmark {i:#x}/0xffffffff\n" for i in range(1500)) + "COMMIT\n"
    r = _trace_ipt(text)
    buf = io.StringIO()
    render_trace(r, Console(file=buf, width=100, highlight=False))
    out = buf.getvalue()
    assert "mangle PREROUTING #1500 MARK" in out and "Verdict: accepted" in out
    assert max(len(line) for line in out.splitlines()) <= 100


# -- 7. cluster.json of the wrong types: one line naming the file and the JSON path ---------------------------

SVC = {"kind": "Service", "metadata": {"name": "web", "namespace": "default"},
       "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 80}]}}


def _with(**spec: object) -> str:
    return json.dumps({"kind": "List", "items": [dict(SVC, spec={**SVC["spec"], **spec})]})


WRONG_TYPES = [
    ("ports as a string", _with(ports="80"), "items[0].spec.ports: expected a list, not a string ('80')"),
    ("metadata as a list", json.dumps({"items": [dict(SVC, metadata=["web"])]}),
     "items[0].metadata: expected an object, not a list"),
    ("port 10**400", _with(ports=[{"port": 10**400}]),
     "items[0].spec.ports[0].port: expected a port number (0-65535), not an integer of 401 digits"),
    ("port 70000", _with(ports=[{"port": 70000}]), "items[0].spec.ports[0].port: expected a port number"),
    ("port as a float", _with(ports=[{"port": 80.5}]), "items[0].spec.ports[0].port: expected a port number (0-65535), "
     "not a number"),
    ("clusterIP not an address", _with(clusterIP="banana"),
     "items[0].spec.clusterIP: expected an IP address, not a string ('banana')"),
    ("clusterIPs a list of objects", _with(clusterIPs=[{}]), "items[0].spec.clusterIPs[0]: expected an IP address, "
     "not an object"),
    ("selector as a list", _with(selector=["app"]), "items[0].spec.selector: expected an object, not a list"),
    ("kind as a list", json.dumps([{"kind": ["Service"]}]), "[0].kind: expected a string, not a list"),
    ("100k-deep nesting", "[" * 100_000 + "]" * 100_000, "nested deeper than svctrace reads (limit MAX_JSON_DEPTH"),
    ("201-deep lists", "[" * 201 + json.dumps(SVC) + "]" * 201, "nested deeper than svctrace reads"),
    ("a 5000-digit number", '{"items": [], "x": 1' + "0" * 5000 + "}", "unreadable JSON: Exceeds the limit"),
    ("endpoint conditions as strings", json.dumps([SVC, {"kind": "EndpointSlice", "metadata": {"name": "w"},
                                                         "endpoints": [{"conditions": {"ready": "yes"}}]}]),
     "[1].endpoints[0].conditions.ready: expected true or false, not a string ('yes')"),
    ("pod IPs as a string", json.dumps([SVC, {"kind": "Pod", "metadata": {"name": "p"}, "status": {"podIPs": "x"}}]),
     "[1].status.podIPs: expected a list, not a string ('x')"),
]


@pytest.mark.parametrize(("case", "text", "says"), WRONG_TYPES, ids=[c[0] for c in WRONG_TYPES])
def test_wrong_types_in_cluster_json_name_the_json_path(tmp_path: Path, case: str, text: str, says: str) -> None:
    """Issue 17 #7: before, these ended in exit 70 (AttributeError, RecursionError, ValueError from
    ipaddress) or were silently skipped or misread; now each is one line naming the file and the path."""
    (tmp_path / "cluster.json").write_text(text)
    with pytest.raises(InputError) as e:
        load_snapshot(str(tmp_path))
    msg = str(e.value)
    assert msg.startswith(f"{tmp_path}/cluster.json: ") and says in msg, msg
    assert "\n" not in msg and len(msg) < 400


# Loading checks shapes with a compiled test per kind (cluster.SHAPE_OK) and reads the nesting depth from the text
# (snapshot._json_depth_over); the walks they stand in for (check_shape, _depth_over) say what is right.
_EDGES = [None, True, False, 0, -1, 80, 65535, 65536, 10**10 - 1, 10**10, -(10**10) + 1, -(10**10), 10**400, 1.5,
          float("inf"), "", "None", "10.0.0.1", "255.255.255.255", "10.0.0.256", "010.0.0.1", "fd00::1", "1.2.3.4 ",
          "\u0661.1.1.1", "TCP", "x" * 253, "x" * 254, "a[", '"]}{', "\\", '\\"[']
_values = st.recursive(
    st.sampled_from(_EDGES) | st.integers() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["name", "port", "ports", "spec", "metadata", "labels", "clusterIP", "clusterIPs", "ip",
                         "endpoints", "conditions", "ready", "addresses", "targetRef", "selector", "podIPs",
                         "status", "containers", "x[", '"{']), inner, max_size=4),
    max_leaves=12)


def _schema_paths(sch: object, at: tuple[object, ...] = ()) -> list[tuple[tuple[object, ...], object]]:
    """(path, schema) of every place in a schema: dict keys, list items (as index 0), map values (as key "k")."""
    out: list[tuple[tuple[object, ...], object]] = [(at, sch)]
    if isinstance(sch, dict):
        for k, sub in sch.items():
            out += _schema_paths(sub, (*at, k))
    elif isinstance(sch, list):
        out += _schema_paths(sch[0], (*at, 0))
    elif isinstance(sch, cluster._Map):
        out += _schema_paths(sch.value, (*at, "k"))
    return out


def _put(o: object, path: tuple[object, ...], value: object) -> object:
    """`o` with `value` at `path`, making the objects and lists on the way."""
    if not path:
        return value
    key, rest = path[0], path[1:]
    if isinstance(key, int):
        items = list(o) if isinstance(o, list) else []
        items = items or [{}]
        items[-1] = _put(items[-1], rest, value)
        return items
    d = dict(o) if isinstance(o, dict) else {}
    d[key] = _put(d.get(key), rest, value)
    return d


def _shape_fine(kind: str, o: object) -> bool:
    try:
        cluster.check_shape(o, cluster.SCHEMA[kind], "$", "x")
    except InputError:
        return False
    return True


def test_the_compiled_shape_test_agrees_with_check_shape_at_every_place() -> None:
    for kind, sch in cluster.SCHEMA.items():
        for path, _sch in _schema_paths(sch):
            for value in [*_EDGES, [], {}, [None], ["10.0.0.1"], {"k": 1}]:
                o = _put({"kind": kind}, path, value)
                assert cluster.SHAPE_OK[kind](o) == _shape_fine(kind, o), (path, value)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_the_compiled_shape_test_agrees_with_check_shape(data: st.DataObject) -> None:
    kind = data.draw(st.sampled_from(sorted(cluster.SCHEMA)))
    o: object = {"kind": kind}
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        path, _sch = data.draw(st.sampled_from(_schema_paths(cluster.SCHEMA[kind])))
        o = _put(o, path, data.draw(_values))
    assert cluster.SHAPE_OK[kind](o) == _shape_fine(kind, o), o


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_values, st.integers(min_value=0, max_value=6), st.booleans(), st.booleans())
def test_the_depth_read_from_the_text_agrees_with_the_walk(doc: object, limit: int, ascii_only: bool,
                                                             indent: bool) -> None:
    text = json.dumps(doc, ensure_ascii=ascii_only, indent=1 if indent else None)
    data = text.encode("utf-8", "surrogatepass")
    assert snapshot._json_depth_over(data, limit) == snapshot._depth_over(doc, limit)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                    HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(["-A X -j Y", "\n", "\r\n", "\r", "\x85", "\u2028", "\x0b", "é", "ü€", " ", ""]),
                max_size=40), st.booleans(), st.integers(min_value=1, max_value=9), st.integers(min_value=0, max_value=30))
def test_a_dump_read_line_by_line_is_its_text_split(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     parts: list[str], latin1: bool, chunk: int, head: int) -> None:
    """Texts.lines reads a file on disk a chunk at a time: the same lines (and head) as decode_text's whole text,
    whatever the chunks cut (line breaks of every kind, characters of several bytes, Latin-1 found late)."""
    monkeypatch.setattr(snapshot, "READ_CHUNK", chunk)
    monkeypatch.setattr(snapshot, "HEAD", head)
    data = "".join(parts).encode("utf-8") + ("\nlast \xe9".encode("latin-1") if latin1 else b"")
    f = tmp_path / "dump"
    f.write_bytes(data)
    texts = snapshot.Texts(lambda name: name, {"dump": snapshot.OnDisk(f, len(data))})
    text = snapshot.decode_text(data, "dump")
    assert texts.lines("dump") == (text[:head], text.splitlines())
    assert not texts.is_read("dump") and texts["dump"] == text


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_values | st.builds(lambda k, v: {"kind": k, "spec": v}, st.sampled_from(["Service", "Pod"]), _values)
                | st.builds(lambda v: {"kind": "List", "items": [{"kind": "Pod", "x": v}, v]}, _values), max_size=4),
       st.dictionaries(st.sampled_from(["kind", "apiVersion", "metadata", "x"]), _values,
                                                      max_size=3),
       st.sampled_from([None, 0, 2]), st.sampled_from([(", ", ": "), (",", ":"), (" ,\n", " :\t")]),
       st.sampled_from(["", "cut", "junk", "twice", "bom", "top-list"]))
def test_a_list_read_an_item_at_a_time_is_what_json_loads_reads(items: list, other: dict, indent: int | None,
                                                                  seps: tuple[str, str], spoil: str) -> None:
    """cluster.stream_items reads a List's items one at a time: the objects _items finds in json.loads' document,
    or NotStreamed (then the whole text is decoded as before) -- never anything else, broken text included."""
    doc: object = {**other, "items": items}
    text = json.dumps(doc, indent=indent, separators=seps)
    if spoil == "cut":
        text = text[: len(text) * 2 // 3]
    elif spoil == "junk":
        text += " x"
    elif spoil == "twice":
        text = text[:-1] + ', "items": []}'
    elif spoil == "bom":
        text = "\ufeff" + text
    elif spoil == "top-list":
        text = json.dumps(items)
    try:
        want = list(cluster._items(json.loads(text), "x"))
    except (ValueError, InputError):
        want = None
    try:
        got = list(cluster.stream_items(text, "x"))
    except cluster.NotStreamed:
        assert spoil != "" or not isinstance(doc, dict)
        return
    except InputError:
        assert want is None or spoil == ""
        return
    assert want is not None and got == want


@pytest.mark.parametrize(("tail", "says"), [
    ("[" * 300 + "]" * 300, "nested deeper than svctrace reads"),
    ("[1,", "broken JSON"),
])
def test_the_document_is_judged_before_its_objects(tmp_path: Path, tail: str, says: str) -> None:
    """An object of the wrong shape comes before a broken or too deep rest of the document: read an item at a time,
    the document's own fault is still the one said (as when the whole text was decoded first)."""
    bad = dict(SVC, spec={**SVC["spec"], "ports": "80"})
    (tmp_path / "cluster.json").write_text(f'{{"kind": "List", "items": [{json.dumps(bad)}, {tail}]}}')
    with pytest.raises(InputError) as e:
        load_snapshot(str(tmp_path))
    assert says in str(e.value)
    (tmp_path / "cluster.json").write_text(f'{{"kind": "List", "items": [{json.dumps(bad)}]}}')
    with pytest.raises(InputError, match=r"items\[0\]\.spec\.ports: expected a list"):
        load_snapshot(str(tmp_path))


def test_cluster_yaml_aliases_and_depth_are_refused(tmp_path: Path) -> None:
    laughs = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True))
    (tmp_path / "cluster.yaml").write_text("kind: List\nitems: []\n" + laughs)
    with pytest.raises(InputError, match=r"cluster.yaml:4: YAML aliases"):
        load_snapshot(str(tmp_path))
    (tmp_path / "cluster.yaml").write_text("[" * 300 + "]" * 300)
    with pytest.raises(InputError, match=r"cluster\.yaml: nested deeper"):
        load_snapshot(str(tmp_path))


@pytest.mark.slow
def test_wrong_types_exit_2_from_the_command_line(tmp_path: Path) -> None:
    for case, text, says in WRONG_TYPES[:3] + WRONG_TYPES[9:10]:
        d = tmp_path / case.replace(" ", "-")
        d.mkdir()
        (d / "cluster.json").write_text(text)
        p = subprocess.run([sys.executable, "-m", "svctrace", "explain", "svc/web", "--snapshot", str(d)],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 2, (case, p.stderr)
        assert p.stderr.count("\n") == 1 and says in p.stderr and "Traceback" not in p.stderr


# -- 8, 9, 12: the command line under bad arguments, silent hosts, early interrupts, huge lines ---------------

def _svctrace(*args: str, home: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SVCTRACE_DEBUG", "SSH_AUTH_SOCK", "KUBECONFIG")}
    env |= {"HOME": str(home), "COLUMNS": "120"}
    return subprocess.run([sys.executable, "-m", "svctrace", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


@pytest.mark.slow
def test_collect_usage_errors_are_one_line_exit_2(tmp_path: Path) -> None:
    """Issue 17 #8: before, each of these was an internal error (ValueError/FileExistsError, exit 70), and the
    message suggested overwriting with no option for it."""
    (tmp_path / "exists.tgz").write_bytes(b"x")
    cases = [
        (["--ssh", "root@h:99999", "-o", str(tmp_path / "a")], "--ssh: bad port '99999' in 'root@h:99999' (a port "
                                                                "is 1-65535)"),
        (["--ssh", "", "-o", str(tmp_path / "b")], "--ssh: not a host: ''"),
        (["--ssh", "root@h", "-o", str(tmp_path / "exists.tgz")], "exists.tgz already exists: choose another "
                                                                  "--output, or add --overwrite to replace it"),
        (["--ssh", "root@h", "--command-timeout", "0", "-o", str(tmp_path / "c")], "--command-timeout takes "
                                                                                   "seconds"),
    ]
    for args, says in cases:
        p = _svctrace("collect", *args, home=tmp_path)
        assert p.returncode == 2, (args, p.stderr)
        assert p.stderr.count("\n") == 1 and says in p.stderr and "internal error" not in p.stderr, p.stderr
    # --overwrite takes the existing path: the run goes on to the (unresolvable) host and fails there (exit 3)
    p = _svctrace("collect", "--ssh", "root@svctrace-no-such-host.invalid", "--timeout", "2", "--overwrite",
                  "-o", str(tmp_path / "exists.tgz"), home=tmp_path)
    assert p.returncode == 3, p.stderr
    assert "svctrace-no-such-host.invalid" in p.stderr and "Traceback" not in p.stderr


@pytest.mark.slow
def test_a_host_that_never_speaks_ssh_prints_no_paramiko_traceback(tmp_path: Path) -> None:
    """Issue 17 #9: before, paramiko's transport thread logged "Exception (client): Error reading SSH protocol
    banner" and two tracebacks on stderr (Python's last-resort log handler)."""
    import socket
    import threading

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    conns: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conns.append(srv.accept()[0])  # accepted, and never a word said
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        t0 = time.monotonic()
        p = _svctrace("collect", "--ssh", f"root@127.0.0.1:{srv.getsockname()[1]}", "--timeout", "1",
                      "-o", str(tmp_path / "s"), home=tmp_path)
        took = time.monotonic() - t0
    finally:
        stop.set()
        t.join()
        for c in [*conns, srv]:
            c.close()
    assert p.returncode == 3, p.stderr
    assert "Traceback" not in p.stderr and "Exception (client)" not in p.stderr and "paramiko" not in p.stderr
    assert "timed out after 1 s while connecting" in p.stderr
    assert took < 15


def _interpreter_start() -> float:
    """How long this machine's Python takes to start and reach `python -m`'s module (runpy), right now:
    an interrupt before that is Python's own, before any svctrace code can run."""
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-c", "import runpy"], check=True)
    return (time.monotonic() - t0) * 1.5


@pytest.mark.slow
@pytest.mark.parametrize("after", [0.0, 0.03, 0.06, 0.1, 0.15, 0.25, 0.4])
def test_an_early_interrupt_prints_no_traceback(tmp_path: Path, after: float) -> None:
    """Issue 17 #12: before, a Ctrl-C while typer/rich/the command were being imported (the first 150-200 ms
    after Python started, here) printed a KeyboardInterrupt traceback and the process died of SIGINT."""
    import signal

    delay = _interpreter_start() + after
    env = {k: v for k, v in os.environ.items() if k != "SVCTRACE_DEBUG"} | {"HOME": str(tmp_path)}
    p = subprocess.Popen([sys.executable, "-m", "svctrace", "explain", "svc/web", "--demo", "--from", "pod/client"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    time.sleep(delay)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    # 0: it had already answered. -SIGINT: Python ended itself by SIGINT after the interrupt was reported (CPython
    # does so when a KeyboardInterrupt ends the interpreter; seen once under heavy load) -- a shell shows it as 130
    # too, and what the test is about holds: one line, no traceback.
    assert p.returncode in (130, -signal.SIGINT, 0), (p.returncode, err)
    if p.returncode != 0:
        assert err.strip().splitlines()[-1].startswith("svctrace: interrupted")


def test_huge_lines_are_shortened_in_messages(tmp_path: Path) -> None:
    """Issue 17 #12: before, a 1 MB line of garbage was echoed whole in the warning about it."""
    from svctrace.dataplane.iptables import load_ruleset
    from svctrace.dataplane.ipvs import load_ipvs

    junk = "x" * 1_000_000
    rs = load_ruleset(f"*nat\n:PREROUTING ACCEPT [0:0]\n{junk}\n-A PREROUTING -j ACCEPT {junk}\nCOMMIT\n", "big")
    ipvs = load_ipvs(f"-A -t 10.0.0.1:80 -s rr\n{junk}\n", "big.ipvs")
    warns = [str(w) for w in rs.warnings + ipvs.warnings]
    assert warns and all(len(w) <= limits.MAX_MESSAGE for w in warns), [len(w) for w in warns]
    assert any("…" in w for w in warns)
    with pytest.raises(InputError) as e:
        load_snapshot(str(tmp_path / ("y" * 5000)))
    assert len(str(e.value)) <= limits.MAX_MESSAGE


def test_shorten() -> None:
    assert shorten("abc") == "abc"
    assert shorten("a\nb") == "a⏎b"
    assert shorten("x" * 500, 10) == "x" * 9 + "…"
    assert shorten("x" * 10**7, 50) == "x" * 49 + "…"
    assert shorten("a\nb" * 400, 2000, one_line=False).count("\n") == 400


def test_dump_over_the_size_limit_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from svctrace.cli import trace as trace_cli

    monkeypatch.setattr(trace_cli, "MAX_DUMP", 100)
    (tmp_path / "d").write_text(DUMP * 10)
    with pytest.raises(InputError, match=r"larger than 0 MiB \(svctrace's limit MAX_DUMP"):
        trace_cli.read_input(str(tmp_path / "d"))


@pytest.mark.kernel
def test_the_kernel_refuses_the_goto_loops_svctrace_refuses() -> None:
    """What svctrace's loop error says ("the kernel refuses such a ruleset") is checked against the kernel: each
    goto loop of GOTO_LOOPS' first and fourth case, loaded into a fresh network namespace, is refused by
    iptables-legacy-restore, iptables-nft-restore and nft (ELOOP/EMLINK: "Too many links")."""
    import shutil

    from kernellab import kernel_available

    ok, why = kernel_available()
    if not ok:
        pytest.skip(why)
    ipt = _ipt("-A PREROUTING -j A", "-A A -g B", "-A B -g C", "-A C -g A", chains=["A", "B", "C"])
    nft = ("table ip t {\n  chain pre {\n    type nat hook prerouting priority -100; policy accept;\n    jump a\n  }\n"
           "  chain a {\n    goto b\n  }\n  chain b {\n    goto c\n  }\n  chain c {\n    goto a\n  }\n}\n")
    for argv, text in ((["iptables-legacy-restore"], ipt), (["iptables-nft-restore"], ipt), (["nft", "-f", "-"], nft)):
        if shutil.which(argv[0]) is None:
            pytest.fail(f"{argv[0]} is missing (CI installs it: .ci/run)")
        p = subprocess.run(["unshare", "-n", *argv], input=text, capture_output=True, text=True, timeout=30)
        assert p.returncode != 0, (argv, p.stdout, p.stderr)
        # and the same rules without the loop load: the refusal is the loop's
        fixed = text.replace("-A C -g A", "-A C -j ACCEPT").replace("    goto a\n", "    accept\n")
        q = subprocess.run(["unshare", "-n", *argv], input=fixed, capture_output=True, text=True, timeout=30)
        assert q.returncode == 0, (argv, q.stderr)
    for walk in (lambda: _trace_ipt(ipt), lambda: _trace_nft(nft)):
        with pytest.raises(WalkError, match="loop in the rules"):
            walk()
