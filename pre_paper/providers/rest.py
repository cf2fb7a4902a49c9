"""What the REST backfill providers share: bounded aiohttp GETs with retries, keys kept out of text.

A fetch runs in its own short-lived event loop (:func:`run_sync`): the ``pre_paper``
operator is synchronous, and a backfill is rare (only when a gap is found). Each GET
has a total timeout; HTTP 429 and 5xx are retried up to ``retries`` times after
``Retry-After`` seconds (capped at ``max_wait_s``) or an exponential delay; any other
non-200 answer, invalid JSON or a network error becomes a :class:`ProviderError` naming
the provider, the status and the URL *without* its query (keys travel in headers, and
every message is redacted of the provider's secrets anyway).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Awaitable, Iterable, Mapping
from typing import Any, TypeVar

import aiohttp
import orjson
from pydantic import BaseModel, ConfigDict, Field

from actors.live.keys import Secret, redact
from pre_paper.providers.base import ProviderError

__all__ = ["RestSpec", "run_sync", "get_json"]

T = TypeVar("T")


class RestSpec(BaseModel):
    """Settings every REST provider entry has.

    Attributes:
        url: the provider's REST base URL (a local server in tests).
        keys_file: a ``keys.env`` file consulted for key variables missing from the
            environment (relative to the graph file), as for the live feeds.
        symbols: symbol -> the provider's spelling (``BTCUSDT: "BINANCE:BTCUSDT"``).
        timeout_s: limit of one GET, seconds.
        retries: extra attempts after HTTP 429 / 5xx.
        max_wait_s: longest wait between attempts (a larger ``Retry-After`` is cut).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    url: str
    keys_file: str | None = None
    symbols: dict[str, str] = Field(default_factory=dict)
    timeout_s: float = Field(10.0, gt=0, le=300)
    retries: int = Field(2, ge=0, le=10)
    max_wait_s: float = Field(5.0, ge=0, le=120)


def run_sync(coroutine: Awaitable[T]) -> T:
    """Run ``coroutine`` to completion from synchronous code (in a worker thread if this
    thread already runs an event loop)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


async def get_json(
    session: aiohttp.ClientSession,
    provider: str,
    url: str,
    params: Mapping[str, Any],
    headers: Mapping[str, str],
    *,
    secrets: Iterable[Secret] = (),
    timeout_s: float = 10.0,
    retries: int = 2,
    max_wait_s: float = 5.0,
) -> Any:
    """GET ``url`` with ``params`` and ``headers``; the decoded JSON body.

    Raises:
        ProviderError: non-200 after the retries, invalid JSON, timeout or network
            error (``"<provider>: HTTP 403 from https://host/path"``, redacted).
    """
    secrets = list(secrets)
    attempt = 0
    while True:
        try:
            async with session.get(url, params=dict(params), headers=dict(headers), timeout=aiohttp.ClientTimeout(total=timeout_s)) as response:
                body = await response.read()
                status = response.status
                retry_after = response.headers.get("Retry-After")
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            text = str(exc) or type(exc).__name__
            raise ProviderError(redact(f"{provider}: GET {url} failed: {type(exc).__name__}: {text}", secrets)) from None
        if status == 200:
            try:
                return orjson.loads(body)
            except orjson.JSONDecodeError:
                raise ProviderError(f"{provider}: GET {url} answered 200 with a body that is not JSON") from None
        if (status == 429 or status >= 500) and attempt < retries:
            try:
                wait = float(retry_after) if retry_after is not None else 0.25 * 2**attempt
            except ValueError:
                wait = 0.25 * 2**attempt
            await asyncio.sleep(min(max(wait, 0.0), max_wait_s))
            attempt += 1
            continue
        detail = body[:200].decode("utf-8", errors="replace").strip()
        raise ProviderError(redact(f"{provider}: HTTP {status} from {url}" + (f": {detail}" if detail else ""), secrets))
