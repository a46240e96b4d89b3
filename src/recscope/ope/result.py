"""The result of an off-policy evaluation: one :class:`~recscope.results.Effect` row per
estimator, saved as JSON, reloaded, rendered as a table or HTML (the generic
:class:`~recscope.results.Result` machinery)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from recscope.results import Effect, Result

_DIAG_SHOWN = ("ess", "weight_max", "outside_support_share")


@dataclass
class OPEResult(Result):
    """Estimates of one policy's value from one log, with the log's own on-policy value.

    ``estimates`` holds one row per estimator: metric ``policy_value``, ``estimate``, the
    percentile bootstrap interval, ``se`` (bootstrap standard deviation), ``n`` (rounds)
    and, in extra fields, ``estimator``, ``diagnostics`` (effective sample size, weight
    statistics, support) and, when the truth is known, ``rel_error``. ``on_policy`` is the
    observed mean reward of the log that produced the evaluated policy (``log:PATH``), the
    ground truth the estimates are compared with; None otherwise.
    """

    kind: ClassVar[str] = "ope"
    title: ClassVar[str] = "Off-policy evaluation"

    policy: str
    logs: str
    n_rounds: int
    estimates: list[Effect]
    on_policy: float | None = None
    logging_value: float | None = None
    policy_info: dict[str, Any] = field(default_factory=dict)
    reward_model: dict[str, Any] | None = None
    config: dict[str, Any] = field(default_factory=dict)

    def relative_errors(self) -> dict[str, float]:
        """|estimate − on_policy| / on_policy per estimator (empty without ``on_policy``)."""
        if not self.on_policy:
            return {}
        return {e["estimator"]: abs(e.estimate - self.on_policy) / abs(self.on_policy)
                for e in self.estimates}

    def effects(self) -> list[Effect]:
        return list(self.estimates)

    def rows(self) -> list[dict[str, Any]]:
        rel = self.relative_errors()
        rows = []
        for e in self.estimates:
            row: dict[str, Any] = {"estimator": e["estimator"], "estimate": e.estimate,
                                   "ci_low": e.ci_low, "ci_high": e.ci_high, "se": e.se}
            if rel:
                row["rel_error"] = rel[e["estimator"]]
            for d in _DIAG_SHOWN:
                row[d] = e["diagnostics"].get(d)
            rows.append(row)
        return rows

    def notes(self) -> list[str]:
        if any(e["diagnostics"].get("outside_support_rounds") for e in self.estimates):
            return ["Some logged actions lie outside the evaluation policy's support "
                    "(probability 0): they are kept and count as zero-weight rounds."]
        return []

    def rich_table(self) -> Any:
        from recscope.report.tables import rich_table

        title = f"Off-policy estimates of {self.policy} on {self.logs} ({self.n_rounds:,} rounds)"
        if self.on_policy is not None:
            title += f"; on-policy value {self.on_policy:.6g}"
        return rich_table(self.rows(), title=title, notes=self.notes())

    def html_sections(self, page: Any) -> None:
        page.heading("Inputs").key_values({
            "policy": self.policy, "logs": self.logs, "rounds": self.n_rounds,
            "logging policy value": self.logging_value,
            "on-policy value of the evaluated policy": self.on_policy})
        page.heading("Diagnostics")
        page.table([{"estimator": e["estimator"],
                     **{k: v for k, v in e["diagnostics"].items() if not isinstance(v, dict)}}
                    for e in self.estimates])
        if self.policy_info:
            page.heading("Policy").key_values(dict(self.policy_info))
