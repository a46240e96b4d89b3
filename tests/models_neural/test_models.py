"""Each neural model learns a structure a working model must find, on a small slice."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from recscope.data import Interactions, Relevance, leave_last_n, random_holdout
from recscope.models import Component, get_component
from recscope.models.neural import LightGCN, SASRec, TwoTower
from recscope.models.neural.sampling import sample_negatives
from recscope.offline import evaluate
from tests.models_neural.conftest import DAY_US, cycle_log, grouped_log


def _score(model: Component, test: Interactions, metric: str) -> float:
    truth = Relevance.from_pairs(test.user_index, test.item_index, test.n_users, test.n_items)
    rl = model.recommend(np.unique(test.user_index), 10)
    return evaluate(rl, truth, [metric], bootstrap=0).mean(metric)


def test_registered_names() -> None:
    assert get_component("lightgcn") is LightGCN
    assert get_component("two_tower") is TwoTower
    assert get_component("sasrec") is SASRec


def test_negative_sampling_avoids_positives() -> None:
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(5), 200)
    pos_items = np.arange(8)  # every user has seen items 0..7 of 10
    keys = np.sort((np.arange(5)[:, None] * 10 + pos_items[None, :]).ravel())
    neg = sample_negatives(users, keys, 10, rng)
    assert set(np.unique(neg).tolist()) == {8, 9}


def test_lightgcn_finds_groups_and_exports_embeddings() -> None:
    data = grouped_log(n_items=120, per_user=10, noise=0.2, seed=1)
    split = random_holdout(data, 0.3, seed=0)
    model = LightGCN(dim=16, layers=2, batch_size=128, lr=0.02, epochs=25, eval_every=5,
                     progress=False).fit(split.train)
    pop = get_component("popularity")().fit(split.train)
    assert _score(model, split.test, "recall@10") > 2 * _score(pop, split.test, "recall@10")
    u, i = model.user_embeddings(), model.item_embeddings()
    assert u.shape == (data.n_users, 16) and i.shape == (data.n_items, 16)
    users = np.unique(split.test.user_index)[:5]
    np.testing.assert_allclose(model.score(users, np.tile(np.arange(8), (5, 1))),
                               u[users] @ i[:8].T, rtol=1e-5, atol=1e-6)


def test_sasrec_predicts_the_next_item_of_a_cycle() -> None:
    data = cycle_log()
    split = leave_last_n(data, 1)
    model = SASRec(dim=16, max_len=8, epochs=40, n_negatives=10, batch_size=32, lr=5e-3,
                   dropout=0.0, eval_every=5, patience=3, progress=False).fit(split.train)
    hit = _score(model, split.test, "hit_rate@1")
    knn = get_component("popularity")().fit(split.train)
    assert hit > 0.8 > _score(knn, split.test, "hit_rate@10")
    # the user representation is the state after the last item, as a plain encoder gives
    seqs = split.train.sequences()
    users = np.unique(split.test.user_index)[:4]
    direct = model.encode_histories([seqs[u] for u in users])
    np.testing.assert_allclose(model.user_embeddings()[users], direct, rtol=1e-5, atol=1e-6)


def test_sasrec_full_softmax_and_all_action_objective_train() -> None:
    data = cycle_log(n_users=30, length=12)
    for params in ({"n_negatives": 0}, {"objective": "all_action", "horizon_days": 3.0}):
        model = SASRec(dim=8, max_len=6, epochs=3, batch_size=16, progress=False,
                       **params).fit(data)
        assert model.history is not None
        assert np.isfinite(model.history.column("loss")).all()


def test_all_action_targets_lie_within_the_horizon() -> None:
    data = cycle_log(n_users=4, n_items=30, length=12)
    model = SASRec(dim=8, max_len=6, objective="all_action", horizon_days=2.0,
                   max_targets=16, progress=False)
    model.n_users, model.n_items = data.n_users, data.n_items
    model.device = torch.device("cpu")
    model._setup(data)
    inp, nxt, targets, _ = next(model._epoch_batches(np.random.default_rng(0)))
    # one item per day: the 2-day window after position t holds positions t+1 and t+2
    win = np.concatenate([inp[:, :1], nxt], axis=1)
    for r in range(len(inp)):
        for t in range(inp.shape[1]):
            if inp[r, t] == 0:
                assert (targets[r, t] == 0).all()
                continue
            allowed = set(win[r, t + 1:t + 3].tolist())
            assert set(targets[r, t].tolist()) <= allowed
            assert nxt[r, t] in allowed


def test_two_tower_uses_text_for_cold_start_items(tmp_path: Path) -> None:
    data = grouped_log(n_users=80, n_items=64, per_user=8, n_cold=4, seed=2)
    params = {"dim": 16, "epochs": 15, "batch_size": 64, "lr": 5e-3, "text_encoder": "hashing",
              "text_dim": 16, "text_cache_dir": str(tmp_path / "cache"),
              "validation_fraction": 0.0, "progress": False}
    with_text = TwoTower(params, text=True).fit(data)
    ids_only = TwoTower(params).fit(data)
    counts = np.bincount(data.item_index, minlength=data.n_items)
    cold = np.flatnonzero(counts == 0)
    assert len(cold) == 16
    users = np.arange(data.n_users)
    s = with_text.score(users, np.tile(cold, (len(users), 1)))
    assert np.isfinite(s).all()
    best = cold[s.argmax(axis=1)]
    # the best cold item is from the user's own group (chance: 1 in 4)
    assert np.mean(best % 4 == users % 4) > 0.8
    assert np.isneginf(ids_only.score(users[:3], np.tile(cold, (3, 1)))).all()
    # cold items are recommendable with text, and survive save/load
    rl = with_text.recommend(users, 10)
    assert np.isin(rl.items, cold).any()
    with_text.save(tmp_path / "tt")
    back = Component.load(tmp_path / "tt")
    np.testing.assert_array_equal(back.recommend(users, 10).items, rl.items)
    assert (tmp_path / "cache").exists() and any((tmp_path / "cache").iterdir())


def test_two_tower_loss_is_logq_corrected_in_batch_softmax() -> None:
    """The loss equals a hand-written in-batch softmax with log q subtracted from each
    column and duplicates of the positive masked."""
    data = grouped_log(seed=3, n_items=24)
    model = TwoTower(dim=8, epochs=1, batch_size=32, validation_fraction=0.0, user_history=False,
                     progress=False).fit(data)
    model._setup(data)  # fresh training state (q from the same rows)
    users = np.array([0, 1, 2, 3, 4, 5], dtype=np.int64)
    items = data.item_index[:6].astype(np.int64).copy()
    items[5] = items[4]  # an in-batch duplicate
    keep = np.ones(6, dtype=np.float32)
    with torch.no_grad():
        loss, n = model._loss((users, items, keep))
        net = model._net()
        u = torch.nn.functional.normalize(net.user.weight[users], dim=1).numpy()
        v = torch.nn.functional.normalize(net.item.weight[items], dim=1).numpy()
    counts = np.bincount(data.item_index, minlength=data.n_items)
    logits = u @ v.T / 0.05 - np.log(counts[items] / counts.sum())[None, :]
    dup = (items[:, None] == items[None, :]) & ~np.eye(6, dtype=bool)
    logits[dup] = -np.inf
    mx = logits.max(axis=1, keepdims=True)
    lse = np.log(np.exp(logits - mx).sum(axis=1)) + mx[:, 0]
    expected = np.mean(lse - np.diag(logits))
    assert n == 6
    assert float(loss) == pytest.approx(expected, rel=1e-5)


def test_text_model_needs_an_item_text_column() -> None:
    from recscope.errors import DataValidationError

    data = cycle_log(n_users=5)
    with pytest.raises(DataValidationError, match="item side table"):
        TwoTower(text=True, text_encoder="hashing", epochs=1, progress=False).fit(data)


def test_sequences_use_time_order() -> None:
    data = cycle_log(n_users=3, length=5)
    # shuffle the rows: SASRec must still read each user's items by timestamp
    rng = np.random.default_rng(0)
    shuffled = data.take(rng.permutation(len(data)))
    a = SASRec(dim=8, max_len=4, epochs=1, progress=False, validation_fraction=0).fit(data)
    b = SASRec(dim=8, max_len=4, epochs=1, progress=False, validation_fraction=0).fit(shuffled)
    np.testing.assert_array_equal(a._hist_items, b._hist_items)
    assert DAY_US > 0


@pytest.mark.parametrize("name", ["lightgcn", "two_tower", "sasrec"])
def test_embeddings_feed_the_ann_retriever(name: str) -> None:
    """The exported vectors reproduce the model's own ranking through the faiss index."""
    data = grouped_log(seed=4)
    params = {"dim": 8, "epochs": 2, "validation_fraction": 0.0, "progress": False}
    ann = get_component("ann")({"source": {"component": name, "params": params},
                                "index": "flat", "recall_k": 5})
    ann.fit(data)
    users = np.arange(10, dtype=np.int32)
    direct = ann.source.recommend(users, 5)
    via_index = ann.recommend(users, 5)
    np.testing.assert_array_equal(via_index.items, direct.items)
