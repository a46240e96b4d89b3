"""Drive a running recommendation service with the simulator's users (the serving loop).

:func:`drive` runs an experiment file's world and behaviour, but the slates come from a
service (``recscope serve``) over HTTP: every simulated request is a ``POST /recommend``
for the user, and every click, save and hide on an item the service returned goes back as
``POST /feedback``. The service assigns the arms and logs the exposures; the simulator
keeps its own record and the ground truth, so the analysis of the service's logs can be
checked against both (``docs/serving.md``).

How the pieces line up:

* **Arms.** ``GET /experiment`` gives the service's arms, weights, salt, layer, traffic
  range and holdout; the driver assigns every world user with the same
  :func:`recscope.experiments.assignment.assign`, so it knows each user's arm before the
  first request (for novelty), and counts every response whose arm differs (an
  assignment bug; it should be 0). The experiment file's single ``[[experiment]]`` must
  name the same variants, with empty tables: the service, not the file, serves them.
* **Users and items.** World user ``u`` calls with ``user_id = u``; item ids in responses
  must be world item indices (models trained on the world's log, as in the tests).
* **Warm-up and ground truth** use ``POST /admin/rank`` (unlogged, deterministic top-k
  of an arm's model), so they need the admin API key: the true effect is the effect of
  exactly the models the service serves, by replaying every arm for all users with the
  same random numbers (:mod:`recscope.sim.true_effects`). Exploring arms are replayed
  greedily, so their truth is that of the greedy policy.

The HTTP client is the standard library's (``http.client``, one keep-alive connection per
worker thread): ``sim`` does not import ``serve``.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
import tomllib
import urllib.parse
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from recscope.core.progress import Progress
from recscope.errors import ConfigError, RecscopeError
from recscope.experiments.assignment import HOLDOUT, Experiment, Holdout, assign
from recscope.experiments.metrics import parse_metrics
from recscope.sim.environment import Environment, SlateObservation
from recscope.sim.experiment_config import ExperimentSpec
from recscope.sim.runner import SimulatedExperiment
from recscope.sim.stacks import SlateContext
from recscope.sim.true_effects import GroundTruth, replay_cells
from recscope.sim.world_source import build_world

#: Metrics of the loop: per-unit means that the service's log and the simulator define
#: the same way (the service cannot see how far a user scrolled, so no CTR).
LOOP_METRICS = """\
unit = "unit_id"
variant = "variant"
control = "control"

[metrics.clicks]
kind = "mean"
column = "clicks"

[metrics.saves]
kind = "mean"
column = "saves"

[metrics.hides]
kind = "mean"
column = "hides"

[metrics.requests]
kind = "mean"
column = "requests"
"""

API_KEY_ENV = "RECSCOPE_SERVE_API_KEY"
_RANK_CHUNK = 5000


class ServiceError(RecscopeError):
    """The service answered an error or could not be reached."""


class ServiceClient:
    """A small JSON-over-HTTP client with a pool of keep-alive connections."""

    def __init__(self, url: str, *, api_key: str | None = None, concurrency: int = 16,
                 timeout: float = 30.0) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ConfigError(f"expected http://HOST:PORT, got {url!r}", key="--serve-url")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.prefix = parts.path.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self.pool = ThreadPoolExecutor(concurrency, thread_name_prefix="recscope-traffic")
        self._local = threading.local()
        self.calls = 0
        self.url = url

    def _conn(self) -> http.client.HTTPConnection:
        c = getattr(self._local, "conn", None)
        if c is None:
            c = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            self._local.conn = c
        return c

    def request(self, method: str, path: str, body: Any = None, *, admin: bool = False
                ) -> Any:
        """One call; the JSON answer, or ServiceError with the service's one-line reason."""
        headers = {"content-type": "application/json"}
        if admin:
            if not self.api_key:
                raise ConfigError(f"this needs the service's admin API key: set {API_KEY_ENV}",
                                  key="api_key")
            headers["x-api-key"] = self.api_key
        data = None if body is None else json.dumps(body).encode()
        for attempt in (0, 1):  # a kept-alive connection the server closed: retry once
            conn = self._conn()
            try:
                conn.request(method, self.prefix + path, body=data, headers=headers)
                resp = conn.getresponse()
                raw = resp.read()
                break
            except (ConnectionError, http.client.HTTPException, OSError) as exc:
                conn.close()
                self._local.conn = None
                if attempt:
                    raise ServiceError(f"{self.url}{path}: {exc}") from None
        self.calls += 1
        if resp.status >= 400:
            try:
                detail = json.loads(raw).get("detail", raw[:200])
            except ValueError:
                detail = raw[:200].decode(errors="replace")
            raise ServiceError(f"{method} {path} -> {resp.status}: {detail}")
        return json.loads(raw) if raw else None

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> list[Any]:
        """``fn`` over ``items`` on the worker threads, results in order."""
        return list(self.pool.map(fn, items))

    def close(self) -> None:
        self.pool.shutdown(wait=True)


