"""The backtests' ``/runs`` and ``/presets`` in the service: routed by ``backtest/api.py``,
documented here in the service's OpenAPI document (``service/openapi.py``).

The handlers, their bodies and their error shape are the backtest package's
(``backtest/api.py``; the same ``{"error": {"field", "message"}}`` as the service's);
this module mounts them over ``ServiceConfig.backtest_root`` and records one
:class:`~service.openapi.Operation` per route, so ``/openapi.json`` describes them and
the fuzz test (``tests/service/test_service_fuzz.py``) reaches them.
"""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel, ConfigDict

from service.app import STATE
from service.openapi import OPERATIONS, Operation

__all__ = ["install"]


class RunHashPath(BaseModel):
    """``{hash}``: a run hash (64 hex digits)."""

    model_config = ConfigDict(extra="forbid")
    hash: str


class ArtifactPath(RunHashPath):
    """``{hash}`` and ``{name}``: one hashed artifact of a run."""

    name: str


class PresetPath(BaseModel):
    """``{id}``: a preset id (the hash of its config)."""

    model_config = ConfigDict(extra="forbid")
    id: str


def operations() -> list[Operation]:
    """One documented operation per backtest route."""
    from backtest.api import ArtifactList, Preset, PresetList, PresetRequest, RunAccepted, RunDetail, RunList
    from backtest.config import RunConfig

    tag = "backtests"
    return [
        Operation("POST", "/runs", "Run a backtest (idempotent by run hash; 200 existing, 202 started)", tag,
                  body=RunConfig, response=RunAccepted, status=202, errors=(400, 422)),
        Operation("GET", "/runs", "Every backtest run, newest first", tag, response=RunList),
        Operation("GET", "/runs/{hash}", "A run's status, manifest and metrics", tag, path_model=RunHashPath,
                  response=RunDetail, errors=(404,)),
        Operation("GET", "/runs/{hash}/artifacts", "A run's hashed artifacts", tag, path_model=RunHashPath,
                  response=ArtifactList, errors=(404,)),
        Operation("GET", "/runs/{hash}/artifacts/{name}", "One artifact's bytes", tag, path_model=ArtifactPath,
                  content="application/octet-stream", errors=(404,)),
        Operation("GET", "/runs/{hash}/events", "A run's progress as Server-Sent Events", tag, path_model=RunHashPath,
                  content="text/event-stream", errors=(404,)),
        Operation("POST", "/presets", "Store a named config (idempotent by hash; 201 new, 200 same)", tag,
                  body=PresetRequest, response=Preset, status=201, errors=(400, 422)),
        Operation("GET", "/presets", "Stored presets", tag, response=PresetList),
        Operation("GET", "/presets/{id}", "One preset", tag, path_model=PresetPath, response=Preset, errors=(404,)),
        Operation("DELETE", "/presets/{id}", "Delete a preset", tag, path_model=PresetPath, status=204, errors=(404,)),
    ]  # fmt: skip


def install(app: web.Application) -> None:
    """Mount the backtest routes over ``config.backtest_root`` (none when it is None)."""
    config = app[STATE].config
    if config.backtest_root is None:
        return
    from backtest.api import add_backtest_routes

    add_backtest_routes(app, root=config.backtest_root, base_dir=config.backtest_base_dir)
    app[OPERATIONS].extend(operations())
