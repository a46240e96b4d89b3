"""The historical log of the built-in world: sessions, requests, slates and engagements.

Sessions are drawn in batches and unfold step by step (every session of a batch at once,
vectorised with numpy): each step picks a surface, retrieves the logging policy's pool,
samples a slate by Plackett–Luce and lets users respond through the TRUE preference
model. Generation stops at the first session that brings the log to ``n_impressions``.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from recscope.core.progress import Progress, report
from recscope.data.schema import TIMESTAMP_TYPE
from recscope.errors import ConfigError
from recscope.sim.config import SURFACES
from recscope.sim.logging_policy import LoggingPolicy
from recscope.sim.world_model import WorldTruth, micros

EVENTS: tuple[str, ...] = ("impression", "click", "save", "hide")
_SECOND = 1_000_000
_HOUR = 3600 * _SECOND
_DAY = 24 * _HOUR
_BATCH_SESSIONS = 4000

#: Per-request arrays collected for each batch (generation order).
_KEYS: tuple[str, ...] = ("session", "step", "user", "surface", "ts", "query", "seed", "items",
                          "prop", "cascade", "click", "save", "hide")


def generate_log(truth: WorldTruth, policy: LoggingPolicy, rng: np.random.Generator,
                 progress: Progress | None = None) -> tuple[pa.Table, pa.Table]:
    """Draw the log; return (interactions table, requests table), both time-ordered."""
    cfg = truth.config
    target = cfg.n_impressions
    width = max(cfg.surfaces.get(s).slate_size for s in SURFACES)
    parts: list[dict[str, np.ndarray]] = []
    done = 0
    n_sessions = 0
    empty = 0
    per_session = float(np.mean([cfg.surfaces.get(s).slate_size for s in SURFACES])) \
        * cfg.sessions.mean_requests
    while done < target:
        want = int(np.ceil((target - done) / max(per_session, 1.0) * 1.1)) + 8
        batch = _batch(truth, policy, rng, min(_BATCH_SESSIONS, want), width, n_sessions)
        empty = empty + 1 if not (batch["items"] >= 0).any() else 0
        if empty >= 20:
            raise ConfigError("20 batches of sessions showed no pin at all: no pin is "
                              "available to the logging policy (check backfill_share, "
                              "n_items and logging_policy.pool_size)", key="backfill_share")
        counts = np.bincount(batch["session"] - n_sessions,
                             weights=(batch["items"] >= 0).sum(axis=1),
                             minlength=batch["n_sessions"]).astype(np.int64)
        per_session = max(float(counts.mean()), 1.0)
        cum = done + np.cumsum(counts)
        if cum[-1] >= target:
            keep_sessions = int(np.searchsorted(cum, target)) + 1
            keep = batch["session"] - n_sessions < keep_sessions
            batch = {k: (v[keep] if isinstance(v, np.ndarray) else v) for k, v in batch.items()}
            done = int(cum[keep_sessions - 1])
        else:
            done = int(cum[-1])
        n_sessions += batch["n_sessions"]
        parts.append(batch)
        report(progress, "world", min(done, target), target)
    merged = {k: np.concatenate([p[k] for p in parts]) for k in parts[0] if k != "n_sessions"}
    return _tables(truth, merged, rng)


def _batch(truth: WorldTruth, policy: LoggingPolicy, rng: np.random.Generator, n: int,
           width: int, session_offset: int) -> dict[str, np.ndarray]:
    """Simulate ``n`` sessions step by step; per-request arrays in generation order."""
    cfg = truth.config
    sc = cfg.sessions
    users = rng.choice(truth.n_users, size=n, p=truth.user_activity / truth.user_activity.sum())
    hours = np.arange(24)
    hour_w = 1.0 + sc.diurnal_amplitude * np.cos(2 * np.pi * (hours - sc.peak_hour) / 24.0)
    hour = rng.choice(24, size=n, p=hour_w / hour_w.sum())
    day = rng.integers(0, cfg.n_days, n)
    t = (micros(cfg.start) + day * _DAY + hour * _HOUR
         + (rng.random(n) * _HOUR).astype(np.int64))
    n_req = np.minimum(rng.geometric(1.0 / sc.mean_requests, n), sc.max_requests)
    last_click = np.full(n, -1, dtype=np.int64)
    prev_top = np.full(n, -1, dtype=np.int64)
    prev_clicked = np.zeros(n, dtype=bool)
    out: dict[str, list[np.ndarray]] = {k: [] for k in _KEYS}
    for step in range(int(n_req.max())):
        active = np.flatnonzero(n_req > step)
        u = rng.random(active.size)
        if step == 0:
            surface = np.where(u < sc.first_search_share, 2, 0)
        else:
            p_rel = np.where(prev_clicked[active], sc.related_after_click, sc.related_no_click)
            v = rng.random(active.size)
            surface = np.where(u < p_rel, 1, np.where(v < sc.search_share, 2, 0))
            surface = np.where((surface == 1) & (prev_top[active] < 0), 0, surface)
            t[active] += (rng.exponential(sc.mean_gap_seconds, active.size)
                          * _SECOND).astype(np.int64)
        # search queries follow the user's interests; related starts from a clicked pin
        cum = np.cumsum(truth.user_topics[users[active]], axis=1)
        query = np.minimum((rng.random(active.size)[:, None] > cum).sum(axis=1),
                           truth.n_topics - 1)
        seed = np.where(last_click[active] >= 0, last_click[active], prev_top[active])
        for code, name in enumerate(SURFACES):
            sel = active[surface == code]
            if sel.size == 0:
                continue
            q = query[surface == code]
            sd = seed[surface == code]
            slate = _serve(truth, policy, rng, name, users[sel], t[sel], q, sd)
            k = slate["items"].shape[1]
            pad = width - k

            def padded(x: np.ndarray, fill: object, pad: int = pad) -> np.ndarray:
                return np.pad(x, ((0, 0), (0, pad)), constant_values=fill)

            out["session"].append(sel + session_offset)
            out["step"].append(np.full(sel.size, step, dtype=np.int32))
            out["user"].append(users[sel])
            out["surface"].append(np.full(sel.size, code, dtype=np.int8))
            out["ts"].append(t[sel].copy())
            out["query"].append(np.where(code == 2, q, -1))
            out["seed"].append(np.where(code == 1, sd, -1))
            out["items"].append(padded(slate["items"], -1))
            for key in ("prop", "cascade"):
                out[key].append(padded(slate[key], np.nan))
            for key in ("click", "save", "hide"):
                out[key].append(padded(slate[key], False))
            clicks = slate["click"]
            any_click = clicks.any(axis=1)
            last_pos = k - 1 - np.argmax(clicks[:, ::-1], axis=1)
            last_click[sel] = np.where(any_click, slate["items"][np.arange(sel.size), last_pos],
                                       last_click[sel])
            prev_clicked[sel] = any_click
            prev_top[sel] = np.where(slate["items"][:, 0] >= 0, slate["items"][:, 0],
                                     prev_top[sel])
            scroll = cfg.surfaces.get(name).scroll_seconds
            t[sel] += ((slate["items"] >= 0).sum(axis=1) * scroll * _SECOND).astype(np.int64)
    batch: dict[str, np.ndarray] = {k: np.concatenate(v) for k, v in out.items()}
    batch["n_sessions"] = n  # type: ignore[assignment]
    return batch


def _serve(truth: WorldTruth, policy: LoggingPolicy, rng: np.random.Generator, surface: str,
           users: np.ndarray, ts: np.ndarray, query: np.ndarray, seed: np.ndarray,
           ) -> dict[str, np.ndarray]:
    """One slate per request on ``surface`` and the users' responses to it."""
    k = truth.config.surfaces.get(surface).slate_size
    pool, score = policy.candidates(users, surface, query_topic=query, seed_item=seed)
    slates = policy.sample(pool, policy.log_weights(pool, score, ts), k, rng)
    items = slates.items
    shown = items >= 0
    pos = np.broadcast_to(np.arange(items.shape[1]), items.shape)
    p = truth.engagement_probabilities(
        users[:, None], np.maximum(items, 0), pos, surface,
        query_topic=query[:, None], seed_item=np.maximum(seed, 0)[:, None])
    examined = rng.random(items.shape) < p.examine
    attracted = rng.random(items.shape) < p.attract
    click = shown & examined & attracted
    r = rng.random(items.shape)
    save = click & (r < p.save / np.maximum(p.click, 1e-300))
    hide = shown & examined & ~attracted & (
        r < p.hide / np.maximum(p.examine * (1.0 - p.attract), 1e-300))
    return {"items": items, "prop": slates.propensity, "cascade": slates.propensity_cascade,
            "click": click, "save": save, "hide": hide}


