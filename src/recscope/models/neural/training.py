"""One training loop for every neural component.

:class:`NeuralComponent` adds to the component protocol what all PyTorch models share:
a config with optimiser, early-stopping and device settings; :func:`train_loop` runs
epochs of mini-batches, scores a held-out validation set with ``recscope.offline`` after
each epoch, keeps the best weights, stops after ``patience`` evaluations without
improvement, writes checkpoints (plain ``.npz``, no pickles) that a later run resumes
from, reports progress over batches and logs the learning curve per epoch through
callbacks (:mod:`recscope.models.callbacks`: the CLI passes a Rich bar and its tracking
run; this module imports neither).

A model implements five hooks: ``_setup(train)`` (build ``self.net`` and its training
data), ``_make_net()``, ``_epoch_batches(rng)``, ``_loss(batch)`` and ``_score_all``.
"""

from __future__ import annotations

import json
import math
import time
from abc import abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

import numpy as np
import torch
from pydantic import Field, field_validator

from recscope.core.progress import Progress, report
from recscope.data.interactions import Interactions
from recscope.data.rankings import Relevance
from recscope.data.splits import random_holdout
from recscope.io import atomic_path
from recscope.models.base import Component, ComponentConfig
from recscope.models.callbacks import EpochCallback, MetricLogger, current_callbacks
from recscope.results import Effect, Result


class NeuralConfig(ComponentConfig):
    """Settings shared by all neural components (optimiser, early stopping, device)."""

    epochs: int = Field(50, ge=1, description="maximum number of epochs")
    batch_size: int = Field(1024, ge=1)
    lr: float = Field(1e-3, gt=0, description="Adam learning rate")
    weight_decay: float = Field(0.0, ge=0)
    patience: int = Field(5, ge=1, description="evaluations without improvement before stopping")
    eval_every: int = Field(1, ge=1, description="evaluate the validation metric every N epochs")
    eval_metric: str = Field("ndcg@10", description="validation metric (recscope.offline name)")
    validation_fraction: float = Field(
        0.1, ge=0, lt=1, description="share held out of train for early stopping; 0 = none")
    max_eval_users: int | None = Field(2000, ge=1, description="validation users sampled")
    refit: bool = Field(False, description="after early stopping, retrain on all of train "
                        "for the best number of epochs")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_threads: int = Field(1, ge=1, description="torch CPU threads (1 avoids "
                             "oversubscription on shared machines)")
    checkpoint_dir: str | None = Field(None, description="write best/last checkpoints here")
    resume: bool = Field(False, description="continue from checkpoint_dir/last.npz if present")
    progress: bool = Field(True, description="report progress over batches (when a "
                           "progress callback is set)")

    @field_validator("eval_metric")
    @classmethod
    def _metric_has_cutoff(cls, v: str) -> str:
        from recscope.offline import parse_metric

        name, _, k = v.partition("@")
        if not name or not k.isdigit() or int(k) < 1:
            raise ValueError(f"eval_metric must look like 'ndcg@10', got {v!r}")
        parse_metric(v.lower())
        return v.lower()


