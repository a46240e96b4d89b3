"""``World``: the built-in visual-discovery platform, its true preferences and its log.

``World.generate(WorldConfig())`` draws 20,000 users, 10,000 pins and a historical log of
1,000,000 impressions (plus clicks, saves and hides) from a known logging policy, keeping
every latent quantity (:class:`~recscope.sim.world_model.WorldTruth`) so that the simulator can
drive the same world and compute ground truth. Same config and seed, byte-identical
files. The generative model is documented in ``docs/world.md``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recscope.core.progress import Progress
from recscope.data.interactions import Interactions
from recscope.data.schema import TIMESTAMP_TYPE
from recscope.data.vocab import Vocabulary
from recscope.errors import DataValidationError
from recscope.io import atomic_dir
from recscope.sim.config import SURFACES, WorldConfig, parse_world_config
from recscope.sim.log import generate_log
from recscope.sim.logging_policy import LoggingPolicy
from recscope.sim.text import make_texts
from recscope.sim.world_model import EngagementProbabilities, WorldTruth, build_truth

FORMAT = "recscope.world/1"
_TRUTH_FILES = ("truth_users", "truth_items", "truth_topics", "truth_creators")


class World:
    """A generated world: config, truth, the logged :class:`Interactions` and requests.

    * ``interactions``: the log in the canonical schema (plus ``request_id`` and
      ``propensity_cascade``), with item side table (``text``, ``topic``, ``creator_id``,
      ``quality``, ``created_at``) and user side table (``interest``); ids are the dense
      indices of :attr:`truth`.
    * ``requests``: one row per served slate (``request_id``, ``session_id``, ``step``,
      ``user_id``, ``timestamp``, ``surface``, ``query_topic``, ``seed_item``,
      ``slate_size``), the context the logging policy and the true model need.
    * ``truth``: every latent array and the true engagement model.
    """

    def __init__(self, config: WorldConfig, truth: WorldTruth, interactions: Interactions,
                 requests: pa.Table, timings: dict[str, float] | None = None) -> None:
        self.config = config
        self.truth = truth
        self.interactions = interactions
        self.requests = requests
        self.timings = timings or {}
        self._policy: LoggingPolicy | None = None

    def __repr__(self) -> str:
        return (f"World(seed={self.config.seed}, {self.truth.n_users:,} users, "
                f"{self.truth.n_items:,} items, {len(self.interactions):,} log rows)")

    # ------------------------------------------------------------------ generation
    @classmethod
    def generate(cls, config: WorldConfig | None = None, *,
                 progress: Progress | None = None) -> World:
        """Draw the world and its log. ``progress("world", done, total)`` reports logged
        impressions."""
        config = config or WorldConfig()
        seeds = np.random.SeedSequence(config.seed).spawn(4)
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        truth = build_truth(config, np.random.default_rng(seeds[0]))
        texts = make_texts(truth.item_topic, config.n_topics, np.random.default_rng(seeds[1]),
                           topic_share=config.text_topic_share,
                           other_share=config.text_other_topic_share,
                           mean_words=config.text_mean_words)
        timings["truth_s"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        policy = LoggingPolicy(truth)
        table, requests = generate_log(truth, policy, np.random.default_rng(seeds[2]),
                                       progress)
        timings["log_s"] = time.perf_counter() - t1
        interactions = Interactions(
            table,
            Vocabulary(pa.array(np.arange(config.n_users, dtype=np.int64)), name="user_id"),
            Vocabulary(pa.array(np.arange(config.n_items, dtype=np.int64)), name="item_id"),
            item_features=_item_table(truth, texts), user_features=_user_table(truth),
            name=f"world-seed{config.seed}")
        world = cls(config, truth, interactions, requests, timings)
        world._policy = policy
        return world

    @property
    def policy(self) -> LoggingPolicy:
        """The logging policy that produced the log (pools are rebuilt lazily on load)."""
        if self._policy is None:
            self._policy = LoggingPolicy(self.truth)
        return self._policy

    # ------------------------------------------------------------------ ground truth
    def engagement_probabilities(self, users: np.ndarray, items: np.ndarray,
                                 positions: np.ndarray, surface: str, *,
                                 query_topic: np.ndarray | int | None = None,
                                 seed_item: np.ndarray | int | None = None,
                                 ) -> EngagementProbabilities:
        """True P(click), P(save), P(hide) of showing ``items`` to ``users`` at ``positions``
        on ``surface`` (search needs ``query_topic``, related needs ``seed_item``)."""
        return self.truth.engagement_probabilities(users, items, positions, surface,
                                                   query_topic=query_topic,
                                                   seed_item=seed_item)

    def logged_probabilities(self) -> EngagementProbabilities:
        """True engagement probabilities of every logged impression (log order)."""
        t = self.interactions.table
        imp = t.filter(pc.equal(t.column("event"), "impression"))
        req = self.requests
        rid = imp.column("request_id").to_numpy()
        surf = imp.column("surface").to_numpy(zero_copy_only=False)
        users = imp.column("user_id").to_numpy()
        items = imp.column("item_id").to_numpy()
        pos = imp.column("position").to_numpy()
        query = req.column("query_topic").to_numpy()[rid]
        seed = req.column("seed_item").to_numpy()[rid]
        out = {k: np.zeros(len(rid)) for k in ("examine", "attract", "click", "save", "hide")}
        for s in SURFACES:
            m = surf == s
            if not m.any():
                continue
            p = self.truth.engagement_probabilities(users[m], items[m], pos[m], s,
                                                    query_topic=query[m],
                                                    seed_item=np.maximum(seed[m], 0))
            for k in out:
                out[k][m] = getattr(p, k)
        return EngagementProbabilities(**out)

    # ------------------------------------------------------------------ description
    def describe(self) -> dict[str, Any]:
        """Counts, engagement rates by surface and position, and heavy-tail statistics."""
        t = self.interactions.table
        event = t.column("event").to_numpy(zero_copy_only=False)
        surf = t.column("surface").to_numpy(zero_copy_only=False)
        pos = t.column("position").to_numpy()
        imp = event == "impression"
        users = t.column("user_id").to_numpy()
        items = t.column("item_id").to_numpy()
        u_imp = np.bincount(users[imp], minlength=self.truth.n_users)
        i_imp = np.bincount(items[imp], minlength=self.truth.n_items)
        counts = {e: int((event == e).sum()) for e in ("impression", "click", "save", "hide")}
        by_surface: dict[str, Any] = {}
        for s in SURFACES:
            ms = surf == s
            n_imp = int((ms & imp).sum())
            k = self.config.surfaces.get(s).slate_size
            shown = np.bincount(pos[ms & imp], minlength=k)[:k]
            clicks = np.bincount(pos[ms & (event == "click")], minlength=k)[:k]
            by_surface[s] = {
                "impressions": n_imp,
                "requests": int(pc.sum(pc.equal(self.requests.column("surface"), s)).as_py()
                                or 0),
                "ctr": _rate((ms & (event == "click")).sum(), n_imp),
                "save_rate": _rate((ms & (event == "save")).sum(), n_imp),
                "hide_rate": _rate((ms & (event == "hide")).sum(), n_imp),
                "ctr_by_position": [_rate(c, n) for c, n in zip(clicks, shown, strict=True)],
            }
        return {
            "n_users": self.truth.n_users,
            "n_items": self.truth.n_items,
            "n_topics": self.truth.n_topics,
            "n_creators": int(self.truth.creator_topic.size),
            "n_sessions": int(np.unique(t.column("session_id").to_numpy()).size),
            "n_requests": self.requests.num_rows,
            "n_rows": t.num_rows,
            "events": counts,
            "active_users": int((u_imp > 0).sum()),
            "items_shown": int((i_imp > 0).sum()),
            "top1pct_user_share": _top_share(u_imp, 0.01),
            "top1pct_item_share": _top_share(i_imp, 0.01),
            "surfaces": by_surface,
            "time_range": [_iso(t.column("timestamp"), "min"), _iso(t.column("timestamp"), "max")],
        }

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path, *, force: bool = True) -> Path:
        """Write Parquet files and ``config.json`` atomically; the layout is also a saved
        :class:`Interactions` directory, so ``Interactions.load(path)`` reads the log.

        An existing non-empty ``path`` needs ``force``; only files recscope wrote there are
        replaced (:func:`recscope.io.atomic_dir`)."""
        inter = self.interactions
        if inter.item_features is None or inter.user_features is None:
            raise DataValidationError("a world's interactions need item and user side tables",
                                      file=str(path))
        with atomic_dir(path, force=force) as tmp:
            _write(tmp / "interactions.parquet", inter.table)
            _write(tmp / "users.parquet", pa.table({"user_id": inter.users.ids}))
            _write(tmp / "items.parquet", pa.table({"item_id": inter.items.ids}))
            _write(tmp / "item_features.parquet", inter.item_features)
            _write(tmp / "user_features.parquet", inter.user_features)
            _write(tmp / "requests.parquet", self.requests)
            for name, table in self.truth.tables().items():
                _write(tmp / f"{name}.parquet", table)
            (tmp / "config.json").write_text(
                json.dumps(self.config.model_dump(mode="json"), indent=2, sort_keys=True) + "\n",
                encoding="utf-8")
            (tmp / "meta.json").write_text(
                json.dumps({"format": "recscope.interactions/1", "world": FORMAT,
                            "name": inter.name}, indent=2) + "\n", encoding="utf-8")
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> World:
        """Read a directory written by :meth:`save`."""
        p = Path(path)
        needed = ["config.json", "requests.parquet", "interactions.parquet",
                  "item_features.parquet", "user_features.parquet"] + \
            [f"{n}.parquet" for n in _TRUTH_FILES]
        missing = [n for n in needed if not (p / n).exists()]
        if missing:
            raise DataValidationError(f"not a saved world directory (missing {missing[0]})",
                                      file=str(p))
        config = parse_world_config(json.loads((p / "config.json").read_text(encoding="utf-8")),
                                    file=str(p / "config.json"))
        return cls(config, WorldTruth.from_dir(p, config), Interactions.load(p),
                   pq.read_table(p / "requests.parquet"))


def _write(path: Path, table: pa.Table) -> None:
    """Deterministic Parquet: no pandas metadata, fixed compression and row groups."""
    pq.write_table(table.replace_schema_metadata(None), path, compression="zstd",
                   row_group_size=1 << 20, write_statistics=True)


def _item_table(truth: WorldTruth, texts: list[str]) -> pa.Table:
    names = pa.array(list(truth.topic_names), pa.string())
    return pa.table({
        "item_id": pa.array(np.arange(truth.n_items, dtype=np.int64)),
        "text": pa.array(texts, pa.string()),
        "topic": names.take(pa.array(truth.item_topic)),
        "creator_id": pa.array(truth.item_creator.astype(np.int64)),
        "quality": pa.array(truth.item_quality),
        "created_at": pa.array(truth.item_created_at, TIMESTAMP_TYPE),
    })


def _user_table(truth: WorldTruth) -> pa.Table:
    """Users' stated interest: the topic they weigh most (an onboarding answer)."""
    names = pa.array(list(truth.topic_names), pa.string())
    return pa.table({
        "user_id": pa.array(np.arange(truth.n_users, dtype=np.int64)),
        "interest": names.take(pa.array(truth.user_topics.argmax(axis=1).astype(np.int32))),
    })


def _rate(num: float, den: float) -> float | None:
    return float(num) / float(den) if den else None


def _top_share(counts: np.ndarray, fraction: float) -> float:
    """Share of the total held by the top ``fraction`` of entries."""
    total = counts.sum()
    if total == 0:
        return 0.0
    n = max(1, round(counts.size * fraction))
    return float(np.sort(counts)[::-1][:n].sum() / total)


def _iso(col: pa.ChunkedArray, how: str) -> str | None:
    v = (pc.min if how == "min" else pc.max)(col).as_py()
    return v.isoformat() if v is not None else None
