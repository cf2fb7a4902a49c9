"""Parameter types shared by node kinds' ``Params`` models.

Validation runs with a pydantic context ``{"base_dir": Path}`` (the graph file's
directory) so relative paths resolve against the graph file, whatever the cwd.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, ValidationInfo

from graph.timeframes import check_timeframe

__all__ = ["InputFile", "OutputPath", "Timeframe", "resolve_path"]


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


#: A path to an existing file (relative to the graph file); validated before any actor starts.
InputFile = Annotated[Path, AfterValidator(_existing_file)]
#: A path to write to (relative to the graph file); need not exist yet.
OutputPath = Annotated[Path, AfterValidator(_output_path)]
#: One of ``1s 1m 5m 15m 1h 1d``.
Timeframe = Annotated[str, AfterValidator(check_timeframe)]
