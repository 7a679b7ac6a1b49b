"""Prometheus metrics of one server, and the optional ``/metrics`` HTTP endpoint.

Each `ServerMetrics` owns its own registry, so several servers in one process (tests) do not
collide. Counters and histograms are updated by the servicer; gauges of the engine's state
(table sizes, total priority, LSNs, fsync time) are read from the engine at scrape time.

Metric names:

* ``replaybuf_rpcs_total{method, code}``: finished RPCs by status code (streams once, at end).
* ``replaybuf_rpc_latency_seconds{method}``: unary RPCs per call; Append per batch (request
  received to ack); Sample and SampleStream per batch (draw and encode).
* ``replaybuf_appends_total{table}``, ``replaybuf_items_appended_total{table}``,
  ``replaybuf_duplicate_appends_total{table}``.
* ``replaybuf_sample_batches_total{table}``, ``replaybuf_items_sampled_total{table}``,
  ``replaybuf_sample_shared_batches_total{table}`` (those written into a client's shared ring).
* ``replaybuf_active_streams{method}``: open Append, Sample, SampleStream and Subscribe streams.
* ``replaybuf_table_size{table}``, ``replaybuf_table_capacity{table}``,
  ``replaybuf_table_total_priority{table}``, ``replaybuf_table_max_priority{table}``.
* ``replaybuf_table_reward_mean_5m{table}``, ``replaybuf_table_appends_per_s{table}``,
  ``replaybuf_table_correction_rate_5m{table}`` (and the other rolling keys of
  `replaybuf.rolling_metrics`), ``replaybuf_table_evicted_items{table, reason}``.
* ``replaybuf_applied_lsn``, ``replaybuf_durable_lsn``, ``replaybuf_last_lsn``.
* ``replaybuf_fsync_seconds_total`` and ``replaybuf_fsyncs_total``, when the engine reports them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = ["ServerMetrics", "EngineSnapshot", "TableSnapshot"]

_logger = logging.getLogger("replaybuf_server")

# Sub-millisecond to tens of seconds: appends fsync in ~0.1-5 ms, samples may block.
_LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)


@dataclass(frozen=True)
class TableSnapshot:
    """What the metrics read about one table."""

    name: str
    size: int
    capacity: int
    total_priority: float
    max_priority: float
    metrics: Mapping[str, float] = field(default_factory=dict)
    """Rolling metrics (`replaybuf.rolling_metrics`): ``evicted.<reason>`` keys become
    ``replaybuf_table_evicted_items{table, reason}``, the others ``replaybuf_table_<key>``."""


@dataclass(frozen=True)
class EngineSnapshot:
    """What the metrics read about the engine at one scrape."""

    tables: tuple[TableSnapshot, ...] = ()
    applied_lsn: int | None = None
    durable_lsn: int | None = None
    last_lsn: int | None = None
    fsync_seconds_total: float | None = None
    fsyncs_total: int | None = None
    extra: Mapping[str, float] = field(default_factory=dict)


class _EngineCollector(Collector):
    def __init__(self, snapshot: Callable[[], EngineSnapshot]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Any]:
        try:
            snap = self._snapshot()
        except Exception:  # noqa: BLE001 - a scrape must not fail because the engine is closing
            _logger.debug("metrics: engine snapshot failed", exc_info=True)
            return
        tables = [
            ("replaybuf_table_size", "Items present in the table.", "size"),
            ("replaybuf_table_capacity", "Most items the table holds.", "capacity"),
            ("replaybuf_table_total_priority", "Sum of p^alpha over present items.", "total_priority"),
            ("replaybuf_table_max_priority", "Largest raw priority present.", "max_priority"),
        ]
        for name, doc, attr in tables:
            fam = GaugeMetricFamily(name, doc, labels=["table"])
            for t in snap.tables:
                fam.add_metric([t.name], float(getattr(t, attr)))
            yield fam
        yield from _rolling_families(snap.tables)
        for name, doc, value in (
            ("replaybuf_applied_lsn", "The view has applied every event up to this LSN.", snap.applied_lsn),
            ("replaybuf_durable_lsn", "Every event up to this LSN is fsynced.", snap.durable_lsn),
            ("replaybuf_last_lsn", "LSN of the last event written to the log.", snap.last_lsn),
        ):
            if value is not None:
                yield GaugeMetricFamily(name, doc, value=float(value))
        if snap.fsync_seconds_total is not None:
            yield CounterMetricFamily(
                "replaybuf_fsync_seconds", "Seconds spent in log fsyncs.",
                value=float(snap.fsync_seconds_total),
            )
        if snap.fsyncs_total is not None:
            yield CounterMetricFamily(
                "replaybuf_fsyncs", "Log fsyncs performed.", value=float(snap.fsyncs_total)
            )
        for key, value in sorted(snap.extra.items()):
            yield GaugeMetricFamily(f"replaybuf_engine_{key}", f"Engine statistic {key}.", value=float(value))


def _rolling_families(tables: tuple[TableSnapshot, ...]) -> Iterator[Any]:
    evicted = GaugeMetricFamily(
        "replaybuf_table_evicted_items", "Items evicted since the engine opened, by reason.",
        labels=["table", "reason"])
    families: dict[str, GaugeMetricFamily] = {}
    for t in tables:
        for key, value in sorted(t.metrics.items()):
            if key.startswith("evicted."):
                evicted.add_metric([t.name, key[len("evicted."):]], float(value))
                continue
            fam = families.get(key)
            if fam is None:
                fam = families[key] = GaugeMetricFamily(
                    f"replaybuf_table_{key}", f"Rolling table metric {key} (reset on restart).",
                    labels=["table"])
            fam.add_metric([t.name], float(value))
    yield evicted
    yield from families.values()


class ServerMetrics:
    """The metrics of one server. Thread-safe (prometheus_client metrics are).

    Args:
        snapshot: returns the engine's current state; called at every scrape.
    """

    def __init__(self, snapshot: Callable[[], EngineSnapshot] | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.rpcs = Counter(
            "replaybuf_rpcs", "Finished RPCs by method and status code.", ["method", "code"], registry=r
        )
        self.latency = Histogram(
            "replaybuf_rpc_latency_seconds",
            "Unary RPC latency; Append and Sample per batch.",
            ["method"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.appends = Counter("replaybuf_appends", "Appended batches.", ["table"], registry=r)
        self.items_appended = Counter(
            "replaybuf_items_appended", "Appended items.", ["table"], registry=r
        )
        self.duplicate_appends = Counter(
            "replaybuf_duplicate_appends",
            "Append retries recognized by (producer_id, producer_seq); nothing was written.",
            ["table"],
            registry=r,
        )
        self.sample_batches = Counter(
            "replaybuf_sample_batches", "Sampled batches sent.", ["table"], registry=r
        )
        self.items_sampled = Counter(
            "replaybuf_items_sampled", "Sampled items sent.", ["table"], registry=r
        )
        self.sample_shared_batches = Counter(
            "replaybuf_sample_shared_batches",
            "Sampled batches written into a client's shared-memory ring instead of the message.",
            ["table"], registry=r,
        )
        self.active_streams = Gauge(
            "replaybuf_active_streams", "Open streams.", ["method"], registry=r
        )
        if snapshot is not None:
            r.register(_EngineCollector(snapshot))
        self._http: Any = None
        self._http_thread: threading.Thread | None = None
        self.http_port: int | None = None

    def observe(self, method: str, code: str, seconds: float | None) -> None:
        """Count a finished RPC; record its latency when given."""

        self.rpcs.labels(method, code).inc()
        if seconds is not None:
            self.latency.labels(method).observe(seconds)

    def serve_http(self, host: str, port: int) -> int:
        """Serve ``/metrics`` on ``host:port`` (0 = a free port) in a daemon thread; returns the port."""

        httpd, thread = start_http_server(port, addr=host, registry=self.registry)
        self._http, self._http_thread = httpd, thread
        self.http_port = int(httpd.server_address[1])
        return self.http_port

    def close(self) -> None:
        """Stop the HTTP endpoint (idempotent)."""

        httpd, self._http = self._http, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if self._http_thread is not None:
            self._http_thread.join(timeout=5)
            self._http_thread = None
