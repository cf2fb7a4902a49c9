"""Parameter types shared by node kinds' ``Params`` models.

Validation runs with a pydantic context ``{"base_dir": Path}`` (the graph file's
directory) so relative paths resolve against the graph file, whatever the cwd.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, ValidationInfo

from graph.timeframes import check_timeframe

__all__ = ["InputFile", "OutputPath", "OutputDir", "OutputFile", "Timeframe", "resolve_path", "output_dir_problem", "output_file_problem"]


def resolve_path(value: str | Path, info: ValidationInfo | None) -> Path:
    """Resolve ``value`` against the graph file's directory (``info.context['base_dir']``)."""
    path = Path(value).expanduser()
    if not path.is_absolute():
        base = (info.context or {}).get("base_dir") if info is not None else None
        path = Path(base or Path.cwd()) / path
    return path.resolve()


def _existing_file(value: Path, info: ValidationInfo) -> Path:
    path = resolve_path(value, info)
    if not path.is_file():
        raise ValueError(f"file not found: {path}")
    return path


def _output_path(value: Path, info: ValidationInfo) -> Path:
    return resolve_path(value, info)


def output_dir_problem(path: Path) -> str | None:
    """Why ``path`` (absolute) cannot be an output directory, or None if it is one or can be made.

    A run that only finds out at its first write (a Parquet path that is an existing file)
    fails after the other sinks have taken rows; checked when the graph is validated, it
    fails before anything starts.
    """
    if path.exists():
        if not path.is_dir():
            return f"{path} exists and is not a directory"
        return None if os.access(path, os.W_OK | os.X_OK) else f"directory {path} is not writable"
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        return f"{path} cannot be created: {ancestor} is not a directory"
    if not os.access(ancestor, os.W_OK | os.X_OK):
        return f"{path} cannot be created: directory {ancestor} is not writable"
    return None


def output_file_problem(path: Path) -> str | None:
    """Why ``path`` (absolute) cannot be written as a file, or None (see :func:`output_dir_problem`)."""
    if path.is_dir():
        return f"{path} is a directory, not a file"
    if path.exists():
        return None if os.access(path, os.W_OK) else f"file {path} is not writable"
    problem = output_dir_problem(path.parent)
    return None if problem is None else f"{path} cannot be written: {problem}"


def _checked(problem: Callable[[Path], str | None]) -> Callable[[Path, ValidationInfo], Path]:
    """A validator resolving a path and raising ``ValueError(problem(path))`` when there is one."""

    def validate(value: Path, info: ValidationInfo) -> Path:
        path = resolve_path(value, info)
        found = problem(path)
        if found is not None:
            raise ValueError(found)
        return path

    return validate


#: A path to an existing file (relative to the graph file); validated before any actor starts.
InputFile = Annotated[Path, AfterValidator(_existing_file)]
#: A path to write to (relative to the graph file); need not exist yet.
OutputPath = Annotated[Path, AfterValidator(_output_path)]
#: An output directory (relative to the graph file): an existing writable directory, or one
#: that can be created; checked before any actor starts.
OutputDir = Annotated[Path, AfterValidator(_checked(output_dir_problem))]
#: An output file (relative to the graph file): not a directory, its directory writable or creatable.
OutputFile = Annotated[Path, AfterValidator(_checked(output_file_problem))]
#: One of ``1s 1m 5m 15m 1h 1d``.
Timeframe = Annotated[str, AfterValidator(check_timeframe)]
