"""The agent worker's own Prometheus metrics, served next to livekit-agents' own on
``MEDIAI_AGENT_PROMETHEUS_PORT`` (its default registry, in the worker's main process)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import REGISTRY

from services.agent.leftovers import WorkerSpool


class SpoolCollector:
    """Read at each scrape: the spool is shared with the job processes through its files."""

    def __init__(self, spool: WorkerSpool) -> None:
        self.spool = spool

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "mediai_agent_spool_bytes",
            "Bytes of session events waiting in the agent spool of this data dir",
            value=self.spool.bytes(),
        )
        yield CounterMetricFamily(
            "mediai_agent_spool_refused",
            "Events of this worker's sessions the spool refused (at its cap, or a disk error): "
            "kept in memory only",
            value=self.spool.refused(),
        )
        yield CounterMetricFamily(
            "mediai_agent_spool_flushed",
            "Events ended or killed jobs left in the spool, published by this worker",
            value=self.spool.flushed,
        )


def register_spool_metrics(spool: WorkerSpool) -> SpoolCollector:
    collector = SpoolCollector(spool)
    REGISTRY.register(collector)
    return collector
