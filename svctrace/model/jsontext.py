"""JSON text as ``json.dumps(obj, indent=2)`` writes it, byte for byte, at the speed of the C encoder's parts.

With ``indent`` set, the standard library falls back to its pure-Python, generator-based encoder (about
3 µs a value); a snapshot's cluster.json of 5k simulated Services holds 3.6 million of them. :func:`dumps_indent2`
walks plain JSON data (dict, list, str, int, float, bool, None) itself and leaves strings to the C escaper;
anything else (a subclass, a tuple key, a cycle) goes to ``json.dumps`` unchanged, so the text and the errors
are always the standard library's.
"""

from __future__ import annotations

import copy
import json
from json.encoder import encode_basestring_ascii as _esc  # the C escaper when the C accelerator is present
from typing import Any

__all__ = ["dumps_indent2"]

_INF = float("inf")


class _Unplain(Exception):
    """A value this fast path does not write (json.dumps then writes the whole document)."""


def _float(o: float) -> str:
    # json.encoder's floatstr with allow_nan=True
    if o != o:
        return "NaN"
    if o == _INF:
        return "Infinity"
    if o == -_INF:
        return "-Infinity"
    return float.__repr__(o)


def _key(k: Any) -> str:
    t = type(k)
    if t is str:
        return _esc(k)
    if k is True:
        return '"true"'
    if k is False:
        return '"false"'
    if k is None:
        return '"null"'
    if t is int:
        return '"' + int.__repr__(k) + '"'
    if t is float:
        return '"' + _float(k) + '"'
    raise _Unplain


def _write(o: Any, out: list[str], nl: str, depth: int) -> None:
    t = type(o)
    if t is str:
        out.append(_esc(o))
    elif t is dict:
        if not o:
            out.append("{}")
            return
        if depth > 500:
            raise _Unplain  # deep or circular: the standard library says which
        inner = nl + "  "
        sep = "{" + inner
        comma = "," + inner
        for k, v in o.items():
            # One piece per member where the value is a string, a bool or an int: fewer appends, same text.
            ks = _esc(k) if type(k) is str else _key(k)
            tv = type(v)
            if tv is str:
                out.append(sep + ks + ": " + _esc(v))
            elif tv is bool:
                out.append(sep + ks + (": true" if v else ": false"))
            elif tv is int:
                out.append(sep + ks + ": " + int.__repr__(v))
            else:
                out.append(sep + ks + ": ")
                _write(v, out, inner, depth + 1)
            sep = comma
        out.append(nl + "}")
    elif t is list or t is tuple:
        if not o:
            out.append("[]")
            return
        if depth > 500:
            raise _Unplain
        inner = nl + "  "
        sep = "[" + inner
        comma = "," + inner
        for v in o:
            if type(v) is str:
                out.append(sep + _esc(v))
            else:
                out.append(sep)
                _write(v, out, inner, depth + 1)
            sep = comma
        out.append(nl + "]")
    elif o is None:
        out.append("null")
    elif o is True:
        out.append("true")
    elif o is False:
        out.append("false")
    elif t is int:
        out.append(int.__repr__(o))
    elif t is float:
        out.append(_float(o))
    else:
        raise _Unplain


def dumps_indent2(obj: Any) -> str:
    """``json.dumps(obj, indent=2)``, the same text."""
    out: list[str] = []
    try:
        _write(obj, out, "\n", 0)
    except _Unplain:
        return json.dumps(obj, indent=2)
    return "".join(out)


def copy_plain(obj: Any) -> Any:
    """``copy.deepcopy`` of plain JSON data (dicts, lists, strings, numbers, bools, None), several times faster;
    any other value inside is deep-copied by ``copy.deepcopy``. Shared sub-objects (a YAML alias) become
    separate copies."""
    t = type(obj)
    if t is dict:
        return {k: v if type(v) is str else copy_plain(v) for k, v in obj.items()}
    if t is list:
        return [v if type(v) is str else copy_plain(v) for v in obj]
    if t is str or t is int or t is float or t is bool or obj is None:
        return obj
    return copy.deepcopy(obj)
