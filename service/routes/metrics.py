"""``GET /metrics`` (Prometheus text: the service's and the graph actors', see service/metrics.py)
and ``GET /healthz``."""

from __future__ import annotations

from aiohttp import web

from service.app import STATE
from service.errors import json_response
from service.metrics import CONTENT_TYPE, merge_ray_metrics
from service.models import Health
from service.openapi import Operation, add

__all__ = ["install"]


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition (format 0.0.4)."""
    state = request.app[STATE]
    ray_text = merge_ray_metrics(await state.cluster.metrics_text()) if state.cluster is not None else None
    return web.Response(body=state.metrics.render(ray_text), headers={"Content-Type": CONTENT_TYPE})


async def healthz(request: web.Request) -> web.Response:
    """Liveness: streams, clients, Ray."""
    state = request.app[STATE]
    stats = state.hub.stats()
    return json_response({"status": "ok", "streams": stats["streams"], "clients": stats["clients"],
                          "ray": state.cluster is not None})


def install(app: web.Application) -> None:
    """Mount /metrics and /healthz."""
    add(app, metrics, Operation("GET", "/metrics", "Prometheus metrics", "metrics", content="text/plain", errors=()))
    add(app, healthz, Operation("GET", "/healthz", "Liveness", "metrics", response=Health, errors=()))
