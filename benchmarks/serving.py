"""Benchmark of ``recscope serve`` on loopback (not a test; figures go to docs/serving.md).

The ML-100K pipeline of examples/ml100k.toml is served by a real ``recscope serve``
process; an open-loop load generator (asyncio + aiohttp, the ``bench`` extra) in this
process sends ``POST /recommend`` at a fixed rate, bounded in time and count. Latency is
measured from each request's *scheduled* send time, so a server that falls behind is
charged for the queue it builds (no coordinated omission).

Runs (each bounded; pick with --run):

* ``sustain``: --rate req/s for --duration s: p50/p99, errors, and lost exposure rows
  (items returned by 200 answers minus rows in the log after a graceful stop).
* ``sweep``: 20 s at each of --sweep rates: achieved throughput, p50, p99; the maximum
  sustainable throughput is the highest rate served at >= 98 % with no error and
  p99 < 20 ms; plot to --plot.
* ``fault``: load at --rate, ``kill -9`` of the server after 10 s, restart on the same
  log folder; lost rows against the bound (rows answered in the last flush interval).
* ``reload``: load at --rate for 20 s with ``POST /admin/reload`` every 4 s: errors and
  p99 during reloads.

    flock /tmp/recscope-heavy.lock .venv/bin/python benchmarks/serving.py \\
        --model benchmarks/out/serving/model --run sweep --run fault --run reload
    flock /tmp/recscope-heavy.lock .venv/bin/python benchmarks/serving.py \\
        --model benchmarks/out/serving/model --run sustain --rate 500 --duration 300

``--model`` is trained first (``recscope train examples/ml100k.toml``) when missing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("RECSCOPE_DATA", ROOT.parent / "shared" / "data"))
KEY = "bench-key"
FLUSH = 1.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ensure_model(model: Path) -> None:
    if (model / "pipeline").is_dir():
        return
    subprocess.run([sys.executable, "-m", "recscope.cli", "train", "examples/ml100k.toml",
                    "--data", str(DATA / "ml-100k"), "--out", str(model)], check=True,
                   cwd=ROOT)


class Server:
    """A ``recscope serve`` process on a free loopback port."""

    def __init__(self, model: Path, log_dir: Path, *extra: str) -> None:
        self.model, self.log_dir, self.extra = model, log_dir, extra
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def _out(self) -> Any:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        return open(self.log_dir.parent / f"{self.log_dir.name}.server.txt", "ab")

    def start(self) -> None:
        env = {**os.environ, "RECSCOPE_SERVE_API_KEY": KEY}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "recscope.cli", "serve", "--model", str(self.model),
             "--log-dir", str(self.log_dir), "--port", str(self.port), "--flush-seconds",
             str(FLUSH), *self.extra], env=env, stdout=self._out(),
            stderr=subprocess.STDOUT)
        import urllib.request

        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited; see {self.log_dir}.server.txt")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("server did not start")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        self.proc.wait(timeout=120)


async def load(url: str, rate: float, duration: float, *, users: np.ndarray,
               k: int = 10, events: list[tuple[float, str]] | None = None,
               stop_after: float | None = None, warmup: float = 3.0) -> dict[str, Any]:
    """Open-loop load: request i is due at start + i / rate; at most rate × (warmup +
    duration) requests. Latencies of the first ``warmup`` seconds (connections opening,
    first calls) are not in the percentiles; their items are in ``items_returned``.
    ``events`` (at seconds after the warm-up, "reload") fire during the run;
    ``stop_after`` (seconds after the warm-up) returns early (the fault run kills the
    server then)."""
    import aiohttp

    skip = int(rate * warmup)
    n = skip + int(rate * duration)
    lat = np.full(n, np.nan)
    answered = np.full(n, np.nan)  # monotonic time of each 200 answer
    items = np.zeros(n, np.int64)
    ids: list[str | None] = [None] * n
    errors: dict[str, int] = {}
    reload_seconds: list[float] = []
    rng = np.random.default_rng(0)
    who = users[rng.integers(0, users.size, n)]
    conn = aiohttp.TCPConnector(limit=256)
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(url, connector=conn, timeout=timeout) as s:
        start = time.monotonic() + 0.2

        async def one(i: int) -> None:
            due = start + i / rate
            try:
                async with s.post("/recommend", json={"user_id": int(who[i]), "k": k}) as r:
                    body = await r.read()
                    if r.status != 200:
                        errors[str(r.status)] = errors.get(str(r.status), 0) + 1
                        return
                    answer = json.loads(body)
                    items[i] = len(answer["items"])
                    ids[i] = answer["request_id"]
                    now = time.monotonic()
                    lat[i] = now - due
                    answered[i] = now
            except (TimeoutError, aiohttp.ClientError) as exc:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1

        async def admin(at: float, what: str) -> None:
            await asyncio.sleep(max(0.0, start + warmup + at - time.monotonic()))
            try:
                async with s.post(f"/admin/{what}", json={}, headers={"X-API-Key": KEY},
                                  timeout=aiohttp.ClientTimeout(total=300)) as r:
                    await r.read()
                    if r.status != 200:
                        errors[f"{what}:{r.status}"] = errors.get(f"{what}:{r.status}", 0) + 1
                    reload_seconds.append(time.monotonic() - start - warmup - at)
            except (TimeoutError, aiohttp.ClientError) as exc:
                errors[f"{what}:{type(exc).__name__}"] = 1 + errors.get(
                    f"{what}:{type(exc).__name__}", 0)

        tasks = [asyncio.create_task(admin(at, w)) for at, w in (events or [])]
        end = n if stop_after is None else skip + int(rate * stop_after)
        for i in range(end):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks, return_exceptions=stop_after is not None)
        elapsed = time.monotonic() - start - warmup
    ok = np.isfinite(lat[skip:end])
    ms = lat[skip:end][ok] * 1000
    return {"rate": rate, "sent": end, "measured": end - skip, "ok": int(ok.sum()),
            "errors": errors, "achieved_rps": float(ok.sum() / elapsed),
            "p50_ms": float(np.percentile(ms, 50)) if ms.size else float("nan"),
            "p90_ms": float(np.percentile(ms, 90)) if ms.size else float("nan"),
            "p99_ms": float(np.percentile(ms, 99)) if ms.size else float("nan"),
            "max_ms": float(ms.max()) if ms.size else float("nan"),
            "items_returned": int(items.sum()), "admin_seconds": reload_seconds,
            "_answered": answered, "_items": items,
            "_ids": ids}


def missing_answers(log_dir: Path, r: dict[str, Any]) -> int:
    """Items of 200 answers whose request is not whole in the log (the lost rows)."""
    from recscope.serve.logs import read_log

    t = read_log(log_dir, "exposures").group_by("request_id").aggregate(
        [("position", "count")])
    logged = dict(zip(t.column("request_id").to_pylist(),
                      t.column("position_count").to_pylist(), strict=True))
    return int(sum(int(n) for rid, n in zip(r["_ids"], r["_items"], strict=True)
                   if rid is not None and logged.get(rid, 0) != n))


def logged_rows(log_dir: Path) -> int:
    from recscope.serve.logs import read_log

    return read_log(log_dir, "exposures").num_rows


def public(r: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in r.items() if not k.startswith("_")}


def run_sustain(a: argparse.Namespace, users: np.ndarray) -> dict[str, Any]:
    log_dir = a.out / "logs-sustain"
    srv = Server(a.model, log_dir)
    srv.start()
    before = logged_rows(log_dir) if (log_dir / "exposures").is_dir() else 0
    r = asyncio.run(load(srv.url, a.rate, a.duration, users=users))
    srv.stop()
    rows = logged_rows(log_dir) - before
    return {**public(r), "rows_logged": rows, "lost_rows": missing_answers(log_dir, r),
            "duration_s": a.duration}


def run_sweep(a: argparse.Namespace, users: np.ndarray) -> dict[str, Any]:
    out = []
    for rate in a.sweep:
        srv = Server(a.model, a.out / f"logs-sweep-{rate}")
        srv.start()
        r = asyncio.run(load(srv.url, rate, a.sweep_seconds, users=users))
        srv.stop()
        out.append(public(r))
        print(json.dumps(out[-1]), flush=True)
    ok = [x["rate"] for x in out if not x["errors"] and x["achieved_rps"] >= 0.98 * x["rate"]
          and x["p99_ms"] < 20.0]
    res = {"points": out, "max_sustainable_rps": max(ok) if ok else None}
    if a.plot:
        plot(out, a.plot)
    return res


def plot(points: list[dict[str, Any]], path: Path) -> None:
    """p50/p99 latency and achieved throughput against the offered load."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rate = [x["rate"] for x in points]
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    ax.plot(rate, [x["p50_ms"] for x in points], "o-", label="p50 latency")
    ax.plot(rate, [x["p99_ms"] for x in points], "s-", label="p99 latency")
    ax.axhline(20, color="grey", ls="--", lw=0.8, label="20 ms")
    ax.set_yscale("log")
    ax.set_xlabel("offered load (requests/s)")
    ax.set_ylabel("latency from scheduled send (ms)")
    ax2 = ax.twinx()
    ax2.plot(rate, [x["achieved_rps"] for x in points], "^:", color="green",
             label="achieved req/s")
    ax2.plot(rate, rate, color="green", lw=0.5, alpha=0.5)
    ax2.set_ylabel("achieved requests/s", color="green")
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="upper left", fontsize=8)
    ax.set_title("recscope serve, ML-100K pipeline, loopback, 2 shared cores", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def run_fault(a: argparse.Namespace, users: np.ndarray) -> dict[str, Any]:
    log_dir = a.out / "logs-fault"
    srv = Server(a.model, log_dir)
    srv.start()

    async def go() -> dict[str, Any]:
        task = asyncio.create_task(load(srv.url, a.rate, 20.0, users=users, stop_after=15.0))
        await asyncio.sleep(13.2)  # 3 s warm-up + 10 s
        os.kill(srv.proc.pid, signal.SIGKILL)  # type: ignore[union-attr]
        killed = time.monotonic()
        r = await task
        r["_killed"] = killed
        return r

    r = asyncio.run(go())
    srv.proc.wait()  # type: ignore[union-attr]
    from recscope.serve.logs import read_log

    log = read_log(log_dir, "exposures")  # must be readable
    returned = int(r["items_returned"])
    lost = missing_answers(log_dir, r)
    answered = r["_answered"]
    window = (answered >= r["_killed"] - FLUSH - 0.5) & np.isfinite(answered)
    bound = int(r["_items"][window].sum())
    srv2 = Server(a.model, log_dir)
    srv2.start()
    r2 = asyncio.run(load(srv2.url, 50, 2, users=users))
    srv2.stop()
    after = logged_rows(log_dir)
    return {"rate": a.rate, "items_returned_before_kill": returned,
            "rows_logged_before_kill": log.num_rows, "lost_rows": lost,
            "bound_rows_answered_in_last_flush_interval": bound,
            "within_bound": 0 <= lost <= bound, "log_readable": True,
            "restart_rows_ok": after - log.num_rows == r2["items_returned"],
            "errors_after_kill": r["errors"]}


def run_reload(a: argparse.Namespace, users: np.ndarray) -> dict[str, Any]:
    log_dir = a.out / "logs-reload"
    srv = Server(a.model, log_dir)
    srv.start()
    r = asyncio.run(load(srv.url, a.rate, 20.0, users=users,
                         events=[(t, "reload") for t in (4.0, 8.0, 12.0, 16.0)]))
    srv.stop()
    rows = logged_rows(log_dir)
    return {**public(r), "reloads": 4, "rows_logged": rows,
            "lost_rows": missing_answers(log_dir, r)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=ROOT / "benchmarks/out/serving/model")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks/out/serving")
    p.add_argument("--run", action="append", choices=["sustain", "sweep", "fault", "reload"])
    p.add_argument("--rate", type=float, default=500.0)
    p.add_argument("--duration", type=float, default=300.0)
    p.add_argument("--sweep", type=float, nargs="+", default=[250, 500, 750, 1000, 1500])
    p.add_argument("--sweep-seconds", type=float, default=20.0)
    p.add_argument("--plot", type=Path, default=ROOT / "docs/serving_latency.png")
    p.add_argument("--replot", action="store_true",
                   help="redraw --plot from the sweep in --out/results.json and exit")
    a = p.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    if a.replot:
        plot(json.loads((a.out / "results.json").read_text())["sweep"]["points"], a.plot)
        return
    ensure_model(a.model)
    import pyarrow.parquet as pq

    known = np.asarray(pq.read_table(a.model / "users.parquet").column("user_id").to_pylist())
    users = np.concatenate([known, np.arange(10**6, 10**6 + known.size // 50)])  # 2 % cold
    results: dict[str, Any] = {}
    for run in a.run or ["sweep"]:
        t0 = time.perf_counter()
        results[run] = {**globals()[f"run_{run}"](a, users),
                        "wall_s": round(time.perf_counter() - t0, 1)}
        print(run, json.dumps(results[run], indent=1, default=str), flush=True)
    path = a.out / "results.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**old, **results}, indent=1, default=str))


if __name__ == "__main__":
    main()