def pick_device(preference: str = "auto") -> torch.device:
    """CUDA when asked for or available under ``auto``; CPU otherwise."""
    if preference == "cuda" or (preference == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


# ---------------------------------------------------------------------------- history
@dataclass
class TrainingHistory(Result):
    """The learning curve of one fit: per-epoch loss, validation metric, time, throughput.

    ``epochs`` holds one dict per epoch (``epoch``, ``loss``, ``val`` when evaluated,
    ``seconds``, ``interactions_per_s``; ``refit`` = 1 for epochs of the final refit).
    :meth:`effects` gives the validation metric per evaluated epoch.
    """

    kind: ClassVar[str] = "training_history"
    title: ClassVar[str] = "Learning curve"

    model: str
    metric: str
    epochs: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int | None = None
    best_value: float | None = None
    stopped_early: bool = False
    refit_epochs: int | None = None
    device: str = "cpu"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """Also reads histories saved before the field was renamed (``rows``)."""
        if "rows" in data and "epochs" not in data:
            data = {**data, "epochs": data["rows"]}
        return super().from_dict(data)

    def effects(self) -> list[Effect]:
        return [Effect(f"val {self.metric}", r["val"], extra={
            "epoch": int(r["epoch"]), "loss": r.get("loss"), "seconds": r.get("seconds")})
            for r in self.epochs if r.get("val") is not None]

    def rows(self) -> list[dict[str, Any]]:
        """One table row per epoch."""
        return [dict(r) for r in self.epochs]

    def column(self, name: str) -> np.ndarray:
        """One per-epoch series (NaN where an epoch lacks it)."""
        return np.array([r.get(name, math.nan) if r.get(name) is not None else math.nan
                         for r in self.epochs], dtype=float)

    def seconds_per_epoch(self) -> float:
        return float(np.nanmedian(self.column("seconds"))) if self.epochs else math.nan

    def throughput(self) -> float:
        """Median training interactions per second over epochs."""
        return float(np.nanmedian(self.column("interactions_per_s"))) if self.epochs \
            else math.nan

    def rich_table(self) -> Any:
        from rich.table import Table

        t = Table(title=f"{self.model}: learning curve (best {self.metric} "
                  f"{_f(self.best_value)} at epoch {self.best_epoch})")
        for c in ("epoch", "loss", f"val {self.metric}", "seconds", "interactions/s"):
            t.add_column(c, justify="right")
        for r in self.epochs:
            t.add_row(str(int(r["epoch"])), _f(r.get("loss")), _f(r.get("val")),
                      _f(r.get("seconds")), f"{r.get('interactions_per_s', 0):,.0f}")
        return t

    def html_sections(self, page: Any) -> None:
        """Key figures and the loss / validation curves."""
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots

        page.key_values({"model": self.model, "device": self.device,
                         "best epoch": self.best_epoch, f"best {self.metric}": self.best_value,
                         "stopped early": self.stopped_early,
                         "refit epochs": self.refit_epochs,
                         "seconds per epoch (median)": self.seconds_per_epoch(),
                         "interactions per second (median)": self.throughput()})
        fig = make_subplots(specs=[[{"secondary_y": True}]])
        ep = self.column("epoch")
        fig.add_trace(go.Scatter(x=ep, y=self.column("loss"), name="training loss"))
        fig.add_trace(go.Scatter(x=ep, y=self.column("val"), name=f"validation {self.metric}",
                                 mode="lines+markers"), secondary_y=True)
        fig.update_layout(xaxis_title="epoch", height=380)
        page.figure(fig)


def _f(v: float | None) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"


# ---------------------------------------------------------------------------- component
class NeuralComponent(Component):
    """A component trained by :func:`train_loop`; weights saved as numpy arrays."""

    Config = NeuralConfig

    def __init__(self, config: Any = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self.net: torch.nn.Module | None = None
        self.device = pick_device(self.cfg.device)
        self.history: TrainingHistory | None = None
        self._validation: Interactions | None = None
        self._log_metrics: MetricLogger | None = None
        self._progress: Progress | None = None
        self._callback: EpochCallback | None = None

    @property
    def cfg(self) -> Any:
        """The config, typed as the subclass's config (for attribute access)."""
        return self.config

    # ------------------------------------------------------------------ hooks
    @abstractmethod
    def _setup(self, train: Interactions) -> None:
        """Prepare training data from ``train`` and build ``self.net`` on ``self.device``."""

    @abstractmethod
    def _make_net(self) -> torch.nn.Module:
        """A freshly initialised network for the current sizes and config."""

    @abstractmethod
    def _epoch_batches(self, rng: np.random.Generator) -> Iterator[Any]:
        """Mini-batches of one epoch (shuffled with ``rng``)."""

    @abstractmethod
    def _n_batches(self) -> int:
        """Number of batches per epoch (for the progress bar)."""

    @abstractmethod
    def _loss(self, batch: Any) -> tuple[torch.Tensor, int]:
        """Loss of one batch and the number of training interactions it covered."""

    def _finalize(self, train: Interactions) -> None:
        """After training: e.g. recompute user states from the full training history."""

    def _invalidate(self) -> None:
        """Weights changed: drop cached embeddings."""

    def _extra_state(self) -> dict[str, np.ndarray]:
        """Arrays besides the network weights that scoring needs (e.g. text features)."""
        return {}

    def _set_extra_state(self, arrays: dict[str, np.ndarray]) -> None:
        """Restore :meth:`_extra_state` (called before :meth:`_make_net` on load)."""

    def _split_validation(self, train: Interactions) -> tuple[Interactions, Interactions | None]:
        """Hold out part of ``train`` for early stopping (random per-user pairs by default)."""
        if self.cfg.validation_fraction <= 0:
            return train, None
        s = random_holdout(train, self.cfg.validation_fraction, seed=self.cfg.seed)
        return s.train, s.test

    # ------------------------------------------------------------------ protocol
    def fit(self, train: Interactions, *, validation: Interactions | None = None,
            log_metrics: MetricLogger | None = None, on_epoch: EpochCallback | None = None,
            progress: Progress | None = None) -> Self:
        """Train on ``train``; ``validation`` (else a holdout of train) drives early stopping,
        ``log_metrics(metrics, epoch)`` receives the per-epoch learning curve, ``on_epoch``
        may stop training, ``progress(stage, done, total)`` counts batches. Callbacks left
        out come from :func:`recscope.models.callbacks.training_callbacks`."""
        ambient = current_callbacks()
        self._validation, self._callback = validation, on_epoch
        self._log_metrics = log_metrics if log_metrics is not None else ambient.log_metrics
        self._progress = progress if progress is not None else ambient.progress
        try:
            return super().fit(train)
        finally:
            self._validation, self._callback = None, None
            self._log_metrics, self._progress = None, None

    def _fit(self, train: Interactions) -> None:
        if self._validation is not None:
            fit_part, val = train, self._validation
        else:
            fit_part, val = self._split_validation(train)
        self.history = train_loop(self, fit_part, val, log_metrics=self._log_metrics,
                                  on_epoch=self._callback, progress=self._progress)
        if self.cfg.refit and val is not None and fit_part is not train and \
                self.history.best_epoch:
            epochs = self.history.best_epoch
            refit = train_loop(self, train, None, log_metrics=None, epochs=epochs,
                               resume=False, checkpoint=False, progress=self._progress)
            self.history.refit_epochs = epochs
            self.history.epochs.extend({**r, "refit": 1.0} for r in refit.epochs)
        self._finalize(train)
        self._invalidate()

    def _net(self) -> torch.nn.Module:
        if self.net is None:
            self._check_fitted()
            raise RuntimeError(f"{self.name}: network not built")
        return self.net

    def _state(self) -> dict[str, np.ndarray]:
        state = {f"net.{k}": v.detach().cpu().numpy() for k, v in
                 self._net().state_dict().items()}
        state.update({f"extra.{k}": v for k, v in self._extra_state().items()})
        if self.history is not None:
            state["history"] = np.array(json.dumps(self.history.to_dict()))
        return state

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        self._set_extra_state({k.removeprefix("extra."): v for k, v in arrays.items()
                               if k.startswith("extra.")})
        net = self._make_net()
        net.load_state_dict({k.removeprefix("net."): torch.from_numpy(np.array(v))
                             for k, v in arrays.items() if k.startswith("net.")})
        self.net = net.to(self.device).eval()
        if "history" in arrays:
            self.history = TrainingHistory.from_dict(json.loads(str(arrays["history"])))
        self._invalidate()


# ---------------------------------------------------------------------------- the loop
def validation_score(model: Component, truth: Relevance, users: np.ndarray,
                     exclude: Any, metric: str) -> float:
    """Mean ``metric`` of ``model``'s rankings for ``users`` against ``truth``
    (computed by ``recscope.offline``)."""
    from recscope.offline import evaluate

    k = int(metric.partition("@")[2])
    rankings = model.recommend(users, k, exclude=exclude)
    result = evaluate(rankings, truth, metrics=[metric], bootstrap=0)
    return float(result.mean(metric))


def train_loop(model: NeuralComponent, train: Interactions, validation: Interactions | None,
               *, log_metrics: MetricLogger | None = None,
               on_epoch: EpochCallback | None = None, epochs: int | None = None,
               resume: bool | None = None, checkpoint: bool = True,
               progress: Progress | None = None) -> TrainingHistory:
    """Train ``model`` on ``train`` with early stopping on ``validation`` (see module doc).

    ``log_metrics(metrics, epoch)`` receives ``train.loss``, ``train.seconds``,
    ``train.interactions_per_s`` and ``val.<metric>``; ``progress(model name, batches
    done, batches planned)`` is called after every batch (unless ``config.progress`` is
    False).

    Deterministic given ``model.config.seed`` on one device. Returns the learning curve;
    the model holds the best weights afterwards (the last ones when there is no validation).
    """
    cfg = model.cfg
    torch.set_num_threads(cfg.num_threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model.device = pick_device(cfg.device)
    model._setup(train)
    net = model._net()
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    n_epochs = epochs if epochs is not None else cfg.epochs
    metric = cfg.eval_metric
    history = TrainingHistory(model=model.name, metric=metric, device=str(model.device))

    truth: Relevance | None = None
    eval_users = np.zeros(0, dtype=np.int32)
    exclude = None
    if validation is not None and len(validation):
        truth = Relevance.from_pairs(validation.user_index, validation.item_index,
                                     validation.n_users, validation.n_items)
        eval_users = np.unique(validation.user_index).astype(np.int32)
        if cfg.max_eval_users is not None and len(eval_users) > cfg.max_eval_users:
            eval_users = np.sort(rng.choice(eval_users, cfg.max_eval_users, replace=False))
        exclude = train.to_csr("binary")

    ckpt = Path(cfg.checkpoint_dir) if cfg.checkpoint_dir and checkpoint else None
    start, best, best_state, bad = 1, -math.inf, None, 0
    if ckpt is not None and (cfg.resume if resume is None else resume) and \
            (ckpt / "last.npz").exists():
        start, best, bad, rows, rng_state = _load_checkpoint(ckpt / "last.npz", net, opt)
        history.epochs = rows
        rng.bit_generator.state = rng_state
        if (ckpt / "best.npz").exists():
            best_state = _read_weights(ckpt / "best.npz")
            history.best_epoch, history.best_value = _best_from_rows(history.epochs)

    if not cfg.progress:
        progress = None
    per_epoch = model._n_batches()
    planned = per_epoch * max(0, n_epochs - start + 1)
    done_batches = 0
    for epoch in range(start, n_epochs + 1):
        net.train()
        t0 = time.perf_counter()
        total, n_seen, n_batches = 0.0, 0, 0
        for batch in model._epoch_batches(rng):
            opt.zero_grad(set_to_none=True)
            loss, n = model._loss(batch)
            loss.backward()
            opt.step()
            total += float(loss.detach())
            n_seen += n
            n_batches += 1
            done_batches += 1
            report(progress, model.name, done_batches, planned)
        seconds = time.perf_counter() - t0
        net.eval()
        model._invalidate()
        row: dict[str, float] = {"epoch": float(epoch), "loss": total / max(1, n_batches),
                                 "seconds": seconds,
                                 "interactions_per_s": n_seen / max(seconds, 1e-9)}
        improved = False
        if truth is not None and (epoch % cfg.eval_every == 0 or epoch == n_epochs):
            with torch.no_grad():
                value = validation_score(model, truth, eval_users, exclude, metric)
            row["val"] = value
            if value > best + 1e-9:
                best, bad, improved = value, 0, True
                best_state = _copy_weights(net)
                history.best_epoch, history.best_value = epoch, value
            else:
                bad += 1
        history.epochs.append(row)
        if log_metrics is not None:
            log_metrics({"train.loss": row["loss"], "train.seconds": seconds,
                         "train.interactions_per_s": row["interactions_per_s"],
                         **({f"val.{metric}": row["val"]} if "val" in row else {})}, epoch)
        if ckpt is not None:
            if improved:
                _write_weights(ckpt / "best.npz", net)
            _write_checkpoint(ckpt / "last.npz", net, opt, epoch, best, bad,
                              history.epochs, rng)
        if bad >= cfg.patience:
            history.stopped_early = True
            break
        if on_epoch is not None and on_epoch(epoch, row):
            history.stopped_early = True
            break
    if best_state is not None:
        net.load_state_dict(best_state)
    net.eval()
    model._invalidate()
    return history


def _best_from_rows(rows: list[dict[str, float]]) -> tuple[int | None, float | None]:
    scored = [r for r in rows if "val" in r]
    if not scored:
        return None, None
    top = max(scored, key=lambda r: (r["val"], -r["epoch"]))
    return int(top["epoch"]), float(top["val"])


def _copy_weights(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def _write_weights(path: Path, net: torch.nn.Module) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **{f"net.{k}": v.detach().cpu().numpy()
                        for k, v in net.state_dict().items()})


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    with np.load(path, allow_pickle=False) as z:
        return {k.removeprefix("net."): torch.from_numpy(z[k]) for k in z.files
                if k.startswith("net.")}


def _write_checkpoint(path: Path, net: torch.nn.Module, opt: torch.optim.Optimizer,
                      epoch: int, best: float, bad: int, rows: list[dict[str, float]],
                      rng: np.random.Generator) -> None:
    """Weights, Adam moments, epoch counters and the RNG state, as plain arrays."""
    arrays: dict[str, np.ndarray] = {f"net.{k}": v.detach().cpu().numpy()
                                     for k, v in net.state_dict().items()}
    for idx, st in opt.state_dict()["state"].items():
        for name, value in st.items():
            arrays[f"opt.{idx}.{name}"] = torch.as_tensor(value).detach().cpu().numpy()
    meta = {"epoch": epoch, "best": best if math.isfinite(best) else None, "bad": bad,
            "rows": rows, "rng": rng.bit_generator.state}
    arrays["meta"] = np.array(json.dumps(meta))
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)


def _load_checkpoint(path: Path, net: torch.nn.Module, opt: torch.optim.Optimizer,
                     ) -> tuple[int, float, int, list[dict[str, float]], dict[str, Any]]:
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    net.load_state_dict({k.removeprefix("net."): torch.from_numpy(v)
                         for k, v in arrays.items() if k.startswith("net.")})
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in arrays.items():
        if key.startswith("opt."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = torch.from_numpy(value)
    if state:
        opt.load_state_dict({"state": state, "param_groups": opt.state_dict()["param_groups"]})
    meta = json.loads(str(arrays["meta"]))
    best = meta["best"] if meta["best"] is not None else -math.inf
    return int(meta["epoch"]) + 1, float(best), int(meta["bad"]), meta["rows"], meta["rng"]
