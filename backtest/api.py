"""HTTP routes for backtests, added to an aiohttp application (the service mounts them).

    add_backtest_routes(app, root=Path("artifacts/backtests"))

=======  =========================  ==========================================================
POST     /runs                      a RunConfig; idempotent: the same config returns the same
                                    ``run_hash`` (200 existing, 202 started or still running)
GET      /runs                      every run in the chain (newest first) and the running ones
GET      /runs/{hash}               status, manifest and metrics (404 unknown)
GET      /runs/{hash}/artifacts     the hashed artifacts: name, size, sha256
GET      /runs/{hash}/artifacts/{name}  one artifact's bytes
GET      /runs/{hash}/events        Server-Sent Events: ``event: progress`` with ``{"step",
                                    "progress", "detail"}`` (startup, dataload, backtest,
                                    validation, done), then ``event: end``
POST     /presets                   ``{"name", "config"}``; idempotent by hash (201 new, 200 same)
GET      /presets, /presets/{id}    stored presets
DELETE   /presets/{id}              204 (404 unknown)
=======  =========================  ==========================================================

Every request and response body is a pydantic model below; every error is
``{"error": {"field": "strategy.params.slow", "message": "..."}}`` with status 400 (bad
JSON), 404 (unknown run or preset) or 422 (an invalid config: the field path of its
first problem). Runs execute in a worker thread with the in-process backend unless the
service passes ``backend="ray"`` (with Ray initialised); their events are kept in memory
while running and in the run's ``events.jsonl`` afterwards.
"""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict

from backtest.config import ConfigError, parse_run_config
from backtest.hashing import canonical_json, sha256_hex
from backtest.manifest import HASHED, MANIFEST, read_chain

__all__ = [
    "ErrorDetail", "ErrorBody", "RunAccepted", "RunSummary", "RunDetail", "ArtifactFile", "ArtifactList",
    "PresetRequest", "Preset", "PresetList", "RunList", "add_backtest_routes",
]  # fmt: skip


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorDetail(_Body):
    """Where and what: ``field`` is a config path (``strategy.params.slow``), ``<body>`` or a URL part."""

    field: str
    message: str


class ErrorBody(_Body):
    """The one error shape of every route."""

    error: ErrorDetail


class RunAccepted(_Body):
    """``POST /runs``: the run's hash and whether it is ``completed`` or ``running``; ``created`` if this call started it."""

    run_hash: str
    status: str
    created: bool


class RunSummary(_Body):
    """One run in ``GET /runs``."""

    run_hash: str
    status: str
    strategy: dict[str, Any] | None = None
    symbols: list[str] | None = None
    sharpe: float | None = None
    total_return: float | None = None


class RunList(_Body):
    """``GET /runs``."""

    runs: list[RunSummary]


class RunDetail(_Body):
    """``GET /runs/{hash}``: ``error`` is set when a run failed."""

    run_hash: str
    status: str
    manifest: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None
    error: str | None = None


class ArtifactFile(_Body):
    """One hashed artifact."""

    name: str
    size: int
    sha256: str


class ArtifactList(_Body):
    """``GET /runs/{hash}/artifacts``."""

    run_hash: str
    files: list[ArtifactFile]


class PresetRequest(_Body):
    """``POST /presets``: a name and a run config (validated like ``POST /runs``)."""

    name: str
    config: dict[str, Any]


class Preset(_Body):
    """A stored preset; ``preset_id`` = SHA-256 of its canonical ``{"config", "name"}``."""

    preset_id: str
    name: str
    config: dict[str, Any]


class PresetList(_Body):
    """``GET /presets``."""

    presets: list[Preset]


@dataclass
class _Live:
    """A run started by this service: its events so far and who is listening."""

    events: list[dict[str, Any]] = field(default_factory=list)
    done: bool = False
    error: str | None = None
    listeners: set[asyncio.Queue] = field(default_factory=set)

    def publish(self, event: dict[str, Any] | None) -> None:
        """Record ``event`` and hand it to every listener (None: the run ended)."""
        if event is not None:
            self.events.append(event)
        for queue in self.listeners:
            queue.put_nowait(event)


def _error(status: int, field_name: str, message: str) -> web.Response:
    body = ErrorBody(error=ErrorDetail(field=field_name, message=message))
    return web.json_response(body.model_dump(), status=status)


def _config_error(exc: ConfigError) -> web.Response:
    first = exc.problems[0] if exc.problems else "<root>: invalid"
    field_name, _, message = first.partition(": ")
    return _error(422, field_name, message)