class _Traffic:
    """Shared state of one drive: request ids by request key, counters."""

    def __init__(self, client: ServiceClient, n_items: int) -> None:
        self.client = client
        self.n_items = n_items
        self.pending: dict[int, tuple[str, list[Any]]] = {}
        self.requests = 0
        self.items_returned = 0
        self.arm_mismatches = 0
        self.feedback = {"click": 0, "save": 0, "hide": 0}
        self.not_served = 0
        self.lock = threading.Lock()

    def items_of(self, ids: list[Any], k: int) -> np.ndarray:
        out = np.full(k, -1, dtype=np.int64)
        for j, x in enumerate(ids[:k]):
            i = int(x)
            if not 0 <= i < self.n_items:
                raise ServiceError(f"the service returned item {x!r}, not an item of this "
                                   f"world (0..{self.n_items - 1})")
            out[j] = i
        return out

    def observe(self, obs: SlateObservation) -> None:
        """Send the clicks, saves and hides on served items back as feedback."""
        r = obs.response
        calls = []
        for i, key in enumerate(obs.keys.tolist()):
            rec = self.pending.pop(int(key), None)
            if rec is None:
                continue
            rid, served = rec
            served_set = {str(x) for x in served}
            for p in np.flatnonzero(r.clicked[i] | r.hidden[i]).tolist():
                item = str(int(obs.items[i, p]))
                if item not in served_set:  # a social insert, not the service's item
                    self.not_served += 1
                    continue
                events = (["click"] + (["save"] if r.saved[i, p] else [])) if r.clicked[i, p] \
                    else ["hide"]
                calls.extend({"request_id": rid, "item_id": item, "event": e} for e in events)
        for c in calls:
            self.feedback[c["event"]] += 1
        # click before save of the same item: one thread per request keeps the order
        by_request: dict[str, list[dict[str, Any]]] = {}
        for c in calls:
            by_request.setdefault(c["request_id"], []).append(c)

        def send(batch: list[dict[str, Any]]) -> None:
            for c in batch:
                self.client.request("POST", "/feedback", c)

        self.client.map(send, by_request.values())


class HttpArm:
    """A simulator policy whose slates come from ``POST /recommend`` (logged)."""

    def __init__(self, traffic: _Traffic, arm: str | None) -> None:
        self.traffic = traffic
        self.arm = arm
        self.name = f"service:{arm}"

    def __call__(self, users: np.ndarray, surface: str, k: int, ctx: SlateContext
                 ) -> np.ndarray:
        t = self.traffic

        def call(u: int) -> Any:
            return t.client.request("POST", "/recommend", {
                "user_id": u, "surface": surface, "k": k,
                "context": {"day": ctx.day, "step": ctx.step}})

        answers = t.client.map(call, [int(u) for u in users])
        out = np.full((len(users), k), -1, dtype=np.int64)
        with t.lock:
            for i, (a, key) in enumerate(zip(answers, ctx.keys.tolist(), strict=True)):
                if a["arm"] != self.arm:
                    t.arm_mismatches += 1
                out[i] = t.items_of(a["items"], k)
                t.pending[int(key)] = (a["request_id"], a["items"])
                t.items_returned += len(a["items"])
            t.requests += len(users)
        return out


