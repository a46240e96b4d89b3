"""Off-policy estimates past one process: streamed Parquet batches, or Spark partitions.

The input is a *scored log*, one row per round: ``reward``, ``pscore`` (the logging
propensity of the logged action), a column with the evaluation policy's probability of
the logged action (default ``pi``), and, for model-based estimators, the reward model's
prediction at the logged action (``q_hat``) and its policy average ``v_hat`` = Σ_a π(a|x)
q̂(x, a) -- either columns of the log, or computed per batch by a ``predict`` function
(a fitted model applied per partition). Every estimator already reduces to per-round
columns whose sums a combine function turns into the estimate
(:meth:`recscope.ope.estimators.Estimator.columns`); here each batch gives its column
sums and the Poisson bootstrap sums (each round, or each slate when ``slate_id`` is
present, weighted Poisson(1) per replicate from a hash of its id), and the driver combines
them. The estimate equals the in-memory estimator's to floating-point rounding.

Estimators whose hyperparameter is tuned on the whole log (``switch-dr:auto``,
``dr-os:auto``) and slate estimators need every round at once and are refused.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from recscope.data.datasets import TABLE_PREFIX, check_dataset, spark_session
from recscope.errors import ConfigError, DataValidationError, RecscopeError
from recscope.offline.per_user import _seed64
from recscope.offline.scale import _POIS, id_keys, poisson_accumulate
from recscope.ope.estimators import VALUE, Estimator, _Tuned, make_estimator
from recscope.ope.result import OPEResult
from recscope.results import Effect

Predict = Callable[[pa.RecordBatch], tuple[np.ndarray, np.ndarray]]


class _Feedback:
    """The part of :class:`~recscope.ope.feedback.LoggedFeedback` the estimators read."""

    def __init__(self, reward: np.ndarray) -> None:
        self.reward = reward
        self.n_rounds = len(reward)


class BatchInputs:
    """Per-round inputs of one batch, shaped like :class:`recscope.ope.estimators.Inputs`
    (``fb.reward``, ``pi``, ``w``, ``q_logged``, ``v``) so the estimators' own
    ``columns`` run unchanged."""

    def __init__(self, reward: np.ndarray, pscore: np.ndarray, pi: np.ndarray,
                 q_logged: np.ndarray | None, v: np.ndarray | None) -> None:
        self.fb = _Feedback(reward)
        self.pi = pi
        self.w = pi / pscore
        self._q, self._v = q_logged, v

    def need_q(self, who: str) -> np.ndarray:
        if self._q is None:
            raise ConfigError(f"estimator {who!r} needs reward-model predictions: columns "
                              f"q_hat and v_hat, or a predict function", key="--estimator")
        return self._q

    @property
    def q_logged(self) -> np.ndarray:
        return self.need_q("model-based")

    @property
    def v(self) -> np.ndarray:
        self.need_q("model-based")
        assert self._v is not None
        return self._v


@dataclass
class OpePlan:
    """What each batch needs (pickled to Spark executors)."""

    source: str
    estimators: list[Estimator]
    policy_column: str
    n_boot: int
    seed: int
    key: str | None
    has_q: bool
    predict: Predict | None = None


@dataclass
class OpePartial:
    """Column sums, bootstrap sums and weight sums of some rounds, one entry per estimator."""

    sums: list[np.ndarray]
    boots: list[np.ndarray]
    n: int = 0
    w1: float = 0.0
    w2: float = 0.0
    wmin: float = float("inf")
    wmax: float = float("-inf")
    outside: int = 0

    def merge(self, o: OpePartial) -> None:
        for a, b in zip(self.sums + self.boots, o.sums + o.boots, strict=True):
            a += b
        self.n += o.n
        self.w1 += o.w1
        self.w2 += o.w2
        self.wmin = min(self.wmin, o.wmin)
        self.wmax = max(self.wmax, o.wmax)
        self.outside += o.outside


def _column(batch: pa.RecordBatch, name: str, plan: OpePlan) -> np.ndarray:
    col = batch.column(name)
    if col.null_count:
        raise DataValidationError("null value", file=plan.source, column=name)
    v = col.to_numpy(zero_copy_only=False).astype(np.float64)
    if not np.all(np.isfinite(v)):
        raise DataValidationError("NaN or infinite value", file=plan.source, column=name)
    return v


def batch_stats(batch: pa.RecordBatch, plan: OpePlan, offset: int,
                partial: OpePartial | None) -> OpePartial:
    """Fold one batch of rounds into ``partial`` (a new one when None)."""
    reward = _column(batch, "reward", plan)
    pscore = _column(batch, "pscore", plan)
    if np.any(pscore <= 0) or np.any(pscore > 1):
        raise DataValidationError("propensity must be in (0, 1]", file=plan.source,
                                  column="pscore")
    pi = _column(batch, plan.policy_column, plan)
    if np.any(pi < 0) or np.any(pi > 1):
        raise DataValidationError("policy probability must be in [0, 1]", file=plan.source,
                                  column=plan.policy_column)
    q = v = None
    if plan.has_q:
        q, v = _column(batch, "q_hat", plan), _column(batch, "v_hat", plan)
    elif plan.predict is not None:
        q, v = plan.predict(batch)
    inp = BatchInputs(reward, pscore, pi, q, v)
    if plan.key is not None:
        keys = id_keys(batch.column(plan.key))
    else:
        keys = np.arange(offset, offset + batch.num_rows, dtype=np.int64).view(np.uint64)
    seed = _seed64(plan.seed)
    cols = [e.columns(inp)[0] for e in plan.estimators]  # type: ignore[arg-type]
    if partial is None:
        partial = OpePartial([np.zeros(c.shape[1]) for c in cols],
                             [np.zeros((plan.n_boot, c.shape[1])) for c in cols])
    for j, c in enumerate(cols):
        partial.sums[j] += c.sum(axis=0)
    if plan.n_boot:
        # one pass for every estimator's columns: each round's Poisson weights are hashed
        # once per replicate, not once per estimator (same sums, same order)
        stacked = np.ascontiguousarray(np.hstack(cols))
        acc = np.zeros((plan.n_boot, stacked.shape[1]))
        poisson_accumulate(stacked, keys, seed, acc, np.zeros_like(acc), _POIS)
        edges = np.cumsum([0, *(c.shape[1] for c in cols)])
        for j in range(len(cols)):
            partial.boots[j] += acc[:, edges[j]:edges[j + 1]]
    w = inp.w
    partial.n += len(w)
    partial.w1 += float(w.sum())
    partial.w2 += float((w * w).sum())
    if len(w):
        partial.wmin = min(partial.wmin, float(w.min()))
        partial.wmax = max(partial.wmax, float(w.max()))
    partial.outside += int((pi <= 0).sum())
    return partial


def _plan(source: str, estimators: Sequence[str | Estimator], policy_column: str,
          bootstrap: int, seed: int, columns: Sequence[str], predict: Predict | None,
          key: str | None) -> OpePlan:
    ests = [make_estimator(e) if isinstance(e, str) else e for e in estimators]
    for e in ests:
        if e.is_slate:
            raise ConfigError(f"{e.label()} needs whole slates in memory; the stream and spark "
                              f"engines run dm, ips, clipped-ips, snips, dr, sndr, "
                              f"switch-dr:TAU, dr-os:LAMBDA", key="--estimator")
        if isinstance(e, _Tuned) and e.param == "auto":
            raise ConfigError(f"{e.name}:auto tunes its parameter on the whole log; give a "
                              f"value (e.g. {e.name}:10) with the stream and spark engines",
                              key="--estimator")
    if bootstrap < 0:
        raise ConfigError(f"bootstrap must be >= 0, got {bootstrap}", key="--bootstrap")
    for c in ("reward", "pscore", policy_column):
        if c not in columns:
            raise DataValidationError(f"missing column; found {list(columns)}", file=source,
                                      column=c)
    has_q = "q_hat" in columns and "v_hat" in columns
    if any(e.needs_model for e in ests) and not has_q and predict is None:
        raise DataValidationError("model-based estimators need columns q_hat and v_hat "
                                  "(or a predict function)", file=source, column="q_hat")
    if key is None:
        key = "slate_id" if "slate_id" in columns else \
            "round_id" if "round_id" in columns else None
    return OpePlan(source, ests, policy_column, bootstrap, seed, key, has_q, predict)


def _finish(plan: OpePlan, total: OpePartial | None, confidence: float, engine: str,
            policy: str) -> OPEResult:
    if total is None or total.n == 0:
        raise DataValidationError("the log has no rounds", file=plan.source)
    alpha = 1 - confidence
    n = total.n
    ess = total.w1 ** 2 / total.w2 if total.w2 > 0 else 0.0
    mean = total.w1 / n
    diag: dict[str, Any] = {
        "ess": ess, "ess_ratio": ess / n, "weight_mean": mean,
        "weight_std": float(np.sqrt(max(total.w2 / n - mean * mean, 0.0))),
        "weight_min": total.wmin, "weight_max": total.wmax,
        "outside_support_rounds": total.outside, "outside_support_share": total.outside / n,
        "n_rounds": n, "n_bootstrap": plan.n_boot, "bootstrap_kind": "poisson",
        "engine": engine}
    rows = []
    for j, e in enumerate(plan.estimators):
        _, combine = e.columns(BatchInputs(np.ones(2), np.ones(2), np.ones(2),
                                           np.zeros(2), np.zeros(2)))
        value = float(combine(total.sums[j][None])[0])
        lo = hi = se = float("nan")
        if plan.n_boot:
            with np.errstate(divide="ignore", invalid="ignore"):
                boot = combine(total.boots[j])
            lo, hi = (float(x) for x in np.nanquantile(boot, [alpha / 2, 1 - alpha / 2]))
            se = float(np.nanstd(boot, ddof=1)) if plan.n_boot > 1 else float("nan")
        rows.append(Effect(VALUE, value, lo, hi, se, n=n,
                           extra={"estimator": e.label(), "diagnostics": dict(diag)}))
    return OPEResult(policy, plan.source, n, rows,
                     config={"engine": engine, "bootstrap": plan.n_boot,
                             "confidence": confidence, "seed": plan.seed})


def _fold(batches: Iterable[pa.RecordBatch], plan: OpePlan) -> OpePartial | None:
    total: OpePartial | None = None
    offset = 0
    for b in batches:
        if b.num_rows:
            total = batch_stats(b, plan, offset, total)
            offset += b.num_rows
    return total


def ope_stream(logs: str, estimators: Sequence[str | Estimator], *, policy_column: str = "pi",
               bootstrap: int = 500, confidence: float = 0.95, seed: int = 0,
               predict: Predict | None = None, key: str | None = None,
               batch_rows: int = 1_000_000) -> OPEResult:
    """Estimates from a scored-log Parquet dataset read in record batches of at most
    ``batch_rows`` rows (memory bounded by a batch and the bootstrap sums)."""
    import pyarrow.dataset as ds

    info = check_dataset(logs, ["reward", "pscore", policy_column], id_columns=())
    plan = _plan(logs, estimators, policy_column, bootstrap, seed, info.schema.names,
                 predict, key)
    dataset = ds.dataset(list(info.files), format="parquet",
                         partitioning=None)
    cols = [c for c in ("reward", "pscore", policy_column, "q_hat", "v_hat", plan.key)
            if c is not None and c in dataset.schema.names]
    try:  # a predict function may read any column
        # one batch and one file read ahead (Arrow's defaults, 16 batches x 4 files,
        # made peak memory grow with the number of files)
        total = _fold(dataset.to_batches(columns=None if predict else cols,
                                         batch_size=batch_rows, batch_readahead=1,
                                         fragment_readahead=1), plan)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataValidationError(f"cannot read: {str(exc).splitlines()[0]}",
                                  file=logs) from None
    return _finish(plan, total, confidence, "stream", policy_column)


def ope_spark(logs: str, estimators: Sequence[str | Estimator], *, policy_column: str = "pi",
              bootstrap: int = 500, confidence: float = 0.95, seed: int = 0,
              predict: Predict | None = None, key: str | None = None,
              session: Any = None) -> OPEResult:
    """Estimates on Spark: each partition folds its rounds through ``mapInArrow`` (the
    estimators' columns, their sums and Poisson bootstrap sums), the driver combines.
    ``logs`` is a Parquet dataset or ``table:NAME``. Without a ``round_id``/``slate_id``
    column the bootstrap needs ``key`` (row order is not stable in Spark)."""
    spark = spark_session(session)
    if logs.startswith(TABLE_PREFIX):
        df = spark.table(logs.removeprefix(TABLE_PREFIX))
    else:
        check_dataset(logs, ["reward", "pscore", policy_column], id_columns=())
        df = spark.read.parquet(logs)
    plan = _plan(logs, estimators, policy_column, bootstrap, seed, df.columns, predict, key)
    if plan.key is None and bootstrap > 0:
        raise ConfigError("the spark engine's bootstrap keys rounds by a round_id or "
                          "slate_id column (row order is not stable); add one or pass "
                          "--bootstrap 0", key="--bootstrap")

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        try:
            blob = pickle.dumps(("ok", _fold(batches, plan)))
        except RecscopeError as exc:
            blob = pickle.dumps(("error", exc))
        yield pa.RecordBatch.from_pydict({"blob": pa.array([blob], pa.binary())})

    try:
        blobs = [r["blob"] for r in df.mapInArrow(run, "blob binary").collect()]
    except Exception as exc:  # Spark wraps executor failures
        raise DataValidationError(f"the spark engine failed: "
                                  f"{' '.join(str(exc).split())[:300]}", file=logs) from None
    total: OpePartial | None = None
    for b in blobs:
        status, obj = pickle.loads(b)
        if status == "error":
            raise obj
        if obj is None:
            continue
        if total is None:
            total = obj
        else:
            total.merge(obj)
    return _finish(plan, total, confidence, "spark", policy_column)
