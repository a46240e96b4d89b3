"""Action distributions: evaluation policies expressed over the logged rounds.

Every standard estimator needs ``π(a at position k | round i)`` for the logged round's
context and position; :class:`ActionDist` holds it as an array ``[m, n_actions, len_list]``
plus a row index per round (``m = 1`` for a context-free policy, ``m = n_rounds`` or the
number of distinct users otherwise).

Policies that rank items from scores (any :class:`Scorer`: a recscope component, a
pipeline, a bandit's scores) are
:class:`RankingPolicy`: a mixture ``(1 − ε) · PlackettLuce(scores / τ) + ε · uniform`` over
rankings, which covers deterministic top-k (``τ = 0``), softmax over scores (``τ > 0``),
epsilon-greedy (``τ = 0, ε > 0``) and uniform (``ε = 1``). They also give the slate
probabilities (prefix, whole slate, next item given the logged prefix) slate estimators need.

A policy known only through another log's propensities (``log:PATH``) is rebuilt by
:func:`from_log` as a context-free policy: the time-averaged probability of each (item,
position), estimated from the size-biased sample of its logged propensities.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

from recscope.core.plackett_luce import position_marginals
from recscope.errors import ConfigError
from recscope.ope.feedback import LoggedFeedback


@dataclass(frozen=True)
class ActionDist:
    """``π(a at k | round i) = probs[row[i], a, k]`` (rows of ``probs`` sum to 1 per position)."""

    probs: np.ndarray
    row: np.ndarray
    name: str = "policy"
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def per_round(cls, probs: np.ndarray, name: str = "policy",
                  info: dict[str, Any] | None = None) -> ActionDist:
        """One distribution per round (``probs`` [n_rounds, A, K])."""
        return cls(np.asarray(probs, np.float64), np.arange(len(probs)), name, info or {})

    @classmethod
    def context_free(cls, table: np.ndarray, n_rounds: int, name: str = "policy",
                     info: dict[str, Any] | None = None) -> ActionDist:
        """The same distribution ``table`` [A, K] for every round."""
        return cls(np.asarray(table, np.float64)[None], np.zeros(n_rounds, np.int64), name,
                   info or {})

    @property
    def n_actions(self) -> int:
        return self.probs.shape[1]

    @property
    def len_list(self) -> int:
        return self.probs.shape[2]

    def check(self, fb: LoggedFeedback) -> None:
        """Raise when the distribution does not match the log's rounds and action space."""
        if len(self.row) != fb.n_rounds:
            raise ConfigError(f"policy {self.name!r} covers {len(self.row)} rounds, the log "
                              f"has {fb.n_rounds}", key="policy")
        if self.n_actions != fb.n_actions or self.len_list < fb.len_list:
            raise ConfigError(f"policy {self.name!r} is over {self.n_actions} actions x "
                              f"{self.len_list} positions; the log has {fb.n_actions} x "
                              f"{fb.len_list}", key="policy")

    def logged(self, fb: LoggedFeedback) -> np.ndarray:
        """π of the logged action at the logged position, per round [n]."""
        return self.probs[self.row, fb.action, fb.position]

    def at(self, rounds: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """π over all actions for the given rounds at the given positions [len(rounds), A]."""
        if self.probs.shape[0] == 1:
            return self.probs[0].T[positions]
        return self.probs[self.row[rounds], :, positions]

    def take(self, rows: np.ndarray) -> ActionDist:
        """The distribution of the rounds at ``rows``."""
        return ActionDist(self.probs, self.row[rows], self.name, self.info)


# ---------------------------------------------------------------------- ranking policies
@dataclass(frozen=True)
class RankingPolicy:
    """``(1 − ε) · PlackettLuce(scores / τ) + ε · uniform`` over rankings of the items.

    ``scores`` [m, A] (``-inf`` = never ranked by the greedy part), ``row`` [n_rounds] maps
    rounds to score rows. ``temperature = 0`` ranks deterministically by score (ties: lower
    index first). Position marginals are exact (closed form for the first two positions,
    enumeration of prefixes after) unless there are over 20,000 ordered prefixes, then
    Monte Carlo (``n_sim`` sampled rankings per score row, seeded).
    """

    scores: np.ndarray
    row: np.ndarray
    temperature: float = 0.0
    epsilon: float = 0.0
    name: str = "ranking"
    n_sim: int = 2000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ConfigError("temperature must be >= 0", key="temperature")
        if not 0.0 <= self.epsilon <= 1.0:
            raise ConfigError("epsilon must be in [0, 1]", key="epsilon")

    @property
    def n_actions(self) -> int:
        return self.scores.shape[1]

    # -------------------------------------------------------------- marginals
    def action_dist(self, len_list: int) -> ActionDist:
        """Position marginals ``π(a at k)`` for ``k < len_list``."""
        a = self.n_actions
        if len_list > a:
            raise ConfigError(f"cannot rank {len_list} positions from {a} items", key="len_list")
        if self.epsilon >= 1.0:
            greedy = np.zeros((self.scores.shape[0], a, len_list))
        elif self.temperature == 0.0:
            greedy = _deterministic_marginals(self.scores, len_list)
        else:
            rng = np.random.default_rng(self.seed)
            greedy = position_marginals(self.scores / self.temperature, len_list, self.n_sim, rng)
        probs = (1.0 - self.epsilon) * greedy + self.epsilon / a
        return ActionDist(probs, self.row, self.name, self.describe())

    def describe(self) -> dict[str, Any]:
        return {"kind": "ranking", "temperature": self.temperature, "epsilon": self.epsilon}

    # -------------------------------------------------------------- slates
    def slate_probs(self, fb: LoggedFeedback) -> SlateProbs:
        """Prefix, whole-slate, marginal and next-item probabilities of the logged slates."""
        items, rounds = slate_matrix(fb)
        s, k = items.shape
        a = self.n_actions
        srow = self.row[rounds[:, 0]]
        used = np.zeros((s, a), dtype=bool)
        pref_g = np.ones(s)
        pref_u = np.ones(s)
        cond = np.zeros((s, k, a))
        prefix = np.zeros((s, k))
        idx = np.arange(s)
        for j in range(k):
            g = self._greedy_step(self.scores[srow], used)
            u = np.where(used, 0.0, 1.0 / (a - j))
            wg, wu = (1.0 - self.epsilon) * pref_g, self.epsilon * pref_u
            den = wg + wu
            safe = np.where(den > 0, den, 1.0)
            mix = np.where((den > 0)[:, None], (wg[:, None] * g + wu[:, None] * u) / safe[:, None],
                           g)
            cond[:, j] = mix
            pref_g = pref_g * g[idx, items[:, j]]
            pref_u = pref_u * u[idx, items[:, j]]
            prefix[:, j] = (1.0 - self.epsilon) * pref_g + self.epsilon * pref_u
            used[idx, items[:, j]] = True
        marg = self.action_dist(k)
        return SlateProbs.from_matrices(fb, rounds, prefix, cond, marg.logged(fb))

    def _greedy_step(self, scores: np.ndarray, used: np.ndarray) -> np.ndarray:
        """Distribution of the next item of the Plackett–Luce part given the used items."""
        # unscored items (-inf) stay last but possible, used items impossible
        masked = np.where(used, -np.inf, np.where(np.isfinite(scores), scores, -1e300))
        out = np.zeros_like(masked)
        if self.temperature == 0.0:
            best = np.argmax(masked, axis=1)
            out[np.arange(len(out)), best] = 1.0
            return out
        z = masked / self.temperature
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)


