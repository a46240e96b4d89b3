"""Cost of the simulated history and the validation of docs/history.md.

    python benchmarks/history.py cost --n 20          # seconds per candidate (default scale)
    python benchmarks/history.py demo-corpus          # the corpus shipped for the demo
    python benchmarks/history.py validate --history DIR/history.parquet \\
        --asos ../shared/data/asos-digital-experiments/asos_digital_experiments_dataset.parquet

``cost``: simulates ``--n`` candidates on the default corpus world (2,000 users, 1,000
pins, 14-day experiments, 28-day truth) on one core and prints the shared set-up time and
the time per candidate, split by signal (offline, OPE, replay, online, truth).

``demo-corpus``: runs ``recscope demo`` at ``--scale`` (default) and ``--seed`` (0) in a
temporary folder and copies the history it built to
``src/recscope/history/shipped/demo-<scale>-seed<seed>/`` (``history.parquet``,
``corpus.json``), the corpus the demo then finds instead of building it (docs/history.md).

``validate``: runs :func:`recscope.history.validation.run_validation` (what ``recscope
history validate`` prints) and writes benchmarks/out/history.json.
Run both under ``flock /tmp/recscope-heavy.lock`` on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np

from recscope.history import corpus

OUT = Path(__file__).parent / "out"


def cost(n: int, seed: int) -> dict[str, float]:
    """Shared set-up and per-candidate seconds, per signal."""
    cfg = corpus.CorpusConfig(n=n, seed=seed)
    t = time.perf_counter()
    shared = corpus.prepare(cfg)
    setup = time.perf_counter() - t
    parts = {"offline": 0.0, "ope": 0.0, "total": 0.0}
    for spec in corpus.sample_candidates(n, seed):
        t0 = time.perf_counter()
        corpus._offline_values(corpus.build_policy(spec, shared, temperature=0.0), shared)
        t1 = time.perf_counter()
        corpus._ope_weights(spec, shared)
        t2 = time.perf_counter()
        corpus.evaluate_candidate(spec, shared)
        t3 = time.perf_counter()
        parts["offline"] += t1 - t0
        parts["ope"] += t2 - t1
        parts["total"] += t3 - t2
    out = {"setup_s": setup, "per_candidate_s": parts["total"] / n,
           "offline_s": parts["offline"] / n, "ope_s": parts["ope"] / n,
           "simulation_s": (parts["total"] - parts["offline"] - parts["ope"]) / n,
           "users": shared.truth.n_users, "items": shared.truth.n_items}
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in out.items()}))
    return out


def validate(history: Path, asos: Path | None, cost_: float) -> dict[str, object]:
    from rich.console import Console

    from recscope.history.store import read_history
    from recscope.history.validation import print_validation, run_validation

    t = time.perf_counter()
    res = run_validation(read_history(history), asos=asos, cost=cost_, file=str(history))
    res["seconds"] = round(time.perf_counter() - t, 2)
    print_validation(res, Console(width=200))
    OUT.mkdir(exist_ok=True)
    for v in res["predictor"].values():  # type: ignore[union-attr]
        v.pop("predictions", None)
    (OUT / "history.json").write_text(json.dumps(res, indent=1, default=float))
    print(markdown(res))
    return res


def demo_corpus(scale: str, seed: int) -> Path:
    """Build the demo's history once and ship it (see the module docstring)."""
    import shutil
    import tempfile

    from recscope.history.demo import FOLDER, shipped_folder
    from recscope.story import run_story

    dest = shipped_folder(scale, seed)
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        s = run_story(Path(tmp) / "demo", scale, seed=seed, tracking=str(Path(tmp) / "ml"))
        if s["history"]["source"] == "shipped":
            print(f"{dest} is already current (its key matches); nothing to do")
            return dest
        dest.mkdir(parents=True, exist_ok=True)
        for name in ("history.parquet", "corpus.json"):
            shutil.copy(Path(tmp) / "demo" / FOLDER / name, dest / name)
    print(f"{dest}: {s['history']['candidates']} candidates, built in "
          f"{s['history']['seconds']:.0f} s (demo {time.perf_counter() - t:.0f} s)")
    return dest


def _f(x: object, pct: bool = False) -> str:
    if x is None or not isinstance(x, int | float) or x != x:
        return "–"
    return f"{x:.1%}" if pct else f"{x:.3f}"


