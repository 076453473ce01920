"""Read `nft list ruleset` text (and `nft -f` input) into an `NftRuleset`.

Both syntaxes nft accepts: blocks (`table ip kube-proxy { chain services { ... } }`, what `nft list`
prints) and commands (`add rule ip kube-proxy services ip daddr ...`, what kube-proxy feeds to
`nft -f`). Pasted dumps are taken as they come: `# handle N` (`nft -a`), shell prompts, `....`
elisions, any indentation, chains pasted without their table, rule lines without their chain
(`nft list ruleset | grep`), iptables-nft's `# Warning:` lines. Stdlib only.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import partial

from svctrace.dataplane.nftables.ir import Chain, Element, NftRuleset, NSet, Parsed, Rule, Table
from svctrace.dataplane.nftables.syntax import (
    LexError,
    ParseFail,
    StmtParser,
    Tok,
    parse_elements,
    parse_rule_tokens,
    skip_group,
    tokenize_line,
    tokens_text,
)
from svctrace.dataplane.nftables.values import FAMILIES, declared_types, expr_type, priority_value
from svctrace.errors import InputError, Warn, shorten

_PROMPT = re.compile(r"^\s*(?:[\w.-]+@[\w.-]+(?::\S*)?\s*[$#%]|\[[^\]\n]+\][$#%]|[$%]|>>>)(?:\s|$)")
_ELISION = re.compile(r"^\s*(?:\.{3,}|-{3,}|…+|\[\.\.\.\]|<snip>|\(snip\)|# \.\.\.)\s*$", re.I)
_XT_HIDDEN = re.compile(r"Warning: XT (target|match) (\S+) not found")
_IPT_TABLE = re.compile(r"Warning: table (ip6?|inet|arp|bridge) (\S+) is managed by iptables-nft")
_HANDLE = re.compile(r"^handle (\d+)$")

OBJECTS = ("table", "chain", "rule", "set", "map", "element", "flowtable", "counter", "quota", "limit", "ct",
           "secmark", "synproxy", "ruleset")
VERBS = ("add", "create", "insert", "replace", "delete", "destroy", "flush", "list", "reset", "rename", "monitor",
         "describe", "export", "import")
KUBE_PROXY_CHAINS = frozenset({
    "services", "masquerading", "mark-for-masquerade", "firewall-check", "cluster-ips-check", "reject-chain",
    "nodeport-endpoints-check", "service-endpoints-check", "filter-prerouting", "filter-prerouting-pre-dnat",
    "filter-input", "filter-forward", "filter-output", "filter-output-pre-dnat", "filter-output-post-dnat",
    "nat-prerouting", "nat-output", "nat-postrouting"})
MAX_PROBLEM_WARNINGS = 40
EAGER_RULES = 5000


class _Loader:
    def __init__(self, text: str, source: str) -> None:
        self.source = source
        self.rs = NftRuleset(source=source, format="nft")
        # Tokens are made as the loader reads, a line at a time, and dropped once read (`_compact`): a big
        # dump's words are never all alive at once.  `toks[i]` is the next token.
        self.toks: list[Tok] = []
        self.handles: dict[int, int] = {}
        self.i = 0
        self.orphan_table: dict[int, str] = {}  # line -> "ip nat" from iptables-nft's warning lines
        self.ipt_tables: set[str] = set()
        self.dynsets: list[tuple[str, str]] = []
        self.keys: dict[str, str] = {}
        # The lines in `toks` as written, with their token count: a rule that is one whole line keeps only its
        # line, and is tokenized again when the walk first reads it.
        self.line_text: dict[int, tuple[str, int]] = {}
        self.last_line = 0  # the last line that gave tokens
        self.lex_warnings: list[Warn] = []  # said before what the loader finds (as when the text was lexed first)
        self._lines = self._lex(text)
        self.eof = False

    # -- reporting
    def warn(self, msg: str, line: int | None = None, code: str = "nft") -> None:
        self.rs.warnings.append(Warn(msg, self.source, line, code))

    def error(self, msg: str, line: int | None) -> InputError:
        return InputError(msg, source=self.source, line=line)

    # -- lexing: line by line, dropping what is not nft
    def _lex(self, text: str) -> Iterator[None]:
        """Tokenize the next line that holds nft into `toks` at each step."""
        ipt_table: str | None = None
        elided = 0
        prompts = 0
        for n, raw in enumerate(_split_lines(text), 1):
            line = raw.rstrip("\r")
            stripped = line.strip()
            if not stripped:
                continue
            if _PROMPT.match(line) and not stripped.startswith("#"):
                prompts += 1
                continue
            if _ELISION.match(line):
                elided += 1
                if elided == 1:
                    self.lex_warnings.append(Warn("the paste elides part of the ruleset here; what is missing cannot be "
                                              "walked", self.source, n, "elided"))
                continue
            if stripped.startswith("#"):
                m = _XT_HIDDEN.search(stripped)
                if m:
                    self.rs.hidden += 1
                    continue
                m = _IPT_TABLE.search(stripped)
                if m:
                    ipt_table = f"{m.group(1)} {m.group(2)}"
                    self.orphan_table[n] = ipt_table
                    self.ipt_tables.add(ipt_table)
                continue
            before = len(self.toks)
            try:
                comment = tokenize_line(line, n, self.toks)
            except LexError as e:
                raise self.error(str(e), e.line) from None
            if comment:
                hm = _HANDLE.match(comment)
                if hm:
                    self.handles[n] = int(hm.group(1))
            if len(self.toks) > before:
                self.line_text[n] = (line, len(self.toks) - before)
                self.toks.append(Tok("nl", "", n))
                self.last_line = n
                if ipt_table is not None:
                    self.orphan_table[n] = ipt_table
                yield
        if self.rs.hidden:
            self.lex_warnings.append(Warn(
                f"nft could not print {self.rs.hidden} rule(s) (`# Warning: XT target ... not found`): rules that "
                "iptables-nft wrote with xtables extensions are missing from this dump (iptables-save shows them)",
                self.source, None, "hidden-rules"))

    def _has(self, j: int) -> bool:
        """Whether there is a token at `j`, lexing further lines as needed."""
        while j >= len(self.toks):
            if self.eof:
                return False
            if next(self._lines, True):
                self.eof = True
        return True

    def _fill_group(self, j: int) -> None:
        """Lex until the `{ }` group that starts at or after `j` is closed (or the text ends)."""
        depth = 0
        while self._has(j):
            k = self.toks[j].kind
            j += 1
            if k == "{":
                depth += 1
            elif k == "}":
                depth -= 1
                if depth <= 0:
                    return

    def _compact(self) -> None:
        """Drop the tokens already read (called between items, where no position but `i` is held)."""
        if self.i >= 4096:
            del self.toks[:self.i]
            self.i = 0
            first = self.toks[0].line if self.toks else self.last_line + 1
            self.line_text = {n: v for n, v in self.line_text.items() if n >= first}

    def _drain(self) -> None:
        """Lex the rest of the text (its lexing errors come before the loader's, as when the text was lexed
        first)."""
        while not self.eof:
            del self.toks[:]
            self._has(0)

    # -- token helpers
    def peek(self, k: int = 0) -> Tok | None:
        j = self.i + k
        return self.toks[j] if j < len(self.toks) or self._has(j) else None

    def kind(self, k: int = 0) -> str | None:
        t = self.peek(k)
        return t.kind if t is not None else None

    def pw(self, k: int = 0) -> str | None:
        t = self.peek(k)
        return t.text if t is not None and t.kind in ("w", "s") else None

    def take_word(self, what: str) -> str:
        t = self.peek()
        if t is None or t.kind not in ("w", "s"):
            raise self.error(f"expected {what}, got {t.text if t and t.kind != 'nl' else 'end of line'!r}",
                             t.line if t else None)
        self.i += 1
        return t.text

    def skip_line(self) -> None:
        self.item_tokens(warn=False)

    def item_tokens(self, warn: bool = True) -> list[Tok]:
        """Tokens up to the end of the item (newline or `;` outside braces, or a closing brace)."""
        out: list[Tok] = []
        depth = 0
        while self.i < len(self.toks) or self._has(self.i):
            t = self.toks[self.i]
            if t.kind == "{":
                depth += 1
            elif t.kind == "}":
                if depth == 0:
                    break
                depth -= 1
            elif t.kind == "nl":
                if depth == 0:
                    self.i += 1
                    break
                self.i += 1
                continue
            elif t.kind == ";" and depth == 0:
                self.i += 1
                break
            out.append(t)
            self.i += 1
        if warn and depth > 0 and not self._has(self.i):
            self.warn("the dump ends inside braces (cut short?)", out[0].line if out else None, "truncated")
            self.ends_open("braces")
        return out

    # -- objects
    def table(self, family: str, name: str, line: int | None, guessed: bool = False) -> Table:
        key = f"{family} {name}"
        t = self.rs.tables.get(key)
        if t is None:
            t = Table(family, name, line=line, guessed=guessed)
            self.rs.tables[key] = t
        return t

    def tkey(self, t: Table) -> str:
        """`t.key`, one string for all the table's chains and rules."""
        k = t.key
        return self.keys.setdefault(k, k)

    def chain(self, t: Table, name: str, line: int | None) -> Chain:
        c = t.chains.get(name)
        if c is None:
            c = Chain(self.tkey(t), name, line=line)
            t.chains[name] = c
        return c

    def add_rule(self, t: Table, c: Chain, toks: list[Tok], at: int | None = None) -> None:
        if not toks:
            return
        line = toks[0].line
        whole = self.line_text.get(line)
        # partials, not closures: half the memory, for each of a big ruleset's rules
        if whole is not None and whole[1] == len(toks) and toks[-1].line == line:  # the rule is its whole line
            r = Rule(c.table, c.name, 0, None, None, line, None, self.handles.get(line), raw=whole[0],
                     reader=_LINE_READER)
        else:
            r = Rule(c.table, c.name, 0, None, partial(tokens_text, toks), line, None, self.handles.get(line),
                     parse=partial(parse_rule_tokens, toks))
        if any(x.text[:1] == "@" for x in toks):  # `update @affinity-... { ip saddr }`: a set filled at run time
            for k in range(1, len(toks)):
                if toks[k].text[:1] == "@" and toks[k - 1].text in ("update", "add", "delete"):
                    self.dynsets.append((t.key, toks[k].text[1:]))
        if at is None:
            c.rules.append(r)
        else:
            c.rules.insert(at, r)

    # -- top level
    def load(self) -> NftRuleset:
        try:
            self._load()
        except InputError:
            self._drain()
            raise
        self.rs.warnings[:0] = self.lex_warnings
        self.finish()
        return self.rs

    def _load(self) -> None:
        while self._has(self.i):
            self._compact()
            t = self.toks[self.i]
            if t.kind in ("nl", ";"):
                self.i += 1
                continue
            if t.kind == "}":  # the end of a table whose start was not pasted
                self.warn("a closing '}' without its opening block (a cut paste?) was ignored", t.line, "fragment")
                self.i += 1
                continue
            w = t.text if t.kind == "w" else None
            if w == "table":
                self.i += 1
                self.table_block()
            elif w in VERBS and self.pw(1) in OBJECTS:
                self.command()
            elif w in ("chain", "set", "map") and self.kind(2) == "{":
                self.orphan_block()
            elif w in ("define", "include", "undefine", "redefine"):
                self.warn(f"`{w}` is not supported; the line is ignored", t.line)
                self.skip_line()
            else:
                self.orphan_rule()

    def family_and_name(self) -> tuple[str, str]:
        first = self.take_word("a table name")
        nxt = self.peek()
        if first in FAMILIES and nxt is not None and nxt.kind in ("w", "s"):
            return first, self.take_word("a table name")
        return "ip", first

    def table_block(self) -> None:
        line = self.toks[self.i - 1].line
        family, name = self.family_and_name()
        t = self.table(family, name, line)
        if self.kind() == "{":
            self.i += 1
            self.table_body(t)

    def table_body(self, t: Table) -> None:
        while (tok := self.block_item(f"table {t.key}", t.line)) is not None:
            w = tok.text
            if w in ("chain", "set", "map") and self.kind(2) == "{":
                self.i += 1
                name = self.take_word("a name")
                self.i += 1
                if w == "chain":
                    self.chain_body(t, self.chain(t, name, tok.line))
                else:
                    self.set_body(t, name, w == "map", tok.line)
            elif w == "comment":
                self.i += 1
                t.comment = self.take_word("a comment")
            elif w == "flags":
                toks = self.item_tokens()
                t.flags = tuple(x.text for x in toks[1:] if x.kind == "w")
            elif "{" in (self.kind(1), self.kind(2), self.kind(3)):  # flowtable ft {, counter c {, ct helper h {
                self.warn(f"table {t.key}: `{w}` objects are not modelled; skipped", tok.line)
                while self.kind() not in ("{", None):
                    self.i += 1
                self.skip_block()
            else:
                toks = self.item_tokens()
                self.warn(f"table {t.key}: a line outside any chain was ignored: {shorten(tokens_text(toks), 100)}",
                          tok.line)

    def ends_open(self, inside: str) -> None:
        """The text ends with a brace open (the innermost block is said first): the dump is cut short."""
        if self.rs.cut is None:
            self._drain()
            last = self.last_line or 1
            self.rs.cut = (last, f"the nft text ends inside {inside} at line {last} (a brace left open: cut short)")

    def skip_block(self) -> None:
        self._fill_group(self.i)
        self.i = skip_group(self.toks, self.i)

    def block_item(self, inside: str, line: int | None, separators: tuple[str, ...] = ("nl", ";")) -> Tok | None:
        """The next item of a `{ }` block, separators skipped; None after its `}`, or (with a warning) at the end of
        the dump."""
        while True:
            tok = self.peek()
            if tok is None:
                self.warn(f"the dump ends inside {inside} (cut short?)", line, "truncated")
                self.ends_open(inside)
                return None
            if tok.kind in separators:
                self.i += 1
                self._compact()
                continue
            if tok.kind == "}":
                self.i += 1
                return None
            return tok

    def chain_body(self, t: Table, c: Chain) -> None:
        while (tok := self.block_item(f"chain {c.name} of table {t.key}", c.line)) is not None:
            w = tok.text if tok.kind == "w" else None
            if w == "type" and self.pw(2) == "hook":
                self.base_decl(t, c, self.item_tokens())
            elif w == "policy" and self.pw(1) in ("accept", "drop"):
                self.i += 1
                c.policy = self.take_word("a policy")
            elif w == "comment" and self.kind(1) == "s" and self.kind(2) in (None, "nl", ";", "}"):
                self.i += 1
                c.comment = self.take_word("a comment")
            elif w in ("devices", "device") and self.pw(1) in ("=",):
                self.item_tokens()
            else:
                self.add_rule(t, c, self.item_tokens())

    def base_decl(self, t: Table, c: Chain, toks: list[Tok]) -> None:
        words = [x.text for x in toks]
        line = toks[0].line
        try:
            c.type = words[1]
            c.hook = words[3]
        except IndexError:
            raise self.error("incomplete chain type declaration", line) from None
        rest = words[4:]
        if rest[:1] in (["device"], ["devices"]):  # `device eth0`, `devices = { eth0, eth1 }`
            end = rest.index("priority") if "priority" in rest else len(rest)
            c.device = " ".join(x for x in rest[1:end] if x not in ("=", "{", "}", ",")).replace('"', "")
            rest = rest[end:]
        if rest[:1] != ["priority"] or len(rest) < 2:
            raise self.error(f"chain {c.name}: a base chain needs a priority", line)
        ptext = " ".join(rest[1:])
        prio = priority_value(ptext, t.family)
        if prio is None:
            raise self.error(f"chain {c.name}: {ptext!r} is not a priority", line)
        c.priority = prio
        c.priority_text = ptext

    def set_body(self, t: Table, name: str, is_map: bool, line: int | None) -> None:
        s = t.sets.get(name)
        if s is None:
            s = NSet(t.key, name, is_map=is_map, line=line)
            t.sets[name] = s
        while (tok := self.block_item(f"set {name} of table {t.key}", line, ("nl", ";", ","))) is not None:
            w = tok.text
            if w == "elements" and self.kind(1) == "w" and self.pw(1) == "=":
                self.i += 2
                self.elements_into(s, tok.line)
                continue
            toks = self.item_tokens()
            words = [x.text for x in toks]
            if w == "type":
                s.key_types, s.data_type = declared_types(" ".join(words[1:]))
                s.is_map = s.is_map or s.data_type is not None
            elif w == "typeof":
                self.typeof(s, toks[1:])
            elif w == "flags":
                s.flags = tuple(x for x in words[1:] if x != ",")
            elif w == "timeout":
                s.timeout = words[1] if len(words) > 1 else None
            elif w == "comment":
                s.comment = words[1] if len(words) > 1 else None
            elif w in ("size", "gc-interval", "policy", "auto-merge", "counter", "quota", "limit"):
                pass
            else:
                self.warn(f"set {name}: unknown attribute {shorten(repr(' '.join(words)), 80)} ignored", tok.line)

    def typeof(self, s: NSet, toks: list[Tok]) -> None:
        colon = next((k for k, x in enumerate(toks) if x.kind == ":"), None)
        key_t = toks if colon is None else toks[:colon]
        try:
            p = StmtParser(key_t)
            e = p.expr()
            kt = expr_type(e)
            s.key_types = kt if isinstance(kt, tuple) else (kt,)
            if colon is not None:
                rest = toks[colon + 1:]
                if rest and rest[0].text == "verdict":
                    s.data_type = "verdict"
                else:
                    dt = expr_type(StmtParser(rest).expr())
                    s.data_type = " . ".join(dt) if isinstance(dt, tuple) else dt
                s.is_map = True
        except (ParseFail, ValueError):
            self.warn(f"set {s.name}: typeof {tokens_text(toks)!r} not understood", toks[0].line if toks else None)

    def elements_into(self, s: NSet, line: int | None) -> None:
        self._fill_group(self.i)
        p = StmtParser(self.toks)
        p.i = self.i
        if p.kind() != "{":
            raise self.error(f"set {s.name}: `elements =` without braces", line)
        p.i += 1
        try:
            els = parse_elements(p)
        except (ParseFail, ValueError) as e:
            raise self.error(f"set {s.name}: elements not understood ({e})", line) from None
        self.i = p.i
        s.elements.extend(els)

    # -- command syntax (nft -f input)
    def command(self) -> None:
        verb_tok = self.toks[self.i]
        verb = verb_tok.text
        obj = self.toks[self.i + 1].text
        line = verb_tok.line
        self.i += 2
        if verb in ("list", "reset", "rename", "monitor", "describe", "export", "import") or obj in (
                "flowtable", "counter", "quota", "limit", "ct", "secmark", "synproxy"):
            if verb not in ("list",):
                self.warn(f"`{verb} {obj}` is not modelled; ignored", line)
            self.skip_line()
            return
        if obj == "ruleset":
            if verb == "flush":
                self.rs.tables.clear()
            self.skip_line()
            return
        family, tname = self.family_and_name()
        if obj == "table":
            if verb in ("delete", "destroy"):
                self.rs.tables.pop(f"{family} {tname}", None)
                self.skip_line()
                return
            t = self.table(family, tname, line)
            if verb == "flush":
                for c in t.chains.values():
                    c.rules.clear()
                for s in t.sets.values():
                    s.elements.clear()
            if self.kind() == "{":
                self.i += 1
                self.table_body(t)
            self.skip_line()
            return
        t = self.table(family, tname, line)
        name = self.take_word("a name")
        if obj == "chain":
            if verb in ("delete", "destroy"):
                t.chains.pop(name, None)
            elif verb == "flush":
                if name in t.chains:
                    t.chains[name].rules.clear()
            else:
                c = self.chain(t, name, line)
                if self.kind() == "{":
                    self.i += 1
                    self.chain_body(t, c)
            self.skip_line()
            return
        if obj in ("set", "map"):
            if verb in ("delete", "destroy"):
                t.sets.pop(name, None)
            elif verb == "flush":
                if name in t.sets:
                    t.sets[name].elements.clear()
            elif self.kind() == "{":
                self.i += 1
                self.set_body(t, name, obj == "map", line)
            else:
                t.sets.setdefault(name, NSet(t.key, name, is_map=obj == "map", line=line))
            self.skip_line()
            return
        if obj == "element":
            es = t.sets.get(name)
            if es is None:
                self.warn(f"elements for set {name}, which is not declared before", line)
                es = NSet(t.key, name, line=line)
                t.sets[name] = es
            if verb in ("delete", "destroy"):
                tmp = NSet(t.key, name)
                self.elements_into(tmp, line)
                gone = {_elem_key(e) for e in tmp.elements}
                es.elements = [e for e in es.elements if _elem_key(e) not in gone]
            else:
                self.elements_into(es, line)
            self.skip_line()
            return
        if obj == "rule":
            rc = t.chains.get(name)
            if rc is None:
                self.warn(f"rule for chain {name} of table {t.key}, which is not declared before", line)
                rc = self.chain(t, name, line)
            c = rc
            at: int | None = None
            if self.pw() in ("handle", "position", "index") and (self.pw(1) or "").isdigit():
                kw, num = self.pw(), int(self.pw(1) or "0")
                self.i += 2
                if verb in ("delete", "destroy"):
                    c.rules = [r for r in c.rules if r.handle != num]
                    self.skip_line()
                    return
                if kw == "index":
                    at = num + (1 if verb != "insert" else 0)
                else:
                    pos = next((k for k, r in enumerate(c.rules) if r.handle == num), None)
                    if pos is not None:
                        at = pos + (0 if verb == "insert" else 1)
                    if verb == "replace" and pos is not None:
                        del c.rules[pos]
                        at = pos
            elif verb == "insert":
                at = 0
            toks = self.item_tokens()
            self.add_rule(t, c, toks, at)
            return
        self.skip_line()

    # -- fragments
    def orphan_block(self) -> None:
        tok = self.toks[self.i]
        name = self.pw(1) or "?"
        t = self._guess_table(name)
        self.i += 3
        if tok.text == "chain":
            self.chain_body(t, self.chain(t, name, tok.line))
        else:
            self.set_body(t, name, tok.text == "map", tok.line)

    def _guess_table(self, name: str) -> Table:
        if name in KUBE_PROXY_CHAINS or name.startswith(("service-", "endpoint-", "external-", "firewall-")):
            key = ("ip", "kube-proxy")
        else:
            key = ("ip", "(no table)")
        if f"{key[0]} {key[1]}" not in self.rs.tables:
            self.warn(f"chains pasted without their `table` line; assumed table {key[0]} {key[1]}", None, "fragment")
        return self.table(key[0], key[1], None, guessed=True)

    def orphan_rule(self) -> None:
        tok = self.toks[self.i]
        toks = self.item_tokens()
        if not toks:
            self.i += 1
            return
        stmts, comment, problems = parse_rule_tokens(toks)
        tk = self.orphan_table.get(tok.line, "?")
        self.rs.orphans.append(Rule(tk, "(no chain)", len(self.rs.orphans) + 1, stmts, tokens_text(toks), tok.line,
                                    comment, self.handles.get(tok.line), problems))

    def finish(self) -> None:
        for key in self.ipt_tables:
            if key in self.rs.tables:
                self.rs.tables[key].iptables_nft = True
        for tkey, name in self.dynsets:
            s = self.rs.tables[tkey].sets.get(name) if tkey in self.rs.tables else None
            if s is not None:
                s.dynamic = True
        finish_ruleset(self.rs)


