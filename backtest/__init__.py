"""Backtests on the graph: run configs and hashes, metrics, validation, artifacts, sweeps, HTTP.

``config.py`` (RunConfig), ``hashing.py`` (canonical JSON, run hash), ``graphs.py``
(a RunConfig as a graph of ``config/backtest.yaml``), ``engine.py`` (the same
operators' sleeves over whole series, for sweeps and validation), ``metrics.py``,
``validation.py``, ``artifacts.py`` (the files of a run), ``manifest.py`` (manifest,
chain, retention, verify), ``report.py`` (report.html), ``runner.py`` (one run,
idempotent), ``sweep.py`` (grids on Ray), ``api.py`` (aiohttp routes).
"""
