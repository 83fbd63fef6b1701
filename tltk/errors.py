"""Exceptions that carry tltk's documented exit codes.

Every error that a user can cause (a bad spec, a missing file, a wrong key) is raised as one
of these classes; the CLI turns it into a one-paragraph message on stderr and the matching
exit code (see ``docs/exit_codes.md``).  Library code never calls ``sys.exit``.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_MISSING_DEPENDENCY = 3
EXIT_INTERRUPTED = 130


class TltkError(Exception):
    """Base class: a failure that is reported to the user without a traceback.

    Attributes:
        exit_code: the process exit code the CLI uses for this error.
        hint: optional sentence telling the user what to do next.
    """

    exit_code: int = EXIT_FAILURE

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  hint: {self.hint}"
        return self.message


class UsageError(TltkError):
    """Wrong command-line usage (missing or contradictory arguments): exit code 2."""

    exit_code = EXIT_USAGE


class InvalidInputError(TltkError):
    """A file given by the user is missing, unreadable or malformed: exit code 2."""

    exit_code = EXIT_USAGE


class SpecError(InvalidInputError):
    """A spec file does not parse or does not validate: exit code 2.

    Attributes:
        problems: every problem found, each already formatted as
            ``file:line:col: field.path: message``.
    """

    def __init__(self, message: str, problems: list[str] | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.problems = list(problems or [])

    def __str__(self) -> str:
        lines = [self.message] + [f"  {p}" for p in self.problems]
        if self.hint:
            lines.append(f"  hint: {self.hint}")
        return "\n".join(lines)


class ModelFileError(InvalidInputError):
    """A model file is damaged, truncated, of an unknown kind, or the key is wrong: exit code 2."""


class WrongKeyError(ModelFileError):
    """The key given for an encrypted model file is not the one it was sealed with: exit code 2."""


class MissingDependencyError(TltkError):
    """An optional dependency (TensorRT, pycuda, a GPU) is not available here: exit code 3."""

    exit_code = EXIT_MISSING_DEPENDENCY
