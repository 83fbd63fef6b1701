"""A tolerant reader for protobuf text format that reports every problem at once.

``google.protobuf.text_format`` stops at the first error.  This module reads the text into
a small syntax tree (every field with its line and column), then walks that tree against
the message descriptor and records *all* unknown fields (with did-you-mean suggestions),
type errors, unknown enum values, oneof conflicts and duplicates.  Only a text that passes
this walk is handed to ``text_format.Merge`` (the reference implementation, as TAO uses) to
build the message.

Accepted dialect (everything TAO's parser accepts and real specs use): ``field {``,
``field: {``, ``field <...>``, one-line messages, ``;``/``,`` separators, ``#`` comments,
``"..."`` and ``'...'`` strings (adjacent strings concatenate), list syntax ``[a, b]`` for
repeated fields, ``True``/``False``/``true``/``false``/``t``/``f``/``0``/``1`` booleans,
integers in decimal/hex/octal, floats with exponents, trailing dots and ``f`` suffixes,
``inf``/``nan``, tabs, CRLF line ends, a UTF-8 byte-order mark.
"""

from __future__ import annotations

import bisect
import difflib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from tltk.spec.fieldpath import is_map, join, key_text
from tltk.spec.problems import ERROR, WARNING, Problem

# ---- pre-scan ---------------------------------------------------------------------------

TYPOGRAPHIC_QUOTES = {"\u201c": '"', "\u201d": '"', "\u201e": '"', "\u2018": "'", "\u2019": "'"}
_MAX_TAB_WARNINGS = 3


def prescan(text: str) -> tuple[str, list[Problem]]:
    """Normalise line ends and typographic quotes; warn about tabs and curly quotes.

    Typographic quotes outside string literals (a spec pasted from a web page or a word
    processor) are replaced by straight ones so the file still parses, and the replacement
    is reported as a warning.  Curly quotes inside a straight-quoted string are data: they
    are kept, and reported in case they were meant to end the string.

    Args:
        text: the spec text as read from disk.

    Returns:
        The normalised text (same line/column layout) and the warnings.
    """
    problems: list[Problem] = []
    if text.startswith("\ufeff"):
        text = text[1:]
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    out: list[str] = []
    line, col = 1, 1
    quote: str | None = None  # the straight quote that closes the open string
    curly_open = False  # the open string was opened by a typographic quote
    in_comment = False
    tab_lines: list[tuple[int, int]] = []
    escaped = False
    for ch in text:
        if ch == "\n":
            in_comment, quote, curly_open, escaped = False, None, False, False
            out.append(ch)
            line, col = line + 1, 1
            continue
        if ch == "\t" and (not tab_lines or tab_lines[-1][0] != line):
            tab_lines.append((line, col))
        if in_comment:
            out.append(ch)
        elif quote is not None:
            if escaped:
                escaped = False
                out.append(ch)
            elif ch == "\\":
                escaped = True
                out.append(ch)
            elif ch == quote:
                quote = None
                out.append(ch)
            elif ch in TYPOGRAPHIC_QUOTES and curly_open and TYPOGRAPHIC_QUOTES[ch] == quote:
                problems.append(_curly_warning(ch, line, col))
                out.append(quote)
                quote, curly_open = None, False
            else:
                if ch in TYPOGRAPHIC_QUOTES:
                    problems.append(Problem(WARNING, f"typographic quote {ch!r} (U+{ord(ch):04X}) inside a "
                                            "string; if it was meant to end the string, use a straight quote",
                                            None, line, col))
                out.append(ch)
        elif ch == "#":
            in_comment = True
            out.append(ch)
        elif ch in ('"', "'"):
            quote = ch
            out.append(ch)
        elif ch in TYPOGRAPHIC_QUOTES:
            problems.append(_curly_warning(ch, line, col))
            quote, curly_open = TYPOGRAPHIC_QUOTES[ch], True
            out.append(quote)
        else:
            out.append(ch)
        col += 1
    for n, (tline, tcol) in enumerate(tab_lines):
        if n == _MAX_TAB_WARNINGS:
            rest = len(tab_lines) - n
            problems.append(Problem(WARNING, f"tab characters on {rest} more line(s); tabs are accepted, "
                                    "but spaces keep columns in messages aligned", None, tline, tcol))
            break
        problems.append(Problem(WARNING, "tab character (accepted; prefer spaces for indentation)",
                                None, tline, tcol))
    return "".join(out), problems


