"""The service in-process (FastAPI TestClient): assignment, logging, feedback, errors,
auth, reload, experiment switch, exploration and metrics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from recscope.experiments.assignment import assign
from recscope.models.base import Component
from recscope.serve.app import Settings, create_app
from recscope.serve.config import ArmConfig
from recscope.serve.logs import read_log
from tests.serve.conftest import API_KEY, ab_config

ADMIN = {"X-API-Key": API_KEY}


def test_assignment_is_the_shared_hash_and_stable(client: TestClient,
                                                  ab_settings: Settings) -> None:
    units = [str(u) for u in range(100, 160)]
    expected = assign(units, ab_settings.experiment.assignment())
    seen = {}
    for _ in range(2):
        for u in units:
            r = client.post("/recommend", json={"user_id": u, "k": 5})
            assert r.status_code == 200, r.text
            seen.setdefault(u, set()).add(r.json()["arm"])
    assert all(len(a) == 1 for a in seen.values())
    assert [next(iter(seen[u])) for u in units] == list(expected)
    assert set(expected) == {"control", "treatment"}
    # an integer id and its text land in the same arm
    assert client.post("/recommend", json={"user_id": 101}).json()["arm"] == seen["101"].pop()


def test_each_arm_serves_its_own_model(client: TestClient, model_dirs: dict[str, Path],
                                       ab_settings: Settings) -> None:
    models = {"control": Component.load(model_dirs["popularity"] / "pipeline"),
              "treatment": Component.load(model_dirs["itemknn"] / "pipeline")}
    import pyarrow.parquet as pq

    users = pq.read_table(model_dirs["popularity"] / "users.parquet").column(
        "user_id").to_pylist()
    items = pq.read_table(model_dirs["popularity"] / "items.parquet").column(
        "item_id").to_pylist()
    for i, u in enumerate(users[:30]):
        body = client.post("/recommend", json={"user_id": u, "k": 7}).json()
        rl = models[body["arm"]].recommend(np.array([i], np.int32), 7)
        want = [items[j] for j in rl.items[0] if j >= 0]
        assert body["items"] == want
        assert body["cold_start"] is False


def test_cold_start_is_the_popularity_ranking(client: TestClient,
                                              model_dirs: dict[str, Path]) -> None:
    import pyarrow.parquet as pq

    items = pq.read_table(model_dirs["popularity"] / "items.parquet").column(
        "item_id").to_pylist()
    pop = Component.load(model_dirs["itemknn"] / "pipeline").popularity
    order = [items[j] for j in np.argsort(-pop, kind="stable")[:5]]
    for user in ("never-seen-1", "never-seen-2", "never-seen-3", "never-seen-4"):
        body = client.post("/recommend", json={"user_id": user, "k": 5}).json()
        assert body["cold_start"] is True
        assert body["items"] == order  # both arms fall back to training popularity


def test_rows_logged_equal_items_returned(ab_settings: Settings) -> None:
    returned = 0
    ids = set()
    with TestClient(create_app(ab_settings)) as c:
        for u in range(100, 160):
            for k in (1, 5, 20):
                body = c.post("/recommend", json={"user_id": u, "k": k,
                                                  "surface": "related"}).json()
                returned += len(body["items"])
                ids.add(body["request_id"])
    log = read_log(ab_settings.log_dir, "exposures")  # shutdown flushed everything
    assert log.num_rows == returned > 0
    assert set(log.column("request_id").to_pylist()) == ids
    one = sorted(ids)[0]
    first = log.filter(np.array([r == one for r in log.column("request_id").to_pylist()]))
    assert first.column("position").to_pylist() == list(range(first.num_rows))
    assert set(log.column("surface").to_pylist()) == {"related"}
    assert log.column("propensity").null_count == log.num_rows  # deterministic arms


def test_feedback_is_logged_and_checked(ab_settings: Settings) -> None:
    with TestClient(create_app(ab_settings)) as c:
        body = c.post("/recommend", json={"user_id": 105, "k": 3}).json()
        rid, item = body["request_id"], body["items"][1]
        assert c.post("/feedback", json={"request_id": rid, "item_id": item,
                                         "event": "click"}).status_code == 200
        assert c.post("/feedback", json={"request_id": rid, "item_id": str(item),
                                         "event": "save", "value": 2.5}).status_code == 200
        r = c.post("/feedback", json={"request_id": "nope", "item_id": item, "event": "click"})
        assert r.status_code == 404 and "unknown or expired request_id" in r.json()["detail"]
        r = c.post("/feedback", json={"request_id": rid, "item_id": 999999, "event": "click"})
        assert r.status_code == 422 and "was not returned" in r.json()["detail"]
        r = c.post("/feedback", json={"request_id": rid, "item_id": item, "event": "like"})
        assert r.status_code == 422 and r.json()["detail"].startswith("event:")
    fb = read_log(ab_settings.log_dir, "feedback").to_pylist()
    assert [(f["event"], f["item_id"], f["position"], f["value"]) for f in fb] == [
        ("click", str(item), 1, 1.0), ("save", str(item), 1, 2.5)]
    assert fb[0]["arm"] == body["arm"] and fb[0]["unit_id"] == "105"


@pytest.mark.parametrize(("body", "status", "needle"), [
    ({"user_id": 1, "surface": "checkout"}, 400, "unknown surface 'checkout'"),
    ({"user_id": 1, "k": 0}, 422, "k: must be between 1 and 20"),
    ({"user_id": 1, "k": 21}, 422, "k: must be between 1 and 20"),
    ({"user_id": 1, "colour": "red"}, 422, "colour: unknown field"),
    ({"k": 3}, 422, "user_id: Field required"),
    ({"user_id": 1.5}, 422, "user_id"),
    ({"user_id": 1, "k": "3"}, 422, "k:"),
    ({"user_id": 1, "context": [1]}, 422, "context:"),
])
def test_bad_requests_get_one_line_4xx(client: TestClient, body: dict, status: int,
                                       needle: str) -> None:
    r = client.post("/recommend", json=body)
    assert r.status_code == status
    detail = r.json()["detail"]
    assert needle in detail and "\n" not in detail


def test_malformed_json_is_400(client: TestClient) -> None:
    r = client.post("/recommend", content=b'{"user_id": 1,',
                    headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["detail"].startswith("malformed JSON")


def test_admin_needs_the_key(client: TestClient, plain_settings: Settings,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    assert client.post("/admin/experiment", json={"enabled": False}).status_code == 401
    r = client.post("/admin/experiment", json={"enabled": False},
                    headers={"X-API-Key": "wrong"})
    assert r.status_code == 403 and r.json()["detail"] == "wrong API key"
    assert client.post("/admin/experiment", json={"enabled": True},
                       headers=ADMIN).status_code == 200
    monkeypatch.delenv("RECSCOPE_SERVE_API_KEY", raising=False)
    plain_settings.api_key = None
    with TestClient(create_app(plain_settings)) as c:
        r = c.post("/admin/reload", json={}, headers=ADMIN)
        assert r.status_code == 403 and "RECSCOPE_SERVE_API_KEY" in r.json()["detail"]
    monkeypatch.setenv("RECSCOPE_SERVE_API_KEY", "from-env")
    with TestClient(create_app(plain_settings)) as c:
        assert c.post("/admin/reload", json={},
                      headers={"X-API-Key": "from-env"}).status_code == 200


def test_experiment_switch(client: TestClient, ab_settings: Settings) -> None:
    assert client.post("/admin/experiment", json={"enabled": False},
                       headers=ADMIN).json()["enabled"] is False
    body = client.post("/recommend", json={"user_id": 101, "k": 2}).json()
    assert body["arm"] is None and body["experiment"] is None
    assert "recscope_serve_experiment_enabled 0.0" in client.get("/metrics").text
    client.post("/admin/experiment", json={"enabled": True}, headers=ADMIN)
    assert client.post("/recommend", json={"user_id": 101}).json()["arm"] in (
        "control", "treatment")


def test_reload_swaps_and_a_failed_reload_keeps_the_old_model(
        client: TestClient, model_dirs: dict[str, Path], tmp_path: Path) -> None:
    user = next(u for u in range(100, 200) if client.post(
        "/recommend", json={"user_id": u}).json()["arm"] == "control")
    before = client.post("/recommend", json={"user_id": user, "k": 5}).json()
    broken = tmp_path / "broken"
    (broken / "pipeline").mkdir(parents=True)
    r = client.post("/admin/reload", json={"arm": "control", "model": str(broken)},
                    headers=ADMIN)
    assert r.status_code == 422 and "still serving the old model" in r.json()["detail"]
    assert client.post("/recommend", json={"user_id": user, "k": 5}).json()["items"] == \
        before["items"]
    r = client.post("/admin/reload", json={"arm": "control",
                                           "model": str(model_dirs["itemknn"])}, headers=ADMIN)
    assert r.status_code == 200
    after = client.post("/recommend", json={"user_id": user, "k": 5}).json()
    assert after["model_version"] != before["model_version"]
    assert after["model_version"] == r.json()["reloaded"]["control"]
    r = client.post("/admin/reload", json={"arm": "nope"}, headers=ADMIN)
    assert r.status_code == 422 and "unknown arm 'nope'" in r.json()["detail"]
    assert 'recscope_serve_reloads_total{result="failed"} 1.0' in client.get("/metrics").text


def test_exploring_arm_logs_exact_propensities(model_dirs: dict[str, Path],
                                               tmp_path: Path) -> None:
    eps, pool = 0.5, 10
    cfg = ab_config(control=ArmConfig(exploration=eps, pool=pool),
                    treatment=ArmConfig(exploration=eps, pool=pool))
    s = Settings(model=str(model_dirs["popularity"]), log_dir=str(tmp_path / "l"),
                 experiment=cfg, api_key=API_KEY)
    explored = 0
    with TestClient(create_app(s)) as c:
        greedy = c.post("/admin/rank", json={"user_ids": ["cold"], "k": 4, "arm": "control"},
                        headers=ADMIN).json()["items"][0]
        for _ in range(200):
            b = c.post("/recommend", json={"user_id": "cold", "k": 4}).json()
            want = [eps / pool + (1 - eps) * (it == g)
                    for it, g in zip(b["items"], greedy, strict=True)]
            assert b["propensities"] == pytest.approx(want)
            explored += b["items"] != greedy
    log = read_log(s.log_dir, "exposures")
    assert log.column("propensity").null_count == 0
    assert 0 < log.column("explored").to_pylist().count(True)
    assert 70 < explored < 130  # about half of 200 slates explore


def test_live_inference_equals_the_cache(ab_settings: Settings) -> None:
    out = {}
    for mode in ("on", "off"):
        ab_settings.cache = mode
        with TestClient(create_app(ab_settings)) as c:
            out[mode] = [c.post("/recommend", json={"user_id": u, "k": 10}).json()["items"]
                         for u in [*range(100, 130), "nobody"]]
    assert out["on"] == out["off"]


def test_metrics_count_exposures_per_arm_and_srm(client: TestClient) -> None:
    rows = {"control": 0, "treatment": 0}
    for u in range(100, 160):
        b = client.post("/recommend", json={"user_id": u, "k": 3}).json()
        rows[b["arm"]] += len(b["items"])
    client.post("/recommend", json={"user_id": 1, "k": 0})
    text = client.get("/metrics").text
    for arm, n in rows.items():
        assert f'recscope_serve_exposures_total{{arm="{arm}"}} {float(n)}' in text
    assert "recscope_serve_srm_p_value" in text
    assert 'recscope_serve_requests_total{path="/recommend",status="422"} 1.0' in text
    assert "recscope_serve_request_seconds_bucket" in text
    assert "recscope_serve_log_pending_rows" in text
    health = client.get("/health").json()
    assert health["status"] == "ok" and set(health["arms"]) == {"control", "treatment"}


def test_srm_test_flags_a_broken_split() -> None:
    from recscope.serve.metrics import srm_test

    _, p_ok = srm_test({"a": 5010, "b": 4990}, {"a": 1.0, "b": 1.0})
    _, p_bad = srm_test({"a": 5400, "b": 4600}, {"a": 1.0, "b": 1.0})
    assert p_ok > 0.5 and p_bad < 1e-10
    assert np.isnan(srm_test({}, {"a": 1.0, "b": 1.0})[1])


def test_concurrent_reloads_queue_and_serving_continues(ab_settings: Settings) -> None:
    import asyncio

    import httpx

    app = create_app(ab_settings)

    async def go() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            calls = [c.post("/admin/reload", json={}, headers=ADMIN) for _ in range(3)]
            calls += [c.post("/recommend", json={"user_id": u, "k": 3}) for u in range(20)]
            return [r.status_code for r in await asyncio.gather(*calls)]

    import threading

    out: list[list[int]] = []
    worker = threading.Thread(target=lambda: out.append(asyncio.run(go())), daemon=True)
    worker.start()
    worker.join(120)  # a reload blocking the event loop would deadlock here
    assert not worker.is_alive(), "reload blocked the event loop"
    assert out == [[200] * 23]
    app.state.service.writer.close()
