"""Errors the CLI turns into messages and exit codes.

Exit codes: 0 ok, 1 the project drifted from its spec (verify), 2 invalid input (spec, data,
paths), 3 refused to overwrite an output folder, 4 an I/O failure while writing.
"""

from __future__ import annotations

from dataclasses import dataclass


class LfcError(Exception):
    """Base of every error lfc reports to the user without a traceback."""

    exit_code = 4


@dataclass(frozen=True)
class Problem:
    """One finding: where it is and what is wrong."""

    source: str
    line: int | None
    column: int | None
    key: str
    message: str

    def __str__(self) -> str:
        where = self.source
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class SpecError(LfcError):
    """The spec is invalid; holds every problem found, each with its location."""

    exit_code = 2

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class InputError(LfcError):
    """A path, data file or other input is unusable."""

    exit_code = 2


class RefusedOverwrite(LfcError):
    """The output folder holds files lfc did not write, or hand edits."""

    exit_code = 3


class DriftError(LfcError):
    """`lfc verify` found differences between a project and its spec."""

    exit_code = 1