def _curly_warning(ch: str, line: int, col: int) -> Problem:
    straight = TYPOGRAPHIC_QUOTES[ch]
    return Problem(WARNING, f"typographic quote {ch!r} (U+{ord(ch):04X}) read as {straight}; "
                   f"write straight quotes ({straight}) in spec files", None, line, col)


# ---- tokenizer --------------------------------------------------------------------------

_TOKEN_RE = re.compile(
    r"""(?P<ws>\s+)
      | (?P<comment>\#[^\n]*)
      | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
      | (?P<badstring>["'][^\n]*)
      | (?P<number>-?(?:0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?[fF]?)(?![A-Za-z0-9_]))
      | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
      | (?P<punct>[{}<>:\[\],;\-/.])
    """,
    re.VERBOSE,
)


@dataclass
class Token:
    """One lexical token with its 1-based position."""

    kind: str  # "string", "number", "ident", "punct", "eof"
    text: str
    line: int
    col: int


class _Tokens:
    def __init__(self, text: str) -> None:
        self.text = text
        self.line_starts = [0] + [m.end() for m in re.finditer("\n", text)]
        self.tokens: list[Token] = []
        self.error: Problem | None = None
        pos = 0
        while pos < len(text):
            m = _TOKEN_RE.match(text, pos)
            line, col = self.position(pos)
            if m is None:
                ch = text[pos]
                self.error = Problem(ERROR, f"unexpected character {ch!r} (U+{ord(ch):04X})", None, line, col)
                break
            kind = m.lastgroup or ""
            if kind == "badstring":
                self.error = Problem(ERROR, "string is not closed on this line", None, line, col)
                break
            if kind not in ("ws", "comment"):
                self.tokens.append(Token(kind, m.group(), line, col))
            pos = m.end()
        line, col = self.position(len(text))
        self.tokens.append(Token("eof", "", line, col))
        self.i = 0

    def position(self, offset: int) -> tuple[int, int]:
        idx = bisect.bisect_right(self.line_starts, offset) - 1
        return idx + 1, offset - self.line_starts[idx] + 1

    def peek(self) -> Token:
        return self.tokens[self.i]

    def next(self) -> Token:
        tok = self.tokens[self.i]
        if tok.kind != "eof":
            self.i += 1
        return tok

    def accept(self, *texts: str) -> Token | None:
        tok = self.peek()
        if tok.kind == "punct" and tok.text in texts:
            return self.next()
        return None


# ---- syntax tree -------------------------------------------------------------------------

@dataclass
class Scalar:
    """A scalar value.

    Attributes:
        kind: ``"string"``, ``"number"`` or ``"ident"`` (``-inf`` is an ident).
        text: the value as written (adjacent strings joined by a space).
        tokens: the tokens it was read from.
        line: line of the first token.
        col: column of the first token.
    """

    kind: str
    text: str
    tokens: list[Token]
    line: int
    col: int


@dataclass
class Block:
    """A message value ``{ ... }`` with its fields."""

    fields: list[Node]
    line: int
    col: int


@dataclass
class Node:
    """One ``name: value`` (or ``name { ... }``) occurrence in the text.

    Attributes:
        name: the field name as written.
        line: line of the name.
        col: column of the name.
        colon: whether a ``:`` followed the name.
        items: the values (one, or several with list syntax).
        list_syntax: whether the values were written as ``[a, b]``.
    """

    name: str
    line: int
    col: int
    colon: bool
    items: list[Scalar | Block] = field(default_factory=list)
    list_syntax: bool = False


class _SyntaxError(Exception):
    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.message)
        self.problem = problem


def parse_tree(text: str) -> tuple[list[Node], list[Problem]]:
    """Read protobuf text into a syntax tree.

    Args:
        text: normalised spec text (see :func:`prescan`).

    Returns:
        The top-level nodes (everything read before a syntax error, if any) and the syntax
        problems (at most one: reading stops at the first syntax error).
    """
    toks = _Tokens(text)
    nodes: list[Node] = []
    problems: list[Problem] = []
    try:
        _parse_fields(toks, nodes, None)
    except _SyntaxError as exc:
        problems.append(exc.problem)
    if toks.error is not None and not problems:
        problems.append(toks.error)
    return nodes, problems


def _describe(tok: Token) -> str:
    if tok.kind == "eof":
        return "the end of the file"
    return repr(tok.text)


