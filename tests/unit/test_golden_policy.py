"""The golden data policy (tests/golden.py): a golden test whose data is absent is skipped, and with
REQUIRE_GOLDEN_DATA=1 it fails naming the missing range; present data lets it run."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.golden import GoldenData, require_golden


def hood(tmp_path: Path) -> GoldenData:
    return GoldenData("HOOD 1m bars", (tmp_path / "data" / "HOOD_1m.parquet",), "2025-12-15T09:30:00-05:00", "2025-12-15T16:00:00-05:00")


def test_absent_golden_data_skips_in_development(tmp_path, monkeypatch):
    monkeypatch.delenv("REQUIRE_GOLDEN_DATA", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"golden data not available: HOOD 1m bars 2025-12-15T09:30:00-05:00 \.\. 2025-12-15T16:00:00-05:00 \(missing .*HOOD_1m\.parquet\)"):
        require_golden(hood(tmp_path))


def test_absent_golden_data_fails_a_promotion_naming_the_range(tmp_path, monkeypatch):
    monkeypatch.setenv("REQUIRE_GOLDEN_DATA", "1")
    with pytest.raises(pytest.fail.Exception, match=r"Golden data missing \(promotion blocked\)\. Expected data for range: HOOD 1m bars 2025-12-15T09:30:00-05:00 \.\. 2025-12-15T16:00:00-05:00"):
        require_golden(hood(tmp_path))


def test_present_golden_data_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("REQUIRE_GOLDEN_DATA", "1")
    data = hood(tmp_path)
    data.files[0].parent.mkdir()
    data.files[0].write_bytes(b"PAR1")
    require_golden(data)  # returns: the test goes on
