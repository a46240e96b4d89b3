"""Paired comparison of several systems evaluated on the same users.

Every system is compared with the baseline (the first one) on the users both counted,
metric by metric; p-values are adjusted across all (system, metric) tests at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import numpy as np
from rich.table import Table

from recscope.errors import ConfigError
from recscope.offline.evaluate import EvaluationResult, metric_bars
from recscope.offline.per_user import (
    ADJUSTMENTS,
    TESTS,
    PairedTest,
    adjust,
    check_bootstrap,
    paired_tests,
)
from recscope.report.tables import rich_table
from recscope.results import Effect, Result

#: Columns of the paired-test rows shown in tables (JSON keeps every field).
ROW_COLUMNS = ("system", "metric", "estimate", "ci_low", "ci_high", "relative", "cohens_dz",
               "p_value", "p_value_adjusted", "n")


def _row(system: str, t: PairedTest) -> Effect:
    """A paired test as an :class:`Effect`: the estimate is the mean paired difference
    (system − baseline) over users counted by both, ``p_value`` the chosen test's."""
    return Effect(t.metric, t.diff, t.diff_ci_low, t.diff_ci_high, t.se, t.p_value, t.n,
                  extra={"system": system, "baseline_mean": t.mean_a, "system_mean": t.mean_b,
                         "relative": t.relative, "cohens_dz": t.cohens_dz, "p_t": t.p_t,
                         "p_wilcoxon": t.p_wilcoxon, "p_randomisation": t.p_randomisation,
                         "p_value_adjusted": t.p_value_adjusted, "p_holm": t.p_holm,
                         "p_bh": t.p_bh})


@dataclass
class ComparisonResult(Result):
    """Each system's evaluation plus paired tests of every system against the baseline.

    ``tests`` holds one :class:`~recscope.results.Effect` per (system, metric): the mean
    paired difference with its bootstrap interval, ``se``, the chosen test's ``p_value``
    and, in extra fields, ``system``, ``baseline_mean``, ``system_mean``, ``relative``,
    ``cohens_dz``, the three p-values (``p_t``, ``p_wilcoxon``, ``p_randomisation``) and
    the adjusted ones (``p_value_adjusted`` by the chosen method, ``p_holm``, ``p_bh``).
    """

    kind: ClassVar[str] = "comparison"
    title: ClassVar[str] = "Paired comparison"

    baseline: str
    systems: dict[str, EvaluationResult]
    tests: list[Effect]
    test: str = "t"
    adjustment: str = "holm"
    info: dict[str, Any] = field(default_factory=dict)

    def get(self, system: str, metric: str) -> Effect:
        """The paired test of ``system`` against the baseline on ``metric``."""
        label = self.systems[self.baseline]._label(metric)
        for t in self.tests:
            if t["system"] == system and t.metric == label:
                return t
        raise ConfigError(f"no test for {system!r} on {metric!r}", key="metric")

    def effects(self) -> list[Effect]:
        return list(self.tests)

    def rows(self) -> list[dict[str, Any]]:
        return [{c: t[c] for c in ROW_COLUMNS} for t in self.tests]

    def rich_table(self) -> Table:
        return rich_table(self.rows(), title=f"Paired comparison against {self.baseline} "
                                             f"({self.test} test, {self.adjustment} "
                                             f"adjustment; estimate = system − baseline)")

    def html_sections(self, page: Any) -> None:
        page.figure(metric_bars(self.systems))
        for name, res in self.systems.items():
            page.heading(f"System {name}").table(res.rows())


def compare(systems: dict[str, EvaluationResult], *, baseline: str | None = None,
            test: str = "t", adjustment: str = "holm", n_perm: int = 10000,
            n_boot: int = 1000, seed: int | np.random.Generator | None = 0,
            ) -> ComparisonResult:
    """Paired tests of every system against ``baseline`` (default: the first) on the
    metrics they share, over users counted by both; Holm or BH across all tests."""
    if len(systems) < 2:
        raise ConfigError("compare needs at least two systems", key="compare")
    if test not in TESTS:
        raise ConfigError(f"unknown test {test!r}; choose one of {TESTS}", key="test")
    if adjustment not in ADJUSTMENTS:
        raise ConfigError(f"unknown adjustment {adjustment!r}; choose one of "
                          f"{tuple(ADJUSTMENTS)}", key="adjustment")
    if n_perm < 1:
        raise ConfigError(f"n_perm must be >= 1, got {n_perm}", key="n_perm")
    check_bootstrap(n_boot, next(iter(systems.values())).confidence)
    names = list(systems)
    base = baseline or names[0]
    if base not in systems:
        raise ConfigError(f"baseline {base!r} is not one of {names}", key="baseline")
    ref = systems[base]
    rng = np.random.default_rng(seed) if not isinstance(seed, np.random.Generator) else seed
    tests: dict[str, list[PairedTest]] = {}
    for name in names:
        if name == base:
            continue
        other = systems[name]
        metrics = [m for m in ref.metrics if m in other.summary]
        if not metrics:
            raise ConfigError(f"{name!r} shares no metric with {base!r}", key="metric")
        ua = ref.per_user.column("user").to_numpy()
        ub = other.per_user.column("user").to_numpy()
        _common, ia, ib = np.intersect1d(ua, ub, assume_unique=True, return_indices=True)
        a = np.column_stack([ref.values(m)[ia] for m in metrics])
        b = np.column_stack([other.values(m)[ib] for m in metrics])
        tests[name] = paired_tests(a, b, metrics, test=test, n_perm=n_perm, n_boot=n_boot,
                                   confidence=ref.confidence, seed=rng)
    flat = [t for ts in tests.values() for t in ts]
    p = np.array([t.p_value for t in flat])
    holm, bh = adjust(p, "holm"), adjust(p, "bh")
    chosen = adjust(p, adjustment)
    rows = [_row(name, replace(t, p_value_adjusted=float(chosen[i]), p_holm=float(holm[i]),
                               p_bh=float(bh[i])))
            for i, (name, t) in enumerate((n, t) for n, ts in tests.items() for t in ts)]
    named = {k: replace(v, system=k) for k, v in systems.items()}
    return ComparisonResult(base, named, rows, test, adjustment, {"n_tests": len(flat)})
