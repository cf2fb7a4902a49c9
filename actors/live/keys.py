"""API keys for the keyed live feeds: from the environment or a ``keys.env`` file, never shown.

A key is looked up by its variable name (``FINNHUB_API_KEY``), first in the process
environment, then in the ``keys_file`` param (python-dotenv style: ``KEY=VALUE``
lines, ``#`` comments, optional ``export`` prefix and quotes; the environment wins, as
with ``load_dotenv(override=False)``). The file is parsed here (a few lines) rather
than by python-dotenv, so the project gains no dependency.

A resolved key is wrapped in :class:`Secret`, whose ``repr``/``str`` are ``***``;
:func:`redact` removes every form of a secret (raw and URL-quoted) from a text before
it is logged or raised.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from urllib.parse import quote, quote_plus

from graph.secrets import register_secret

__all__ = ["MissingKeyError", "Secret", "read_keys_file", "resolve_key", "require_key", "redact", "missing_key_message"]

_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$")


class MissingKeyError(ValueError):
    """A required API key variable is set neither in the environment nor in the keys file."""


class Secret:
    """A secret string that never shows itself: ``repr`` and ``str`` are ``***``.

    Use :meth:`reveal` at the one place the value is sent (an auth message, a URL).
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret value."""
        return self._value

    def forms(self) -> list[str]:
        """The value as it may appear in text: raw and URL-quoted, longest first."""
        value = self._value
        return sorted({value, quote(value, safe=""), quote_plus(value)}, key=len, reverse=True) if value else []

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return "***"

    def __reduce__(self):  # pickled to Ray workers as the value itself (never logged)
        return (Secret, (self._value,))


def read_keys_file(path: str | Path) -> dict[str, str]:
    """Parse a ``keys.env`` file: ``KEY=VALUE`` per line (python-dotenv style).

    Blank lines and ``#`` comment lines are skipped; ``export KEY=VALUE`` is accepted;
    a value in single or double quotes is taken verbatim inside the quotes; an
    unquoted value ends at `` #`` (an inline comment). Lines that are not assignments
    are ignored. The values are never logged.

    Raises:
        OSError: the file cannot be read.
    """
    values: dict[str, str] = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _LINE.match(line)
        if match is None:
            continue
        name, value = match.group(1), match.group(2)
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        else:
            value = value.split(" #", 1)[0].rstrip()
        values[name] = value
    return values


def resolve_key(name: str, keys_file: str | Path | None, environ: Mapping[str, str] | None = None) -> Secret | None:
    """The value of variable ``name``: environment first, then ``keys_file``; None if unset or empty."""
    env = os.environ if environ is None else environ
    value = env.get(name)
    if not value and keys_file is not None and Path(keys_file).is_file():
        value = read_keys_file(keys_file).get(name)
    register_secret(value)  # redacted from every log line and error of this process
    return Secret(value) if value else None


def missing_key_message(name: str, provider: str, keys_file: str | Path | None) -> str:
    """The error text for a missing key: names the variable and where it was looked for."""
    where = f"the environment or the keys file {keys_file}" if keys_file is not None else "the environment"
    hint = f"add a line {name}=<key> to {keys_file}" if keys_file is not None else f"set params.keys_file to a keys.env file with a line {name}=<key>"
    return f"{provider} needs the API key variable {name}, which is not set in {where}: export {name}=<key> or {hint}"


def require_key(name: str, provider: str, keys_file: str | Path | None) -> Secret:
    """:func:`resolve_key`, or :class:`MissingKeyError` naming the variable (never a value)."""
    secret = resolve_key(name, keys_file)
    if secret is None:
        raise MissingKeyError(missing_key_message(name, provider, keys_file))
    return secret


def redact(text: str, secrets: Iterable[Secret]) -> str:
    """``text`` with every form of every secret replaced by ``***``."""
    for secret in secrets:
        for form in secret.forms():
            text = text.replace(form, "***")
    return text
