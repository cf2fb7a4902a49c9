"""One redaction for every line tickgraph writes: keys and tokens never reach output or logs.

A secret (an API key, a database password, the parity HMAC key, the API token) is
registered once per process with :func:`register_secret`; the values of the well-known
variables (:data:`SECRET_VARIABLES`) are registered from the environment by
:func:`install_redaction`, which every entry point calls (``run.py``, and each actor's
host when it starts, so Ray's worker processes redact too). From then on:

* every log record, of any logger in the process, has its message redacted when it is
  created (a ``logging`` record factory), so a provider that echoes the key back in an
  error (``Invalid API key <key>``) logs ``Invalid API key ***`` to stderr and to Ray's
  worker logs alike;
* :func:`redact` is applied to every error message, summary and record the driver prints
  (``NodeFailure`` messages, ``run.py`` errors, the run summary).

Every form a secret takes in text is replaced: as is, URL-quoted (``quote``,
``quote_plus``). Values shorter than :data:`MIN_SECRET_LENGTH` are not registered: they
would blank out ordinary words.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

__all__ = ["SECRET_VARIABLES", "MIN_SECRET_LENGTH", "register_secret", "redact", "install_redaction", "secret_forms"]

#: Environment variables whose values are secrets wherever tickgraph runs.
SECRET_VARIABLES = (
    "FINNHUB_API_KEY",
    "APCA_API_KEY_ID",
    "APCA_API_SECRET_KEY",
    "TICKGRAPH_PARITY_KEY",
    "TICKGRAPH_API_TOKEN",
    "PGPASSWORD",
)
#: Shortest value treated as a secret (characters).
MIN_SECRET_LENGTH = 4
_MASK = "***"
_forms: list[str] = []  # longest first
_lock = threading.Lock()
_installed = False


def secret_forms(value: str) -> list[str]:
    """``value`` as it may appear in text: raw and URL-quoted, longest first."""
    if not value:
        return []
    return sorted({value, quote(value, safe=""), quote_plus(value)}, key=len, reverse=True)


def register_secret(value: str | None) -> None:
    """Redact ``value`` (and its URL-quoted forms) from everything this process writes from now on."""
    if not value or len(value) < MIN_SECRET_LENGTH:
        return
    with _lock:
        known = set(_forms)
        _forms.extend(form for form in secret_forms(value) if form not in known)
        _forms.sort(key=len, reverse=True)


def redact(text: str, extra: Iterable[str] = ()) -> str:
    """``text`` with every registered secret (and every value in ``extra``) replaced by ``***``."""
    if not text:
        return text
    forms = _forms
    more = [form for value in extra for form in secret_forms(value) if value]
    for form in (sorted(more, key=len, reverse=True) + forms) if more else forms:
        if form in text:
            text = text.replace(form, _MASK)
    return text


def _redacting_factory(previous):
    def factory(*args, **kwargs) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        if _forms:
            try:
                message = record.getMessage()
            except Exception:  # a malformed log call: leave it to logging's own error report
                return record
            cleaned = redact(message)
            if cleaned != message or record.args:
                record.msg, record.args = cleaned, None
            if record.exc_info and not record.exc_text:
                record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
                record.exc_info = None
        return record

    return factory


def install_redaction(environ: dict[str, str] | None = None) -> None:
    """Register the secrets in :data:`SECRET_VARIABLES` and redact every log record (idempotent).

    Args:
        environ: the environment to read (default ``os.environ``).
    """
    global _installed
    env = os.environ if environ is None else environ
    for name in SECRET_VARIABLES:
        register_secret(env.get(name))
    with _lock:
        if _installed:
            return
        logging.setLogRecordFactory(_redacting_factory(logging.getLogRecordFactory()))
        _installed = True