def markdown(res: dict[str, object]) -> str:
    """The validation as the Markdown tables of docs/history.md."""
    pred = res["predictor"]  # type: ignore[index]
    lines = ["| model | Spearman: offline NDCG delta | OPE | replay | learned | direction "
             "(\\|truth\\| ≥ MDE) | n ≥ MDE | coverage at 90% | mean half-width |",
             "|---|---|---|---|---|---|---|---|---|"]
    for kind, v in pred.items():  # type: ignore[union-attr]
        sp = v["spearman"]
        lines.append(f"| {kind} | {_f(sp['offline NDCG delta'])} | {_f(sp['OPE'])} | "
                     f"{_f(sp['replay'])} | **{_f(sp['learned'])}** | "
                     f"{_f(v['directional_accuracy'], True)} | {v['n_beyond_mde']} | "
                     f"{_f(v['coverage'], True)} | {_f(v['mean_half_width'])} |")
    lines += ["", "| model | skipped | more traffic | good launches (all) | good launches "
              "missed | bad launches avoided | true effect ≥ MDE skipped |",
              "|---|---|---|---|---|---|---|"]
    for kind, v in pred.items():  # type: ignore[union-attr]
        t = v["triage"]
        lines.append(f"| {kind} | {t['skipped']} / {t['candidates']} "
                     f"({_f(t['experiments_saved_share'], True)}) | {t['more_traffic']} | "
                     f"{t['good_launches_all']} | {t['good_launches_missed']} | "
                     f"{t['bad_launches_avoided']} / {t['bad_launches_all']} | "
                     f"{t['true_positive_missed']} |")
    lines += ["", "| data | held out | metric | prior | readouts | MSE raw | MSE shrunken | "
              "reduction | 95% coverage raw | shrunken | weight (metric / family) |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["priors"]:  # type: ignore[union-attr]
        lam = "–" if r.get("shrink") != r.get("shrink") else f"{r['shrink']:.2f}"
        if r.get("family_shrink") == r.get("family_shrink") and r["prior"].startswith("family"):
            lam += f" / {r['family_shrink']:.2f}"
        lines.append(f"| {r['data']} | {r['unit']} | {r['metric']} | {r['prior']} | {r['n']} | "
                     f"{r['mse_raw']:.3g} | {r['mse_shrunken']:.3g} | "
                     f"{_f(r['mse_reduction'], True)} | {_f(r.get('coverage_raw'), True)} | "
                     f"{_f(r.get('coverage_shrunken'), True)} | {lam} |")
    lines += ["", "| data | held out | metric | prior | P(effect > 0) bin | n | mean P | "
              "share positive |", "|---|---|---|---|---|---|---|---|"]
    for r in res["priors"]:  # type: ignore[union-attr]
        for b in r["reliability"]:
            lines.append(f"| {r['data']} | {r['unit']} | {r['metric']} | {r['prior']} | "
                         f"{b['bin']} | {b['n']} | {b['mean_p_positive']:.2f} | "
                         f"{b['share_positive']:.2f} |")
    lines += ["", "| data | rule | series | experiment-days saved | disagreement with the "
              "final decision |", "|---|---|---|---|---|"]
    for data, s in res["shortcuts"].items():  # type: ignore[union-attr]
        for rule in ("always_valid", "futility_only", "always_valid_and_futility"):
            if rule in s:
                lines.append(f"| {data} | {rule.replace('_', ' ')} | {s[rule]['series']} | "
                             f"{_f(s[rule]['days_saved_share'], True)} | "
                             f"{_f(s[rule]['disagreement_rate'], True)} |")
        ea = s["earliest_agreement"]
        lines.append(f"| {data} | earliest agreement (median share of the duration) | "
                     f"{s['series']} | {_f(1 - ea['median_share'], True)} | 0% (hindsight) |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("cost")
    c.add_argument("--n", type=int, default=20)
    c.add_argument("--seed", type=int, default=0)
    d = sub.add_parser("demo-corpus")
    d.add_argument("--scale", default="default")
    d.add_argument("--seed", type=int, default=0)
    v = sub.add_parser("validate")
    v.add_argument("--history", type=Path, required=True)
    v.add_argument("--asos", type=Path, default=None)
    v.add_argument("--cost", type=float, default=0.01)
    a = ap.parse_args()
    np.seterr(all="ignore")
    if a.cmd == "cost":
        cost(a.n, a.seed)
    elif a.cmd == "demo-corpus":
        demo_corpus(a.scale, a.seed)
    else:
        validate(a.history, a.asos, a.cost)


if __name__ == "__main__":
    main()
