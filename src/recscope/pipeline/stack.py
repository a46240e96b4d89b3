"""The one retrieve-then-rank step: candidates from a retrieval stage, ordered by a
ranking stage's scores, cut to the top ``k``.

:class:`~recscope.pipeline.Pipeline` (without a ranker: the fused retriever scores), the
simulator's :class:`~recscope.sim.StackPolicy` and the demo's offline stacks all order
candidates with :func:`rank_candidates`, so a stack ranks the same items the same way
offline, in the simulator and in a pipeline.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from recscope.data.rankings import RankedLists
from recscope.models.base import top_k


def rank_candidates(candidates: np.ndarray, scores: np.ndarray, k: int,
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``k`` best candidates by score, best first.

    ``candidates`` (n, m) item indices (-1 pads), ``scores`` (n, m). Ties go to the earlier
    candidate; padding and non-finite scores never win (-1 / -inf pad the output).
    Returns items (n, k) int64 and scores (n, k) float32.
    """
    cand = np.asarray(candidates)
    s = np.where(cand >= 0, np.asarray(scores, dtype=np.float64), -np.inf)
    s = np.where(np.isnan(s), -np.inf, s)
    pos, val = top_k(s, k)
    items = np.where(pos >= 0, np.take_along_axis(cand, np.maximum(pos, 0), axis=1), -1)
    return items.astype(np.int64), val


class RetrieveRank:
    """A two-stage stack of fitted components: ``retriever.recommend`` gives ``pool``
    candidates per user, ``ranker.score`` orders them (:func:`rank_candidates`).

    ``recommend`` returns :class:`RankedLists` with ``retrieval`` and ``ranking`` traces
    (all candidates, and all of them in ranker order) for the stage funnel.
    """

    def __init__(self, retriever: Any, ranker: Any, pool: int) -> None:
        self.retriever = retriever
        self.ranker = ranker
        self.pool = pool

    def recommend(self, users: np.ndarray, k: int, *, exclude: Any = "train") -> RankedLists:
        """Top ``k`` of the ranked candidates, with the stage traces."""
        users = np.asarray(users, dtype=np.int32)
        cand = self.retriever.recommend(users, self.pool, exclude=exclude).items
        scores = self.ranker.score(users, cand)
        ranked, rs = rank_candidates(cand, scores, cand.shape[1])
        top = ranked[:, :k]
        top_scores = np.where(top >= 0, rs[:, :k], 0).astype(np.float32)
        return RankedLists(users, top, top_scores, traces={"retrieval": cand,
                                                           "ranking": ranked})
