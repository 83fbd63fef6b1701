"""Problems found while loading or validating a spec, and how they are printed.

Every problem carries a severity, a field path (``training_config.learning_rate``,
``cost_function_config.target_classes[1].name``,
``postprocessing_config.target_class_config["car"].clustering_config.dbscan_eps``) and,
where the spec text shows it, a 1-based line and column.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

ERROR = "error"
WARNING = "warning"


@dataclass(frozen=True)
class Problem:
    """One finding about a spec.

    Attributes:
        severity: ``"error"`` (the spec is rejected) or ``"warning"`` (reported, accepted).
        message: what is wrong and what to do.
        path: field path the problem is about, or None for file-level problems.
        line: 1-based line in the spec text, or None when not known.
        col: 1-based column in the spec text, or None when not known.
        origin: where the text came from when it is not the spec file (``--set a.b=1``).
    """

    severity: str
    message: str
    path: str | None = None
    line: int | None = None
    col: int | None = None
    origin: str | None = None

    def format(self, source: str) -> str:
        """Render as ``file:line:col: field.path: message``.

        Args:
            source: the spec file name used as the location prefix.

        Returns:
            One line of text.
        """
        where = self.origin or source
        if self.origin is None and self.line is not None:
            where += f":{self.line}:{self.col or 1}"
        if self.path:
            return f"{where}: {self.path}: {self.message}"
        return f"{where}: {self.message}"


@dataclass
class Reporter:
    """Collects problems; positions are looked up from the spec text by field path.

    Attributes:
        positions: field path -> (line, col) of where the spec text sets it.
        problems: every problem reported so far, in order.
        origin: set while checking ``--set`` overrides so problems name the override.
        overridden: field path -> ``--set`` expression that set it; problems about those
            fields (or fields inside them) name the override instead of a file position.
    """

    positions: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    origin: str | None = None
    overridden: dict[str, str] = field(default_factory=dict)

    def _locate(self, path: str | None) -> tuple[int | None, int | None]:
        probe = path
        while probe:
            if probe in self.positions:
                return self.positions[probe]
            probe = parent_path(probe)
        return None, None

    def add(self, severity: str, path: str | None, message: str,
            line: int | None = None, col: int | None = None) -> None:
        """Record a problem; the position is looked up from ``path`` unless given.

        Args:
            severity: ``"error"`` or ``"warning"``.
            path: field path, or None.
            message: the text shown to the user.
            line: explicit 1-based line (optional).
            col: explicit 1-based column (optional).
        """
        origin = self.origin
        probe = path
        while origin is None and probe:
            if probe in self.overridden:
                origin = f"--set {self.overridden[probe]}"
            probe = parent_path(probe)
        if line is None and origin is None:
            line, col = self._locate(path)
        self.problems.append(Problem(severity, message, path, line, col, origin))

    def error(self, path: str | None, message: str) -> None:
        """Record an error about ``path``."""
        self.add(ERROR, path, message)

    def warning(self, path: str | None, message: str) -> None:
        """Record a warning about ``path``."""
        self.add(WARNING, path, message)

    @property
    def errors(self) -> list[Problem]:
        """The problems with severity error."""
        return [p for p in self.problems if p.severity == ERROR]

    @property
    def warnings(self) -> list[Problem]:
        """The problems with severity warning."""
        return [p for p in self.problems if p.severity == WARNING]


def parent_path(path: str) -> str:
    """The path of the enclosing field: ``a.b[2].c`` -> ``a.b[2]`` -> ``a.b`` -> ``a`` -> ``""``."""
    if path.endswith("]"):
        depth = 0
        for i in range(len(path) - 1, -1, -1):
            ch = path[i]
            if ch == "]":
                depth += 1
            elif ch == "[":
                depth -= 1
                if depth == 0:
                    return path[:i]
        return ""
    # skip dots inside ["..."] keys
    depth = 0
    for i in range(len(path) - 1, -1, -1):
        ch = path[i]
        if ch == "]":
            depth += 1
        elif ch == "[":
            depth -= 1
        elif ch == "." and depth == 0:
            return path[:i]
    return ""
