"""The fast JSON writer and copier give what the standard library gives (simulate's cluster.json)."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from svctrace.model.jsontext import copy_plain, dumps_indent2

_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text()
_keys = st.text() | st.integers() | st.booleans() | st.none() | st.floats(allow_nan=False)
_json = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.tuples(inner, inner) | st.dictionaries(_keys, inner, max_size=4)
    ),
    max_leaves=30,
)


@settings(max_examples=400, deadline=None)
@given(_json)
def test_dumps_indent2_is_json_dumps(doc: object) -> None:
    assert dumps_indent2(doc) == json.dumps(doc, indent=2)


def test_dumps_indent2_hands_what_it_does_not_know_to_json() -> None:
    class Name(str):
        pass

    assert dumps_indent2({"a": Name("x"), "b": [1.5, float("nan")]}) == json.dumps(
        {"a": Name("x"), "b": [1.5, float("nan")]}, indent=2
    )
    cycle: list[object] = []
    cycle.append(cycle)
    try:
        dumps_indent2(cycle)
    except ValueError as e:  # the standard library's error, not a RecursionError
        assert "Circular reference" in str(e)
    else:
        raise AssertionError("a cycle was written")
    try:
        dumps_indent2({"k": object()})
    except TypeError as e:
        assert "not JSON serializable" in str(e)
    else:
        raise AssertionError("an object was written")


@settings(max_examples=200, deadline=None)
@given(_json)
def test_copy_plain_is_a_deep_copy(doc: object) -> None:
    got = copy_plain(doc)
    assert json.dumps(got) == json.dumps(copy.deepcopy(doc))

    # nothing mutable is shared with the original
    def mutables(o: object) -> list[int]:
        if isinstance(o, dict):
            return [id(o), *(i for v in o.values() for i in mutables(v))]
        if isinstance(o, list):
            return [id(o), *(i for v in o for i in mutables(v))]
        return []

    assert not set(mutables(got)) & set(mutables(doc))


def test_simulated_bundle_is_the_standard_json_of_the_bench_cluster() -> None:
    """bench/simulate_scale.py's cluster, completed by simulate: cluster.json is json.dumps's text, and the
    input objects are left as they were."""
    from svctrace.kubeproxy.simulate import simulate

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    try:
        import simulate_scale
    finally:
        sys.path.pop(0)
    objs = simulate_scale.objects(40)["items"]
    before = json.dumps(objs)
    sim = simulate(objs, kube_version="1.31")
    assert json.dumps(objs) == before
    files = sim.bundle_files("0")
    assert (
        files["cluster.json"]
        == json.dumps({"apiVersion": "v1", "kind": "List", "items": sim.objects}, indent=2) + "\n"
    )
    ips = [o["spec"]["clusterIP"] for o in sim.objects if o["kind"] == "Service"]
    assert len(set(ips)) == 40 and ips[0] == "10.96.0.10"  # skip_first=10 of the default Service CIDR
    pod_ips = [o["status"]["podIP"] for o in sim.objects if o["kind"] == "Pod"]
    assert len(set(pod_ips)) == 120 and "10.64.0.10" in pod_ips
