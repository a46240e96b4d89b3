"""Prometheus metrics of a service, with the experiment's live SRM check.

Counters and the latency histogram use ``prometheus_client`` in a registry of the
service's own; gauges that are computed when scraped (log lag, units per arm, the
sample-ratio-mismatch chi-square test of units per arm against the configured weights)
come from a custom collector, so they cost nothing per request.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from scipy import stats

#: Latency buckets in seconds (sub-millisecond to one second).
BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)
_PATHS = {"/recommend", "/feedback", "/health", "/metrics", "/experiment", "/admin/reload",
          "/admin/experiment", "/admin/rank"}


def srm_test(counts: dict[str, int], weights: dict[str, float]) -> tuple[float, float]:
    """Chi-square statistic and p-value of the units per arm against the weights
    (NaN when no unit has been seen)."""
    arms = list(weights)
    obs = np.array([counts.get(a, 0) for a in arms], dtype=float)
    if obs.sum() == 0 or len(arms) < 2:
        return float("nan"), float("nan")
    w = np.array([weights[a] for a in arms], dtype=float)
    exp = obs.sum() * w / w.sum()
    keep = exp > 0
    if (obs[~keep] > 0).any():  # units in an arm of weight 0: certain mismatch
        return float("inf"), 0.0
    res = stats.chisquare(obs[keep], exp[keep])
    return float(res.statistic), float(res.pvalue)


class ServiceMetrics:
    """Request, latency, error, log and experiment metrics of one service."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.requests = Counter("recscope_serve_requests", "HTTP requests answered",
                                ["path", "status"], registry=r)
        self.latency = Histogram("recscope_serve_request_seconds",
                                 "Time from receiving a request to sending its answer",
                                 ["path"], buckets=BUCKETS, registry=r)
        self.errors = Counter("recscope_serve_errors", "Requests answered with 5xx",
                              ["path"], registry=r)
        self.exposure_rows = Counter("recscope_serve_exposures",
                                     "Items returned (exposure rows logged) per arm", ["arm"],
                                     registry=r)
        self.feedback_events = Counter("recscope_serve_feedback", "Feedback events per arm",
                                       ["arm", "event"], registry=r)
        self.reloads = Counter("recscope_serve_reloads", "Model reloads", ["result"],
                               registry=r)
        self._units: dict[str, set[str]] = {}
        self._lock = threading.Lock()
        self._state: Any = None

    def bind(self, state: Any) -> None:
        """Attach the service state whose log and experiment the scrape-time gauges read."""
        self._state = state
        self.registry.register(_Live(self))

    def observe(self, path: str, status: int, seconds: float) -> None:
        p = path if path in _PATHS else "other"
        self.requests.labels(p, str(status)).inc()
        self.latency.labels(p).observe(seconds)
        if status >= 500:
            self.errors.labels(p).inc()

    def exposed(self, arm: str | None, unit: str, rows: int) -> None:
        a = arm if arm is not None else "none"
        self.exposure_rows.labels(a).inc(rows)
        with self._lock:
            self._units.setdefault(a, set()).add(unit)

    def feedback(self, arm: str | None, event: str) -> None:
        self.feedback_events.labels(arm if arm is not None else "none", event).inc()

    def reloaded(self, ok: bool) -> None:
        self.reloads.labels("ok" if ok else "failed").inc()

    def units(self) -> dict[str, int]:
        """Distinct units served per arm since start."""
        with self._lock:
            return {a: len(s) for a, s in self._units.items()}

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _Live:
    """Collector of the gauges computed at scrape time."""

    def __init__(self, metrics: ServiceMetrics) -> None:
        self.m = metrics

    def collect(self) -> Iterator[Metric]:
        st = self.m._state
        w = st.writer.stats()
        g = GaugeMetricFamily("recscope_serve_log_pending_rows",
                              "Log rows accepted but not yet in a file (lost by a crash now)")
        g.add_metric([], w["pending_rows"])
        yield g
        g = GaugeMetricFamily("recscope_serve_log_lag_seconds",
                              "Age of the oldest log row not yet written")
        g.add_metric([], w["lag_seconds"])
        yield g
        g = GaugeMetricFamily("recscope_serve_log_rows_written", "Log rows written to files",
                              labels=["table"])
        for t, n in w["rows_written"].items():
            g.add_metric([t], n)
        yield g
        g = GaugeMetricFamily("recscope_serve_log_write_errors", "Failed log file writes")
        g.add_metric([], w["write_errors"])
        yield g
        units = self.m.units()
        g = GaugeMetricFamily("recscope_serve_units", "Distinct units served per arm",
                              labels=["arm"])
        for a, n in sorted(units.items()):
            g.add_metric([a], n)
        yield g
        g = GaugeMetricFamily("recscope_serve_experiment_enabled",
                              "1 when the experiment assigns arms")
        g.add_metric([], 1.0 if st.enabled else 0.0)
        yield g
        g = GaugeMetricFamily("recscope_serve_model_info", "Model version served per arm",
                              labels=["arm", "version"])
        for a in st.arms.values():
            g.add_metric([a.name, a.model.version], 1.0)
        yield g
        cfg = st.settings.experiment
        if st.assignment is not None:
            weights = {a: cfg.arms[a].weight for a in cfg.arm_names}
            chi2, p = srm_test(units, weights)
            g = GaugeMetricFamily("recscope_serve_srm_chi2",
                                  "Chi-square of distinct units per arm against the weights")
            g.add_metric([], chi2)
            yield g
            g = GaugeMetricFamily("recscope_serve_srm_p_value",
                                  "Sample ratio mismatch p-value (small: broken assignment)")
            g.add_metric([], p)
            yield g