def _fail(tok: Token, message: str) -> _SyntaxError:
    return _SyntaxError(Problem(ERROR, message, None, tok.line, tok.col))


def _parse_fields(toks: _Tokens, out: list[Node], closer: Token | None) -> None:
    close_text = {"{": "}", "<": ">"}.get(closer.text) if closer else None
    while True:
        tok = toks.peek()
        if close_text and tok.kind == "punct" and tok.text == close_text:
            toks.next()
            return
        if tok.kind == "eof":
            if toks.error is not None:
                raise _SyntaxError(toks.error)
            if closer is not None:
                raise _fail(tok, f"missing {close_text!r} to close the block opened at line "
                                 f"{closer.line}, column {closer.col}")
            return
        if tok.kind != "ident":
            if tok.kind == "punct" and tok.text in "}>":
                raise _fail(tok, f"unexpected {tok.text!r}: no block is open here")
            if tok.kind == "punct" and tok.text == "[":
                raise _fail(tok, "extension and Any fields ([type.name]) are not used by tltk specs")
            raise _fail(tok, f"expected a field name, found {_describe(tok)}")
        toks.next()
        node = Node(tok.text, tok.line, tok.col, colon=toks.accept(":") is not None)
        out.append(node)
        nxt = toks.peek()
        if nxt.kind == "punct" and nxt.text == "[":
            opening = toks.next()
            node.list_syntax = True
            if not toks.accept("]"):
                while True:
                    node.items.append(_parse_value(toks, node))
                    if toks.accept("]"):
                        break
                    if not toks.accept(","):
                        raise _fail(toks.peek(), f"expected ',' or ']' in the list opened at line "
                                                 f"{opening.line}, column {opening.col}, found "
                                                 f"{_describe(toks.peek())}")
        else:
            node.items.append(_parse_value(toks, node))
        toks.accept(";", ",")


def _parse_value(toks: _Tokens, node: Node) -> Scalar | Block:
    tok = toks.peek()
    if tok.kind == "punct" and tok.text in "{<":
        toks.next()
        block = Block([], tok.line, tok.col)
        _parse_fields(toks, block.fields, tok)
        return block
    if tok.kind == "string":
        parts = [toks.next()]
        while toks.peek().kind == "string":
            parts.append(toks.next())
        return Scalar("string", " ".join(p.text for p in parts), parts, tok.line, tok.col)
    if tok.kind in ("number", "ident"):
        toks.next()
        return Scalar(tok.kind, tok.text, [tok], tok.line, tok.col)
    if tok.kind == "punct" and tok.text == "-":
        toks.next()
        nxt = toks.peek()
        if nxt.kind == "ident":
            toks.next()
            return Scalar("ident", "-" + nxt.text, [tok, nxt], tok.line, tok.col)
        raise _fail(nxt, f"expected a number after '-', found {_describe(nxt)}")
    if not node.colon:
        raise _fail(tok, f"expected ':' or '{{' after field name {node.name!r}, found {_describe(tok)}")
    raise _fail(tok, f"expected a value for {node.name!r}, found {_describe(tok)}")


# ---- schema walk --------------------------------------------------------------------------

_INT_TYPES = {
    FieldDescriptor.TYPE_INT32: (-(2 ** 31), 2 ** 31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2 ** 31), 2 ** 31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2 ** 31), 2 ** 31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2 ** 63), 2 ** 63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2 ** 63), 2 ** 63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2 ** 63), 2 ** 63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2 ** 32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2 ** 32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2 ** 64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2 ** 64 - 1),
}
_FLOAT_TYPES = (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE)
_BOOL_WORDS = {"true", "false", "True", "False", "t", "f"}
_FLOAT_WORDS = {"inf", "infinity", "nan", "inff", "infinityf", "nanf"}


def type_name(fd: FieldDescriptor) -> str:
    """A readable name of a field's type (``uint32``, ``float``, ``enum AP_MODE``...)."""
    if is_map(fd):
        key, value = fd.message_type.fields_by_name["key"], fd.message_type.fields_by_name["value"]
        return f"map<{type_name(key)}, {type_name(value)}>"
    names = {
        FieldDescriptor.TYPE_DOUBLE: "double", FieldDescriptor.TYPE_FLOAT: "float",
        FieldDescriptor.TYPE_INT64: "int64", FieldDescriptor.TYPE_UINT64: "uint64",
        FieldDescriptor.TYPE_INT32: "int32", FieldDescriptor.TYPE_UINT32: "uint32",
        FieldDescriptor.TYPE_BOOL: "bool", FieldDescriptor.TYPE_STRING: "string",
        FieldDescriptor.TYPE_BYTES: "bytes",
    }
    if fd.type == FieldDescriptor.TYPE_ENUM:
        base = f"enum {fd.enum_type.name}"
    elif fd.type in (FieldDescriptor.TYPE_MESSAGE, FieldDescriptor.TYPE_GROUP):
        base = fd.message_type.name
    else:
        base = names.get(fd.type, "scalar")
    return f"repeated {base}" if fd.label == FieldDescriptor.LABEL_REPEATED else base


