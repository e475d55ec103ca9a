"""Prometheus metrics of the aggregator and the key-holder: implementations of the core's
reporting interfaces (`securefl.telemetry`) and the HTTP endpoint that serves them.

The endpoint is plaintext HTTP bound to 127.0.0.1 by default (`--metrics-host`,
`--metrics-port`), as is common for Prometheus exporters: a scraper on the same host, or a
firewall and a TLS-terminating proxy in front of it when it is bound wider. It serves counts,
sizes and durations only (see securefl.telemetry), never an id or any data. docs/operations.md
lists the metrics."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, start_http_server

from ..telemetry import ReleaseMetrics, RoundMetrics

_ROUND_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200)
_STAGE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


def _registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)  # memory, CPU, open files of the service process
    return registry


class AggregatorMetrics(RoundMetrics):
    def __init__(self) -> None:
        self.registry = r = _registry()
        self._opened = Counter("securefl_rounds_opened", "Rounds opened.", registry=r)
        self._ended = Counter("securefl_rounds_ended", "Rounds ended, by outcome (complete, failed) and the "
                              "failure's error class.", ["outcome", "reason"], registry=r)
        self._round_seconds = Histogram("securefl_round_duration_seconds", "From a round's opening to its end.",
                                        ["outcome"], buckets=_ROUND_BUCKETS, registry=r)
        self._stage_seconds = Histogram("securefl_stage_duration_seconds", "Stages of a round: collect (opening "
                                        "to closing), submission (validating and adding one), reveal (closing to "
                                        "the average).", ["stage"], buckets=_STAGE_BUCKETS, registry=r)
        self._accepted = Counter("securefl_submissions_accepted", "Submissions made durable and added.", registry=r)
        self._refused = Counter("securefl_submissions_refused", "Submissions refused, by error class.", ["error"],
                                registry=r)
        self._bytes = Counter("securefl_ingested_bytes", "Protected bytes received in submission chunks.", registry=r)
        self._in_flight = Gauge("securefl_submissions_in_flight", "Submission streams being read.", registry=r)
        self._open = Gauge("securefl_open_rounds", "Rounds open or closing.", registry=r)

    def round_opened(self) -> None:
        self._opened.inc()

    def round_ended(self, outcome: str, reason: str | None, seconds: float) -> None:
        self._ended.labels(outcome, reason or "").inc()
        self._round_seconds.labels(outcome).observe(seconds)

    def stage_finished(self, stage: str, seconds: float) -> None:
        self._stage_seconds.labels(stage).observe(seconds)

    def submission_accepted(self) -> None:
        self._accepted.inc()

    def submission_refused(self, error: str) -> None:
        self._refused.labels(error).inc()

    def bytes_ingested(self, count: int) -> None:
        self._bytes.inc(count)

    def submissions_in_flight(self, delta: int) -> None:
        self._in_flight.inc(delta)

    def open_rounds(self, count: int) -> None:
        self._open.set(count)


class KeyHolderMetrics(ReleaseMetrics):
    def __init__(self) -> None:
        self.registry = _registry()
        self._decryptions = Counter("securefl_decryptions", "Decryption requests, by decision (granted, refused) "
                                    "and the refusal's error class.", ["decision", "reason"], registry=self.registry)

    def decryption(self, granted: bool, reason: str | None = None) -> None:
        self._decryptions.labels("granted" if granted else "refused", reason or "").inc()


@dataclass
class MetricsEndpoint:
    port: int
    _server: object

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def serve_metrics(registry: CollectorRegistry, host: str, port: int) -> MetricsEndpoint:
    """Serve `registry` at http://host:port/metrics on a thread of its own (port 0: any free one)."""
    server, _ = start_http_server(port, addr=host, registry=registry)
    return MetricsEndpoint(server.server_port, server)
