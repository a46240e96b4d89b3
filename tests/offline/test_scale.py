"""Out-of-core and Spark evaluation give the in-memory numbers.

Means, counts and paired-t p-values equal :func:`recscope.offline.evaluate` /
:func:`recscope.offline.compare.compare` to 1e-9. Intervals come from a different
bootstrap (Poisson weights instead of resampling), so they are checked against the
in-memory bootstrap within Monte-Carlo error: with B = 2000 replicates, a 2.5% quantile
endpoint has Monte-Carlo sd ≈ sqrt(0.025·0.975) / (φ(1.96)·sqrt(B)) ≈ 0.06 SE for each
bootstrap, so two independent bootstraps differ by sd ≈ 0.085 SE; we allow 0.45 SE
(5 sd). Stream and Spark share the Poisson weights (hashed from user ids), so they
agree with each other to 1e-9, intervals included.
"""

from __future__ import annotations

import itertools
import resource
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from recscope.errors import ConfigError, DataValidationError
from recscope.offline import evaluate
from recscope.offline.compare import compare
from recscope.offline.inputs import load_inputs
from recscope.offline.scale import evaluate_stream, whole_user_chunks

METRICS = ["ndcg@10", "recall@5", "mrr", "map@20", "auc", "precision@10", "hit_rate@3"]


def _write(d: Path, n_users: int, k: int = 15, n_items: int = 120, seed: int = 0,
           str_ids: bool = False) -> dict[str, str]:
    rng = np.random.default_rng(seed)
    d.mkdir(parents=True, exist_ok=True)

    def uid(u: np.ndarray) -> pa.Array:
        return pa.array([f"u{x}" for x in u]) if str_ids else pa.array(u)

    out = {}
    for name in ("a", "b"):
        u = np.repeat(np.arange(n_users), k)
        it = np.argsort(rng.random((n_users, n_items)), axis=1)[:, :k].ravel()
        t = pa.table({"user_id": uid(u), "item_id": it, "score": rng.random(len(u))})
        out[name] = str(d / f"{name}.parquet")
        pq.write_table(t, out[name])
    nt = rng.integers(0, 5, n_users)
    tu = np.repeat(np.arange(n_users), nt)
    ti = np.concatenate([rng.choice(n_items, c, replace=False) for c in nt])
    pq.write_table(pa.table({"user_id": uid(tu), "item_id": ti,
                             "grade": rng.integers(1, 4, len(tu)).astype(float),
                             "seg": np.where(tu % 3 == 0, "x", "y")}), d / "truth.parquet")
    out["truth"] = str(d / "truth.parquet")
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return _write(tmp_path_factory.mktemp("scale"), 2500)


@pytest.fixture(scope="module")
def memory(files: dict[str, str]) -> tuple[dict, object]:
    data = load_inputs(files["truth"], {"a": files["a"], "b": files["b"]})
    res = {n: evaluate(data.rankings[n], data.truth, METRICS, n_items=len(data.items),
                       bootstrap=2000) for n in "ab"}
    return res, compare(res, n_boot=2000)


@pytest.fixture(scope="module")
def stream(files: dict[str, str]) -> object:
    return evaluate_stream({"a": files["a"], "b": files["b"]}, files["truth"], METRICS,
                           bootstrap=2000, slices=["seg"], chunk_rows=5000)


def _same_means(mem: dict, cmp: object, got: object, intervals: bool = True) -> None:
    for n in "ab":
        for e1, e2 in zip(mem[n].estimates, got.systems[n].estimates, strict=True):
            assert e1.metric == e2.metric and e1.n == e2.n
            assert e2.estimate == pytest.approx(e1.estimate, abs=1e-9)
            assert e2.se == pytest.approx(e1.se, abs=1e-9)
            if intervals:
                assert abs(e2.ci_low - e1.ci_low) < 0.45 * e1.se, (n, e1.metric)
                assert abs(e2.ci_high - e1.ci_high) < 0.45 * e1.se, (n, e1.metric)
    for t1, t2 in zip(cmp.tests, got.tests, strict=True):
        assert t2.estimate == pytest.approx(t1.estimate, abs=1e-9)
        assert t2["p_t"] == pytest.approx(t1["p_t"], abs=1e-9)
        assert t2.n == t1.n
        if intervals:
            assert abs(t2.ci_low - t1.ci_low) < 0.45 * t1.se


