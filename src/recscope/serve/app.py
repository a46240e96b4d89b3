"""The recommendation service: FastAPI app with assignment, exposure logging and metrics.

Endpoints (documented with examples in ``docs/serving.md``):

* ``POST /recommend {user_id, surface, k, context}`` → items, scores, arm, request id;
  every item returned is one exposure row in the log (before the response is sent).
* ``POST /feedback {request_id, item_id, event, value}`` → logs a click, save or hide of
  an item that request returned.
* ``GET /health``, ``GET /metrics`` (Prometheus text), ``GET /experiment`` (what a client
  needs to reproduce the assignment).
* ``POST /admin/reload``, ``POST /admin/experiment``, ``POST /admin/rank`` need the API key
  of the environment variable :data:`API_KEY_ENV` in the ``X-API-Key`` header.

Errors are 4xx with ``{"detail": "<one line>"}``: 400 malformed JSON, unknown surface;
422 schema problems (unknown field, k out of range), feedback for an item not shown;
404 unknown or expired request id; 401/403 admin key; 503 when the log cannot keep up.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
import os
import time
import uuid
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from recscope.experiments.assignment import HOLDOUT, Experiment, assign
from recscope.serve.config import ArmConfig, ExperimentConfig
from recscope.serve.logs import LogFull, LogWriter
from recscope.serve.metrics import ServiceMetrics
from recscope.serve.models import ServedModel, explore, load_model

log = logging.getLogger("recscope.serve")

#: Environment variable holding the admin API key (admin endpoints are off without it).
API_KEY_ENV = "RECSCOPE_SERVE_API_KEY"


class RecommendRequest(BaseModel):
    """Body of ``POST /recommend``."""

    model_config = ConfigDict(extra="forbid", strict=True)
    user_id: str | int
    surface: str = "home_feed"
    k: int = 10
    context: dict[str, Any] = Field(default_factory=dict)


class FeedbackRequest(BaseModel):
    """Body of ``POST /feedback``."""

    model_config = ConfigDict(extra="forbid", strict=True)
    request_id: str
    item_id: str | int
    event: Literal["click", "save", "hide"]
    value: float = 1.0


class ReloadRequest(BaseModel):
    """Body of ``POST /admin/reload``: one arm (default every arm), optionally a new URI."""

    model_config = ConfigDict(extra="forbid", strict=True)
    arm: str | None = None
    model: str | None = None


class ExperimentSwitch(BaseModel):
    """Body of ``POST /admin/experiment``."""

    model_config = ConfigDict(extra="forbid", strict=True)
    enabled: bool


class RankRequest(BaseModel):
    """Body of ``POST /admin/rank``: unlogged rankings of many users under one arm (for
    replays, backfills and the simulator's ground truth)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    user_ids: list[str | int] = Field(max_length=100_000)
    arm: str = "control"
    k: int = 10


@dataclass
class Settings:
    """How a service runs (the CLI fills it from its options)."""

    model: str
    log_dir: str
    experiment: ExperimentConfig
    cache: str = "auto"
    batch_rows: int = 8192
    flush_seconds: float = 1.0
    max_pending_rows: int = 1_000_000
    max_batch: int = 64
    batch_wait_ms: float = 2.0
    remember_requests: int = 200_000
    api_key: str | None = None


@dataclass
class Arm:
    """One arm's configuration and the model it serves now (swapped whole on reload)."""

    name: str
    config: ArmConfig
    uri: str
    model: ServedModel


class _Batcher:
    """Collects concurrent live-inference requests into one model call per model."""

    def __init__(self, max_batch: int, wait_seconds: float) -> None:
        self.max_batch = max_batch
        self.wait = wait_seconds
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="recscope-model")
        self.pending: dict[int, tuple[ServedModel, list[tuple[int, int, asyncio.Future[Any]]]]] = {}

    async def rank(self, model: ServedModel, user: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        if model.cached:
            items, scores = model.rank(np.array([user], dtype=np.int32), k)
            return items[0], scores[0]
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        key = id(model)
        if key not in self.pending:
            self.pending[key] = (model, [])
            loop.call_later(self.wait, self._flush, key)
        self.pending[key][1].append((user, k, fut))
        if len(self.pending[key][1]) >= self.max_batch:
            self._flush(key)
        return await fut

    def _flush(self, key: int) -> None:
        if key not in self.pending:
            return
        model, batch = self.pending.pop(key)
        users = np.array([u for u, _, _ in batch], dtype=np.int32)
        k = max(k for _, k, _ in batch)
        loop = asyncio.get_running_loop()
        task = loop.run_in_executor(self.pool, model.rank, users, k)

        def done(t: asyncio.Future[Any]) -> None:
            exc = t.exception()
            for i, (_, kk, fut) in enumerate(batch):
                if fut.done():
                    continue
                if exc is not None:
                    fut.set_exception(exc)
                else:
                    items, scores = t.result()
                    fut.set_result((items[i, :kk], scores[i, :kk]))

        task.add_done_callback(done)


class _Measure:
    """Pure ASGI middleware: request count, latency and 5xx per path (cheaper than
    Starlette's BaseHTTPMiddleware, which runs every request in an extra task)."""

    def __init__(self, app: Any, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = 500

        async def capture(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            self.metrics.observe(scope["path"], status, time.perf_counter() - t0)


class _Error(Exception):
    def __init__(self, status: int, detail: str) -> None:
        self.status = status
        self.detail = detail


@dataclass
class ServiceState:
    """Everything the endpoints share: arms, the assignment, the log, the metrics."""

    settings: Settings
    arms: dict[str, Arm]
    default: Arm
    writer: LogWriter
    metrics: ServiceMetrics
    batcher: _Batcher
    assignment: Experiment | None
    enabled: bool
    started: float = field(default_factory=time.time)
    requests: OrderedDict[str, tuple[str, str | None, str, tuple[str, ...]]] = field(
        default_factory=OrderedDict)
    reload_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _assigned: dict[str, str | None] = field(default_factory=dict)

    def arm_of(self, unit: str) -> str | None:
        """The unit's arm under the experiment (None: not in it, or it is off)."""
        if self.assignment is None or not self.enabled:
            return None
        arm = self._assigned.get(unit, "")
        if arm == "":
            arm = assign([unit], self.assignment)[0]
            if len(self._assigned) < 5_000_000:
                self._assigned[unit] = arm
        return arm


def _one_line(exc: RequestValidationError) -> tuple[int, str]:
    err = exc.errors()[0]
    if err.get("type") == "json_invalid":
        return 400, f"malformed JSON: {err.get('ctx', {}).get('error', err.get('msg'))}"
    loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
    msg = "unknown field" if err.get("type") == "extra_forbidden" else err.get("msg", "invalid")
    return 422, f"{loc}: {msg}" if loc else msg


def _json(data: Any, status: int = 200) -> Response:
    return Response(json.dumps(data, separators=(",", ":")), status_code=status,
                    media_type="application/json")


def build_state(settings: Settings) -> ServiceState:
    """Load every arm's model (shared when arms name the same URI) and open the log."""
    cfg = settings.experiment
    loaded: dict[str, ServedModel] = {}

    def get(uri: str) -> ServedModel:
        if uri not in loaded:
            loaded[uri] = load_model(uri, max_k=cfg.max_k, cache=settings.cache)
        return loaded[uri]

    arms = {}
    for name in cfg.arm_names:
        uri = cfg.arms[name].model or settings.model
        arms[name] = Arm(name, cfg.arms[name], uri, get(uri))
    default = Arm("control", ArmConfig(), settings.model, get(settings.model))
    writer = LogWriter(settings.log_dir, batch_rows=settings.batch_rows,
                       flush_seconds=settings.flush_seconds,
                       max_pending_rows=settings.max_pending_rows)
    assignment = cfg.assignment() if cfg.name else None
    state = ServiceState(settings=settings, arms=arms, default=default, writer=writer,
                         metrics=ServiceMetrics(), batcher=_Batcher(
                             settings.max_batch, settings.batch_wait_ms / 1000.0),
                         assignment=assignment, enabled=bool(cfg.enabled and assignment))
    state.metrics.bind(state)
    return state


def create_app(settings: Settings, state: ServiceState | None = None) -> FastAPI:
    """The FastAPI app of one service (models are loaded here, before it accepts traffic)."""
    st = state or build_state(settings)
    cfg = settings.experiment
    surfaces = set(cfg.surfaces)

    async def lifespan(app: FastAPI) -> Any:
        yield
        st.writer.close()
        st.batcher.pool.shutdown(wait=False)

    app = FastAPI(title="recscope serve", lifespan=lifespan)
    app.state.service = st

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        status, detail = _one_line(exc)
        return JSONResponse({"detail": detail}, status_code=status)

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s", request.url.path)
        return JSONResponse({"detail": f"internal error: {type(exc).__name__} (see the "
                             "service log)"}, status_code=500)

    @app.exception_handler(_Error)
    async def _err(request: Request, exc: _Error) -> Response:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status)

    app.add_middleware(_Measure, metrics=st.metrics)

    def _admin(request: Request) -> None:
        key = settings.api_key if settings.api_key is not None else os.environ.get(API_KEY_ENV)
        if not key:
            raise _Error(403, f"admin endpoints are disabled: set {API_KEY_ENV}")
        given = request.headers.get("x-api-key", "")
        if not given:
            raise _Error(401, "missing X-API-Key header")
        if not hmac.compare_digest(given.encode(), key.encode()):
            raise _Error(403, "wrong API key")

    @app.post("/recommend")
    async def recommend(body: RecommendRequest) -> Response:
        if body.surface not in surfaces:
            raise _Error(400, f"unknown surface {body.surface!r}; expected one of "
                         f"{sorted(surfaces)}")
        if not 1 <= body.k <= cfg.max_k:
            raise _Error(422, f"k: must be between 1 and {cfg.max_k}, got {body.k}")
        unit = str(body.user_id)
        arm_name = st.arm_of(unit)
        arm = st.arms[arm_name] if arm_name in st.arms else st.default
        model = arm.model
        user = model.user_index(unit)
        cold = user >= model.n_users
        exploring = arm_name in st.arms and arm.config.exploration > 0
        depth = min(max(body.k, arm.config.pool), cfg.max_k) if exploring else body.k
        items, scores = await st.batcher.rank(model, user, depth)
        request_id = uuid.uuid4().hex
        if exploring:
            rng = np.random.default_rng(int(request_id[:16], 16))
            order = {int(it): float(s) for it, s in zip(items, scores, strict=True)}
            slate, prop, explored = explore(items, body.k, arm.config.exploration,
                                            arm.config.pool, rng)
            idx = [int(i) for i in slate]
            sc = [order[i] for i in idx]
            props: list[float] | None = [float(p) for p in prop]
        else:
            keep = items >= 0
            idx = [int(i) for i in items[keep]]
            sc = [float(s) for s in scores[keep]]
            props, explored = None, False
        ids = [model.item_ids[i] for i in idx]
        sc = [s if math.isfinite(s) else None for s in sc]  # type: ignore[misc]
        ts = time.time_ns() // 1000
        experiment = cfg.name if arm_name is not None else None
        try:
            st.writer.append("exposures", (
                ts, request_id, unit, experiment, arm_name, model.version, body.surface,
                body.k, ids, sc, props, explored, cold))
        except LogFull as exc:
            raise _Error(503, f"exposure log is behind ({exc}); retry later") from None
        st.requests[request_id] = (unit, arm_name, body.surface, tuple(str(i) for i in ids))
        if len(st.requests) > settings.remember_requests:
            st.requests.popitem(last=False)
        st.metrics.exposed(arm_name, unit, len(ids))
        return _json({"request_id": request_id, "user_id": body.user_id, "arm": arm_name,
                      "experiment": experiment, "model_version": model.version,
                      "surface": body.surface, "items": ids, "scores": sc,
                      "propensities": props, "cold_start": bool(cold)})

    @app.post("/feedback")
    async def feedback(body: FeedbackRequest) -> Response:
        if not math.isfinite(body.value):
            raise _Error(422, "value: must be a finite number")
        seen = st.requests.get(body.request_id)
        if seen is None:
            raise _Error(404, f"unknown or expired request_id {body.request_id!r}")
        unit, arm_name, surface, shown = seen
        item = str(body.item_id)
        if item not in shown:
            raise _Error(422, f"item_id {body.item_id!r} was not returned by request "
                         f"{body.request_id}")
        experiment = cfg.name if arm_name is not None else None
        try:
            st.writer.append("feedback", (time.time_ns() // 1000, body.request_id, unit,
                                          experiment, arm_name, surface, item,
                                          shown.index(item), body.event, body.value))
        except LogFull as exc:
            raise _Error(503, f"feedback log is behind ({exc}); retry later") from None
        st.metrics.feedback(arm_name, body.event)
        return _json({"ok": True})

    @app.get("/health")
    async def health() -> Response:
        w = st.writer.stats()
        ok = w["pending_rows"] < settings.max_pending_rows and st.writer.write_errors == 0
        return _json({"status": "ok" if ok else "degraded",
                      "uptime_seconds": round(time.time() - st.started, 3),
                      "experiment": cfg.name or None, "experiment_enabled": st.enabled,
                      "arms": {a.name: {"model": a.uri, "version": a.model.version,
                                        "cached": a.model.cached}
                               for a in st.arms.values()},
                      "log": {"pending_rows": w["pending_rows"],
                              "lag_seconds": round(w["lag_seconds"], 3),
                              "write_errors": w["write_errors"],
                              "last_error": st.writer.last_error}},
                     200 if ok else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(st.metrics.render(), media_type=st.metrics.content_type)

    @app.get("/experiment")
    async def experiment() -> Response:
        if not cfg.name:
            raise _Error(404, "this service runs no experiment")
        return _json({**cfg.describe(), "enabled": st.enabled})

    @app.post("/admin/reload")
    async def reload(body: ReloadRequest, request: Request) -> Response:
        _admin(request)
        names = [body.arm] if body.arm is not None else list(st.arms)
        for n in names:
            if n not in st.arms:
                raise _Error(422, f"arm: unknown arm {n!r}; expected one of {sorted(st.arms)}")
        loop = asyncio.get_running_loop()

        def load_all() -> dict[str, ServedModel]:
            out: dict[str, ServedModel] = {}
            by_uri: dict[str, ServedModel] = {}
            for n in names:
                uri = body.model or st.arms[n].uri
                if uri not in by_uri:
                    by_uri[uri] = load_model(uri, max_k=cfg.max_k, cache=settings.cache,
                                             background=True)
                out[n] = by_uri[uri]
            return out

        async with st.reload_lock:  # one reload at a time; serving continues
            try:
                fresh = await loop.run_in_executor(None, load_all)
            except Exception as exc:  # the old models keep serving
                st.metrics.reloaded(False)
                raise _Error(422, f"reload failed, still serving the old model: "
                             f"{type(exc).__name__}: {exc}") from None
            for n, m in fresh.items():
                arm = st.arms[n]
                st.arms[n] = Arm(n, arm.config, body.model or arm.uri, m)
                if arm.uri == st.default.uri and n == "control":
                    st.default = Arm("control", st.default.config, body.model or arm.uri, m)
        st.metrics.reloaded(True)
        return _json({"reloaded": {n: m.version for n, m in fresh.items()}})

    @app.post("/admin/experiment")
    async def switch(body: ExperimentSwitch, request: Request) -> Response:
        _admin(request)
        if st.assignment is None:
            raise _Error(409, "this service runs no experiment")
        st.enabled = body.enabled
        return _json({"experiment": cfg.name, "enabled": st.enabled})

    @app.post("/admin/rank")
    async def rank(body: RankRequest, request: Request) -> Response:
        _admin(request)
        if body.arm not in st.arms:
            raise _Error(422, f"arm: unknown arm {body.arm!r}; expected one of "
                         f"{sorted(st.arms)}")
        if not 1 <= body.k <= cfg.max_k:
            raise _Error(422, f"k: must be between 1 and {cfg.max_k}, got {body.k}")
        model = st.arms[body.arm].model
        users = np.array([model.user_index(str(u)) for u in body.user_ids], dtype=np.int32)
        loop = asyncio.get_running_loop()
        items, _ = await loop.run_in_executor(st.batcher.pool, model.rank, users, body.k)
        ids = [[model.item_ids[i] for i in row if i >= 0] for row in items.tolist()]
        return _json({"arm": body.arm, "model_version": model.version, "items": ids})

    return app


__all__ = ["API_KEY_ENV", "HOLDOUT", "FeedbackRequest", "RecommendRequest", "ServiceState",
           "Settings", "build_state", "create_app"]