class ShadowArm:
    """A simulator policy served by ``POST /admin/rank``: the arm's model, unlogged."""

    def __init__(self, traffic: _Traffic, arm: str) -> None:
        self.traffic = traffic
        self.arm = arm
        self.name = f"shadow:{arm}"

    def __call__(self, users: np.ndarray, surface: str, k: int, ctx: SlateContext
                 ) -> np.ndarray:
        t = self.traffic
        chunks = [users[i:i + _RANK_CHUNK] for i in range(0, len(users), _RANK_CHUNK)]
        answers = t.client.map(lambda c: t.client.request(
            "POST", "/admin/rank", {"user_ids": [int(u) for u in c], "arm": self.arm,
                                    "k": k}, admin=True), chunks)
        rows = [row for a in answers for row in a["items"]]
        return np.stack([t.items_of(r, k) for r in rows]) if rows else \
            np.zeros((0, k), np.int64)


def service_assignment(info: dict[str, Any]) -> Experiment:
    """The :class:`Experiment` a service described on ``GET /experiment``."""
    holdout = float(info.get("holdout", 0.0))
    return Experiment(name=str(info["name"]), variants=tuple(info["arms"]),
                      weights=[float(w) for w in info["weights"]],
                      layer=str(info["layer"]),
                      traffic=(float(info["traffic"][0]), float(info["traffic"][1])),
                      salt=str(info["salt"]),
                      holdout=Holdout(holdout, salt=str(info["holdout_salt"]))
                      if holdout > 0 else None)


def drive(spec: ExperimentSpec, url: str, out_dir: str | Path | None = None, *,
          progress: Progress | None = None, api_key: str | None = None,
          concurrency: int = 16, force: bool = True) -> tuple[SimulatedExperiment,
                                                               dict[str, Any]]:
    """Run ``spec``'s world against the service at ``url`` (see the module docstring).

    Returns the simulator's record (assignments and events by simulated time, the
    ground truth of the service's arms, counts) and the traffic counts (requests, items
    returned, feedback sent per event, arm mismatches). With ``out_dir`` the record is
    written like ``recscope simulate``'s. ``api_key`` defaults to ``$RECSCOPE_SERVE_API_KEY``.
    """
    import os

    t0 = time.perf_counter()
    key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
    client = ServiceClient(url, api_key=key, concurrency=concurrency)
    try:
        return _drive(spec, client, out_dir, progress, force, t0)
    finally:
        client.close()