@dataclass(frozen=True)
class SlateProbs:
    """Evaluation-policy probabilities for each logged round of a slate log.

    ``marginal`` π(a_k at k), ``prefix`` π(a_0..a_k), ``slate`` π(a_0..a_{K-1}) [n];
    ``cond`` [n, A] π(next item | logged prefix a_0..a_{k-1}) at the round's position.
    """

    marginal: np.ndarray
    prefix: np.ndarray | None
    slate: np.ndarray | None
    cond: np.ndarray | None

    @classmethod
    def from_matrices(cls, fb: LoggedFeedback, rounds: np.ndarray, prefix: np.ndarray,
                      cond: np.ndarray, marginal: np.ndarray) -> SlateProbs:
        n = fb.n_rounds
        p = np.empty(n)
        sl = np.empty(n)
        c = np.empty((n, cond.shape[2]))
        p[rounds.ravel()] = prefix.ravel()
        sl[rounds.ravel()] = np.repeat(prefix[:, -1], rounds.shape[1])
        c[rounds.ravel()] = cond.reshape(-1, cond.shape[2])
        return cls(marginal, p, sl, c)


def slate_matrix(fb: LoggedFeedback) -> tuple[np.ndarray, np.ndarray]:
    """Logged slates as ``items`` [S, K] and ``rounds`` [S, K] (round index of each slot).

    Every slate must fill positions 0..K-1 exactly once (K = the log's ``len_list``).
    """
    from recscope.errors import DataValidationError

    slate, order = fb.slates()
    counts = np.bincount(slate)
    k = fb.len_list
    bad = np.flatnonzero(counts != k)
    if bad.size:
        row = int(np.flatnonzero(slate == bad[0])[0])
        raise DataValidationError(f"slate has {counts[bad[0]]} items; slate estimators need "
                                  f"every slate to fill positions 0..{k - 1}", file=fb.source,
                                  column="session_id", row=row)
    rounds = order.reshape(-1, k)
    return fb.action[rounds], rounds


