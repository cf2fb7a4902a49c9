"""``GET /metrics``: the service's own metrics (prometheus_client) and the graph actors' (Ray).

Two sources, one Prometheus text document:

* **The service** (this process, its own ``CollectorRegistry``), prefixed ``tickgraph_``:
  ``tickgraph_http_requests_total{method,route,status}``,
  ``tickgraph_http_request_duration_seconds{route}``, ``tickgraph_ws_clients``,
  ``tickgraph_ws_messages_sent_total``, ``tickgraph_ws_slow_client_disconnects_total``
  (clients closed with 1008), ``tickgraph_hub_bars_received_total``, and the bar cache's
  ``tickgraph_bar_cache_{hits,misses,evictions}_total``.
* **The graph actors**, recorded with ``ray.util.metrics`` (``graph/telemetry.py``) and
  exported by every Ray node's metrics agent as ``ray_<name>`` with Ray's own labels
  (worker, node, session, ...). :func:`merge_ray_metrics` keeps our families, drops the
  ``ray_`` prefix and Ray's labels, and sums the series that then coincide (the same
  counter from several workers); gauges keep the largest value. The agent reports
  every ``metrics_report_interval_ms`` (Ray's default 10 s), so actor counters trail
  the graph by up to that much.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families

from graph.telemetry import _SPECS as ACTOR_METRICS

__all__ = ["ServiceMetrics", "merge_ray_metrics", "RAY_LABELS", "CONTENT_TYPE"]

_log = logging.getLogger("tickgraph.service")

#: Prometheus text exposition format 0.0.4.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: Labels Ray's exporter adds to every sample; dropped when re-exporting.
RAY_LABELS = frozenset({"Component", "NodeAddress", "SessionName", "Version", "WorkerId", "JobId", "instance", "job"})


class ServiceMetrics:
    """The service's prometheus_client metrics, in a registry of their own.

    Args:
        cache: a ``db.cache.BarCache`` whose counters are exported (or None).
    """

    def __init__(self, cache: Any = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("tickgraph_http_requests", "HTTP requests answered", ["method", "route", "status"], registry=r)
        self.duration = Histogram("tickgraph_http_request_duration_seconds", "HTTP request handling time", ["route"], registry=r)
        self.ws_clients = Gauge("tickgraph_ws_clients", "WebSocket clients connected", registry=r)
        self.ws_sent = Counter("tickgraph_ws_messages_sent", "WebSocket messages sent to clients", registry=r)
        self.ws_slow = Counter(
            "tickgraph_ws_slow_client_disconnects", "WebSocket clients closed with 1008 for not reading", registry=r
        )
        self.hub_bars = Counter("tickgraph_hub_bars_received", "Bar rows received by the WebSocket hub", registry=r)
        if cache is not None:
            r.register(_CacheCollector(cache))

    def render(self, ray_text: str | None = None) -> bytes:
        """This registry as Prometheus text, followed by the merged actor metrics (if any)."""
        own = generate_latest(self.registry)
        if not ray_text:
            return own
        return own + ray_text.encode()


class _CacheCollector:
    """Exports a BarCache's counters (``CacheStats``) at scrape time."""

    def __init__(self, cache: Any) -> None:
        self.cache = cache

    def collect(self) -> Iterable[Metric]:
        """The cache's hits, misses and evictions as counters, read now."""
        stats = self.cache.stats()
        for name in ("hits", "misses", "evictions"):
            family = CounterMetricFamily(f"tickgraph_bar_cache_{name}", f"Bar cache blocks: {name}")
            family.add_metric([], getattr(stats, name))
            yield family

    def describe(self) -> Iterable[Metric]:
        """Nothing at registration (the families are built at scrape time)."""
        return []


def merge_ray_metrics(texts: Iterable[str]) -> str:
    """Our actor metrics from Ray nodes' Prometheus texts, re-exported under their own names.

    Args:
        texts: the ``/metrics`` documents of Ray's metrics agents (one per node).

    Returns:
        Prometheus text with one family per metric of ``graph/telemetry.py`` present;
        empty when none is. Unparseable documents are skipped (logged).
    """
    families: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for text in texts:
        try:
            parsed = list(text_string_to_metric_families(text))
        except ValueError as exc:
            _log.warning("skipping a Ray metrics document that does not parse: %s", exc)
            continue
        for family in parsed:
            name = family.name.removeprefix("ray_")
            base = name if name in ACTOR_METRICS else f"{name}_total"
            if base not in ACTOR_METRICS:
                continue
            out = families.setdefault(name, Metric(name, family.documentation, family.type))
            merged = values.setdefault(name, {})
            for sample in family.samples:
                labels = tuple(sorted((k, v) for k, v in sample.labels.items() if k not in RAY_LABELS and not k.startswith("otel_")))
                key = (sample.name.removeprefix("ray_"), labels)
                if family.type == "gauge":
                    merged[key] = max(merged.get(key, sample.value), sample.value)
                else:
                    merged[key] = merged.get(key, 0.0) + sample.value
    registry = CollectorRegistry(auto_describe=False)
    collected = []
    for name, family in families.items():
        for (sample_name, labels), value in sorted(values[name].items()):
            family.add_sample(sample_name, dict(labels), value)
        collected.append(family)
    if not collected:
        return ""
    registry.register(_Static(collected))
    return generate_latest(registry).decode()


class _Static:
    """A collector returning fixed families (for rendering merged samples)."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        """The fixed families."""
        return self.families
