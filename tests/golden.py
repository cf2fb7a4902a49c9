"""The golden data policy: a golden test needs real data covering a named range.

Development (``REQUIRE_GOLDEN_DATA`` unset): a golden test whose data is absent is
SKIPPED, saying which range it lacks. Promotion (``REQUIRE_GOLDEN_DATA=1``): it FAILS,
``Golden data missing (promotion blocked)``, with the range, so a promotion cannot pass
on a machine without the data (shared/seeds/004_pre_paper_history.md, "Golden Skip
Policy"). Golden tests carry ``@pytest.mark.golden``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

__all__ = ["GoldenData", "require_golden"]


@dataclass(frozen=True)
class GoldenData:
    """One golden data set: what it is, the files that hold it, the range it covers.

    Attributes:
        label: what it is (``AMZN 1m, LOBSTER``).
        files: the files that must exist.
        start, end: the range the test needs (ISO-8601 with the market's offset).
    """

    label: str
    files: tuple[Path, ...]
    start: str
    end: str

    def missing(self) -> list[Path]:
        """The files that are not there."""
        return [path for path in self.files if not path.is_file()]


def require_golden(*data: GoldenData) -> None:
    """Skip (development) or fail (``REQUIRE_GOLDEN_DATA=1``) unless every data set is present.

    The message names each missing data set with its range and first missing file.
    """
    absent = [(d, d.missing()) for d in data]
    absent = [(d, m) for d, m in absent if m]
    if not absent:
        return
    ranges = "; ".join(f"{d.label} {d.start} .. {d.end} (missing {m[0]})" for d, m in absent)
    if os.environ.get("REQUIRE_GOLDEN_DATA") == "1":
        pytest.fail(f"Golden data missing (promotion blocked). Expected data for range: {ranges}", pytrace=False)
    pytest.skip(f"golden data not available: {ranges}")
