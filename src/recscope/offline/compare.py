"""Paired comparison of several systems evaluated on the same users.

Every system is compared with the baseline (the first one) on the users both counted,
metric by metric; p-values are adjusted across all (system, metric) tests at once.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from rich.table import Table

from recscope.errors import ConfigError
from recscope.offline.evaluate import EvaluationResult
from recscope.offline.stats import PairedTest, adjust, paired_tests
from recscope.report import HtmlReport, Result


@dataclass
class ComparisonResult(Result):
    """Each system's evaluation plus paired tests of every system against the baseline."""

    baseline: str
    systems: dict[str, EvaluationResult]
    tests: dict[str, list[PairedTest]]
    test: str = "t"
    adjustment: str = "holm"
    info: dict[str, Any] = field(default_factory=dict)
    kind = "comparison"

    def get(self, system: str, metric: str) -> PairedTest:
        """The paired test of ``system`` against the baseline on ``metric``."""
        label = self.systems[self.baseline]._label(metric)
        for t in self.tests[system]:
            if t.metric == label:
                return t
        raise ConfigError(f"no test for {system!r} on {metric!r}", key="metric")

    def to_dict(self) -> dict[str, Any]:
        return {"baseline": self.baseline, "test": self.test, "adjustment": self.adjustment,
                "info": self.info,
                "systems": {k: v.to_dict() for k, v in self.systems.items()},
                "tests": {k: [asdict(t) for t in v] for k, v in self.tests.items()}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ComparisonResult:
        def _f(v: Any) -> Any:
            return float("nan") if v is None else v

        tests = {k: [PairedTest(**{a: _f(b) for a, b in t.items()}) for t in v]
                 for k, v in data["tests"].items()}
        return cls(data["baseline"],
                   {k: EvaluationResult.from_dict(v) for k, v in data["systems"].items()},
                   tests, data.get("test", "t"), data.get("adjustment", "holm"),
                   dict(data.get("info", {})))

    def rows(self) -> list[dict[str, Any]]:
        return [{"system": s, "metric": t.metric, "baseline": t.mean_a, "system mean": t.mean_b,
                 "diff": t.diff, "diff CI low": t.diff_ci_low, "diff CI high": t.diff_ci_high,
                 "relative": t.relative, "d_z": t.cohens_dz, "p (t)": t.p_t,
                 "p (wilcoxon)": t.p_wilcoxon, "p (randomisation)": t.p_randomisation,
                 "p adjusted": t.p_value_adjusted, "users": t.n}
                for s, ts in self.tests.items() for t in ts]

    def rich_table(self) -> Table:
        t = Table(title=f"Paired comparison against {self.baseline} ({self.test} test, "
                        f"{self.adjustment} adjustment)")
        for col in ("system", "metric", "diff [CI]", "rel.", "d_z", "p", "p adj."):
            t.add_column(col, justify="left" if col in ("system", "metric") else "right")
        for s, ts in self.tests.items():
            for x in ts:
                t.add_row(s, x.metric,
                          f"{x.diff:+.4f} [{x.diff_ci_low:+.4f}, {x.diff_ci_high:+.4f}]",
                          f"{x.relative:+.1%}", f"{x.cohens_dz:.2f}", f"{x.p_value:.2g}",
                          f"{x.p_value_adjusted:.2g}")
        return t

    def to_html(self) -> str:
        rep = HtmlReport("Paired comparison", f"baseline: {self.baseline}")
        for name, res in self.systems.items():
            rep.heading(f"System {name}").table(res.rows())
        rep.heading("Paired tests").table(self.rows())
        return rep.render()


def compare(systems: dict[str, EvaluationResult], *, baseline: str | None = None,
            test: str = "t", adjustment: str = "holm", n_perm: int = 10000,
            n_boot: int = 1000, seed: int | np.random.Generator | None = 0,
            ) -> ComparisonResult:
    """Paired tests of every system against ``baseline`` (default: the first) on the
    metrics they share, over users counted by both; Holm or BH across all tests."""
    if len(systems) < 2:
        raise ConfigError("compare needs at least two systems", key="compare")
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
    i = 0
    for name, ts in tests.items():
        new = []
        for t in ts:
            d = asdict(t)
            d.update(p_value_adjusted=float(chosen[i]), p_holm=float(holm[i]),
                     p_bh=float(bh[i]))
            new.append(PairedTest(**d))
            i += 1
        tests[name] = new
    return ComparisonResult(base, dict(systems), tests, test, adjustment,
                            {"n_tests": len(flat)})
