"""The result of an off-policy evaluation: saved as JSON, reloaded, rendered as a table or HTML."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

from rich.table import Table

from recscope.ope.estimators import Estimate
from recscope.report import HtmlReport, Result

_DIAG_SHOWN = ("ess", "weight_max", "outside_support_share")


@dataclass
class OPEResult(Result):
    """Estimates of one policy's value from one log, with the log's own on-policy value.

    ``on_policy`` is the observed mean reward of the log that produced the evaluated policy
    (``log:PATH``), the ground truth the estimates are compared with; None otherwise.
    """

    kind: ClassVar[str] = "ope"

    policy: str
    logs: str
    n_rounds: int
    estimates: list[Estimate]
    on_policy: float | None = None
    logging_value: float | None = None
    policy_info: dict[str, Any] = field(default_factory=dict)
    reward_model: dict[str, Any] | None = None
    config: dict[str, Any] = field(default_factory=dict)

    def by_name(self) -> dict[str, Estimate]:
        return {e.estimator: e for e in self.estimates}

    def relative_errors(self) -> dict[str, float]:
        """|estimate − on_policy| / on_policy per estimator (empty without ``on_policy``)."""
        if not self.on_policy:
            return {}
        return {e.estimator: abs(e.estimate - self.on_policy) / abs(self.on_policy)
                for e in self.estimates}

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": self.kind, "policy": self.policy, "logs": self.logs,
            "n_rounds": self.n_rounds,
            "estimators": {e.estimator: e.to_dict() for e in self.estimates},
            "logging_value": self.logging_value, "policy_info": self.policy_info,
            "reward_model": self.reward_model, "config": self.config,
        }
        if self.on_policy is not None:
            out["on_policy"] = self.on_policy
            out["relative_error"] = self.relative_errors()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        ests = [Estimate.from_dict(k, v) for k, v in data["estimators"].items()]
        return cls(policy=data["policy"], logs=data["logs"], n_rounds=int(data["n_rounds"]),
                   estimates=ests, on_policy=data.get("on_policy"),
                   logging_value=data.get("logging_value"),
                   policy_info=dict(data.get("policy_info") or {}),
                   reward_model=data.get("reward_model"), config=dict(data.get("config") or {}))

    def _rows(self) -> list[dict[str, Any]]:
        rel = self.relative_errors()
        rows = []
        for e in self.estimates:
            row: dict[str, Any] = {"estimator": e.estimator, "estimate": e.estimate,
                                   "ci_low": e.ci_low, "ci_high": e.ci_high}
            if rel:
                row["rel_error"] = rel[e.estimator]
            for d in _DIAG_SHOWN:
                row[d] = e.diagnostics.get(d)
            rows.append(row)
        return rows

    def rich_table(self) -> Table:
        title = f"Off-policy estimates of {self.policy} on {self.logs} ({self.n_rounds:,} rounds)"
        if self.on_policy is not None:
            title += f"; on-policy value {self.on_policy:.6g}"
        table = Table(title=title)
        rows = self._rows()
        for col in rows[0] if rows else ["estimator"]:
            table.add_column(col, justify="left" if col == "estimator" else "right")
        for r in rows:
            table.add_row(*[_fmt(v) for v in r.values()])
        return table

    def to_html(self) -> str:
        rep = HtmlReport("Off-policy evaluation", f"policy {self.policy} · logs {self.logs}")
        rep.key_values({"rounds": self.n_rounds, "logging policy value": self.logging_value,
                        "on-policy value of the evaluated policy": self.on_policy})
        rep.heading("Estimates").table(self._rows())
        if any(e.diagnostics.get("outside_support_rounds") for e in self.estimates):
            rep.banner("Some logged actions lie outside the evaluation policy's support "
                       "(probability 0): they are kept and count as zero-weight rounds.")
        rep.heading("Diagnostics")
        rep.table([{"estimator": e.estimator, **{k: v for k, v in e.diagnostics.items()
                                                 if not isinstance(v, dict)}}
                   for e in self.estimates])
        if self.policy_info:
            rep.heading("Policy").key_values({k: v for k, v in self.policy_info.items()})
        return rep.render()


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "–" if v != v else f"{v:.4g}"
    return "–" if v is None else str(v)
