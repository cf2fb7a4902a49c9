"""Bars from Parquet, read-only: a backtest run's ``decisions.parquet`` or tickgraph's bar files.

Two layouts are recognised by their columns:

* a backtest run's ``decisions.parquet`` (DECISION rows: the exact bars the backtest
  decided on; no ``vwap``), the default source of a warm start: the history the
  strategy was validated on;
* the ``parquet_sink`` layout (``out/parquet/bars/symbol=X/timeframe=1m/part-*.parquet``,
  BAR rows with ``ts`` as ``timestamp[ns, UTC]``), or any Parquet file with BAR columns.

Only ``confirmed``/``corrected`` bars are returned where a ``status`` column exists.
The files are opened for reading only (``pyarrow.dataset``); nothing is ever written
next to them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from pydantic import BaseModel, ConfigDict

from pre_paper.providers.base import OHLCV, ProviderError, bars_frame

__all__ = ["ParquetProviderSpec", "ParquetProvider"]


class ParquetProviderSpec(BaseModel):
    """A ``backtest_parquet`` provider entry in the ``pre_paper`` node's ``providers``.

    Attributes:
        kind: ``backtest_parquet``.
        path: a Parquet file or directory (hive-partitioned ``symbol=``/``timeframe=`` is
            understood), relative to the graph file; null: the manifest's run directory's
            ``decisions.parquet`` (the bars the backtest saw).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["backtest_parquet"]
    path: str | None = None


class ParquetProvider:
    """Read-only bars from Parquet (see the module docstring).

    Args:
        path: the file or directory (absolute).

    Raises:
        ProviderError: the path does not exist.
    """

    source = "historical"

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.name = f"backtest_parquet:{self.path.name}"
        if not self.path.exists():
            raise ProviderError(f"backtest_parquet: {self.path} does not exist")

    def _dataset(self) -> ds.Dataset:
        partitioning = "hive" if self.path.is_dir() else None
        return ds.dataset(str(self.path), format="parquet", partitioning=partitioning)

    def fetch_bars(self, symbol: str, tf: str, start_ts: pd.Timestamp, end_ts: pd.Timestamp) -> pd.DataFrame:
        """Bars of ``symbol``/``tf`` opening in ``[start_ts, end_ts)`` (see the module docstring).

        Raises:
            ProviderError: unreadable files, or no ``ts``/OHLCV columns.
        """
        try:
            dataset = self._dataset()
            names = set(dataset.schema.names)
            missing = [c for c in ("symbol", "ts", *OHLCV) if c not in names]
            if missing:
                raise ProviderError(f"{self.name}: {self.path} has no {', '.join(missing)} column(s)")
            ts_type = dataset.schema.field("ts").type
            start, end = int(start_ts.value), int(end_ts.value)
            if pa.types.is_timestamp(ts_type):
                bound = lambda v: pa.scalar(v, type=pa.timestamp("ns", "UTC")).cast(ts_type)  # noqa: E731
            else:
                bound = lambda v: pa.scalar(v, type=pa.int64())  # noqa: E731
            where = (ds.field("symbol") == symbol) & (ds.field("ts") >= bound(start)) & (ds.field("ts") < bound(end))
            if "timeframe" in names:
                where &= ds.field("timeframe") == tf
            columns = ["ts", *OHLCV] + [c for c in ("vwap", "status") if c in names]
            table = dataset.to_table(columns=columns, filter=where)
        except (OSError, pa.ArrowException) as exc:
            raise ProviderError(f"{self.name}: cannot read {self.path}: {type(exc).__name__}: {exc}") from None
        if "status" in table.column_names:
            table = table.filter(pc.is_in(table.column("status"), pa.array(["confirmed", "corrected"])))
        ts = table.column("ts")
        if pa.types.is_timestamp(ts.type):
            ts = pc.cast(pc.cast(ts, pa.timestamp("ns", "UTC")), pa.int64())
        arrays = {name: table.column(name).to_numpy() for name in OHLCV}
        if "vwap" in table.column_names:
            arrays["vwap"] = table.column("vwap").to_numpy()
        return bars_frame(np.asarray(ts.to_numpy(), dtype=np.int64), arrays)
