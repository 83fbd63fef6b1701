"""Safe parsing of the Python-literal strings that MaskRCNN specs use for tuples and lists.

TAO evaluates strings such as ``"(832, 1344)"`` or ``"[(1.0, 1.0), (1.4, 0.7)]"`` with
Python's ``eval``.  tltk reads them with this small parser instead: it understands numbers,
tuples and lists (nested, with optional trailing commas) and nothing else, so a string like
``"__import__('os').system('...')"`` is rejected as malformed, never executed.
"""

from __future__ import annotations

import re
from typing import Any

_TOKEN_RE = re.compile(
    r"""\s*(?:(?P<number>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)
           |(?P<punct>[()\[\],]))""",
    re.VERBOSE,
)

Literal = int | float | tuple[Any, ...] | list[Any]


class LiteralError(ValueError):
    """A literal string is malformed or has the wrong shape."""


def parse_literal(text: str) -> Literal | None:
    """Parse a number, tuple or list literal (nested), e.g. ``"[(1.0, 1.0), (1.4, 0.7)]"``.

    Args:
        text: the string; blank means "not set".

    Returns:
        ``int``/``float`` for numbers (``10.`` is a float), ``tuple`` for ``(...)`` and
        ``list`` for ``[...]``; None for a blank string.

    Raises:
        LiteralError: for anything else (names, calls, strings, operators, unbalanced
            brackets), with the character position of the problem.
    """
    if not text.strip():
        return None
    tokens: list[tuple[str, str, int]] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN_RE.match(text, pos)
        if not m:
            start = len(text[pos:]) - len(text[pos:].lstrip()) + pos
            snippet = text[start:start + 20]
            raise LiteralError(f"unexpected {snippet!r} at character {start + 1} of {text!r}: only numbers, "
                               "(tuples) and [lists] are allowed")
        kind = m.lastgroup or ""
        tokens.append((kind, m.group(kind), m.start(kind)))
        pos = m.end()
    value, index = _parse_value(tokens, 0, text)
    if index != len(tokens):
        raise LiteralError(f"unexpected {tokens[index][1]!r} at character {tokens[index][2] + 1} of {text!r}")
    return value


def _parse_value(tokens: list[tuple[str, str, int]], i: int, text: str) -> tuple[Literal, int]:
    if i >= len(tokens):
        raise LiteralError(f"{text!r} ends too early")
    kind, tok, at = tokens[i]
    if kind == "number":
        if re.fullmatch(r"[-+]?\d+", tok):
            return int(tok), i + 1
        return float(tok), i + 1
    if tok in "([":
        closer = ")" if tok == "(" else "]"
        items: list[Literal] = []
        i += 1
        saw_comma = False
        while True:
            if i >= len(tokens):
                raise LiteralError(f"{tok!r} at character {at + 1} of {text!r} is never closed")
            if tokens[i][1] == closer:
                i += 1
                break
            item, i = _parse_value(tokens, i, text)
            items.append(item)
            if i < len(tokens) and tokens[i][1] == ",":
                saw_comma = True
                i += 1
            elif i < len(tokens) and tokens[i][1] != closer:
                raise LiteralError(f"expected ',' or {closer!r} at character {tokens[i][2] + 1} of {text!r}")
        if tok == "(":
            if len(items) == 1 and not saw_comma:
                return items[0], i  # (x) is just x, as in Python
            return tuple(items), i
        return items, i
    raise LiteralError(f"unexpected {tok!r} at character {at + 1} of {text!r}")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _flat_numbers(text: str, length: int | None) -> list[int | float] | None:
    value = parse_literal(text)
    if value is None:
        return None
    if _is_number(value):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(_is_number(v) for v in value):
        raise LiteralError(f"{text!r} must be a flat list of numbers")
    if length is not None and len(value) != length:
        raise LiteralError(f"{text!r} must have exactly {length} numbers, it has {len(value)}")
    return list(value)


def parse_number_sequence(text: str, length: int | None = None) -> list[float] | None:
    """Parse a flat tuple or list of numbers, e.g. ``"(10., 10., 5., 5.)"``.

    Args:
        text: the string; blank means "not set".
        length: required number of items, or None for any.

    Returns:
        The numbers as floats, or None for a blank string.

    Raises:
        LiteralError: when malformed, nested or of the wrong length.
    """
    values = _flat_numbers(text, length)
    return None if values is None else [float(v) for v in values]


def parse_int_sequence(text: str, length: int | None = None) -> list[int] | None:
    """Parse a flat tuple or list of whole numbers, e.g. ``"[0, 1]"`` or ``"(832, 1344)"``.

    Args:
        text: the string; blank means "not set".
        length: required number of items, or None for any.

    Returns:
        The numbers as ints (``2.0`` is accepted as 2), or None for a blank string.

    Raises:
        LiteralError: when malformed, nested, of the wrong length, or not whole numbers.
    """
    values = _flat_numbers(text, length)
    if values is None:
        return None
    if not all(float(v).is_integer() for v in values):
        raise LiteralError(f"{text!r} must hold whole numbers")
    return [int(v) for v in values]


def parse_pair_list(text: str) -> list[tuple[float, float]] | None:
    """Parse a list of number pairs, e.g. ``"[(1.0, 1.0), (1.4, 0.7), (0.7, 1.4)]"``.

    Args:
        text: the string; blank means "not set".

    Returns:
        The pairs as float tuples, or None for a blank string.

    Raises:
        LiteralError: when malformed or when an item is not a pair of numbers.
    """
    value = parse_literal(text)
    if value is None:
        return None
    if isinstance(value, tuple) and len(value) == 2 and all(_is_number(v) for v in value):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise LiteralError(f"{text!r} must be a list of (x, y) pairs")
    pairs: list[tuple[float, float]] = []
    for item in value:
        if not isinstance(item, (list, tuple)) or len(item) != 2 or not all(_is_number(v) for v in item):
            raise LiteralError(f"{text!r} must be a list of (x, y) pairs; {item!r} is not a pair of numbers")
        pairs.append((float(item[0]), float(item[1])))
    return pairs
