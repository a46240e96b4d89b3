"""The grouped cross-validation protocol of ``benchmarks/long_run.py`` (issue 15): folds
stratified by kind of change, and the extrapolation-aware surrogacy error."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np


def _bench() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "long_run.py"
    spec = importlib.util.spec_from_file_location("bench_long_run", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_folds_keep_every_kind_in_training() -> None:
    lr = _bench()
    fams = ["a"] * 12 + ["b"] * 7 + ["c"] * 25 + ["d"] * 6
    fold = lr.stratified_folds(fams, 10, seed=3)
    sizes = np.bincount(fold, minlength=10)
    assert sizes.max() - sizes.min() <= 1
    for f in range(10):
        train = {x for x, g in zip(fams, fold, strict=True) if g != f}
        assert train == {"a", "b", "c", "d"}
    # per family, the held-out counts differ by at most one across folds
    for fam in "abcd":
        per = np.bincount(fold[np.array(fams) == fam], minlength=10)
        assert per.max() - per.min() <= 1
    assert not np.array_equal(fold, lr.stratified_folds(fams, 10, seed=4))


def test_mahalanobis_distance() -> None:
    from recscope.experiments.surrogate import mahalanobis2

    rng = np.random.default_rng(0)
    ref = rng.normal(size=(4000, 3)) * [1.0, 10.0, 0.1]
    assert mahalanobis2(ref, ref.mean(axis=0)) < 1e-12
    for axis, sd in enumerate([1.0, 10.0, 0.1]):
        x = ref.mean(axis=0).copy()
        x[axis] += 2 * sd
        assert abs(mahalanobis2(ref, x) - 4.0) < 0.3


def _history(rng: np.random.Generator, n: int, hetero: bool) -> list[dict]:
    theta = np.array([0.5, -0.2, 0.1])
    out = []
    for _ in range(n):
        dx = rng.normal(size=3)
        # surrogacy error growing with how unusual the change is (or constant)
        sd = 0.05 * (1 + (dx @ dx if hetero else 3.0))
        out.append({"dx": dx.tolist(), "V": (np.eye(3) * 1e-6).tolist(),
                    "C": [0.0, 0.0, 0.0], "var_dy": 0.0,
                    "dy": float(theta @ dx + rng.normal(0, sd))})
    return out


def test_widening_follows_the_history_errors() -> None:
    lr = _bench()
    rng = np.random.default_rng(1)
    hetero = lr.fit_fold(_history(rng, 200, True), ridge=0.0, widen=True)
    flat = lr.fit_fold(_history(rng, 200, False), ridge=0.0, widen=True)
    plain = lr.fit_fold(_history(rng, 200, True), ridge=0.0, widen=False)
    assert plain["b"] == 0.0 and plain["a"] == plain["tau2"]
    # errors that grow with the distance: a far change gets a much larger error variance
    far = 10.0
    assert hetero["a"] + hetero["b"] * far > 2.5 * hetero["tau2"]
    # constant errors: the fitted slope adds little at the same distance
    assert flat["a"] + flat["b"] * far < 2 * flat["tau2"]


def test_noisy_targets_touch_only_the_truth_targets() -> None:
    lr = _bench()
    rng = np.random.default_rng(2)
    stats = [{"target": "observed", "dy": 1.0, "var_dy": v} for v in (0.01, 0.04, 0.09)]
    stats += [{"target": "truth", "dy": 0.5, "var_dy": 0.0} for _ in range(4000)]
    rng.shuffle(stats)
    noisy = lr.noisy_targets(stats, seed=0)
    assert all(a is b for a, b in zip(stats, noisy, strict=True) if a["target"] == "observed")
    dy = np.array([s["dy"] for s in noisy if s["target"] == "truth"])
    assert all(s["var_dy"] == 0.04 for s in noisy if s["target"] == "truth")
    assert abs(dy.mean() - 0.5) < 0.01 and abs(dy.std() - 0.2) < 0.01
    assert all(s["dy"] == 0.5 for s in stats if s["target"] == "truth")  # copies
    assert not np.array_equal(dy, [s["dy"] for s in lr.noisy_targets(stats, seed=1)
                                   if s["target"] == "truth"])
