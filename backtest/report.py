"""``report.html``: one self-contained page per run for people who would rather look than read.

Inline SVG (no script, no stylesheet or font from the network: it opens offline): the
book's equity curve and drawdown, and per symbol its closes with the fills marked
(green up-triangles buy, red down-triangles sell), then the metrics and the trades.
Built from the run's tables only, so the same run gives the same bytes.
"""

from __future__ import annotations

import html
import math
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["render_report"]

_W, _H, _PAD = 900, 220, 40


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.6g}" if math.isfinite(value) else "-"
    return html.escape(str(value))


def _iso(ts: int) -> str:
    return np.datetime_as_string(np.datetime64(int(ts), "ns"), unit="s") + "Z"


def _scale(values: np.ndarray, lo: float, hi: float, out_lo: float, out_hi: float) -> np.ndarray:
    span = hi - lo if hi > lo else 1.0
    return out_lo + (values - lo) / span * (out_hi - out_lo)


def _chart(title: str, y: np.ndarray, markers: list[tuple[int, float, str]] = (), fill: bool = False) -> str:
    """An SVG line chart of ``y`` against its index (bar number), with optional (index, value, colour) markers."""
    n = len(y)
    finite = y[np.isfinite(y)]
    if n == 0 or len(finite) == 0:
        return f"<h3>{html.escape(title)}</h3><p>no data</p>"
    lo, hi = float(finite.min()), float(finite.max())
    xs = _scale(np.arange(n, dtype=float), 0, max(n - 1, 1), _PAD, _W - 10)
    ys = _scale(np.nan_to_num(y, nan=lo), lo, hi, _H - 20, 10)
    points = " ".join(f"{x:.1f},{v:.1f}" for x, v in zip(xs, ys))
    area = f'<polygon points="{_PAD},{_H - 20} {points} {xs[-1]:.1f},{_H - 20}" fill="#f4cccc"/>' if fill else ""
    marks = []
    for i, value, colour in markers:
        x, v = xs[i], float(_scale(np.array([value]), lo, hi, _H - 20, 10)[0])
        tip = f"{v - 7:.1f}" if colour == "#2a9d3a" else f"{v + 7:.1f}"
        marks.append(f'<polygon points="{x - 4:.1f},{v:.1f} {x + 4:.1f},{v:.1f} {x:.1f},{tip}" fill="{colour}"/>')
    return (
        f"<h3>{html.escape(title)}</h3>"
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{_H}" viewBox="0 0 {_W} {_H}">'
        f'<rect width="{_W}" height="{_H}" fill="#fff" stroke="#ccc"/>{area}'
        f'<text x="4" y="16" font-size="11">{_fmt(hi)}</text><text x="4" y="{_H - 22}" font-size="11">{_fmt(lo)}</text>'
        f'<polyline points="{points}" fill="none" stroke="#1f5aa6" stroke-width="1.2"/>{"".join(marks)}</svg>'
    )


def _table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(r.get(c))}</td>" for c in columns) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def render_report(run_hash: str, config: dict[str, Any], metrics: dict[str, Any], equity: pa.Table,
                  fills: pa.Table, trades: pa.Table) -> str:  # fmt: skip
    """The report page (HTML text) of one run from its config, metrics and tables."""
    book = equity.filter(pc.equal(equity.column("symbol"), "*"))
    book_equity = book.column("equity").to_numpy()
    peaks = np.maximum.accumulate(np.r_[config["initial_cash"], book_equity])[1:]
    parts = [
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\">",
        f"<title>backtest {run_hash[:12]}</title><style>body{{font-family:sans-serif;margin:20px}}"
        "table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}</style></head><body>",
        f"<h1>Backtest {html.escape(run_hash[:12])}</h1>",
        f"<p>strategy <b>{html.escape(config['strategy']['name'])}</b> {html.escape(str(config['strategy']['params']))}; "
        f"symbols {html.escape(', '.join(config['symbols']))}; timeframe {html.escape(config['timeframe'])}; "
        f"bars {_iso(config['start'])} .. {_iso(config['end'])}; run hash <code>{run_hash}</code></p>",
        _chart("Book equity (quote currency) per bar", book_equity),
        _chart("Drawdown of the book (fraction below the running peak)", book_equity / peaks - 1.0, fill=True),
    ]
    for symbol in config["symbols"]:
        rows = equity.filter(pc.equal(equity.column("symbol"), symbol))
        ts = rows.column("ts").to_numpy()
        close = rows.column("close").to_numpy()
        mine = fills.filter(pc.equal(fills.column("symbol"), symbol))
        at = np.searchsorted(ts, mine.column("ts").to_numpy())
        marks = [
            (int(i), float(p), "#2a9d3a" if q > 0 else "#c0392b")
            for i, p, q in zip(at, mine.column("price").to_numpy(), mine.column("quantity").to_numpy())
            if i < len(ts)
        ]
        parts.append(_chart(f"{symbol}: close, fills marked (green buy, red sell)", close, marks))
    metric_rows = [{"curve": "book", **metrics["book"]}] + [{"curve": s, **m} for s, m in metrics["symbols"].items()]
    parts.append("<h2>Metrics</h2>" + _table(metric_rows, ["curve", *metrics["book"].keys()]))
    trade_rows = trades.to_pylist()
    for row in trade_rows:
        row["entry"] = _iso(row["entry_ts"])
        row["exit"] = _iso(row["exit_ts"]) if row["exit_ts"] is not None else "open"
    columns = ["symbol", "side", "size", "entry", "entry_price", "exit", "exit_price", "fees", "borrow_cost", "pnl", "return_pct"]
    parts.append(f"<h2>Trades ({len(trade_rows)})</h2>" + _table(trade_rows, columns) + "</body></html>\n")
    return "".join(parts)
