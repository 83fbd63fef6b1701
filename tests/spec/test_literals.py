"""Safe parsing of MaskRCNN's string-encoded tuples and lists (never eval)."""

from __future__ import annotations

import pytest

from tltk.spec.literals import (
    LiteralError,
    parse_int_sequence,
    parse_literal,
    parse_number_sequence,
    parse_pair_list,
)


def test_tuples_lists_and_trailing_dot_floats() -> None:
    assert parse_literal("(832, 1344)") == (832, 1344)
    assert parse_literal("(10., 10., 5., 5.)") == (10.0, 10.0, 5.0, 5.0)
    assert parse_literal("[(1.0, 1.0), (1.4, 0.7)]") == [(1.0, 1.0), (1.4, 0.7)]
    assert parse_literal("[0,1]") == [0, 1]
    assert parse_literal(" [1e-3, -2.5E2, .5, +3] ") == [0.001, -250.0, 0.5, 3]
    assert parse_literal("(7,)") == (7,) and parse_literal("(7)") == 7
    assert parse_literal("[[1, 2], [3]],".rstrip(",")) == [[1, 2], [3]]
    assert parse_literal("[1, 2,]") == [1, 2]
    assert parse_literal("") is None and parse_literal("   ") is None


@pytest.mark.parametrize("text", [
    "__import__('os').system('echo pwned')",
    "eval('1')",
    "(1, 2) + (3,)",
    "[1, 2",
    "(1 2)",
    "'832'",
    "[1, [2, 3]]]",
    "lambda: 0",
    "9**9**9",
])
def test_malicious_or_malformed_input_is_rejected(text: str) -> None:
    with pytest.raises(LiteralError):
        parse_literal(text)


def test_number_sequences() -> None:
    assert parse_number_sequence("(10., 10., 5., 5.)", length=4) == [10.0, 10.0, 5.0, 5.0]
    assert parse_int_sequence("[60000, 80000, 100000]") == [60000, 80000, 100000]
    assert parse_int_sequence("[2.0, 3]") == [2, 3]
    assert parse_int_sequence("4") == [4]
    with pytest.raises(LiteralError, match="exactly 4"):
        parse_number_sequence("(1, 2, 3)", length=4)
    with pytest.raises(LiteralError, match="whole numbers"):
        parse_int_sequence("[0.5, 1]")
    with pytest.raises(LiteralError, match="flat list"):
        parse_number_sequence("[(1, 2)]")


def test_pair_lists() -> None:
    assert parse_pair_list("[(1.0, 1.0), (1.4, 0.7), (0.7, 1.4)]") == [(1.0, 1.0), (1.4, 0.7), (0.7, 1.4)]
    assert parse_pair_list("(2, 1)") == [(2.0, 1.0)]
    assert parse_pair_list("[[1, 2]]") == [(1.0, 2.0)]
    with pytest.raises(LiteralError, match="not a pair"):
        parse_pair_list("[(1.0, 1.0, 3.0)]")
