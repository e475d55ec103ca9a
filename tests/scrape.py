"""Read a service's Prometheus endpoint as a scraper would."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from securefl.simulation import ServiceProcess


def scrape(service: ServiceProcess) -> dict[tuple[str, tuple], float]:
    """Every sample of the service's metrics: (name, sorted labels) -> value."""
    assert service.metrics_port is not None, "the service serves no metrics"
    with urllib.request.urlopen(f"http://127.0.0.1:{service.metrics_port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}
