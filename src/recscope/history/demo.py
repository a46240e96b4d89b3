"""What history predicted for the demo's candidate (``recscope demo``).

The demo's candidate stack is new: nothing in a history made elsewhere was measured on its
world and split (the predictor refuses offline deltas from another split). So the demo
simulates a small history **on its own world**, with its own trained components and its
own baseline: candidate stacks drawn from the demo's components (popularity, ALS, BPR)
and built-in stages (noisy embedding / random retrievers, an affinity ranker, topic and
popularity re-rankers), every one with its offline deltas, OPE estimate, replay, a short
online A/B test and its truth (:mod:`recscope.history.corpus`). The families of the
demo's own changes (the full stack and each single-component change; a family is the
retriever, ranker and re-ranker kinds) are never drawn, so each prediction is made as
for an unseen kind of change.

The history's truth covers the demo experiment's own window (its days after its warm-up:
the effect of a stack change on clicks grows over the first weeks as users come back
more), while the history's own A/B tests and replays are short (3 days, 1 day) to keep it
cheap.
The corpus is written under the demo's output folder (``history/``) with the key of
everything it depends on, and reused by the next run whose key matches; a corpus shipped
with recscope (:data:`SHIPPED`, made by ``python benchmarks/history.py demo-corpus``) is
used the same way when its key matches (the default demo).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from recscope.history.corpus import CandidateSpec, CorpusConfig, Progress

# corpus size per demo scale (the truth's window and warm-up are the demo experiment's)
DEMO_CORPUS: dict[str, dict[str, Any]] = {
    "default": {"n": 20, "online_days": 3, "replay_days": 1, "replay_share": 0.25,
                "eval_users": 2000},
    "small": {"n": 16, "online_days": 3, "replay_days": 1, "replay_share": 0.5,
              "eval_users": 600},
}
FOLDER = "history"
# corpora built once by `python benchmarks/history.py demo-corpus` and shipped with recscope,
# so the default demo does not pay for its history on a first run (used when the key matches)
SHIPPED = Path(__file__).parent / "shipped"


def shipped_folder(scale: str, seed: int) -> Path:
    """Where a shipped demo corpus of ``scale`` and ``seed`` lives."""
    return SHIPPED / f"demo-{scale}-seed{seed}"


def stack_spec(stack: dict[str, str], pool: int, candidate_id: str) -> CandidateSpec:
    """A demo stack (component names) as a corpus candidate without a re-ranker."""
    r, k = stack["retriever"], stack["ranker"]
    return CandidateSpec(candidate_id, f"{r}/{k}/none", {"kind": r, "pool": int(pool)},
                         {"kind": k}, {"kind": "none"}, 0.3, False, False)


def sample_demo_candidates(n: int, seed: int, components: list[str], exclude: set[str],
                           baseline: str) -> list[CandidateSpec]:
    """``n`` stacks from the demo's ``components`` and built-in stages, never of a family
    in ``exclude`` nor the baseline's exact stack."""
    rng = np.random.default_rng([seed, 1919])
    retrievers = [*components, "embedding", "random"]
    rankers = [*components, "affinity"]
    out: list[CandidateSpec] = []
    while len(out) < n:
        rk = str(rng.choice(retrievers))
        ret: dict[str, Any] = {"kind": rk, "pool": int(rng.choice([50, 100, 150]))}
        if rk == "embedding":
            ret.update(noise=round(float(rng.uniform(0.3, 1.5)), 3),
                       popularity_weight=round(float(rng.uniform(0.0, 0.6)), 3))
        kk = str(rng.choice(rankers))
        rank: dict[str, Any] = {"kind": kk}
        if kk == "affinity":
            rank.update(noise=round(float(rng.uniform(0.3, 1.5)), 3),
                        affinity_weight=round(float(rng.uniform(1.0, 5.0)), 3),
                        popularity_weight=round(float(rng.uniform(0.0, 0.8)), 3))
        ek = str(rng.choice(["none", "none", "diversity", "demote_popular"]))
        rr: dict[str, Any] = {"kind": ek}
        if ek == "diversity":
            rr["max_per_topic"] = int(rng.integers(1, 4))
        elif ek == "demote_popular":
            rr.update(head_share=round(float(rng.uniform(0.02, 0.2)), 3),
                      penalty=round(float(rng.uniform(1.0, 6.0)), 3))
        family = f"{rk}/{kk}/{ek}"
        temp = round(float(rng.uniform(0.1, 0.6)), 3)
        if family in exclude or (family == baseline and ret["pool"] == 100):
            continue
        out.append(CandidateSpec(f"demo-{len(out):03d}", family, ret, rank, rr, temp,
                                 False, False))
    return out


