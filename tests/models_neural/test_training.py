"""The shared training loop: early stopping, best weights, checkpoints and resume,
learning curves in tracking, callbacks, device choice, config errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from recscope.data import Interactions, random_holdout
from recscope.errors import ConfigError
from recscope.models.neural import LightGCN, TrainingHistory, pick_device
from tests.models_neural.conftest import grouped_log

FAST = {"dim": 16, "layers": 2, "batch_size": 128, "lr": 0.02, "eval_every": 1,
        "progress": False}


def noisy() -> Interactions:
    return grouped_log(n_items=120, per_user=10, noise=0.4)


def _weights(model: LightGCN) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in model._net().state_dict().items()}


def test_early_stopping_keeps_the_best_epoch() -> None:
    data = noisy()
    model = LightGCN(FAST, epochs=40, patience=2).fit(data)
    h = model.history
    assert h is not None and h.best_epoch is not None
    vals = h.column("val")
    assert np.nanmax(vals) == pytest.approx(h.best_value)
    assert vals[h.best_epoch - 1] == pytest.approx(h.best_value)
    # stopped exactly `patience` evaluations after the best one
    assert h.stopped_early and len(h.epochs) == h.best_epoch + 2 < 40
    # the weights in the model are the best epoch's: re-scoring gives the best value
    from recscope.models.neural.training import validation_score

    split = random_holdout(data, 0.1, seed=0)
    from recscope.data import Relevance

    truth = Relevance.from_pairs(split.test.user_index, split.test.item_index,
                                 data.n_users, data.n_items)
    model._set_graph(split.train.to_csr())
    model._invalidate()
    again = validation_score(model, truth, np.unique(split.test.user_index),
                             split.train.to_csr(), "ndcg@10")
    assert again == pytest.approx(h.best_value, abs=1e-9)


def test_no_validation_trains_all_epochs() -> None:
    model = LightGCN(FAST, epochs=3, validation_fraction=0.0).fit(grouped_log())
    assert model.history is not None
    assert len(model.history.epochs) == 3 and model.history.best_epoch is None
    assert all("val" not in r for r in model.history.epochs)


def test_refit_retrains_on_all_data_for_the_best_epoch_count() -> None:
    model = LightGCN(FAST, epochs=6, patience=1, refit=True).fit(grouped_log())
    h = model.history
    assert h is not None and h.refit_epochs == h.best_epoch
    assert sum(1 for r in h.epochs if r.get("refit")) == h.best_epoch


def test_resume_from_checkpoint_equals_uninterrupted_run(tmp_path: Path) -> None:
    data = noisy()
    full = LightGCN(FAST, epochs=4, patience=10).fit(data)
    ckpt = tmp_path / "ckpt"
    LightGCN(FAST, epochs=2, patience=10, checkpoint_dir=str(ckpt)).fit(data)
    assert (ckpt / "last.npz").exists() and (ckpt / "best.npz").exists()
    with np.load(ckpt / "last.npz", allow_pickle=False) as z:  # plain arrays only
        assert any(k.startswith("opt.") for k in z.files)
    resumed = LightGCN(FAST, epochs=4, patience=10, checkpoint_dir=str(ckpt),
                       resume=True).fit(data)
    assert resumed.history is not None and full.history is not None
    assert [r["epoch"] for r in resumed.history.epochs] == [1.0, 2.0, 3.0, 4.0]
    np.testing.assert_allclose(resumed.history.column("loss"), full.history.column("loss"),
                               rtol=1e-6)
    for k, v in _weights(full).items():
        np.testing.assert_allclose(_weights(resumed)[k], v, rtol=1e-6, atol=1e-7)


def test_learning_curve_is_logged_to_tracking_per_epoch() -> None:
    from mlflow.tracking import MlflowClient

    from recscope.models.callbacks import training_callbacks
    from recscope.tracking import track

    with track("test.neural") as run:
        LightGCN(FAST, epochs=3, patience=10).fit(grouped_log(), log_metrics=run.log_metrics)
    # callbacks set around a block reach every fit inside it (how a pipeline's stages get them)
    ticks: list[tuple[str, float, float]] = []
    with track("test.neural.implicit") as implicit, training_callbacks(
            log_metrics=implicit.log_metrics, progress=lambda *a: ticks.append(a)):
        LightGCN({**FAST, "progress": True}, epochs=2, patience=10).fit(grouped_log())
    client = MlflowClient(tracking_uri=run.uri)
    loss = client.get_metric_history(run.run_id, "train.loss")
    val = client.get_metric_history(run.run_id, "val.ndcg_10")
    assert sorted(m.step for m in loss) == [1, 2, 3]
    assert sorted(m.step for m in val) == [1, 2, 3]
    assert all(np.isfinite(m.value) for m in loss)
    assert sorted(m.step for m in client.get_metric_history(implicit.run_id,
                                                            "train.loss")) == [1, 2]
    # progress counts batches up to the planned total, under the model's name
    assert ticks and ticks[-1][0] == "lightgcn" and ticks[-1][1] == ticks[-1][2]
    assert [t[1] for t in ticks] == list(range(1, len(ticks) + 1))


def test_callback_can_stop_a_run() -> None:
    seen: list[int] = []

    def stop_after_two(epoch: int, metrics: dict[str, float]) -> bool:
        seen.append(epoch)
        assert "loss" in metrics
        return epoch >= 2

    model = LightGCN(FAST, epochs=10).fit(grouped_log(), on_epoch=stop_after_two)
    assert seen == [1, 2]
    assert model.history is not None and model.history.stopped_early


def test_history_is_a_result(tmp_path: Path) -> None:
    model = LightGCN(FAST, epochs=2).fit(grouped_log())
    h = model.history
    assert h is not None
    h.save(tmp_path / "curve.json")
    back = TrainingHistory.load(tmp_path / "curve.json")
    assert back.epochs == h.epochs and back.best_epoch == h.best_epoch
    html = h.to_html()
    assert "learning curve" in html.lower() and "plotly" in html.lower()
    assert h.throughput() > 0 and h.seconds_per_epoch() > 0


def test_device_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    assert pick_device("cpu").type == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device("auto").type == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device("auto").type == "cuda"
    assert pick_device("cpu").type == "cpu"


@pytest.mark.parametrize(("params", "key"), [
    ({"eval_metric": "ndcg"}, "eval_metric"),
    ({"eval_metric": "bogus@10"}, "eval_metric"),
    ({"lr": -1.0}, "lr"),
    ({"device": "tpu"}, "device"),
    ({"validation_fraction": 1.5}, "validation_fraction"),
])
def test_bad_config_names_the_key(params: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        LightGCN(params)
    assert err.value.key == key


def test_embeddings_before_fit_raise_not_fitted() -> None:
    from recscope.models import NotFittedError
    from recscope.models.neural import SASRec, TwoTower

    for model in (LightGCN(FAST), TwoTower(), SASRec()):
        with pytest.raises(NotFittedError):
            model.item_embeddings()
        with pytest.raises(NotFittedError):
            model.user_embeddings()
