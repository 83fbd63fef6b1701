"""tao-converter's -p / -d syntax and optimization profiles."""

from __future__ import annotations

import pytest

from tltk.errors import UsageError
from tltk.tensorrt.profiles import (
    InputProfile,
    batch_profile,
    check_profile_matches,
    format_shape,
    parse_dims,
    parse_profile,
    parse_profiles,
    parse_shape,
)


def test_parse_profile_tao_example():
    profile = parse_profile("input_1,1x3x544x960,8x3x544x960,16x3x544x960")
    assert profile == InputProfile("input_1", (1, 3, 544, 960), (8, 3, 544, 960), (16, 3, 544, 960))
    assert profile.max_batch == 16
    assert profile.spec() == "input_1,1x3x544x960,8x3x544x960,16x3x544x960"


def test_parse_profile_keeps_onnx_names_with_colons_and_spaces_around_fields():
    profile = parse_profile(" input_1:0 , 1x3x4x5 ,2x3x4x5, 2X3X4X5")
    assert profile.name == "input_1:0"
    assert profile.max == (2, 3, 4, 5)


@pytest.mark.parametrize("text,fragment", [
    ("input_1,1x3x544x960,8x3x544x960", "must be <input name>,<min shape>,<opt shape>,<max shape>"),
    (",1x3x4x4,1x3x4x4,1x3x4x4", "must be <input name>"),
    ("input_1,1x3xAx960,8x3x544x960,16x3x544x960", "'1x3xAx960' is not a shape"),
    ("input_1,0x3x544x960,8x3x544x960,16x3x544x960", "every dimension must be positive"),
    ("input_1,1x3x544,8x3x544x960,16x3x544x960", "same number of dims (3, 4, 4 given)"),
    ("input_1,1x3x544x960,32x3x544x960,16x3x544x960", "dimension 0 must satisfy min <= opt <= max (1, 32, 16 given)"),
    ("input_1,1x3x544x960,1x3x544x960,1x3x272x960", "dimension 2 must satisfy min <= opt <= max (544, 544, 272 given)"),
])
def test_malformed_profiles_name_the_flag(text, fragment):
    with pytest.raises(UsageError) as info:
        parse_profile(text)
    assert info.value.message.startswith("-p: ")
    assert fragment in info.value.message
    assert info.value.exit_code == 2


def test_one_profile_per_input():
    values = ["a,1x3,1x3,2x3", "b,1x1,1x1,1x1"]
    assert [p.name for p in parse_profiles(values)] == ["a", "b"]
    with pytest.raises(UsageError, match="^-p: input 'a' is given more than once"):
        parse_profiles(values + ["a,1x3,1x3,1x3"])


def test_parse_dims_per_input_order():
    assert parse_dims("3,544,960") == (3, 544, 960)
    assert parse_dims("544, 960, 3", "nhwc") == (544, 960, 3)
    assert parse_dims("128", "NC") == (128,)
    for text, order, fragment in [("3,544", "nchw", "has 2 dims; -i nchw expects 3 (C,H,W)"),
                                  ("3,544,960", "nc", "expects 1 (C)"),
                                  ("3;544;960", "nchw", "must be positive integers separated by commas"),
                                  ("3,0,960", "nchw", "every dimension must be positive")]:
        with pytest.raises(UsageError) as info:
            parse_dims(text, order)
        assert info.value.message.startswith("-d: ") and fragment in info.value.message
    with pytest.raises(UsageError, match="^-i: unknown input order 'chw'"):
        parse_dims("3,4,5", "chw")


def test_shapes_round_trip():
    assert parse_shape("16x3x544x960") == (16, 3, 544, 960)
    assert format_shape((16, 3, 544, 960)) == "16x3x544x960"


def test_batch_profile_tunes_for_the_max_batch_by_default():
    profile = batch_profile("input_1", (3, 544, 960), max_batch=16)
    assert (profile.min, profile.opt, profile.max) == ((1, 3, 544, 960), (16, 3, 544, 960), (16, 3, 544, 960))
    assert batch_profile("x", (3,), 8, opt_batch=2).opt == (2, 3)
    with pytest.raises(UsageError, match="min <= opt <= max"):
        batch_profile("x", (3,), 4, opt_batch=8)
    with pytest.raises(UsageError, match="must be positive"):
        batch_profile("x", (3,), 0)


def test_check_profile_matches_fixed_dims():
    profile = parse_profile("input_1,1x3x544x960,8x3x544x960,16x3x544x960")
    check_profile_matches(profile, (None, 3, 544, 960))
    check_profile_matches(profile, (-1, 3, 544, 960))
    with pytest.raises(UsageError, match="has 3 dims in the model"):
        check_profile_matches(profile, (None, 544, 960))
    with pytest.raises(UsageError, match=r"dimension 1 is fixed to 1 in the model \(\?x1x544x960\)"):
        check_profile_matches(profile, (None, 1, 544, 960))