def _drive(spec: ExperimentSpec, client: ServiceClient, out_dir: str | Path | None,
           progress: Progress | None, force: bool, t0: float
           ) -> tuple[SimulatedExperiment, dict[str, Any]]:
    info = client.request("GET", "/experiment")
    if not info.get("enabled", False):
        raise ConfigError("the service's experiment is switched off "
                          "(POST /admin/experiment {\"enabled\": true})", key="--serve-url")
    arms = list(info["arms"])
    if len(spec.experiment) != 1:
        raise ConfigError("a served experiment has one layer: give exactly one "
                          "[[experiment]]", key="experiment")
    layer = spec.experiment[0]
    if set(layer.variants) != set(arms):
        raise ConfigError(f"the service serves arms {sorted(arms)} but the file names "
                          f"variants {sorted(layer.variants)}", key="experiment.variants")
    filled = [v for v, s in layer.variants.items() if s]
    if filled:
        raise ConfigError(f"variant {filled[0]!r} must be an empty table: the service "
                          "serves the arms", key=f"experiment.variants.{filled[0]}")
    surfaces = set(info.get("surfaces", []))
    from recscope.sim.config import SURFACES

    if not set(SURFACES) <= surfaces:
        raise ConfigError(f"the service must answer the simulator's surfaces "
                          f"{list(SURFACES)}; it answers {sorted(surfaces)}", key="surfaces")
    truth = build_world(spec.world)
    n = truth.n_users
    traffic = _Traffic(client, truth.n_items)
    labels = assign(np.arange(n, dtype=np.int64), service_assignment(info))
    in_exp = np.array([a is not None and a != HOLDOUT for a in labels])
    # policy 0..A-1: the arms (control first); A: users the experiment does not cover
    arm_idx = np.array([arms.index(a) if ok else len(arms)
                        for a, ok in zip(labels, in_exp, strict=True)], dtype=np.int64)
    served = [HttpArm(traffic, a) for a in arms]
    outside = sorted({a for a, ok in zip(labels, in_exp, strict=True) if not ok},
                     key=str)
    if len(outside) > 1:  # None and holdout both served the default model, logged apart
        raise ConfigError("a served experiment may use a traffic range or a holdout, not "
                          "both", key="experiment")
    policies: list[Any] = [*served, HttpArm(traffic, outside[0] if outside else None)]
    novel = [False] + [True] * (len(arms) - 1) + [False]
    metrics_text = LOOP_METRICS
    analysis = parse_metrics(tomllib.loads(metrics_text))
    env = Environment(truth, spec.simulation, seed=spec.seed)
    shadow = [ShadowArm(traffic, a) for a in arms]
    warm = env.run([shadow[0]], days=spec.warmup_days, calibrate=True, progress=progress,
                   names=[arms[0]], stage="warm-up")
    state = warm.state
    res = env.run(policies, days=spec.days, arm=arm_idx, state=state, novel=novel,
                  progress=progress, names=[*arms, "outside"], stage="experiment",
                  observe=traffic.observe)
    first = res.first_exposure(n)
    units = np.flatnonzero((first >= 0) & in_exp)
    from recscope.data.schema import TIMESTAMP_TYPE

    assignments = pa.table({
        "unit_id": pa.array(units.astype(np.int64)),
        "variant": pa.array([str(labels[u]) for u in units], pa.string()),
        "first_exposure_ts": pa.array(first[units], TIMESTAMP_TYPE)})
    events = res.events_table()
    keep = np.zeros(n, dtype=bool)
    keep[units] = True
    events = events.filter(pa.array(keep[events.column("unit_id").to_numpy()]))
    gt: GroundTruth | None = None
    if spec.truth:
        exposure = np.full(n, -1, dtype=np.int64)
        exposure[units] = first[units]
        gt = replay_cells(env, shadow, state, days=spec.days, units=units, exposure=exposure,
                          metrics=analysis.metrics, cell_names=arms,
                          long_run_days=spec.long_run_days, progress=progress)
    counts = dict(zip(*np.unique(assignments.column("variant").to_numpy(zero_copy_only=False),
                                 return_counts=True), strict=True))
    result = SimulatedExperiment(
        name=spec.name, seed=spec.seed, days=spec.days, warmup_days=spec.warmup_days,
        n_users=n, n_items=truth.n_items, n_units=int(units.size),
        units_per_variant={str(k): int(v) for k, v in counts.items()},
        cell_names=arms, components=[], impressions=res.n_impressions,
        requests=res.n_requests, warmup_impressions=warm.n_impressions,
        seconds=round(time.perf_counter() - t0, 3), daily=res.daily, truth=gt,
        assignments=assignments, events=events, metrics=analysis, metrics_toml=metrics_text)
    stats = {"requests": traffic.requests, "items_returned": traffic.items_returned,
             "arm_mismatches": traffic.arm_mismatches, "feedback": dict(traffic.feedback),
             "feedback_not_served": traffic.not_served, "http_calls": client.calls,
             "unanswered_requests": len(traffic.pending)}
    if out_dir is not None:
        result.save_to(out_dir, force=force)
    return result, stats