def _parse_int(text: str) -> int | None:
    try:
        t = text.lower()
        neg = t.startswith("-")
        body = t[1:] if neg else t
        if body.startswith("0x"):
            v = int(body, 16)
        elif len(body) > 1 and body.startswith("0") and body.isdigit():
            v = int(body, 8)
        elif body.isdigit():
            v = int(body)
        else:
            return None
        return -v if neg else v
    except ValueError:
        return None


def check_scalar(fd: FieldDescriptor, value: Scalar) -> str | None:
    """Why ``value`` cannot be assigned to the scalar field ``fd`` (None when it can)."""
    kind, text = value.kind, value.text
    if fd.type in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES):
        if kind != "string":
            return f"expects a quoted string, got {text}; write {fd.name}: \"{text}\""
        return None
    if fd.type == FieldDescriptor.TYPE_BOOL:
        if kind == "ident" and text in _BOOL_WORDS:
            return None
        if kind == "number" and text in ("0", "1"):
            return None
        return f"expects true or false, got {text}"
    if fd.type in _INT_TYPES:
        if kind != "number":
            return f"expects an integer ({type_name(fd)}), got {text}"
        parsed = _parse_int(text)
        if parsed is None:
            return f"expects an integer ({type_name(fd)}), got {text}"
        lo, hi = _INT_TYPES[fd.type]
        if not lo <= parsed <= hi:
            if lo == 0 and parsed < 0:
                return f"expects a non-negative integer ({type_name(fd)}), got {text}"
            return f"{text} is out of range for {type_name(fd)}"
        return None
    if fd.type in _FLOAT_TYPES:
        if kind == "number":
            return None
        if kind == "ident" and text.lstrip("-").lower() in _FLOAT_WORDS:
            return None
        return f"expects a number ({type_name(fd)}), got {text}"
    if fd.type == FieldDescriptor.TYPE_ENUM:
        names = [v.name for v in fd.enum_type.values]
        if kind == "ident" and text in fd.enum_type.values_by_name:
            return None
        if kind == "number":
            parsed = _parse_int(text)
            if parsed is not None and parsed in fd.enum_type.values_by_number:
                return None
        shown = text.strip("\"'") if kind == "string" else text
        hint = ""
        close = difflib.get_close_matches(shown, names, n=1, cutoff=0.5) or [
            n for n in names if n.lower() == shown.lower()]
        if kind == "string" and shown in names:
            return f"enum values are written without quotes: {fd.name}: {shown}"
        if close:
            hint = f"; did you mean {close[0]}?"
        return f"unknown value {text} for enum {fd.enum_type.name} (one of {', '.join(names)}){hint}"
    return None


@dataclass
class WalkResult:
    """What the schema walk found.

    Attributes:
        problems: errors and warnings, each with line/column.
        positions: concrete field path -> (line, col) where the text sets it.
        unknown: (path of the enclosing message, unknown field name) pairs.
    """

    problems: list[Problem] = field(default_factory=list)
    positions: dict[str, tuple[int, int]] = field(default_factory=dict)
    unknown: list[tuple[str, str]] = field(default_factory=list)


def schema_field_index(root: Descriptor) -> dict[str, list[str]]:
    """Field name -> the paths (``[*]`` for elements) where the schema rooted at ``root`` has it."""
    index: dict[str, list[str]] = {}
    stack: list[tuple[Descriptor, str, int]] = [(root, "", 0)]
    seen: set[tuple[str, str]] = set()
    while stack:
        desc, prefix, depth = stack.pop()
        if depth > 12:
            continue
        for fd in desc.fields:
            path = join(prefix, fd.name)
            index.setdefault(fd.name, []).append(path)
            sub: Descriptor | None = None
            if is_map(fd):
                value = fd.message_type.fields_by_name["value"]
                if value.message_type is not None:
                    sub, path = value.message_type, path + "[*]"
            elif fd.message_type is not None:
                sub = fd.message_type
                if fd.label == FieldDescriptor.LABEL_REPEATED:
                    path += "[*]"
            if sub is not None and (sub.full_name, path) not in seen:
                seen.add((sub.full_name, path))
                stack.append((sub, path, depth + 1))
    return index


