"""``GET /api/v1/bars/{symbol}/{timeframe}``: confirmed bars from the store, through the LRU tier.

JSON (``BarsResponse``) or, with ``?format=csv``, the canonical bar export: the columns
and format of ``run.py export bars --format csv`` (``db/export.py``: ``ts`` as
``timestamp[ns, UTC]`` text, a header row), which ``run.py parity bars --local`` reads.

The range is ``[from, to)`` on bar open time; absent bounds are the stored series' own.
``limit`` keeps the latest bars of the range. Reads go through ``db/cache.py`` (blocks of
512 bars; stale by at most ``cache_ttl_s`` for bars written by other processes). To
return the latest ``limit`` bars of a long series without reading all of it, the window
read grows backwards from ``to`` (doubling) until it holds ``limit`` bars or reaches ``from``.
"""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.csv as pa_csv
from aiohttp import web

from db.export import export_schema
from db.read import ts_range_async
from db.tables import arrow_schema, bars_ohlcv
from graph.timeframes import INTRADAY_NS
from service.app import STATE, ServiceState
from service.errors import ApiError, json_response, parse_path, parse_query
from service.hub import iso_ns
from service.models import BarsQuery, BarsResponse, SeriesPath, SymbolsResponse
from service.openapi import Operation, add

__all__ = ["install", "read_series", "bars_csv", "series_or_404"]

_DAY_NS = 86_400 * 1_000_000_000
_JSON_LIMIT = 1000
_EMPTY = arrow_schema(bars_ohlcv).empty_table()


async def series_or_404(state: ServiceState, symbol: str, timeframe: str) -> tuple[int, int] | None:
    """The stored ``(min ts, max ts)`` of a series; None if the symbol is known but has no such bars.

    Raises:
        ApiError: 404 (field ``symbol``) for a symbol the service does not know.
    """
    known = await state.known_symbols()
    if symbol not in known:
        listed = ", ".join(sorted(known)[:20]) or "none yet"
        raise ApiError(404, f"symbol {symbol!r} is not known (known: {listed})", "symbol")
    return await ts_range_async(state.url, bars_ohlcv, {"symbol": symbol, "timeframe": timeframe})


async def read_series(
    state: ServiceState, symbol: str, timeframe: str, start: int | None, end: int | None, limit: int | None
) -> pa.Table:
    """Stored bars of one series in ``[start, end)`` (None: the series' bounds), the latest ``limit``.

    Raises:
        ApiError: 404 for an unknown symbol.
    """
    stored = await series_or_404(state, symbol, timeframe)
    if stored is None:
        return _EMPTY
    low = stored[0] if start is None else max(start, stored[0])
    high = stored[1] + 1 if end is None else min(end, stored[1] + 1)
    if high <= low:
        return _EMPTY
    step = INTRADAY_NS.get(timeframe, _DAY_NS)
    if limit is None:
        table = await state.cache.read_async(symbol, timeframe, low, high)
    else:
        width = step * limit
        while True:
            window_start = max(low, high - width)
            table = await state.cache.read_async(symbol, timeframe, window_start, high)
            if table.num_rows >= limit or window_start == low:
                break
            width *= 2
        table = table.slice(max(0, table.num_rows - limit))
    return table


def bars_csv(table: pa.Table) -> bytes:
    """Bars (``bars_ohlcv`` columns) as the canonical CSV export (``db/export.py`` format)."""
    schema = export_schema("bars")
    columns = [table.column(f.name).cast(f.type) if table.num_rows else pa.array([], f.type) for f in schema]
    out = io.BytesIO()
    pa_csv.write_csv(pa.Table.from_arrays(columns, schema=schema), out, pa_csv.WriteOptions(include_header=True))
    return out.getvalue()


def csv_response(table: pa.Table, symbol: str, timeframe: str) -> web.Response:
    """A ``text/csv`` download of :func:`bars_csv`."""
    return web.Response(
        body=bars_csv(table),
        content_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{symbol}_{timeframe}.csv"'},
    )


async def get_bars(request: web.Request) -> web.Response:
    """Confirmed bars of one series (see the module docstring)."""
    state = request.app[STATE]
    path = parse_path(request, SeriesPath)
    query = parse_query(request, BarsQuery)
    limit = query.limit if query.limit is not None or query.format == "csv" else _JSON_LIMIT
    table = await read_series(state, path.symbol, path.timeframe, query.start, query.end, limit)
    if query.format == "csv":
        return csv_response(table, path.symbol, path.timeframe)
    rows = table.select(["ts", "open", "high", "low", "close", "volume", "vwap", "trade_count"]).to_pylist() if table.num_rows else []
    for row in rows:
        row["time"] = iso_ns(row["ts"])
    return json_response({"symbol": path.symbol, "timeframe": path.timeframe, "count": len(rows), "bars": rows})


async def get_symbols(request: web.Request) -> web.Response:
    """Known symbols, the timeframes, and the signal names stored (for clients' pickers)."""
    from db.read import distinct_values_async
    from db.tables import signals
    from graph.timeframes import TIMEFRAMES

    state = request.app[STATE]
    names = await distinct_values_async(state.url, signals, "name")
    return json_response({"symbols": sorted(await state.known_symbols()), "timeframes": list(TIMEFRAMES), "signals": names})


def install(app: web.Application) -> None:
    """Mount the bars and symbols routes."""
    add(app, get_symbols, Operation("GET", "/v1/symbols", "Known symbols, timeframes and signal names", "bars",
                                    response=SymbolsResponse, errors=()))
    add(app, get_bars, Operation(
        "GET", "/api/v1/bars/{symbol}/{timeframe}", "Confirmed bars of a symbol and timeframe", "bars",
        path_model=SeriesPath, query=BarsQuery, response=BarsResponse, errors=(404, 422), extra_content=("text/csv",),
    ))  # fmt: skip