def _split_lines(text: str, chunk: int = 1 << 20) -> Iterator[str]:
    """`text.splitlines()`, a chunk at a time (each chunk ends just after a newline, so no line break is cut)."""
    start = 0
    while start < len(text):
        end = text.find("\n", start + chunk)
        end = len(text) if end < 0 else end + 1
        yield from text[start:end].splitlines()
        start = end


class _LineReader:
    """A rule kept as its line: the line is tokenized again (as the loader did) when it is read."""

    @staticmethod
    def tokens(raw: str, line: int | None) -> list[Tok]:
        toks: list[Tok] = []
        tokenize_line(raw, line or 0, toks)
        return toks

    def text(self, raw: str, line: int | None) -> str:
        return tokens_text(self.tokens(raw, line))

    def parse(self, raw: str, line: int | None) -> Parsed:
        return parse_rule_tokens(self.tokens(raw, line))


_LINE_READER = _LineReader()


def _elem_key(e: Element) -> str:
    return repr(e.key)


def finish_ruleset(rs: NftRuleset) -> None:
    """Number the rules, mark the sets rules add to at run time, report what was not understood.

    A dump of up to EAGER_RULES rules is parsed now, so every statement it does not understand is reported
    at once; a bigger one is parsed as the walk goes (rules on the path are reported then)."""
    from svctrace.dataplane.nftables.ir import Dynset

    reported = 0
    eager = sum(len(c.rules) for t in rs.tables.values() for c in t.chains.values()) <= EAGER_RULES
    rs.lazy = not eager
    for t in rs.tables.values():
        for c in t.chains.values():
            for k, r in enumerate(c.rules, 1):
                r.index = k
                if not (eager or r.parsed):
                    continue
                for s in r.stmts:
                    if isinstance(s, Dynset) and s.set in t.sets:
                        t.sets[s.set].dynamic = True
                for p in r.problems:
                    reported += 1
                    if reported <= MAX_PROBLEM_WARNINGS:
                        rs.warnings.append(Warn(f"{t.key} {c.name} rule {k}: {p}", rs.source, r.line,
                                                "unknown-statement"))
    for r in rs.orphans:
        for p in r.problems:
            reported += 1
            if reported <= MAX_PROBLEM_WARNINGS:
                rs.warnings.append(Warn(f"rule outside any chain: {p}", rs.source, r.line, "unknown-statement"))
    if reported > MAX_PROBLEM_WARNINGS:
        rs.warnings.append(Warn(f"{reported - MAX_PROBLEM_WARNINGS} more statements not understood", rs.source, None,
                                "unknown-statement"))
    if rs.orphans:
        rs.warnings.append(Warn(f"{len(rs.orphans)} rule line(s) outside any chain (a filtered paste?): kept, but no "
                                "hook reaches them", rs.source, rs.orphans[0].line, "orphan-rules"))


def load_text(text: str, source: str = "<nft>") -> NftRuleset:
    return _Loader(text, source).load()
