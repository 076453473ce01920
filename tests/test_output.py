"""`-o text|wide|json|yaml|jsonpath=TEMPLATE` on every command that prints a result (svctrace/cli/output.py)."""

from __future__ import annotations

import json

import pytest
import yaml
from test_cli import run

from svctrace.cli.output import jsonpath_text, parse_output
from svctrace.errors import InputError

EXPLAIN = ("explain", "svc/web", "--demo", "--from", "pod/client")
TRACE = ("trace", "--demo", "--src", "10.0.0.2", "--dst", "172.30.0.41", "--dport", "80")


@pytest.mark.parametrize("cmd", [EXPLAIN, TRACE], ids=["explain", "trace"])
def test_json_yaml_and_jsonpath_print_the_same_document(cmd: tuple[str, ...]) -> None:
    j = run(*cmd, "-o", "json")
    assert j.returncode == 0, j.stderr
    doc = json.loads(j.stdout)
    y = run(*cmd, "-o", "yaml")
    assert y.returncode == 0 and yaml.safe_load(y.stdout) == doc
    key = "endpoint" if cmd[0] == "explain" else "dnat"
    jp = run(*cmd, "-o", f"jsonpath={{.outcomes[*].{key}}}")
    assert jp.returncode == 0
    assert jp.stdout.split() == [o[key] for o in doc["outcomes"]]
    assert sorted(jp.stdout.split()) == (
        ["10.244.1.10:8080", "10.244.2.10:8080", "10.244.2.11:8080"]
        if cmd[0] == "explain"
        else ["10.180.0.1:80", "10.180.1.2:80", "10.180.2.3:80"]
    )


def test_wide_adds_columns_to_explain_and_trace() -> None:
    text = run(*EXPLAIN)
    wide = run(*EXPLAIN, "-o", "wide")
    assert "decided by" not in text.stdout and "decided by" in wide.stdout
    assert "nat KUBE-SEP-" in wide.stdout.split("decided by", 1)[1]
    t = run(*TRACE, "-o", "wide")
    head = next(line for line in t.stdout.splitlines() if line.startswith("prob."))
    assert head.split() == ["prob.", "verdict", "destination", "masquerade", "delivery", "decided", "by"]
    assert "delivery" not in run(*TRACE).stdout


@pytest.mark.parametrize("cmd", [EXPLAIN, TRACE, ("check", "--demo")], ids=["explain", "trace", "check"])
def test_an_unknown_format_is_one_line_naming_the_formats(cmd: tuple[str, ...]) -> None:
    p = run(*cmd, "-o", "xml")
    assert p.returncode == 2 and p.stdout == ""
    graphs = "" if cmd[0] == "check" else "|dot|svg|mermaid"  # trace and explain also draw the path
    assert p.stderr == (
        "svctrace: error: -o xml: not a format this command prints "
        f"(formats: text|wide|json|yaml|jsonpath=TEMPLATE{graphs})\n"
    )


def test_jsonpath_templates_as_kubectl_writes_them() -> None:
    doc = {
        "items": [
            {"name": "a", "health": "error", "port": {"port": 80}, "ok": False},
            {"name": "b", "health": "ok", "port": {"port": 81}, "ok": True},
        ],
        "kind": "Check",
    }
    assert jsonpath_text(doc, "{.items[*].name}") == "a b"
    assert jsonpath_text(doc, ".items[*].name") == "a b"  # kubectl's relaxed form: no braces
    assert jsonpath_text(doc, "kind") == "Check"
    assert jsonpath_text(doc, '{.items[?(@.health=="error")].port.port}') == "80"
    assert jsonpath_text(doc, 'kind={.kind}{"\\n"}first={.items[0].name}') == "kind=Check\nfirst=a"
    assert jsonpath_text(doc, "{.items[*].ok}") == "false true"  # non-strings as JSON
    assert jsonpath_text(doc, "{.items[1].port}") == '{"port": 81}'
    assert jsonpath_text(doc, "{.missing}") == ""
    for bad, needle in (
        ("{range .items[*]}{.name}{end}", "{range}...{end} is not supported"),
        ("{.items[}", "cannot read {.items[}"),
    ):
        with pytest.raises(
            InputError, match=needle.replace("{", r"\{").replace("[", r"\[").replace(".", r"\.")
        ):
            parse_output(f"jsonpath={bad}", ("jsonpath",))


def test_batch_answers_are_json_lines_whatever_else_is_asked() -> None:
    p = run(
        "trace",
        "--demo",
        "--batch",
        "-",
        "-o",
        "yaml",
        stdin='{"dst": "172.30.0.41", "dport": 80, "src": "10.0.0.2"}\n',
    )
    assert p.returncode == 2 and p.stderr == (
        "svctrace: error: --batch prints one JSON object per line; -o yaml does not apply to it\n"
    )
