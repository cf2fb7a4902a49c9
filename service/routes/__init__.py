"""The service's routes, one module per resource; each has ``install(app)``.

==================  ===================================================================
module              routes
==================  ===================================================================
``bars``            ``GET /api/v1/bars/{symbol}/{timeframe}`` (JSON or canonical CSV)
``ws``              ``WS /ws/bars/{symbol}/{timeframe}``
``replay``          ``/v1/replay/ticks`` (POST, GET list), ``/v1/replay/ticks/{run_id}`` (GET, DELETE)
``signals``         ``GET /v1/signals``, ``GET /v1/signals/latest``
``exports``         ``/v1/exports`` (POST, GET list), ``/v1/exports/{run_id}``, ``.../file``
``parity``          ``GET /api/v1/parity/export/...``, ``/v1/parity/streams/...``, ``/v1/parity/jobs/{run_id}``
``metrics``         ``GET /metrics``, ``GET /healthz``
``ingest``          ``WS /internal/v1/ingest`` (graphs publishing bars into the service)
``cockpit``         ``GET /`` and ``/static/...``; ``GET /openapi.json``
==================  ===================================================================
"""