def test_stream_matches_memory(memory: tuple, stream: object) -> None:
    """Small chunks (5000 rows, users cut across DuckDB batches): same means and tests;
    slices equal the in-memory slices' means."""
    from recscope.offline.slices import slice_users

    mem, cmp = memory
    _same_means(mem, cmp, stream)
    info = stream.systems["a"].info
    assert info["n_users_without_relevant"] == mem["a"].info["n_users_without_relevant"]
    labels = np.array(["x" if u % 3 == 0 else "y" for u in range(2500)], dtype=object)
    sl = slice_users(mem["a"], labels, by="seg").estimates
    got = stream.systems["a"].slices
    assert [(e.metric, e["slice"]) for e in sl] == [(e.metric, e["slice"]) for e in got]
    for e1, e2 in zip(sl, got, strict=True):
        assert e2.estimate == pytest.approx(e1.estimate, abs=1e-9) and e1.n == e2.n


def test_string_ids_and_hive_folder(tmp_path: Path) -> None:
    """String ids, rankings as a hive-partitioned folder: the same means as in memory."""
    f = _write(tmp_path, 300, str_ids=True, seed=4)
    t = pq.read_table(f["a"])
    t = t.append_column("part", pc.utf8_slice_codeunits(t.column("user_id"), 1, 2))
    pq.write_to_dataset(t, tmp_path / "hive", partition_cols=["part"])
    data = load_inputs(f["truth"], {"a": f["a"]})
    mem = evaluate(data.rankings["a"], data.truth, METRICS, n_items=len(data.items),
                   bootstrap=0)
    got = evaluate_stream({"a": str(tmp_path / "hive")}, f["truth"], METRICS, bootstrap=0)
    for e1, e2 in zip(mem.estimates, got.estimates, strict=True):
        assert e2.estimate == pytest.approx(e1.estimate, abs=1e-9) and e1.n == e2.n


def test_chunks_are_whole_users() -> None:
    """Tables are cut at user boundaries whatever the batch sizes."""
    ids = np.repeat(np.arange(50), np.arange(1, 51) % 7 + 1)
    batches = pa.table({"user_id": ids}).to_batches(max_chunksize=13)
    seen: list[int] = []
    for t in whole_user_chunks(batches, 40):
        u = np.unique(t.column("user_id").to_numpy())
        assert not set(u) & set(seen)
        seen += list(u)
    assert seen == list(range(50))


def test_out_of_core_memory_is_bounded(tmp_path: Path) -> None:
    """Inputs larger than the budget: 40k users x top-50 (2M ranking rows, ~50 MB as
    arrays) hash-partitioned into 5 sorted passes (rows_per_pass), or read in user order
    (the sorted-input path), and streamed with 100k-row chunks; Python allocations stay
    under 40 MB (tracemalloc peak; DuckDB's own memory is capped by its memory_limit)
    and the numbers equal in-memory ones on a sample check of the means."""
    f = _write(tmp_path, 40_000, k=50, n_items=400, seed=7)
    data = load_inputs(f["truth"], {"a": f["a"]})
    mem = evaluate(data.rankings["a"], data.truth, ["ndcg@10", "recall@20"], bootstrap=0)
    for flag in (False, True):
        tracemalloc.start()
        res = evaluate_stream({"a": f["a"]}, f["truth"], ["ndcg@10", "recall@20"],
                              bootstrap=50, chunk_rows=100_000, memory_limit="200MB",
                              threads=1, rows_per_pass=500_000, sorted_inputs=flag)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert res.info["engine"] == ("stream (sorted inputs)" if flag else "stream")
        in_arrays = 40_000 * 50 * (8 + 8 + 8)  # user, item, score as 64-bit
        assert peak < 40e6 < in_arrays, (flag, peak)
        for e1, e2 in zip(mem.estimates, res.estimates, strict=True):
            assert e2.estimate == pytest.approx(e1.estimate, abs=1e-9)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss > 0


