"""Signal computers: per-symbol signals from ticks and confirmed bars (node kinds below).

=====================  =========  =============================================  ========================
kind                   input      value (``signals.value``)                      emitted at ``ts``
=====================  =========  =============================================  ========================
``vwap_deviation_bps`` ticks      (price - session VWAP) / VWAP * 10,000         every trade
``spread_bps``         ticks      (ask - bid) / mid * 10,000                     every tick with bid & ask
``tick_rate_zscore``   ticks      (count - rolling mean) / rolling sd            each interval with ticks
``rsi``                bars       Wilder RSI of closes, 0..100                   each confirmed bar
``bollinger_pctb``     bars       (close - lower) / (upper - lower)              each confirmed bar
=====================  =========  =============================================  ========================

(The first two: the last of those per interval instead, with ``conflate_ms``; below.)

One module per kind, named after it (``actors/signals/spread_bps.py``, ...); the shared
machinery (:class:`~actors.signals.base.TickSignal`, :class:`~actors.signals.base.BarSignal`)
is in ``actors/signals/base.py``. Formulas and sources are in ``actors/indicators.py``.
Shared rules:

* **Keyed state.** Every operator is ``keyed`` (run with ``key: symbol`` when
  ``parallelism > 1``). State is per (provider, symbol) for tick signals and per symbol
  for bar signals. Bars carry no provider, so bar signals are stamped with their
  ``provider`` param (default ``tickgraph``).
* **One row per (provider, symbol, ts, name).** Where several ticks share a timestamp
  the row holds the value after the last of them in stream order (the source's
  sequence order). Tick signals therefore hold each value until the watermark passes
  its ``ts`` (a watermark ``w`` allows more ticks at ``ts == w``), then emit it once;
  end-of-stream emits the rest. In a replay that is one batch of latency.
* **Conflation** (``conflate_ms: N`` on ``vwap_deviation_bps`` and ``spread_bps``;
  default 0 = off): per key, only the last of those rows in each epoch-aligned interval
  ``[i * N, (i + 1) * N)`` ms is emitted, with its own ``ts`` and value, once the
  watermark passes the interval's end. The conflated rows are therefore a subset of
  the unconflated ones (same ``ts``, same value), a fraction of them to store; the
  running state (session VWAP) still takes every tick. ``metadata`` gains
  ``"conflate_ms"``.
* **Quotes.** ``spread_bps`` takes every tick whose bid and ask are both present,
  finite and > 0, trades included: a LOBSTER execution row carries the book *after*
  the execution, which is a genuine top-of-book update (an execution that empties the
  best level moves the spread). Tardis trades carry no book and are not quotes.
* **Late ticks** (``ts`` < the watermark; for ``tick_rate_zscore``: in an interval
  already scored) are not applied, under either late policy: a signal row is what a
  consumer saw at that point of the stream, and re-deriving running state (session
  VWAP, rolling windows) from a late tick would silently rewrite later rows. Each is
  emitted on ``quarantine`` (reason ``late``) and counted. The bar engine's own late
  policy still applies to bars.
* **Corrected bars.** ``rsi`` and ``bollinger_pctb`` read rows with status
  ``confirmed`` and ``corrected`` of one timeframe (``forming`` rows are ignored). A
  corrected (or out-of-order) bar replaces that bar's close in a per-symbol history of
  at least the last ``history_bars`` bars, and the signal is recomputed from that bar to the
  newest and re-emitted (the store upserts in place). A correction older than the
  history is quarantined (reason ``correction_too_old``).
* ``score`` is a normalized strength where one is natural: RSI ``(rsi - 50) / 50`` in
  [-1, 1]; %b ``2 * %b - 1`` (-1 at the lower band, +1 at the upper); null otherwise.
* ``metadata`` is a JSON object per row with the parameters that produced it.
* Vectorized: per batch a few numpy passes, plus loops over the keys or intervals of
  the batch (never over ticks).
"""

from actors.signals.bollinger_pctb import BollingerParams, BollingerPctB
from actors.signals.rsi import Rsi, RsiParams
from actors.signals.spread_bps import SpreadBps, SpreadParams
from actors.signals.tick_rate_zscore import TickRateParams, TickRateZScore
from actors.signals.vwap_deviation_bps import VwapDeviationBps, VwapDeviationParams

__all__ = [
    "VwapDeviationBps",
    "SpreadBps",
    "TickRateZScore",
    "Rsi",
    "BollingerPctB",
    "VwapDeviationParams",
    "SpreadParams",
    "TickRateParams",
    "RsiParams",
    "BollingerParams",
]