def suggest_field(name: str, desc: Descriptor, root: Descriptor, prefix: str) -> str:
    """A did-you-mean sentence for an unknown field ``name`` inside ``desc``.

    Args:
        name: the unknown name.
        desc: descriptor of the message where it was written.
        root: descriptor of the whole spec (to find the field elsewhere).
        prefix: path of ``desc`` in the spec.

    Returns:
        ``"; did you mean 'learning_rate'?"``, ``"; it belongs in inferencer_config
        (inferencer_config.stride)"``, or ``""``.
    """
    names = [f.name for f in desc.fields]
    close = difflib.get_close_matches(name, names, n=2, cutoff=0.6)
    if not close:
        close = [n for n in names if n.lower() == name.lower()]
    if close:
        return "; did you mean " + " or ".join(repr(c) for c in close) + "?"
    index = schema_field_index(root)
    if name in index:
        where = index[name][:2]
        return "; this field belongs elsewhere: " + " or ".join(where)
    all_names = sorted(index)
    close = [n for n in all_names if len(name) >= 5 and (n.endswith("_" + name) or n.startswith(name + "_"))][:1]
    close += [n for n in difflib.get_close_matches(name, all_names, n=2, cutoff=0.7) if n not in close]
    close = close[:2]
    if close:
        return "; did you mean " + " or ".join(index[c][0] for c in close) + "?"
    return ""


def walk(nodes: Iterable[Node], desc: Descriptor, root: Descriptor | None = None, prefix: str = "",
         result: WalkResult | None = None) -> WalkResult:
    """Check a syntax tree against a message descriptor.

    Args:
        nodes: fields of one message, from :func:`parse_tree`.
        desc: the descriptor they should belong to.
        root: descriptor of the whole spec (defaults to ``desc``).
        prefix: path of the message (``""`` at the top).
        result: accumulator (created when None).

    Returns:
        The accumulated :class:`WalkResult`.
    """
    root = root or desc
    res = result or WalkResult()
    counts: dict[str, int] = {}
    first_seen: dict[str, Node] = {}
    oneof_seen: dict[str, Node] = {}
    map_keys: dict[str, dict[str, int]] = {}
    for node in nodes:
        fd = desc.fields_by_name.get(node.name)
        if fd is None:
            res.unknown.append((prefix, node.name))
            res.problems.append(Problem(
                ERROR, f"unknown field {node.name!r} in {desc.name}{suggest_field(node.name, desc, root, prefix)}",
                prefix or None, node.line, node.col))
            continue
        path = join(prefix, node.name)
        if fd.containing_oneof is not None:
            other = oneof_seen.get(fd.containing_oneof.name)
            if other is not None and other.name != node.name:
                res.problems.append(Problem(
                    ERROR, f"{node.name!r} and {other.name!r} (line {other.line}) are alternatives "
                           f"(oneof {fd.containing_oneof.name}); keep only one", path, node.line, node.col))
            oneof_seen[fd.containing_oneof.name] = node
        if is_map(fd):
            _walk_map(node, fd, root, path, res, map_keys.setdefault(node.name, {}))
            continue
        repeated = fd.label == FieldDescriptor.LABEL_REPEATED
        if node.list_syntax and not repeated:
            res.problems.append(Problem(ERROR, f"list syntax [..] is only for repeated fields; "
                                               f"{node.name} is a single {type_name(fd)}", path, node.line, node.col))
            continue
        if not repeated:
            if node.name in first_seen:
                earlier = first_seen[node.name]
                what = ("its blocks are merged" if fd.message_type is not None
                        else "the last value is used")
                res.problems.append(Problem(WARNING, f"set more than once (first at line {earlier.line}); "
                                                     f"{what}, as in TAO", path, node.line, node.col))
            else:
                first_seen[node.name] = node
        for item in node.items:
            if repeated:
                index = counts.get(node.name, 0)
                counts[node.name] = index + 1
                item_path = f"{path}[{index}]"
            else:
                item_path = path
            res.positions.setdefault(item_path, (item.line if node.list_syntax else node.line,
                                                 item.col if node.list_syntax else node.col))
            if fd.message_type is not None:
                if not isinstance(item, Block):
                    res.problems.append(Problem(ERROR, f"is a {fd.message_type.name} block; write "
                                                       f"{node.name} {{ ... }}, not a value", item_path,
                                                item.line, item.col))
                    continue
                walk(item.fields, fd.message_type, root, item_path, res)
            else:
                if isinstance(item, Block):
                    res.problems.append(Problem(ERROR, f"is a {type_name(fd)}, not a block", item_path,
                                                item.line, item.col))
                    continue
                if not node.colon and not node.list_syntax:
                    res.problems.append(Problem(ERROR, f"missing ':' after {node.name}", item_path,
                                                node.line, node.col))
                    continue
                why = check_scalar(fd, item)
                if why:
                    res.problems.append(Problem(ERROR, why, item_path, item.line, item.col))
    return res