def _top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest scores per row, best first; ties go to the lower index
    and ``-inf`` entries are never chosen (-1 pads)."""
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    best = np.take_along_axis(scores, order, axis=1)
    idx = np.where(np.isneginf(best), -1, order).astype(np.int32)
    if idx.shape[1] < k:
        idx = np.pad(idx, ((0, 0), (0, k - idx.shape[1])), constant_values=-1)
    return idx


def _deterministic_marginals(scores: np.ndarray, len_list: int) -> np.ndarray:
    idx = _top_k(np.asarray(scores, np.float32), len_list)
    out = np.zeros((scores.shape[0], scores.shape[1], len_list))
    rows = np.arange(scores.shape[0])
    for k in range(len_list):
        ok = idx[:, k] >= 0
        out[rows[ok], idx[ok, k], k] = 1.0
    return out


# ---------------------------------------------------------------------- constructors
def uniform(fb: LoggedFeedback) -> ActionDist:
    """Every item equally likely at every position (a uniformly random ranking)."""
    table = np.full((fb.n_actions, fb.len_list), 1.0 / fb.n_actions)
    return ActionDist.context_free(table, fb.n_rounds, "uniform", {"kind": "uniform"})


def from_scores(scores: np.ndarray, row: np.ndarray | None = None, *,
                kind: Literal["deterministic", "softmax", "epsilon-greedy"] = "deterministic",
                temperature: float = 1.0, epsilon: float = 0.1, name: str | None = None,
                n_sim: int = 2000, seed: int = 0) -> RankingPolicy:
    """A ranking policy from scores [m, A]: deterministic, softmax or epsilon-greedy."""
    scores = np.asarray(scores, np.float64)
    row = np.arange(len(scores)) if row is None else np.asarray(row, np.int64)
    if kind == "deterministic":
        return RankingPolicy(scores, row, 0.0, 0.0, name or "deterministic", n_sim, seed)
    if kind == "softmax":
        if temperature <= 0:
            raise ConfigError("softmax needs temperature > 0", key="temperature")
        return RankingPolicy(scores, row, temperature, 0.0, name or f"softmax(t={temperature})",
                             n_sim, seed)
    if kind == "epsilon-greedy":
        return RankingPolicy(scores, row, 0.0, epsilon, name or f"epsilon-greedy({epsilon})",
                             n_sim, seed)
    raise ConfigError(f"unknown policy kind {kind!r}; expected deterministic, softmax or "
                      "epsilon-greedy", key="policy_kind")


class Scorer(Protocol):
    """Anything that scores items for users: ``score(users [n], items [n, m]) -> [n, m]``
    (a recscope component, a pipeline, your own model); ``-inf`` means never ranked."""

    def score(self, users: np.ndarray, items: np.ndarray) -> np.ndarray: ...


def from_scorer(scorer: Scorer, fb: LoggedFeedback, *, n_items: int | None = None,
                name: str = "scorer", **kwargs: Any) -> RankingPolicy:
    """A ranking policy from a scorer's scores over the logged items, per logged user.

    The scorer's user and item indices are the log's integer ids (recscope components
    carry no id vocabulary); items at or beyond ``n_items`` (the scorer's catalogue, when
    known) score ``-inf`` (outside its greedy support). ``kwargs`` go to
    :func:`from_scores` (``kind``, ``temperature``, ``epsilon``, ``seed``).
    """
    if fb.user_index is None:
        raise ConfigError("the log has no user ids to score", key="policy")
    try:
        item_idx = np.asarray(fb.item_ids, dtype=np.int64)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} needs integer item ids in the log (models carry no id "
                          "vocabulary)", key="policy") from None
    known = item_idx >= 0
    if n_items is not None:
        known &= item_idx < n_items
    users, row = np.unique(fb.user_index, return_inverse=True)
    cand = np.where(known, item_idx, -1)[None, :].repeat(len(users), axis=0).astype(np.int32)
    scores = np.asarray(scorer.score(users.astype(np.int32), cand), dtype=np.float64)
    if scores.shape != cand.shape:
        raise ConfigError(f"{name} returned scores of shape {scores.shape}, expected "
                          f"{cand.shape}", key="policy")
    scores[cand < 0] = -np.inf
    return from_scores(scores, row, name=name, **kwargs)


def from_log(source: LoggedFeedback, target: LoggedFeedback, *,
             method: Literal["harmonic", "nearest", "frequency"] = "harmonic",
             name: str | None = None) -> ActionDist:
    """The context-free policy that produced ``source``, known through its propensities.

    ``harmonic`` (default): the time-averaged probability of item ``a`` at position ``k``
    over the source log's period. A pair is logged more often while its probability is
    high, so the propensities logged for it are a size-biased sample of its probability
    over time, and their harmonic mean estimates the plain time average:
    ``π̄(a, k) = c_ak / Σ_i 1/μ_i`` over the ``c_ak`` rounds that logged the pair.
    Consistent when propensities stay positive, and exact from one observation when the
    policy is constant. ``nearest``: a time-varying policy, the propensity logged for the
    pair nearest in time to each target round (biased towards the times the pair was
    likely). ``frequency``: empirical action frequencies (no propensities used).

    Each position's column is renormalised to sum to 1 (the mass before is in ``info``).
    Pairs never logged in ``source`` (and items it does not know) get probability 0 and
    are counted in ``info``: estimators report logged actions outside the support, never
    drop them. ``info["self_weight_mean"]`` is the mean of ``π̂ / μ`` over the source's own
    rounds, 1 in expectation when the rebuilt policy is right.
    """
    if method not in ("harmonic", "nearest", "frequency"):
        raise ConfigError(f"unknown method {method!r}; expected harmonic, nearest or "
                          "frequency", key="method")
    src_pos = {str(v): i for i, v in enumerate(source.item_ids)}
    to_src = np.array([src_pos.get(str(v), -1) for v in target.item_ids], dtype=np.int64)
    a, k = target.n_actions, target.len_list
    label = name or f"log:{source.source}"
    info: dict[str, Any] = {"kind": "log", "method": method, "source": source.source,
                            "unknown_items": int((to_src < 0).sum()), "pairs": a * k}
    if method != "nearest":
        keep = source.position < k
        counts = np.zeros((source.n_actions, k))
        inv = np.zeros((source.n_actions, k))
        np.add.at(counts, (source.action[keep], source.position[keep]), 1.0)
        np.add.at(inv, (source.action[keep], source.position[keep]), 1.0 / source.pscore[keep])
        n_k = np.maximum(np.bincount(source.position[keep], minlength=k), 1).astype(np.float64)
        if method == "frequency":
            est = counts / n_k
        else:
            est = np.where(inv > 0, counts / np.where(inv > 0, inv, 1.0), 0.0)
        table = np.where((to_src >= 0)[:, None], est[np.maximum(to_src, 0)], 0.0)
        mass = table.sum(axis=0)
        table /= np.where(mass > 0, mass, 1.0)
        info.update(pairs_never_logged=int((table == 0).sum()),
                    raw_mass=[float(m) for m in mass],
                    self_weight_mean=_self_weight(table, source, to_src))
        return ActionDist.context_free(table, target.n_rounds, label, info)
    if source.timestamp is None or target.timestamp is None:
        raise ConfigError("method 'nearest' needs timestamps in both logs", key="method")
    probs = np.zeros((target.n_rounds, a, k))
    never = 0
    order = np.argsort(source.timestamp, kind="stable")
    s_act, s_pos = source.action[order], source.position[order]
    s_t, s_p = source.timestamp[order], source.pscore[order]
    for ta in range(a):
        sa = to_src[ta]
        for pos in range(k):
            sel = np.flatnonzero((s_act == sa) & (s_pos == pos)) if sa >= 0 else np.empty(0, int)
            if sel.size == 0:
                never += 1
                continue
            probs[:, ta, pos] = s_p[sel][_nearest(s_t[sel], target.timestamp)]
    raw_mass = probs.sum(axis=1)  # [T, K]
    probs /= np.where(raw_mass > 0, raw_mass, 1.0)[:, None, :]
    info.update(pairs_never_logged=never, raw_mass_mean=float(raw_mass.mean()),
                raw_mass_min=float(raw_mass.min()), raw_mass_max=float(raw_mass.max()))
    return ActionDist.per_round(probs, label, info)


def _self_weight(table: np.ndarray, source: LoggedFeedback, to_src: np.ndarray) -> float:
    """Mean of ``table[a, k] / μ`` over the source's own rounds (≈ 1 when consistent)."""
    back = np.full(source.n_actions, -1, dtype=np.int64)
    ok = to_src >= 0
    back[to_src[ok]] = np.flatnonzero(ok)
    ta = back[source.action]
    keep = source.position < table.shape[1]
    pos = np.minimum(source.position, table.shape[1] - 1)
    pi = np.where((ta >= 0) & keep, table[np.maximum(ta, 0), pos], 0.0)
    return float(np.mean(pi / source.pscore))


def _nearest(sorted_times: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Index into ``sorted_times`` of the element nearest to each query time."""
    right = np.clip(np.searchsorted(sorted_times, query), 0, len(sorted_times) - 1)
    left = np.clip(right - 1, 0, len(sorted_times) - 1)
    take_left = np.abs(query - sorted_times[left]) <= np.abs(sorted_times[right] - query)
    return np.where(take_left, left, right)