def _tables(truth: WorldTruth, b: dict[str, np.ndarray], rng: np.random.Generator,
            ) -> tuple[pa.Table, pa.Table]:
    """Canonical interaction rows and the request table, ids renumbered in time order."""
    cfg = truth.config
    n_req = b["ts"].size
    # sessions and requests numbered by time of first request / request time
    sess_first = np.full(int(b["session"].max()) + 1, np.iinfo(np.int64).max)
    np.minimum.at(sess_first, b["session"], b["ts"])
    used = np.unique(b["session"])
    sess_rank = np.empty(sess_first.size, dtype=np.int64)
    sess_rank[used[np.lexsort((used, sess_first[used]))]] = np.arange(used.size)
    session_id = sess_rank[b["session"]]
    req_order = np.lexsort((b["step"], session_id, b["ts"]))
    request_id = np.empty(n_req, dtype=np.int64)
    request_id[req_order] = np.arange(n_req)
    scroll = np.array([cfg.surfaces.get(s).scroll_seconds for s in SURFACES]) * _SECOND
    items = b["items"]
    width = items.shape[1]
    r, c = np.nonzero(items >= 0)
    imp_ts = b["ts"][r] + (c * scroll[b["surface"][r]]).astype(np.int64)
    cols: dict[str, list[np.ndarray]] = {k: [] for k in
                                         ("row", "pos", "ts", "event")}
    cols["row"].append(r)
    cols["pos"].append(c)
    cols["ts"].append(imp_ts)
    cols["event"].append(np.zeros(r.size, dtype=np.int8))
    flat = r * width + c
    click_delay = ((1.0 + rng.exponential(5.0, r.size)) * _SECOND).astype(np.int64)
    save_delay = ((1.0 + rng.exponential(15.0, r.size)) * _SECOND).astype(np.int64)
    hide_delay = ((1.0 + rng.exponential(3.0, r.size)) * _SECOND).astype(np.int64)
    for code, key, delay in ((1, "click", click_delay), (2, "save", click_delay + save_delay),
                             (3, "hide", hide_delay)):
        m = b[key].reshape(-1)[flat]
        cols["row"].append(r[m])
        cols["pos"].append(c[m])
        cols["ts"].append(imp_ts[m] + delay[m])
        cols["event"].append(np.full(int(m.sum()), code, dtype=np.int8))
    row = np.concatenate(cols["row"])
    pos = np.concatenate(cols["pos"])
    ts = np.concatenate(cols["ts"])
    event = np.concatenate(cols["event"])
    order = np.lexsort((event, pos, request_id[row], ts))
    row, pos, ts, event = row[order], pos[order], ts[order], event[order]
    surface_names = pa.array(list(SURFACES), pa.string())
    table = pa.table({
        "user_id": pa.array(b["user"][row].astype(np.int64)),
        "item_id": pa.array(items[row, pos].astype(np.int64)),
        "timestamp": pa.array(ts, TIMESTAMP_TYPE),
        "event": pa.array(list(EVENTS), pa.string()).take(pa.array(event)),
        "value": pa.array(np.ones(row.size)),
        "surface": surface_names.take(pa.array(b["surface"][row])),
        "position": pa.array(pos.astype(np.int32)),
        "propensity": pa.array(b["prop"][row, pos]),
        "session_id": pa.array(session_id[row]),
        "request_id": pa.array(request_id[row]),
        "propensity_cascade": pa.array(b["cascade"][row, pos]),
    })
    ro = req_order
    requests = pa.table({
        "request_id": pa.array(np.arange(n_req, dtype=np.int64)),
        "session_id": pa.array(session_id[ro]),
        "step": pa.array(b["step"][ro].astype(np.int32)),
        "user_id": pa.array(b["user"][ro].astype(np.int64)),
        "timestamp": pa.array(b["ts"][ro], TIMESTAMP_TYPE),
        "surface": surface_names.take(pa.array(b["surface"][ro])),
        "query_topic": pa.array(b["query"][ro].astype(np.int32)),
        "seed_item": pa.array(b["seed"][ro].astype(np.int64)),
        "slate_size": pa.array((items[ro] >= 0).sum(axis=1).astype(np.int32)),
    })
    return table, requests
