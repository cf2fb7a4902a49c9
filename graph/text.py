"""Input text made safe to show: bytes that are not UTF-8 and control characters, escaped.

Bad input rows end up in error messages, ``job_runs.error_message`` and the
``quarantine`` table's ``raw`` column, and from there on a terminal. Raw binary there
can garble a terminal (ANSI escapes, NUL) or break a log parser, so every piece of
input text shown anywhere passes through :func:`printable` (text) or
:func:`printable_bytes` (bytes): invalid UTF-8 bytes become ``\\xNN``, control
characters other than tab become ``\\xNN`` / ``\\uNNNN``, and a backslash already in the
input is kept as is (the escapes are for reading, not for round-tripping).
"""

from __future__ import annotations

import re

__all__ = ["printable", "printable_bytes", "first_invalid_utf8", "shorten"]

# C0 controls except tab, DEL, C1 controls, and the Unicode line/paragraph separators.
_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")


def _escape(match: re.Match) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """``text`` with control characters (except tab) escaped as ``\\xNN``/``\\uNNNN``."""
    return _CONTROL.sub(_escape, text)


def printable_bytes(data: bytes) -> str:
    """``data`` decoded as UTF-8, invalid bytes as ``\\xNN``, control characters escaped."""
    return printable(data.decode("utf-8", errors="backslashreplace"))


def first_invalid_utf8(data: bytes) -> tuple[int, int] | None:
    """``(offset, byte)`` of the first byte of ``data`` that is not valid UTF-8, or None."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as error:
        return error.start, data[error.start]
    return None


def shorten(text: str, limit: int = 200) -> str:
    """``text`` cut to ``limit`` characters, with ``... (N chars)`` when cut."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} chars)"
