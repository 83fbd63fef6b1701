"""Optimization profiles and input dimensions in tao-converter's syntax.

* ``-d 3,544,960``: the input dimensions without the batch, in the input's own order (C,H,W for
  ``-i nchw``, H,W,C for ``-i nhwc``, C for ``-i nc``).
* ``-p input_1,1x3x544x960,8x3x544x960,16x3x544x960``: one optimization profile entry, the input
  name then its min, opt and max shapes, batch included; repeat ``-p`` once per input.

Every parse error is a :class:`~tltk.errors.UsageError` (exit code 2) naming the flag.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from tltk.errors import UsageError

#: Rank of the per-sample dims for each ``-i`` input order.
INPUT_ORDER_RANK = {"nchw": 3, "nhwc": 3, "nc": 1}

Shape = tuple[int, ...]


@dataclass(frozen=True)
class InputProfile:
    """Min/opt/max shapes of one network input (batch included).

    Attributes:
        name: the input tensor name, exactly as in the model (e.g. ``input_1`` or ``input_1:0``).
        min: smallest shape the engine accepts, e.g. ``(1, 3, 544, 960)``.
        opt: the shape TensorRT tunes kernels for.
        max: largest shape the engine accepts.
    """

    name: str
    min: Shape
    opt: Shape
    max: Shape

    @property
    def max_batch(self) -> int:
        """The largest batch the profile allows (first dim of ``max``)."""
        return self.max[0]

    def spec(self) -> str:
        """The profile in ``-p`` syntax: ``name,1x3x544x960,8x3x544x960,16x3x544x960``."""
        return ",".join([self.name, format_shape(self.min), format_shape(self.opt), format_shape(self.max)])


def format_shape(shape: Iterable[int]) -> str:
    """``(1, 3, 544, 960)`` -> ``"1x3x544x960"``."""
    return "x".join(str(int(d)) for d in shape)


def parse_shape(text: str, flag: str = "-p") -> Shape:
    """``"1x3x544x960"`` -> ``(1, 3, 544, 960)``.

    Args:
        text: dims joined by ``x``.
        flag: the command-line flag the text came from, for messages.

    Returns:
        The shape; every dim is a positive integer.

    Raises:
        UsageError: empty, non-integer or non-positive dims.
    """
    parts = text.strip().lower().split("x")
    if not text.strip() or any(not p.strip().isdigit() for p in parts):
        raise UsageError(f"{flag}: '{text}' is not a shape; write the dims as positive integers joined by "
                         "'x', e.g. 8x3x544x960")
    shape = tuple(int(p) for p in parts)
    if any(d <= 0 for d in shape):
        raise UsageError(f"{flag}: '{text}': every dimension must be positive")
    return shape


def parse_profile(text: str) -> InputProfile:
    """Parse one ``-p`` value: ``<input name>,<min>,<opt>,<max>``.

    Args:
        text: e.g. ``input_1,1x3x544x960,8x3x544x960,16x3x544x960``.

    Returns:
        The :class:`InputProfile`.

    Raises:
        UsageError: wrong number of fields, bad shapes, ranks that differ, or min > opt > max
            in some dimension; the message names ``-p`` and the offending value.
    """
    fields = [f.strip() for f in text.split(",")]
    if len(fields) != 4 or not fields[0]:
        raise UsageError(f"-p: '{text}' must be <input name>,<min shape>,<opt shape>,<max shape>, "
                         "e.g. input_1,1x3x544x960,8x3x544x960,16x3x544x960")
    name = fields[0]
    lo, mid, hi = (parse_shape(f, "-p") for f in fields[1:])
    if not len(lo) == len(mid) == len(hi):
        raise UsageError(f"-p: '{text}': min, opt and max must have the same number of dims "
                         f"({len(lo)}, {len(mid)}, {len(hi)} given)")
    for axis, (a, b, c) in enumerate(zip(lo, mid, hi, strict=True)):
        if not a <= b <= c:
            raise UsageError(f"-p: '{text}': dimension {axis} must satisfy min <= opt <= max ({a}, {b}, {c} given)")
    return InputProfile(name, lo, mid, hi)


def parse_profiles(values: Sequence[str]) -> list[InputProfile]:
    """Parse every ``-p`` value; one profile entry per input name.

    Args:
        values: the repeated ``-p`` arguments.

    Returns:
        The parsed profiles, in order.

    Raises:
        UsageError: a value does not parse, or an input name is given twice.
    """
    profiles = [parse_profile(v) for v in values]
    seen: set[str] = set()
    for profile in profiles:
        if profile.name in seen:
            raise UsageError(f"-p: input '{profile.name}' is given more than once; give one -p per input")
        seen.add(profile.name)
    return profiles


def parse_dims(text: str, input_order: str = "nchw") -> Shape:
    """Parse ``-d``: per-sample input dims, comma separated, batch excluded.

    Args:
        text: e.g. ``3,544,960``.
        input_order: ``nchw``, ``nhwc`` or ``nc`` (``-i``); fixes how many dims are expected.

    Returns:
        The dims, e.g. ``(3, 544, 960)``.

    Raises:
        UsageError: non-integer or non-positive dims, or the wrong count for ``input_order``.
    """
    order = input_order.lower()
    if order not in INPUT_ORDER_RANK:
        raise UsageError(f"-i: unknown input order '{input_order}' (one of nchw, nhwc, nc)")
    parts = [p.strip() for p in text.split(",")]
    if not text.strip() or any(not p.isdigit() for p in parts):
        raise UsageError(f"-d: '{text}' must be positive integers separated by commas, e.g. 3,544,960")
    dims = tuple(int(p) for p in parts)
    if any(d <= 0 for d in dims):
        raise UsageError(f"-d: '{text}': every dimension must be positive")
    if len(dims) != INPUT_ORDER_RANK[order]:
        expected = {"nchw": "C,H,W", "nhwc": "H,W,C", "nc": "C"}[order]
        raise UsageError(f"-d: '{text}' has {len(dims)} dims; -i {order} expects {INPUT_ORDER_RANK[order]} ({expected})")
    return dims


def batch_profile(name: str, dims: Sequence[int], max_batch: int, opt_batch: int | None = None,
                  min_batch: int = 1) -> InputProfile:
    """The profile for an input whose only dynamic dimension is the batch.

    Args:
        name: input tensor name.
        dims: per-sample dims (batch excluded), e.g. ``(3, 544, 960)``.
        max_batch: largest batch (``-m``).
        opt_batch: batch to tune for; defaults to ``max_batch`` (what DeepStream's own engine
            builder uses).
        min_batch: smallest batch, 1 by default.

    Returns:
        ``InputProfile(name, (min_batch, *dims), (opt_batch, *dims), (max_batch, *dims))``.

    Raises:
        UsageError: batches not positive or not ``min <= opt <= max``.
    """
    opt = max_batch if opt_batch is None else opt_batch
    if min_batch < 1 or max_batch < 1 or opt < 1:
        raise UsageError(f"-m: batch sizes must be positive (min {min_batch}, opt {opt}, max {max_batch})")
    if not min_batch <= opt <= max_batch:
        raise UsageError(f"-m: batch sizes must satisfy min <= opt <= max (min {min_batch}, opt {opt}, max {max_batch})")
    sample = tuple(int(d) for d in dims)
    return InputProfile(name, (min_batch, *sample), (opt, *sample), (max_batch, *sample))


def check_profile_matches(profile: InputProfile, model_shape: Sequence[int | None], flag: str = "-p") -> None:
    """Check a profile against the model's declared input shape.

    Args:
        profile: the profile given with ``-p`` (or built from ``-d``/``-m``).
        model_shape: the input's shape in the model; ``None`` (or a negative value) marks a
            dynamic dimension.
        flag: the flag named in messages (``-p``, or ``-d`` for a profile built from dims).

    Raises:
        UsageError: the ranks differ, or a static dimension of the model is not matched exactly
            by min, opt and max.
    """
    if len(model_shape) != len(profile.min):
        raise UsageError(f"{flag}: input '{profile.name}' has {len(model_shape)} dims in the model "
                         f"({_describe(model_shape)}), the profile gives {len(profile.min)}")
    for axis, dim in enumerate(model_shape):
        if dim is None or dim < 0:
            continue
        if not profile.min[axis] == profile.opt[axis] == profile.max[axis] == dim:
            raise UsageError(f"{flag}: input '{profile.name}' dimension {axis} is fixed to {dim} in the model "
                             f"({_describe(model_shape)}); the profile gives {profile.min[axis]}, "
                             f"{profile.opt[axis]}, {profile.max[axis]}")


def _describe(shape: Sequence[int | None]) -> str:
    return "x".join("?" if d is None or d < 0 else str(d) for d in shape)