def test_bad_inputs(tmp_path: Path, files: dict[str, str]) -> None:
    """Mismatched id types across partitions, a duplicate (user, item) in a partition,
    a partition folder without its key, refused tests: one error naming file/column."""
    d = tmp_path / "mixed"
    (d / "p=1").mkdir(parents=True)
    (d / "p=2").mkdir()
    pq.write_table(pa.table({"user_id": [1, 2], "item_id": [1, 2], "score": [.1, .2]}),
                   d / "p=1" / "a.parquet")
    pq.write_table(pa.table({"user_id": ["3"], "item_id": [1], "score": [.1]}),
                   d / "p=2" / "b.parquet")
    with pytest.raises(DataValidationError, match=r"p=2.*user_id.*differs"):
        evaluate_stream({"a": str(d)}, files["truth"], ["mrr"])
    dup = tmp_path / "dup"
    (dup / "p=1").mkdir(parents=True)
    (dup / "p=2").mkdir()
    pq.write_table(pa.table({"user_id": [0, 0], "item_id": [1, 2], "score": [.1, .2]}),
                   dup / "p=1" / "a.parquet")
    pq.write_table(pa.table({"user_id": [5, 5], "item_id": [7, 7], "score": [.1, .3]}),
                   dup / "p=2" / "b.parquet")
    with pytest.raises(DataValidationError, match=r"p=2/b\.parquet.*item_id.*repeated"):
        evaluate_stream({"a": str(dup)}, files["truth"], ["mrr"])
    miss = tmp_path / "miss"
    (miss / "p=1").mkdir(parents=True)
    (miss / "other").mkdir()
    for sub in ("p=1", "other"):
        pq.write_table(pa.table({"user_id": [1], "item_id": [1], "score": [.1]}),
                       miss / sub / "a.parquet")
    with pytest.raises(DataValidationError, match=r"other/a\.parquet.*missing partition"):
        evaluate_stream({"a": str(miss)}, files["truth"], ["mrr"])
    with pytest.raises(ConfigError, match="t-test"):
        evaluate_stream({"a": files["a"], "b": files["b"]}, files["truth"], ["mrr"],
                        test="wilcoxon")
    with pytest.raises(ConfigError, match="cut-off"):
        evaluate_stream({"a": files["a"]}, files["truth"], ["precision"])