def add_backtest_routes(
    app: web.Application,
    *,
    root: Path,
    base_dir: Path | None = None,
    backend: str = "local",
    parallelism: int = 1,
    workers: int = 1,
) -> None:
    """Add the backtest routes (module docstring) to ``app``.

    Args:
        app: the aiohttp application.
        root: the artifacts directory (runs, chain, ``presets/``).
        base_dir: where relative data paths in posted configs resolve (default cwd).
        backend: ``local`` (default) or ``ray`` (the service has called ``ray.init``).
        parallelism: shards of each run's keyed nodes.
        workers: runs computed at the same time (threads).
    """
    from backtest.runner import prepare, run_backtest

    root, base_dir = Path(root).resolve(), Path(base_dir or Path.cwd()).resolve()
    executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="backtest")
    live: dict[str, _Live] = {}
    presets = root / "presets"

    async def body(request: web.Request) -> tuple[Any, web.Response | None]:
        """The request's JSON body, or a 400 error response."""
        try:
            return await request.json(), None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return None, _error(400, "<body>", f"invalid JSON: {exc}")

    def status_of(run_hash: str) -> str | None:
        """``completed``, ``running``, ``failed`` or None (unknown)."""
        if (root / run_hash / MANIFEST).is_file():
            return "completed"
        state = live.get(run_hash)
        if state is None:
            return None
        return "failed" if state.error else "running"

    async def post_run(request: web.Request) -> web.Response:
        """``POST /runs``."""
        doc, failure = await body(request)
        if failure:
            return failure
        loop = asyncio.get_running_loop()
        try:
            config = parse_run_config(doc, "POST /runs")
            prepared = await loop.run_in_executor(None, prepare, config, base_dir)
        except ConfigError as exc:
            return _config_error(exc)
        run_hash = prepared.run_hash
        status = status_of(run_hash)
        if status == "completed":
            return web.json_response(RunAccepted(run_hash=run_hash, status="completed", created=False).model_dump())
        if status == "running":
            return web.json_response(RunAccepted(run_hash=run_hash, status="running", created=False).model_dump(), status=202)
        state = live[run_hash] = _Live()

        def on_event(step: str, progress: float, detail: str) -> None:
            """Forward a run's event from its worker thread to the event loop."""
            event = {"step": step, "progress": round(float(progress), 6), "detail": detail}
            loop.call_soon_threadsafe(state.publish, event)

        def work() -> None:
            """Run the backtest (worker thread); a failure becomes the last event."""
            try:
                run_backtest(config, root=root, base_dir=base_dir, backend=backend, parallelism=parallelism, on_event=on_event)
            except Exception as exc:  # reported on GET /runs/{hash} and as the last event
                state.error = f"{type(exc).__name__}: {exc}"
                loop.call_soon_threadsafe(state.publish, {"step": "failed", "progress": 1.0, "detail": state.error})
            finally:
                state.done = True
                loop.call_soon_threadsafe(state.publish, None)

        loop.run_in_executor(executor, work)
        return web.json_response(RunAccepted(run_hash=run_hash, status="running", created=True).model_dump(), status=202)

    def summary(run_hash: str) -> RunSummary:
        """The :class:`RunSummary` of a run."""
        status = status_of(run_hash) or "removed"
        if status != "completed":
            return RunSummary(run_hash=run_hash, status=status)
        manifest = json.loads((root / run_hash / MANIFEST).read_text(encoding="utf-8"))
        book = json.loads((root / run_hash / "metrics.json").read_text(encoding="utf-8"))["book"]
        return RunSummary(run_hash=run_hash, status=status, strategy=manifest["strategy"], symbols=manifest["data"]["symbols"],
                          sharpe=book.get("sharpe"), total_return=book.get("total_return"))  # fmt: skip

    async def list_runs(request: web.Request) -> web.Response:
        """``GET /runs``."""
        hashes = [e.run_hash for e in reversed(read_chain(root)) if (root / e.run_hash).is_dir()]
        hashes = [h for h in live if h not in hashes and status_of(h) != "completed"] + hashes
        return web.json_response(RunList(runs=[summary(h) for h in hashes]).model_dump())

    def known(run_hash: str) -> web.Response | None:
        """A 404 response for an unknown run, else None."""
        if status_of(run_hash) is None:
            return _error(404, "hash", f"no run {run_hash!r} in {root}")
        return None

    async def get_run(request: web.Request) -> web.Response:
        """``GET /runs/{hash}``."""
        run_hash = request.match_info["hash"]
        if (missing := known(run_hash)) is not None:
            return missing
        status = status_of(run_hash)
        detail = RunDetail(run_hash=run_hash, status=status, error=live[run_hash].error if run_hash in live else None)
        if status == "completed":
            detail.manifest = json.loads((root / run_hash / MANIFEST).read_text(encoding="utf-8"))
            detail.metrics = json.loads((root / run_hash / "metrics.json").read_text(encoding="utf-8"))
        return web.json_response(detail.model_dump())

    async def get_artifacts(request: web.Request) -> web.Response:
        """``GET /runs/{hash}/artifacts``."""
        run_hash = request.match_info["hash"]
        if (missing := known(run_hash)) is not None:
            return missing
        if status_of(run_hash) != "completed":
            return _error(404, "hash", f"run {run_hash!r} has no artifacts yet (status {status_of(run_hash)})")
        manifest = json.loads((root / run_hash / MANIFEST).read_text(encoding="utf-8"))
        return web.json_response(ArtifactList(run_hash=run_hash, files=manifest["files"]).model_dump())

    async def get_artifact(request: web.Request) -> web.StreamResponse:
        """``GET /runs/{hash}/artifacts/{name}``."""
        run_hash, name = request.match_info["hash"], request.match_info["name"]
        if status_of(run_hash) != "completed":
            return _error(404, "hash", f"no completed run {run_hash!r}")
        if name not in (*HASHED, MANIFEST):
            return _error(404, "name", f"{name!r} is not an artifact (artifacts: {', '.join(HASHED)})")
        return web.FileResponse(root / run_hash / name)

    async def events(request: web.Request) -> web.StreamResponse:
        """``GET /runs/{hash}/events`` (Server-Sent Events)."""
        run_hash = request.match_info["hash"]
        if (missing := known(run_hash)) is not None:
            return missing
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)

        async def send(event: dict[str, Any]) -> None:
            """Write one ``progress`` event."""
            await response.write(f"event: progress\ndata: {json.dumps(event, sort_keys=True)}\n\n".encode())

        state = live.get(run_hash)
        if state is not None and not state.done:
            queue: asyncio.Queue = asyncio.Queue()
            state.listeners.add(queue)
            try:
                for event in list(state.events):
                    await send(event)
                while True:
                    event = await queue.get()
                    if event is None:
                        break
                    await send(event)
            finally:
                state.listeners.discard(queue)
        else:
            log = root / run_hash / "events.jsonl"
            stored = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()] if log.is_file() else list(state.events if state else [])
            for event in stored:
                await send(event)
        await response.write(b"event: end\ndata: {}\n\n")
        await response.write_eof()
        return response

    def preset_of(path: Path) -> Preset:
        """The stored preset at ``path``."""
        return Preset.model_validate_json(path.read_text(encoding="utf-8"))

    async def post_preset(request: web.Request) -> web.Response:
        """``POST /presets``."""
        doc, failure = await body(request)
        if failure:
            return failure
        try:
            wanted = PresetRequest.model_validate(doc)
        except Exception as exc:  # pydantic.ValidationError: name its first field
            errors = getattr(exc, "errors", lambda: [{"loc": ("<body>",), "msg": str(exc)}])()
            return _error(422, ".".join(str(p) for p in errors[0]["loc"]), errors[0]["msg"])
        try:
            from backtest.runner import canonical_config

            config = canonical_config(parse_run_config(wanted.config, "POST /presets"))
        except ConfigError as exc:
            failure = _config_error(exc)
            payload = json.loads(failure.body)
            payload["error"]["field"] = f"config.{payload['error']['field']}"
            return web.json_response(payload, status=422)
        preset_id = sha256_hex(canonical_json({"config": config, "name": wanted.name}))
        path = presets / f"{preset_id}.json"
        created = not path.is_file()
        if created:
            presets.mkdir(parents=True, exist_ok=True)
            path.write_text(Preset(preset_id=preset_id, name=wanted.name, config=config).model_dump_json(), encoding="utf-8")
        return web.json_response(preset_of(path).model_dump(), status=201 if created else 200)

    def preset_path(request: web.Request) -> tuple[Path, web.Response | None]:
        """The file of ``{id}``, or a 404 response."""
        preset_id = request.match_info["id"]
        path = presets / f"{preset_id}.json"
        if not preset_id.isalnum() or not path.is_file():
            return path, _error(404, "id", f"no preset {preset_id!r}")
        return path, None

    async def list_presets(request: web.Request) -> web.Response:
        """``GET /presets``."""
        items = [preset_of(p) for p in sorted(presets.glob("*.json"))] if presets.is_dir() else []
        return web.json_response(PresetList(presets=items).model_dump())

    async def get_preset(request: web.Request) -> web.Response:
        """``GET /presets/{id}``."""
        path, missing = preset_path(request)
        return missing or web.json_response(preset_of(path).model_dump())

    async def delete_preset(request: web.Request) -> web.Response:
        """``DELETE /presets/{id}``."""
        path, missing = preset_path(request)
        if missing:
            return missing
        path.unlink()
        return web.Response(status=204)

    async def close_executor(app: web.Application) -> None:
        """Wait for running backtests when the app shuts down."""
        executor.shutdown(wait=True)

    app.on_cleanup.append(close_executor)
    app.router.add_post("/runs", post_run)
    app.router.add_get("/runs", list_runs)
    app.router.add_get("/runs/{hash}", get_run)
    app.router.add_get("/runs/{hash}/artifacts", get_artifacts)
    app.router.add_get("/runs/{hash}/artifacts/{name}", get_artifact)
    app.router.add_get("/runs/{hash}/events", events)
    app.router.add_post("/presets", post_preset)
    app.router.add_get("/presets", list_presets)
    app.router.add_get("/presets/{id}", get_preset)
    app.router.add_delete("/presets/{id}", delete_preset)
