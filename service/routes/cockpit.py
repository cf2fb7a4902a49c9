"""The cockpit page (``GET /``, ``/static/...``, no build step) and ``GET /openapi.json``."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from service.errors import json_response
from service.openapi import OPERATIONS, build_document

__all__ = ["install", "STATIC_DIR"]

#: The cockpit's files: index.html, cockpit.js, cockpit.css, vendor/ (lightweight-charts).
STATIC_DIR = Path(__file__).resolve().parent.parent / "static"


async def index(request: web.Request) -> web.FileResponse:
    """The cockpit page."""
    return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


async def openapi(request: web.Request) -> web.Response:
    """The OpenAPI 3.1 document of every documented route."""
    return json_response(build_document(request.app[OPERATIONS]))


def install(app: web.Application) -> None:
    """Mount the cockpit and the OpenAPI document."""
    app.router.add_get("/", index)
    app.router.add_get("/openapi.json", openapi)
    app.router.add_static("/static/", STATIC_DIR, follow_symlinks=False)