def _walk_map(node: Node, fd: FieldDescriptor, root: Descriptor, path: str, res: WalkResult,
              seen: dict[str, int]) -> None:
    entry = fd.message_type
    key_fd, value_fd = entry.fields_by_name["key"], entry.fields_by_name["value"]
    for item in node.items:
        if not isinstance(item, Block):
            res.problems.append(Problem(ERROR, f"is a map; write {node.name} {{ key: \"...\" value: ... }}",
                                        path, item.line, item.col))
            continue
        key_node = value_node = None
        for sub in item.fields:
            if sub.name == "key":
                key_node = sub
            elif sub.name == "value":
                value_node = sub
            else:
                res.problems.append(Problem(ERROR, f"unknown field {sub.name!r} in a map entry (only key and "
                                                   f"value){suggest_field(sub.name, entry, root, path)}",
                                            path, sub.line, sub.col))
        if key_node is None or not key_node.items or not isinstance(key_node.items[0], Scalar):
            res.problems.append(Problem(ERROR, "map entry without a key", path, item.line, item.col))
            continue
        key_item = key_node.items[0]
        why = check_scalar(key_fd, key_item)
        if why:
            res.problems.append(Problem(ERROR, f"key {why}", path, key_item.line, key_item.col))
            continue
        key = _string_value(key_item) if key_item.kind == "string" else key_item.text
        entry_path = path + key_text(key)
        if key in seen:
            res.problems.append(Problem(WARNING, f"key {key!r} appears again (first at line {seen[key]}); "
                                                 "the last entry is used", entry_path, key_node.line,
                                        key_node.col))
        seen[key] = key_node.line
        res.positions[entry_path] = (item.line, item.col)
        if value_node is None:
            continue
        res.positions[entry_path + ".value"] = (value_node.line, value_node.col)
        for value_item in value_node.items[:1]:
            if value_fd.message_type is not None:
                if not isinstance(value_item, Block):
                    res.problems.append(Problem(ERROR, f"value is a {value_fd.message_type.name} block; write "
                                                       "value { ... }", entry_path, value_item.line,
                                                value_item.col))
                    continue
                walk(value_item.fields, value_fd.message_type, root, entry_path, res)
            else:
                if isinstance(value_item, Block):
                    res.problems.append(Problem(ERROR, f"value is a {type_name(value_fd)}, not a block",
                                                entry_path, value_item.line, value_item.col))
                    continue
                why = check_scalar(value_fd, value_item)
                if why:
                    res.problems.append(Problem(ERROR, f"value {why}", entry_path, value_item.line,
                                                value_item.col))


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "'": "'", '"': '"', "a": "\a", "b": "\b",
            "f": "\f", "v": "\v", "?": "?"}


def _string_value(value: Scalar) -> str:
    out = []
    for tok in value.tokens:
        body = tok.text[1:-1]
        out.append(re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(0)), body))
    return "".join(out)


def top_level_names(nodes: Iterable[Node]) -> list[str]:
    """Names of the top-level fields, in order of first appearance."""
    seen: list[str] = []
    for node in nodes:
        if node.name not in seen:
            seen.append(node.name)
    return seen


def all_names(nodes: Iterable[Node]) -> set[str]:
    """Every field name used anywhere in the tree (map ``key``/``value`` included)."""
    names: set[str] = set()
    stack = list(nodes)
    while stack:
        node = stack.pop()
        names.add(node.name)
        for item in node.items:
            if isinstance(item, Block):
                stack.extend(item.fields)
    return names
