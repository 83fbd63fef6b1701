"""KITTI object-detection label files: reading, writing and problem reports.

A KITTI label file holds one object per line with 15 whitespace-separated columns::

    type truncated occluded alpha left top right bottom h w l x y z rotation_y

Prediction files written by TAO's ``inference`` (and by tltk) add a 16th column, the
confidence.  Class names are kept exactly as written here; the DetectNet_v2 converter
lower-cases them when writing TFRecords.

Malformed lines are never dropped silently: :func:`read_kitti_labels` returns them as
:class:`LabelProblem` records carrying ``file:line``, and callers decide what to do.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from tltk.fileio import atomic_write_text

__all__ = [
    "KittiObject",
    "LabelProblem",
    "KittiCalibration",
    "parse_kitti_line",
    "read_kitti_labels",
    "format_kitti_line",
    "write_kitti_labels",
    "read_kitti_calibration",
]

NUM_COLUMNS = 15
NUM_COLUMNS_WITH_SCORE = 16


@dataclass(frozen=True)
class LabelProblem:
    """One problem found in the input data, located as precisely as possible.

    Attributes:
        path: the file the problem is in (label file, image file or annotation file).
        line: 1-based line number, or 0 when the problem concerns the whole file.
        kind: short machine-readable category (``malformed_line``, ``image_without_label``,
            ``label_without_image``, ``unreadable_image``, ``invalid_box``, ``box_outside_image``...).
        message: one human sentence.
    """

    path: str
    line: int
    kind: str
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        return f"{where}: {self.message}"

    def to_dict(self) -> dict[str, object]:
        """The problem as a JSON-ready dict (``path``, ``line``, ``kind``, ``message``)."""
        return {"path": self.path, "line": self.line, "kind": self.kind, "message": self.message}


@dataclass
class KittiObject:
    """One KITTI label row.

    Attributes:
        type: class name as written in the file (``Car``, ``DontCare``...).
        truncated: truncation in [0, 1] (-1 for DontCare).
        occluded: occlusion state (0..3, -1 for DontCare).
        alpha: observation angle in radians.
        bbox: ``(left, top, right, bottom)`` in image pixels.
        dimensions: ``(height, width, length)`` of the 3D box in metres.
        location: ``(x, y, z)`` of the 3D box in camera coordinates, metres.
        rotation_y: yaw around the camera Y axis, radians.
        score: confidence from a 16th column, or None for ground truth.
    """

    type: str
    bbox: tuple[float, float, float, float]
    truncated: float = 0.0
    occluded: int = 0
    alpha: float = 0.0
    dimensions: tuple[float, float, float] = (0.0, 0.0, 0.0)
    location: tuple[float, float, float] = (0.0, 0.0, 0.0)
    rotation_y: float = 0.0
    score: float | None = None
    line: int = field(default=0, compare=False)

    @property
    def width(self) -> float:
        """Box width in pixels (``right - left``)."""
        return self.bbox[2] - self.bbox[0]

    @property
    def height(self) -> float:
        """Box height in pixels (``bottom - top``)."""
        return self.bbox[3] - self.bbox[1]


def _number(token: str, column: int) -> float:
    try:
        value = float(token)
    except ValueError:
        raise ValueError(f"column {column + 1} is {token!r}, not a number") from None
    if math.isnan(value):
        raise ValueError(f"column {column + 1} is NaN")
    return value


def parse_kitti_line(line: str, allow_score: bool = True) -> KittiObject:
    """Parse one non-empty KITTI label line.

    Args:
        line: the text of the line (surrounding whitespace ignored).
        allow_score: accept a 16th confidence column.

    Returns:
        The parsed object (``line`` attribute left at 0).

    Raises:
        ValueError: wrong number of columns or a non-numeric value; the message says which.
    """
    tokens = line.split()
    allowed = (NUM_COLUMNS, NUM_COLUMNS_WITH_SCORE) if allow_score else (NUM_COLUMNS,)
    if len(tokens) not in allowed:
        expected = " or ".join(str(n) for n in allowed)
        raise ValueError(f"expected {expected} columns, found {len(tokens)}")
    values = [_number(tok, i + 1) for i, tok in enumerate(tokens[1:])]
    occluded = values[1]
    if occluded != int(occluded):
        raise ValueError(f"column 3 (occluded) is {tokens[2]!r}, not an integer")
    for col in range(4, 8):
        if math.isinf(values[col - 1]):
            raise ValueError(f"column {col + 1} (bbox) is infinite")
    return KittiObject(
        type=tokens[0],
        truncated=values[0],
        occluded=int(occluded),
        alpha=values[2],
        bbox=(values[3], values[4], values[5], values[6]),
        dimensions=(values[7], values[8], values[9]),
        location=(values[10], values[11], values[12]),
        rotation_y=values[13],
        score=values[14] if len(values) == 15 else None,
    )


def read_kitti_labels(path: str | os.PathLike[str], allow_score: bool = True
                      ) -> tuple[list[KittiObject], list[LabelProblem]]:
    """Read a KITTI label file, collecting malformed lines instead of failing.

    Empty lines are skipped.  A line that does not parse is reported as a
    ``malformed_line`` problem and left out of the returned objects.

    Args:
        path: the ``.txt`` label file.
        allow_score: accept 16-column lines (prediction files).

    Returns:
        ``(objects, problems)``; each object's ``line`` is its 1-based line number.

    Raises:
        OSError: the file cannot be read.
    """
    path = os.fspath(path)
    objects: list[KittiObject] = []
    problems: list[LabelProblem] = []
    with open(path, encoding="utf-8", errors="replace") as handle:
        for number, raw in enumerate(handle, start=1):
            text = raw.strip()
            if not text:
                continue
            try:
                obj = parse_kitti_line(text, allow_score=allow_score)
            except ValueError as exc:
                problems.append(LabelProblem(path, number, "malformed_line", f"malformed KITTI line: {exc}"))
                continue
            obj.line = number
            objects.append(obj)
    return objects, problems


def _fmt(value: float) -> str:
    return f"{value:.2f}"


def format_kitti_line(obj: KittiObject, score_digits: int = 3, bbox_digits: int = 2) -> str:
    """Format one object as a KITTI line (15 columns, 16 when it has a score).

    Args:
        obj: the object.
        score_digits: decimals written for the confidence column.
        bbox_digits: decimals written for the four box coordinates (pixels); TAO's inference
            writes 3, KITTI ground truth uses 2.

    Returns:
        The line without a trailing newline.
    """
    cols = [obj.type, _fmt(obj.truncated), str(int(obj.occluded)), _fmt(obj.alpha)]
    cols += [f"{v:.{bbox_digits}f}" for v in obj.bbox]
    cols += [_fmt(v) for v in obj.dimensions]
    cols += [_fmt(v) for v in obj.location]
    cols.append(_fmt(obj.rotation_y))
    if obj.score is not None:
        cols.append(f"{obj.score:.{score_digits}f}")
    return " ".join(cols)


def write_kitti_labels(path: str | os.PathLike[str], objects: Iterable[KittiObject], bbox_digits: int = 2) -> None:
    """Write a KITTI label file (one line per object, ``\\n`` line ends), atomically.

    Args:
        path: destination ``.txt`` file; its folder is created.  An interrupted write leaves
            the previous file (or none), never a truncated one.
        objects: objects to write, in order.
        bbox_digits: decimals of the box coordinates (see :func:`format_kitti_line`).
    """
    text = "".join(format_kitti_line(obj, bbox_digits=bbox_digits) + "\n" for obj in objects)
    atomic_write_text(path, text)


@dataclass(frozen=True)
class KittiCalibration:
    """The camera/lidar matrices of one KITTI calibration file.

    Attributes:
        p2: 3x4 projection matrix of the left colour camera (row-major tuple of 12).
        r0_rect: 3x3 rectifying rotation (row-major tuple of 9).
        tr_velo_to_cam: 3x4 lidar-to-camera transform (row-major tuple of 12).
    """

    p2: tuple[float, ...]
    r0_rect: tuple[float, ...]
    tr_velo_to_cam: tuple[float, ...]

    def lidar_to_camera(self) -> list[float]:
        """``R0_rect · Tr_velo_to_cam`` as a 4x4 matrix, flattened row-major (16 floats)."""
        r0 = _homogeneous(self.r0_rect, 3, 3)
        tr = _homogeneous(self.tr_velo_to_cam, 3, 4)
        return [v for row in _matmul(r0, tr) for v in row]

    def lidar_to_image(self) -> list[float]:
        """``P2 · R0_rect · Tr_velo_to_cam`` as a 3x4 matrix, flattened row-major (12 floats)."""
        p2 = [list(self.p2[r * 4:(r + 1) * 4]) for r in range(3)]
        r0 = _homogeneous(self.r0_rect, 3, 3)
        tr = _homogeneous(self.tr_velo_to_cam, 3, 4)
        return [v for row in _matmul(p2, _matmul(r0, tr)) for v in row]


def _homogeneous(values: Sequence[float], rows: int, cols: int) -> list[list[float]]:
    out = [[1.0 if r == c else 0.0 for c in range(4)] for r in range(4)]
    for r in range(rows):
        for c in range(cols):
            out[r][c] = float(values[r * cols + c])
    return out


def _matmul(a: list[list[float]], b: list[list[float]]) -> list[list[float]]:
    return [[sum(a[i][k] * b[k][j] for k in range(len(b))) for j in range(len(b[0]))] for i in range(len(a))]


def read_kitti_calibration(path: str | os.PathLike[str]) -> KittiCalibration:
    """Read the ``P2``, ``R0_rect`` and ``Tr_velo_to_cam`` rows of a KITTI calibration file.

    Args:
        path: the calibration ``.txt`` file (``NAME: v1 v2 ...`` per line).

    Returns:
        The three matrices.

    Raises:
        ValueError: a required row is missing or has the wrong number of values.
    """
    path = os.fspath(path)
    rows: dict[str, list[float]] = {}
    with open(path, encoding="utf-8") as handle:
        for number, raw in enumerate(handle, start=1):
            name, sep, rest = raw.partition(":")
            if not sep:
                continue
            try:
                rows[name.strip()] = [float(v) for v in rest.split()]
            except ValueError:
                raise ValueError(f"{path}:{number}: row {name.strip()!r} holds a non-number") from None
    wanted = {"P2": 12, "R0_rect": 9, "Tr_velo_to_cam": 12}
    for name, size in wanted.items():
        if name not in rows:
            raise ValueError(f"{path}: calibration row {name!r} is missing")
        if len(rows[name]) != size:
            raise ValueError(f"{path}: calibration row {name!r} has {len(rows[name])} values, expected {size}")
    return KittiCalibration(tuple(rows["P2"]), tuple(rows["R0_rect"]), tuple(rows["Tr_velo_to_cam"]))