# ---------------------------------------------------------------------- sorted inputs
def _write_sorted(d: Path, str_ids: bool, n_u: int = 400) -> dict[str, str]:
    """Inputs ordered by user over several files and row groups: system ``a`` in 3 files
    of 37-row row groups (a user cut by a file boundary and by row-group boundaries),
    ``b`` and the truth in 2 files; users missing from the truth or from a system;
    exclusions; a slice column. Each input also as one file (for the memory engine)."""
    rng = np.random.default_rng(21)
    n_items = 60
    ids = sorted(f"u{x}" for x in range(n_u)) if str_ids else list(range(n_u))
    d.mkdir(parents=True, exist_ok=True)
    out: dict[str, str] = {}

    def put(name: str, cols: dict, cuts: list[int], rg: int) -> None:
        t = pa.table(cols)
        pq.write_table(t, d / f"{name}.parquet")
        out[name] = str(d / f"{name}.parquet")
        (d / name).mkdir()
        for f, (a, b) in enumerate(zip([0, *cuts], [*cuts, t.num_rows], strict=True)):
            pq.write_table(t.slice(a, b - a), d / name / f"part-{f}.parquet",
                           row_group_size=rg)
        out[name + "/"] = str(d / name)

    for name, skip in (("a", 7), ("b", 5)):
        users = [u for u in range(n_u) if u % skip != 3]
        k = rng.integers(1, 16, len(users))
        uu = np.repeat(users, k)
        it = np.concatenate([rng.choice(n_items, c, replace=False) for c in k])
        cuts = [len(uu) // 3, 2 * len(uu) // 3] if name == "a" else [len(uu) // 2]
        # each file boundary inside a user's rows
        cuts = [next(c2 for c2 in range(c, len(uu)) if uu[c2 - 1] == uu[c2]) for c in cuts]
        put(name, {"user_id": [ids[u] for u in uu], "item_id": it,
                   "score": rng.random(len(uu))}, cuts, 37)
    tu = np.repeat([u for u in range(n_u) if u % 11 != 4], 3)
    ti = np.concatenate([rng.choice(n_items, 3, replace=False) for _ in range(len(tu) // 3)])
    keep = rng.random(len(tu)) < .8
    tu, ti = tu[keep], ti[keep]
    c = len(tu) // 2
    c = next(c2 for c2 in range(c, len(tu)) if tu[c2 - 1] == tu[c2])
    put("truth", {"user_id": [ids[u] for u in tu], "item_id": ti,
                  "grade": rng.integers(1, 4, len(tu)).astype(float),
                  "seg": np.where(tu % 3 == 0, "x", "y")}, [c], 50)
    eu = np.repeat(np.arange(0, n_u, 2), 2)
    ei = rng.integers(0, n_items, len(eu))
    keep = np.r_[True, (eu[1:] != eu[:-1]) | (ei[1:] != ei[:-1])]
    put("ex", {"user_id": [ids[u] for u in eu[keep]], "item_id": ei[keep]}, [], 40)
    return out


def _all_rows(r: object) -> list:
    return r.tests + r.systems["a"].estimates + r.systems["b"].estimates + \
        r.systems["a"].slices


@pytest.mark.parametrize("str_ids", [False, True])
def test_sorted_inputs_path(tmp_path: Path, str_ids: bool) -> None:
    """Inputs in user order over files and row groups take the sorted-input path (no
    buckets, no sort): means equal the in-memory engine's to 1e-9, and every number,
    intervals included (the same Poisson weights), equals the hash-bucket path's; with
    text ids, 7-row reads (users longer than a read)."""
    f = _write_sorted(tmp_path, str_ids, 150 if str_ids else 400)
    for name in ("a/", "b/", "truth/"):
        files = sorted(Path(f[name]).glob("*.parquet"))
        assert sum(pq.ParquetFile(x).metadata.num_row_groups for x in files) > 3
        ends = [pq.read_table(x).column("user_id") for x in files[:2]]
        assert ends[0][-1] == ends[1][0]  # a user spans the file boundary
    data = load_inputs(f["truth"], {"a": f["a"], "b": f["b"]}, f["ex"])
    metrics = ["ndcg@10", "mrr", "auc"] if str_ids else METRICS
    mem = {n: evaluate(data.rankings[n], data.truth, metrics, n_items=len(data.items),
                       exclude=data.exclude, bootstrap=0) for n in "ab"}
    cmp = compare(mem, n_boot=0)
    kw = {"exclude": f["ex/"], "bootstrap": 50 if str_ids else 300, "slices": ["seg"],
          "chunk_rows": 7 if str_ids else 2_000_000}
    fast, buckets = (evaluate_stream({"a": f["a/"], "b": f["b/"]}, f["truth/"], metrics,
                                     sorted_inputs=flag, **kw) for flag in (True, False))
    assert fast.systems["a"].info["engine"] == "stream (sorted inputs)"
    assert buckets.systems["a"].info["engine"] == "stream"
    _same_means(mem, cmp, fast, intervals=False)
    assert fast.systems["a"].info["n_users_missing_list"] == \
        mem["a"].info["n_users_missing_list"] > 0
    for e1, e2 in zip(_all_rows(buckets), _all_rows(fast), strict=True):
        assert (e1.metric, e1.n) == (e2.metric, e2.n)
        for k in ("estimate", "ci_low", "ci_high", "se"):
            assert getattr(e2, k) == pytest.approx(getattr(e1, k), abs=1e-12)


def test_unordered_inputs_fall_back(tmp_path: Path) -> None:
    """A row group whose min/max look ordered but whose rows are not (two users swapped
    inside it) is found while reading: the hash-bucket path runs and gives the same
    numbers; files listed out of user order are refused from the statistics alone."""
    f = _write_sorted(tmp_path, False)
    part = Path(f["a/"]) / "part-1.parquet"
    t = pq.read_table(part)
    u = t.column("user_id").to_numpy()
    users = np.unique(u[40:74])  # inside the second 37-row row group
    a, b = np.flatnonzero(u == users[1]), np.flatnonzero(u == users[2])
    assert len(users) >= 4 and b[-1] < 74
    idx = np.r_[np.arange(a[0]), b, a, np.arange(b[-1] + 1, len(u))]
    pq.write_table(t.take(idx), part, row_group_size=37)
    bounds = [(g.column(0).statistics.min, g.column(0).statistics.max) for f2 in
              sorted(Path(f["a/"]).glob("*.parquet")) for g in
              (pq.ParquetFile(f2).metadata.row_group(j) for j in
               range(pq.ParquetFile(f2).metadata.num_row_groups))]
    assert all(x[1] <= y[0] for x, y in itertools.pairwise(bounds))  # looks ordered
    kw = {"bootstrap": 200, "exclude": f["ex/"]}
    ref = evaluate_stream({"a": f["a"]}, f["truth"], METRICS, **kw)
    assert ref.info["engine"] == "stream (sorted inputs)"
    got = evaluate_stream({"a": f["a/"]}, f["truth/"], METRICS, **kw)
    assert got.info["engine"] == "stream"
    (Path(f["truth/"]) / "part-0.parquet").rename(Path(f["truth/"]) / "part-9.parquet")
    got2 = evaluate_stream({"a": f["a"]}, f["truth/"], METRICS, **kw)
    assert got2.info["engine"] == "stream"
    for g in (got, got2):
        for e1, e2 in zip(ref.estimates, g.estimates, strict=True):
            for k in ("estimate", "ci_low", "ci_high", "se"):
                assert getattr(e2, k) == pytest.approx(getattr(e1, k), abs=1e-12)


# ---------------------------------------------------------------------- Spark (one session)
pyspark = pytest.importorskip("pyspark", reason="the spark extra is not installed")


@pytest.fixture(scope="module")
def spark() -> Iterator[object]:
    """One local SparkSession for the module (the data layer's helper, 2 cores)."""
    from pyspark.sql import SparkSession

    from recscope.data.datasets import spark_session

    if SparkSession.getActiveSession() is None:
        import os
        import sys

        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        (SparkSession.builder.master("local[2]").appName("recscope-tests")
         .config("spark.sql.shuffle.partitions", "2")
         .config("spark.default.parallelism", "2")
         .config("spark.ui.enabled", "false")
         .config("spark.ui.showConsoleProgress", "false")
         .config("spark.driver.memory", "1g").getOrCreate())
    session = spark_session()
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_spark_matches_memory_and_stream(spark: object, files: dict[str, str],
                                         memory: tuple, stream: object) -> None:
    """Spark (truth read from a catalog table): means and tests equal in-memory to 1e-9;
    every number, intervals included, equals the stream engine's (same Poisson weights);
    a duplicate pair in a Spark partition is one error naming the table."""
    from recscope.offline.scale import evaluate_spark

    spark.read.parquet(files["truth"]).createOrReplaceTempView("scale_truth")
    got = evaluate_spark({"a": files["a"], "b": files["b"]}, "table:scale_truth", METRICS,
                         bootstrap=2000, slices=["seg"], session=spark)
    mem, cmp = memory
    _same_means(mem, cmp, got)
    rows_s = stream.tests + stream.systems["a"].estimates + stream.systems["a"].slices
    rows_g = got.tests + got.systems["a"].estimates + got.systems["a"].slices
    for e1, e2 in zip(rows_s, rows_g, strict=True):
        for f in ("estimate", "ci_low", "ci_high", "se"):
            assert getattr(e2, f) == pytest.approx(getattr(e1, f), abs=1e-9)
    spark.createDataFrame([(1, 2, 1.0), (1, 2, 1.0)], "user_id long, item_id long, "
                          "grade double").createOrReplaceTempView("dup_truth")
    with pytest.raises(DataValidationError, match=r"dup_truth.*repeated in the truth"):
        evaluate_spark({"a": files["a"]}, "table:dup_truth", ["mrr"], bootstrap=0,
                       session=spark)
