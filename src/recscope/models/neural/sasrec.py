"""SASRec (Kang & McAuley, ICDM 2018): a causal transformer over each user's time-ordered
items, used for next-item retrieval and as a user representation.

Training objectives (``objective``):

* ``next_item``: at every position, predict the next item (the SASRec task).
* ``all_action``: at every position, predict the user's positive actions within the next
  ``horizon_days`` (PinnerFormer's dense all-action loss, Pancha et al., KDD 2022): up to
  ``max_targets`` of those future items are drawn per position and epoch; a position
  whose window is empty predicts its next item.

Both use a sampled softmax: each target's logit against ``n_negatives`` items drawn
uniformly per batch (corrected by log(n_items / n_negatives) so the sum estimates the full
softmax denominator; negatives equal to the position's next item are masked). With
``n_negatives=0`` the full softmax over the catalogue is used.

Early stopping holds out each user's last training item (leave-last-one-out). After
training, user states are recomputed from the full training history, so a user's
representation (``user_embeddings``) is the transformer's output after their last item.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from recscope.data.interactions import Interactions
from recscope.data.splits import leave_last_n
from recscope.models.base import register
from recscope.models.neural.training import NeuralComponent, NeuralConfig

_DAY_US = 86_400 * 1_000_000


class SASRecConfig(NeuralConfig):
    """SASRec hyper-parameters (defaults near the paper's for short sequences)."""

    dim: int = Field(64, ge=1)
    layers: int = Field(2, ge=1)
    heads: int = Field(1, ge=1)
    max_len: int = Field(50, ge=2, description="most recent items the model reads")
    dropout: float = Field(0.2, ge=0, lt=1)
    n_negatives: int = Field(256, ge=0, description="uniform negatives per batch; 0 = full")
    objective: Literal["next_item", "all_action"] = "next_item"
    horizon_days: float = Field(7.0, gt=0, description="all_action: prediction window")
    max_targets: int = Field(8, ge=1, description="all_action: targets drawn per position")
    lr: float = Field(1e-3, gt=0)
    batch_size: int = Field(128, ge=1)
    epochs: int = Field(200, ge=1)
    patience: int = Field(5, ge=1)
    eval_every: int = Field(2, ge=1)


class _SASRecNet(torch.nn.Module):
    def __init__(self, n_items: int, cfg: SASRecConfig) -> None:
        super().__init__()
        if cfg.dim % cfg.heads:
            raise ValueError("dim must be divisible by heads")
        self.heads = cfg.heads
        self.item = torch.nn.Embedding(n_items + 1, cfg.dim, padding_idx=0)
        self.pos = torch.nn.Embedding(cfg.max_len, cfg.dim)
        torch.nn.init.normal_(self.item.weight, std=0.05)
        torch.nn.init.normal_(self.pos.weight, std=0.05)
        with torch.no_grad():
            self.item.weight[0].zero_()
        self.drop = torch.nn.Dropout(cfg.dropout)
        self.blocks = torch.nn.ModuleList([
            torch.nn.TransformerEncoderLayer(cfg.dim, cfg.heads, dim_feedforward=cfg.dim,
                                             dropout=cfg.dropout, batch_first=True,
                                             norm_first=True)
            for _ in range(cfg.layers)])
        self.norm = torch.nn.LayerNorm(cfg.dim)
        self.scale = math.sqrt(cfg.dim)

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        """Hidden states [B, T, d] of left-padded item sequences [B, T] (0 = padding)."""
        _b, t = seq.shape
        pad = seq == 0
        x = self.item(seq) * self.scale + self.pos(torch.arange(t, device=seq.device))[None]
        x = self.drop(x) * (~pad)[..., None]
        ar = torch.arange(t, device=seq.device)
        future = ar[None, :] > ar[:, None]
        # causal, no attention to padding, but every position may attend to itself
        mask = future[None] | (pad[:, None, :] & ~torch.eye(t, dtype=torch.bool,
                                                            device=seq.device)[None])
        mask = mask.repeat_interleave(self.heads, dim=0)
        for block in self.blocks:
            x = block(x, src_mask=mask) * (~pad)[..., None]
        return self.norm(x)


@register("sasrec")
class SASRec(NeuralComponent):
    """SASRec next-item / long-horizon sequential retriever (see the module docstring)."""

    Config = SASRecConfig
    #: small, fast parameters for the shared conformance suite (tests/models)
    test_params: ClassVar[dict[str, Any]] = {"dim": 8, "max_len": 10, "epochs": 3, "n_negatives": 10, "batch_size": 32, "eval_every": 1, "progress": False}

    def __init__(self, config: Any = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self._win: np.ndarray | None = None      # [U', T+1] item+1, left-padded
        self._end: np.ndarray | None = None      # [U', T+1] last position within horizon
        self._hist_ptr: np.ndarray | None = None  # CSR of each user's last max_len items
        self._hist_items: np.ndarray | None = None
        self._known: np.ndarray | None = None
        self._states: np.ndarray | None = None

    def _split_validation(self, train: Interactions) -> tuple[Interactions, Interactions | None]:
        if self.cfg.validation_fraction <= 0:
            return train, None
        s = leave_last_n(train, 1)
        return s.train, s.test

    # ------------------------------------------------------------------ data
    def _set_history(self, train: Interactions) -> None:
        seqs = train.sequences()
        lengths = seqs.lengths()
        keep = np.minimum(lengths, self.cfg.max_len)
        ptr = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(keep, out=ptr[1:])
        ends = seqs.indptr[1:]
        flat = np.repeat(ends - keep - ptr[:-1], keep) + np.arange(int(keep.sum()))
        self._hist_ptr, self._hist_items = ptr, seqs.items[flat].astype(np.int32)

    def _setup(self, train: Interactions) -> None:
        cfg = self.cfg
        seqs = train.sequences()
        lengths = seqs.lengths()
        users = np.flatnonzero(lengths >= 2)
        t1 = cfg.max_len + 1
        win = np.zeros((len(users), t1), dtype=np.int64)
        end = np.zeros((len(users), t1), dtype=np.int64)
        horizon = int(cfg.horizon_days * _DAY_US)
        for r, u in enumerate(users):
            lo, hi = seqs.indptr[u], seqs.indptr[u + 1]
            items = seqs.items[max(lo, hi - t1):hi]
            ts = seqs.timestamps[max(lo, hi - t1):hi]
            n = len(items)
            win[r, t1 - n:] = items + 1
            last = np.searchsorted(ts, ts + horizon, side="right") - 1
            end[r, t1 - n:] = last + (t1 - n)
        self._win, self._end = win, end
        self._known = np.bincount(train.item_index, minlength=self.n_items) > 0
        self._set_history(train)
        self.net = self._make_net().to(self.device)

    def _make_net(self) -> torch.nn.Module:
        return _SASRecNet(self.n_items, self.cfg)

    def _n_batches(self) -> int:
        assert self._win is not None
        return max(1, -(-len(self._win) // self.cfg.batch_size))

    def _epoch_batches(self, rng: np.random.Generator) -> Iterator[Any]:
        assert self._win is not None and self._end is not None
        cfg = self.cfg
        order = rng.permutation(len(self._win))
        t = cfg.max_len
        pos = np.arange(t)
        for s in range(0, len(order), cfg.batch_size):
            rows = order[s:s + cfg.batch_size]
            win = self._win[rows]
            inp, nxt = win[:, :-1], win[:, 1:]
            if cfg.objective == "next_item":
                targets = nxt[..., None]
            else:
                count = np.maximum(self._end[rows, :-1] - pos[None, :], 1)
                off = np.floor(rng.random((len(rows), t, cfg.max_targets))
                               * count[..., None]).astype(np.int64)
                at = pos[None, :, None] + 1 + off
                targets = np.take_along_axis(win[:, :, None], at.reshape(len(rows), -1, 1)
                                             .clip(max=t), axis=1).reshape(at.shape)
                targets[inp == 0] = 0
            negs = (rng.integers(1, self.n_items + 1, size=cfg.n_negatives)
                    if cfg.n_negatives else None)
            yield inp, nxt, targets, negs

    def _loss(self, batch: Any) -> tuple[torch.Tensor, int]:
        inp, nxt, targets, negs = batch
        dev = self.device
        net: Any = self._net()
        h = net(torch.from_numpy(inp).to(dev))                       # [B, T, d]
        tgt = torch.from_numpy(targets).to(dev)                      # [B, T, M]
        nxt_t = torch.from_numpy(nxt).to(dev)                        # [B, T]
        pos_logit = (h[:, :, None, :] * net.item(tgt)).sum(-1)       # [B, T, M]
        if negs is None:
            all_logits = h @ net.item.weight[1:].T                   # [B, T, n_items]
            denom = torch.logsumexp(all_logits, dim=-1)[..., None]
            loss_t = denom - pos_logit
        else:
            neg_t = torch.from_numpy(negs).to(dev)
            neg_logit = h @ net.item(neg_t).T                         # [B, T, N]
            neg_logit = neg_logit.masked_fill(neg_t[None, None, :] == nxt_t[..., None],
                                              float("-inf"))
            lse = torch.logsumexp(neg_logit, dim=-1) + math.log(self.n_items / len(negs))
            loss_t = F.softplus(lse[..., None] - pos_logit)         # -log softmax([pos, negs])
        valid = (tgt > 0).float()
        n = valid.sum()
        return (loss_t * valid).sum() / n.clamp(min=1.0), int((nxt > 0).sum())

    def _finalize(self, train: Interactions) -> None:
        self._set_history(train)
        self._win, self._end = None, None

    def _invalidate(self) -> None:
        self._states = None

    # ------------------------------------------------------------------ scoring
    def encode_histories(self, histories: Sequence[np.ndarray], batch_size: int = 512,
                         ) -> np.ndarray:
        """User vectors [n, d] from item-index sequences (oldest first); empty gives 0."""
        self._check_fitted()
        net: Any = self._net()
        t = self.cfg.max_len
        out = np.zeros((len(histories), self.cfg.dim), dtype=np.float32)
        for s in range(0, len(histories), batch_size):
            chunk = histories[s:s + batch_size]
            seq = np.zeros((len(chunk), t), dtype=np.int64)
            for r, h in enumerate(chunk):
                h = np.asarray(h, dtype=np.int64)[-t:]
                if len(h) and (h.min() < 0 or h.max() >= self.n_items):
                    raise ValueError(f"history {s + r} has item indices outside "
                                     f"[0, {self.n_items})")
                seq[r, t - len(h):] = h + 1
            with torch.no_grad():
                hid = net(torch.from_numpy(seq).to(self.device))[:, -1]
            vec = hid.cpu().numpy()
            vec[(seq == 0).all(axis=1)] = 0.0
            out[s:s + len(chunk)] = vec
        return out

    def user_embeddings(self) -> np.ndarray:
        """Each user's state after their last training item (0 for users without one)."""
        self._check_fitted()
        if self._states is None:
            assert self._hist_ptr is not None and self._hist_items is not None
            hist = [self._hist_items[self._hist_ptr[u]:self._hist_ptr[u + 1]]
                    for u in range(self.n_users)]
            self._states = self.encode_histories(hist)
        return self._states

    def item_embeddings(self) -> np.ndarray:
        self._check_fitted()
        return self._net().item.weight[1:].detach().cpu().numpy()  # type: ignore[union-attr,index]

    def _score_all(self, users: np.ndarray) -> np.ndarray:
        if self._states is not None:
            states = self._states[users]
        else:
            assert self._hist_ptr is not None and self._hist_items is not None
            states = self.encode_histories(
                [self._hist_items[self._hist_ptr[u]:self._hist_ptr[u + 1]] for u in users])
        s = (states @ self.item_embeddings().T).astype(np.float32)
        assert self._known is not None
        s[:, ~self._known] = -np.inf
        return s

    def _extra_state(self) -> dict[str, np.ndarray]:
        assert self._known is not None and self._hist_ptr is not None
        assert self._hist_items is not None
        return {"known": self._known, "hist_ptr": self._hist_ptr,
                "hist_items": self._hist_items}

    def _set_extra_state(self, arrays: dict[str, np.ndarray]) -> None:
        self._known = arrays["known"].astype(bool)
        self._hist_ptr, self._hist_items = arrays["hist_ptr"], arrays["hist_items"]
