"""Union retriever: several candidate generators merged with quotas and de-duplication.

Member ``r`` contributes ``quota_r`` distinct items, in member order: an item already
taken by an earlier member is skipped and the member's next item is taken instead, so
the union holds sum(quota) distinct items whenever the catalogue allows. The union's own
order (and ``score``) is reciprocal-rank fusion over the members' full lists,
Σ_r 1 / (``rrf_k`` + rank_r), which rewards items several members agree on.
:meth:`UnionRetriever.candidates` also returns every member's score and rank of every
candidate: the upstream features a ranker learns from.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numba
import numpy as np
from pydantic import Field, field_validator

from recscope.data.interactions import Interactions
from recscope.data.rankings import RankedLists
from recscope.models.base import (
    Component,
    ComponentConfig,
    ComponentSpec,
    apply_exclusion,
    register,
    top_k,
)


class UnionMember(ComponentSpec):
    """A member: ``component``, ``params``, its ``quota`` and an optional ``name``."""

    quota: int = Field(default=100, ge=1)
    name: str | None = None


class UnionConfig(ComponentConfig):
    """``members`` in priority order; ``rrf_k`` is the fusion constant."""

    members: list[UnionMember] = Field(default_factory=lambda: [
        UnionMember(component="popularity", quota=50),
        UnionMember(component="itemknn", quota=50)])
    rrf_k: float = Field(default=60.0, gt=0)

    @field_validator("members")
    @classmethod
    def _unique_names(cls, v: list[UnionMember]) -> list[UnionMember]:
        if not v:
            raise ValueError("at least one member is needed")
        names = member_names(v)
        if len(set(names)) != len(names):
            raise ValueError(f"member names must be unique, got {names}")
        return v


def member_names(members: list[UnionMember]) -> list[str]:
    """Display names: ``name`` when given, else the component name (numbered if repeated)."""
    base = [m.name or m.component for m in members]
    out = []
    for i, b in enumerate(base):
        out.append(b if base.count(b) == 1 or members[i].name else f"{b}{base[:i].count(b)}")
    return out


@dataclass
class Candidates:
    """Union candidates with provenance: ``items`` [n, m] (−1 pads), ``member_scores``
    and ``member_ranks`` [n, m, R] (rank 1-based in the member's list; 0 = not in it),
    ``source`` [n, m]: index of the member whose quota the item filled; ``member_range``
    [n, R, 2]: lowest and highest score in each member's own retrieved list."""

    users: np.ndarray
    items: np.ndarray
    member_scores: np.ndarray
    member_ranks: np.ndarray
    source: np.ndarray
    names: list[str]
    member_range: np.ndarray


@register("union")
class UnionRetriever(Component):
    """Merges member retrievers' lists under quotas (see the module docstring)."""

    Config = UnionConfig
    config: UnionConfig

    def __init__(self, config: UnionConfig | dict | None = None, **kw: object) -> None:
        super().__init__(config, **kw)
        self.members: list[Component] = []

    @property
    def names(self) -> list[str]:
        return member_names(self.config.members)

    @property
    def depth(self) -> int:
        """Number of candidates the union produces per user (sum of quotas)."""
        return sum(m.quota for m in self.config.members)

    def _fit(self, train: Interactions) -> None:
        self.members = [m.build(key=f"members.{i}")
                        for i, m in enumerate(self.config.members)]
        for m in self.members:
            m.fit(train)

    def candidates(self, users: np.ndarray, *, exclude: Any = "train") -> Candidates:
        """Merged candidate lists with each member's score and rank of every candidate."""
        self._check_fitted()
        users = np.asarray(users, dtype=np.int32)
        quotas = np.array([m.quota for m in self.config.members], dtype=np.int64)
        lists = []
        ranges = np.zeros((len(users), len(self.members), 2), dtype=np.float32)
        for r, member in enumerate(self.members):
            depth = int(quotas[: r + 1].sum())  # enough to fill the quota after de-dup
            rl = member.recommend(users, depth, exclude=exclude)
            lists.append(rl.items)
            ranges[:, r] = score_range(rl)
        width = int(quotas.sum())
        items, source = _merge(lists, quotas, self.n_items, width)
        n_members = len(self.members)
        scores = np.full((len(users), width, n_members), -np.inf, dtype=np.float32)
        ranks = np.zeros((len(users), width, n_members), dtype=np.int32)
        for r, member in enumerate(self.members):
            scores[:, :, r] = member.score(users, items)
            ranks[:, :, r] = _positions(lists[r], items, self.n_items)
        return Candidates(users, items, scores, ranks, source, self.names, ranges)

    def fused(self, cand: Candidates) -> np.ndarray:
        """Reciprocal-rank fusion score of every candidate (−inf for pads)."""
        r = cand.member_ranks.astype(np.float64)
        s = np.where(r > 0, 1.0 / (self.config.rrf_k + r), 0.0).sum(axis=2)
        return np.where(cand.items >= 0, s, -np.inf).astype(np.float32)

    def recommend(self, users: np.ndarray, k: int, *, exclude: Any = "train",
                  batch_size: int = 2048) -> RankedLists:
        """The union's candidates ordered by fused score, truncated or padded to ``k``."""
        users = np.asarray(users, dtype=np.int32)
        cand = self.candidates(users, exclude=exclude)
        fused = self.fused(cand)
        pos, sc = top_k(fused, k)
        items = np.where(pos >= 0, np.take_along_axis(cand.items, np.maximum(pos, 0), 1), -1)
        return RankedLists(users, items, sc)

    def _score_all(self, users: np.ndarray) -> np.ndarray:
        """The fused score every item would get in :meth:`recommend` (seen items
        excluded from the members' rankings; a member counts only within its depth)."""
        out = np.zeros((len(users), self.n_items), dtype=np.float64)
        quotas = np.array([m.quota for m in self.config.members])
        for r, member in enumerate(self.members):
            s = member._scores(users)
            apply_exclusion(s, users, self.seen)
            depth = int(quotas[: r + 1].sum())
            lst = top_k(s, depth)[0]
            ranks = _positions(lst, np.broadcast_to(np.arange(self.n_items, dtype=np.int32),
                                                    s.shape), self.n_items)
            out += np.where(ranks > 0, 1.0 / (self.config.rrf_k + ranks), 0.0)
        return out.astype(np.float32)

    def _save_extra(self, directory: Path) -> None:
        for i, m in enumerate(self.members):
            m.save(directory / "members" / f"{i:02d}")

    def _load_extra(self, directory: Path) -> None:
        self.members = [Component.load(directory / "members" / f"{i:02d}")
                        for i in range(len(self.config.members))]


def score_range(lists: RankedLists) -> np.ndarray:
    """[n, 2]: lowest and highest finite score of each list (0, 0 for empty lists)."""
    s = np.where(lists.items >= 0, lists.scores, np.nan).astype(np.float64)
    empty = np.isnan(s).all(axis=1)
    s[empty] = 0.0
    return np.stack([np.nanmin(s, axis=1), np.nanmax(s, axis=1)], axis=1)


def _merge(lists: list[np.ndarray], quotas: np.ndarray, n_items: int, width: int
           ) -> tuple[np.ndarray, np.ndarray]:
    n = lists[0].shape[0] if lists else 0
    depth = max(x.shape[1] for x in lists)
    stacked = np.full((len(lists), n, depth), -1, dtype=np.int32)
    for r, x in enumerate(lists):
        stacked[r, :, : x.shape[1]] = x
    return _merge_kernel(stacked, quotas, n_items, width)


@numba.njit(cache=True)
def _merge_kernel(lists: np.ndarray, quotas: np.ndarray, n_items: int, width: int
                  ) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    n_members, n, depth = lists.shape
    items = np.full((n, width), -1, dtype=np.int32)
    source = np.full((n, width), -1, dtype=np.int32)
    stamp = np.zeros(n_items, dtype=np.int64)
    for row in range(n):
        tag = row + 1
        pos = 0
        for r in range(n_members):
            taken = 0
            for j in range(depth):
                if taken >= quotas[r]:
                    break
                it = lists[r, row, j]
                if it < 0:
                    break
                if stamp[it] == tag:
                    continue
                stamp[it] = tag
                items[row, pos] = it
                source[row, pos] = r
                pos += 1
                taken += 1
    return items, source


def _positions(member_list: np.ndarray, items: np.ndarray, n_items: int) -> np.ndarray:
    """1-based position of each of ``items`` [n, m] in ``member_list`` [n, L] (0 if absent)."""
    return _positions_kernel(np.ascontiguousarray(member_list, dtype=np.int32),
                             np.ascontiguousarray(items, dtype=np.int32), n_items)


@numba.njit(cache=True)
def _positions_kernel(lists: np.ndarray, items: np.ndarray, n_items: int
                      ) -> np.ndarray:  # pragma: no cover - compiled
    out = np.zeros(items.shape, dtype=np.int32)
    pos = np.zeros(n_items, dtype=np.int32)
    stamp = np.zeros(n_items, dtype=np.int64)
    for row in range(lists.shape[0]):
        for j in range(lists.shape[1]):
            it = lists[row, j]
            if it >= 0:
                stamp[it] = row + 1
                pos[it] = j + 1
        for c in range(items.shape[1]):
            it = items[row, c]
            if it >= 0 and stamp[it] == row + 1:
                out[row, c] = pos[it]
    return out
