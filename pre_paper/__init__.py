"""Pre-paper runners: a promoted backtest runs on live bars, and speaks only when its history is sufficient.

The ``pre_paper`` node kind (``actors/pre_paper.py``) takes its whole configuration from
one backtest's ``run_manifest.json`` (:mod:`pre_paper.manifest`), checks the history its
strategy needs against the instrument's trading calendar (:mod:`pre_paper.calendars`,
:mod:`pre_paper.history`), fills gaps from the history cache and the providers
(:mod:`pre_paper.cache`, :mod:`pre_paper.loader`, :mod:`pre_paper.providers`), runs the
backtest's own strategy class while the history is ``SUFFICIENT`` (:mod:`pre_paper.runner`)
and records NO-SIGNALS with the reason otherwise. The ``pre_paper_audit`` sink writes the
run's audit artifacts (:mod:`pre_paper.artifacts`).
"""

from pre_paper.history import DateRange, HistoryCheckResult, HistoryStatus, required_bars
from pre_paper.loader import ensure_history

__all__ = ["DateRange", "HistoryCheckResult", "HistoryStatus", "ensure_history", "required_bars"]
