"""`-o FORMAT` for every command that prints a result, as kubectl spells it: `text` (the default, for people),
`wide` (a table with more columns, where the command prints a table), `json`, `yaml` and `jsonpath=TEMPLATE`.

JSON, YAML and JSONPath all print the one document the command's `to_json()` makes (docs/cli.md), so they
never disagree. A command names the formats it takes (`formats=`); a format of its own (a graph, say) is one
more name there and one more entry in the `renderers` it passes to `emit`.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import typer

from svctrace.errors import InputError

STRUCTURED = ("json", "yaml", "jsonpath")
STANDARD = ("text", "json", "yaml", "jsonpath")
TABLE = ("text", "wide", "json", "yaml", "jsonpath")
_SPELLING = {"jsonpath": "jsonpath=TEMPLATE"}


@dataclass(frozen=True)
class Output:
    """A parsed `-o`: the format's name, and the template of `jsonpath=`."""

    kind: str
    template: str | None = None

    @property
    def structured(self) -> bool:
        return self.kind in STRUCTURED

    @property
    def wide(self) -> bool:
        return self.kind == "wide"


def spelled(formats: Sequence[str]) -> str:
    return "|".join(_SPELLING.get(f, f) for f in formats)


def option(formats: Sequence[str] = STANDARD, example: str = "{.outcomes[*].verdict}") -> Any:
    """The `-o/--output` option of a command that prints these formats (`example`: a jsonpath template for
    its help)."""
    names = [f"{f}=" if f == "jsonpath" else f for f in formats]

    def complete(incomplete: str) -> list[str]:  # shell completion offers the command's own formats
        return [n for n in names if n.startswith(incomplete)]

    return typer.Option(
        "text",
        "--output",
        "-o",
        metavar="FORMAT",
        autocompletion=complete,
        help=f"Output format: {spelled(formats)} (jsonpath as kubectl writes it: -o jsonpath='{example}').",
    )


def parse_output(value: str, formats: Sequence[str]) -> Output:
    """`-o VALUE` checked against the formats a command prints (an InputError names them)."""
    kind, eq, template = value.partition("=")
    kind = kind.strip().lower()
    if kind not in formats:
        raise InputError(f"-o {value}: not a format this command prints (formats: {spelled(formats)})")
    if kind == "jsonpath":
        if not template.strip():
            raise InputError("-o jsonpath needs a template, like -o jsonpath='{.items[*].name}'")
        for expr in _expressions(template):
            _compile(expr)
        return Output(kind, template)
    if eq:
        raise InputError(f"-o {value}: only jsonpath takes `=` (formats: {spelled(formats)})")
    return Output(kind)


# -- the document ---------------------------------------------------------------------------------------------


def plain(doc: object) -> Any:
    """The document as JSON's own types (str subclasses such as Dnat become str), so that JSON, YAML and
    JSONPath see the same data."""
    return json.loads(json.dumps(doc))


def render_structured(out: Output, doc: object) -> str:
    """The text `-o json|yaml|jsonpath=...` prints for `doc`."""
    data = plain(doc)
    if out.kind == "json":
        return json.dumps(data, indent=2) + "\n"
    if out.kind == "yaml":
        import yaml

        text: str = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False)
        return text
    if out.kind == "jsonpath":
        text = jsonpath_text(data, out.template or "")
        return text if text.endswith("\n") else text + "\n"
    raise ValueError(f"not a structured format: {out.kind}")


def emit(
    out: Output,
    doc: object | Callable[[], object],
    warnings: Sequence[object] = (),
    *,
    text: Callable[[Output], None] | None = None,
    renderers: Mapping[str, Callable[[], None]] | None = None,
) -> None:
    """Print a result: `text`/`wide` through the command's own `text` renderer (told which), JSON, YAML and
    JSONPath from `doc` (the document, or a function making it) on stdout with the warnings on stderr, and a
    command's own formats through `renderers`."""
    if out.structured:
        sys.stdout.write(render_structured(out, doc() if callable(doc) else doc))
        for w in warnings:
            sys.stderr.write(f"svctrace: warning: {w}\n")
        return
    if renderers and out.kind in renderers:
        renderers[out.kind]()
        return
    if text is None:
        raise InputError(f"-o {out.kind}: not a format this command prints")
    text(out)


# -- JSONPath, as kubectl takes it ------------------------------------------------------------------------------

_BRACES = re.compile(r"\{([^{}]*)\}")


def _expressions(template: str) -> list[str]:
    t = _relaxed(template)
    return [m.group(1).strip() for m in _BRACES.finditer(t) if not m.group(1).strip().startswith('"')]


def _relaxed(template: str) -> str:
    """kubectl's relaxed form: `.items[*].name` or `items` alone means `{.items[*].name}`, `{.items}`."""
    return template if "{" in template else "{" + template + "}"


def _path(expr: str) -> str:
    if expr.startswith("$"):
        return expr
    return "$" + (expr if expr.startswith((".", "[")) else "." + expr)


def _compile(expr: str) -> Any:
    from jsonpath_ng.exceptions import JSONPathError
    from jsonpath_ng.ext import parse

    if expr == "end" or expr.startswith("range "):
        raise InputError("-o jsonpath: {range}...{end} is not supported; print a list with {.items[*].name}")
    try:
        return parse(_path(expr))
    except (JSONPathError, Exception) as e:  # the parser raises its own errors and, on odd input, plain ones
        raise InputError(f"-o jsonpath: cannot read {{{expr}}}: {e}") from None


def jsonpath_text(doc: Any, template: str) -> str:
    """A kubectl-style JSONPath template over `doc`: text outside braces is printed as is, `{"\\n"}` is a string,
    `{EXPR}` prints every value EXPR finds (strings as they are, anything else as JSON), separated by spaces.
    The expressions are read by jsonpath-ng (its extended parser: filters such as
    `[?(@.health=="error")]`)."""
    t = _relaxed(template)
    out: list[str] = []
    pos = 0
    for m in _BRACES.finditer(t):
        out.append(t[pos : m.start()])
        pos = m.end()
        expr = m.group(1).strip()
        if expr.startswith('"') and expr.endswith('"') and len(expr) >= 2:
            try:
                out.append(json.loads(expr))
            except ValueError:
                out.append(expr[1:-1])
            continue
        values = [v.value for v in _compile(expr).find(doc)]
        out.append(" ".join(v if isinstance(v, str) else json.dumps(v) for v in values))
    out.append(t[pos:])
    return "".join(out)