def _key(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _read_cached(folder: Path | None, key: str) -> Any:
    """The cached corpus table when ``folder`` holds one made with ``key``, else None (an
    unreadable or stale cache is rebuilt, never trusted)."""
    from recscope.errors import DataValidationError
    from recscope.history.store import read_history

    if folder is None or not (folder / "corpus.json").is_file():
        return None
    try:
        meta = json.loads((folder / "corpus.json").read_text())
        if not isinstance(meta, dict) or meta.get("key") != key:
            return None
        return read_history(folder / "history.parquet")
    except (OSError, ValueError, DataValidationError):
        return None


def demo_prediction(world: Any, components: dict[str, Any], *, baseline: dict[str, str],
                    candidates: dict[str, dict[str, str]], pool: int, scale: str, seed: int,
                    days: int, warmup_days: int, cached: Path | None = None,
                    progress: Progress | None = None, metric: str = "clicks",
                    cost: float = 0.01) -> dict[str, Any]:
    """Build (or reuse from ``cached``) the demo's history and predict each of its
    ``candidates`` (name -> stack).

    Returns per candidate the prediction (``estimate``, ``ci_low``, ``ci_high`` of the
    relative effect on ``metric``, the triage, the signals) with the corpus' size, key
    and whether it was reused, and ``table`` / ``meta`` (the corpus, to be written to
    ``<out>/history/``). No candidate's family is ever in the corpus. Its truth covers
    ``days`` days after ``warmup_days`` (the demo experiment's window); its own A/B
    tests last ``online_days`` of :data:`DEMO_CORPUS`."""
    from recscope.history.corpus import pre_experiment, prepare, simulate_corpus, warm_variants
    from recscope.history.predict import fit_predictor, predict_candidate
    from recscope.history.store import record_to_row, rows_to_table

    t0 = time.perf_counter()
    sz = DEMO_CORPUS[scale]
    cfg = CorpusConfig(n=sz["n"], seed=seed, warmup_days=warmup_days, days=days,
                       long_run_days=days, online_days=min(sz["online_days"], days),
                       replay_days=sz["replay_days"], replay_share=sz["replay_share"],
                       eval_users=sz["eval_users"], novelty_share=0.0, interference_share=0.0)
    base = stack_spec(baseline, pool, "baseline")
    cands = {name: stack_spec(st, pool, f"demo-{name}") for name, st in candidates.items()}
    shared = prepare(cfg, world=world, components=components, baseline=base, variants=())
    key = _key({"scale": scale, "seed": seed, "config": sz, "pool": pool, "days": days,
                "warmup_days": warmup_days,
                "baseline": baseline, "candidates": candidates,
                "split": shared.split_fingerprint, "world": repr(world),
                "components": sorted(components)})
    table, source = None, "built"
    meta: dict[str, Any] = {}
    for folder, name in ((cached, "reused"), (shipped_folder(scale, seed), "shipped")):
        table = _read_cached(folder, key)
        if table is not None:
            assert folder is not None
            source, meta = name, json.loads((folder / "corpus.json").read_text())
            break
    reused = table is not None
    if table is None:
        warm_variants(shared, ((False, False),))
        specs = sample_demo_candidates(cfg.n, seed, sorted(components),
                                       {c.family for c in cands.values()}, base.family)
        recs, meta = simulate_corpus(cfg, progress, shared=shared, specs=specs)
        table = rows_to_table([record_to_row(r) for r in recs])
        meta["key"] = key
        meta["command"] = "recscope demo (history/ is reused while its key matches)"
    pred = fit_predictor(table, metric=metric, kind="ridge", alpha=0.1)
    families = sorted(set(table.column("family").to_pylist()))
    out: dict[str, Any] = {}
    for name, spec in cands.items():
        res = predict_candidate(pred, record_to_row(pre_experiment(spec, shared)), cost=cost)
        out[name] = {"estimate": res.estimate, "ci_low": res.ci_low, "ci_high": res.ci_high,
                     "recommendation": res.triage["recommendation"],
                     "p_positive": res.triage["p_positive"], "ev_run": res.triage["ev_run"],
                     "family": spec.family, "family_seen": spec.family in families,
                     "signals": {k: (v if math.isfinite(v) else None)
                                 for k, v in res.signals.items()}}
    return {"metric": metric, "level": 1 - pred.alpha, "predictions": out,
            "candidates": table.num_rows, "families": len(families), "corpus_days": cfg.days,
            "online_days": cfg.online_days,
            "reused": reused, "source": source, "key": key, "seconds": round(time.perf_counter() - t0, 2),
            "table": table, "meta": meta}
