"""How simulated users respond to a slate: position bias, click, save, hide, leave.

The response to one slate follows the built-in world's TRUE preference model
(:meth:`recscope.sim.world_model.WorldTruth.engagement_probabilities`): the user scans the
slate top-down, examines position ``p`` with probability ``(1 + p) ** -position_decay``,
is attracted (clicks) with probability ``sigmoid(attraction logit)``, then saves the pin
or, when not attracted, may hide it. Two additions turn single slates into sessions:

* **leave**: after a hide the user quits the session with probability
  ``leave_after_hide``; after a slate the session continues with probability
  ``sigmoid(continue_logit + continue_click·clicks + continue_save·saves −
  continue_hide·hides − continue_no_click·[no click])``, so bad slates end sessions early.
* **novelty**: under a policy that is new to the user, the attraction logit gains
  ``novelty`` (which fades with exposure, see :class:`recscope.sim.environment.SimConfig`).
  Such "curiosity" clicks are observable but bring no save and no satisfaction, so a
  new policy's short-run click-through overstates its long-run value.

Everything runs in one numba kernel over a batch of requests; every draw comes from the
counter-based generator in :mod:`recscope.sim.crn`, keyed by the request and position.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np

from recscope.sim import crn


@dataclass
class SlateResponse:
    """Per-request outcome counts and per-slot flags of one batch of slates."""

    impressions: np.ndarray  # int32 [n] slots reached before the user stopped
    clicks: np.ndarray  # int32 [n] observable clicks (including curiosity clicks)
    curiosity: np.ndarray  # int32 [n] clicks caused only by novelty
    saves: np.ndarray  # int32 [n]
    hides: np.ndarray  # int32 [n]
    quit: np.ndarray  # bool [n] the session ended after this request
    last_click: np.ndarray  # int64 [n] last clicked item or -1
    shown: np.ndarray  # bool [n, k] slot reached
    saved: np.ndarray  # bool [n, k]
    clicked: np.ndarray  # bool [n, k] clicked (curiosity clicks included)
    hidden: np.ndarray  # bool [n, k]


@numba.njit(cache=True, nogil=True)
def _respond_kernel(users: np.ndarray, items: np.ndarray, keys: np.ndarray,
                    user_vec: np.ndarray, item_vec: np.ndarray, item_unit: np.ndarray,
                    user_bias: np.ndarray, item_static: np.ndarray, item_quality: np.ndarray,
                    item_topic: np.ndarray, item_bonus: np.ndarray, slot_boost: np.ndarray,
                    query: np.ndarray, seed: np.ndarray, novelty: np.ndarray,
                    params: np.ndarray, out_counts: np.ndarray, out_quit: np.ndarray,
                    out_last: np.ndarray, shown: np.ndarray, saved: np.ndarray,
                    clicked: np.ndarray, hidden: np.ndarray) -> None:
    (click_base, decay, search_pen, related_w, aff_w, save_base, save_q, save_aff,
     hide_base, hide_aff, hide_q, leave_hide, cont_logit, cont_click, cont_save, cont_hide,
     cont_noclick) = (params[0], params[1], params[2], params[3], params[4], params[5],
                      params[6], params[7], params[8], params[9], params[10], params[11],
                      params[12], params[13], params[14], params[15], params[16])
    n, k = items.shape
    d = user_vec.shape[1]
    for r in range(n):
        u = users[r]
        h = keys[r]
        imp = 0
        clk = 0
        cur = 0
        sav = 0
        hid = 0
        quit_ = False
        last = -1
        sd = seed[r]
        for p in range(k):
            it = items[r, p]
            if it < 0:
                continue
            imp += 1
            shown[r, p] = True
            hp = crn.mix(h, np.uint64(p + 1))
            if crn.uniform(hp, np.uint64(7)) >= (1.0 + p) ** (-decay):
                continue
            aff = 0.0
            for j in range(d):
                aff += user_vec[u, j] * item_vec[it, j]
            logit = (click_base + aff_w * aff + item_static[it] + user_bias[u]
                     + item_bonus[it] + slot_boost[r, p])
            if search_pen != 0.0 and item_topic[it] != query[r]:
                logit -= search_pen
            if related_w != 0.0 and sd >= 0:
                cs = 0.0
                for j in range(d):
                    cs += item_unit[sd, j] * item_unit[it, j]
                logit += related_w * cs
            a = crn.uniform(hp, np.uint64(8))
            x = crn.uniform(hp, np.uint64(9))
            if a < 1.0 / (1.0 + math.exp(-logit)):
                clk += 1
                clicked[r, p] = True
                last = it
                q = item_quality[it]
                if x < 1.0 / (1.0 + math.exp(-(save_base + save_q * q + save_aff * aff))):
                    sav += 1
                    saved[r, p] = True
            elif novelty[r] != 0.0 and a < 1.0 / (1.0 + math.exp(-(logit + novelty[r]))):
                clk += 1
                cur += 1
                clicked[r, p] = True
                last = it
            else:
                q = item_quality[it]
                if x < 1.0 / (1.0 + math.exp(-(hide_base - hide_aff * aff - hide_q * q))):
                    hid += 1
                    hidden[r, p] = True
                    if crn.uniform(hp, np.uint64(10)) < leave_hide:
                        quit_ = True
                        break
        if not quit_:
            real = clk - cur
            z = (cont_logit + cont_click * min(real, 3) + cont_save * min(sav, 3)
                 - cont_hide * hid - (cont_noclick if clk == 0 else 0.0))
            quit_ = crn.uniform(h, np.uint64(11)) >= 1.0 / (1.0 + math.exp(-z))
        out_counts[r, 0] = imp
        out_counts[r, 1] = clk
        out_counts[r, 2] = cur
        out_counts[r, 3] = sav
        out_counts[r, 4] = hid
        out_quit[r] = quit_
        out_last[r] = last


def respond(users: np.ndarray, items: np.ndarray, keys: np.ndarray, *,
            user_vec: np.ndarray, item_vec: np.ndarray, item_unit: np.ndarray,
            user_bias: np.ndarray, item_static: np.ndarray, item_quality: np.ndarray,
            item_topic: np.ndarray, item_bonus: np.ndarray, slot_boost: np.ndarray | None,
            query: np.ndarray, seed: np.ndarray, novelty: np.ndarray,
            params: np.ndarray) -> SlateResponse:
    """Simulate the users' responses to ``items`` [n, k] (-1 pads); see the module doc."""
    n, k = items.shape
    counts = np.zeros((n, 5), dtype=np.int32)
    quit_ = np.zeros(n, dtype=np.bool_)
    last = np.full(n, -1, dtype=np.int64)
    shown = np.zeros((n, k), dtype=np.bool_)
    saved = np.zeros((n, k), dtype=np.bool_)
    clicked = np.zeros((n, k), dtype=np.bool_)
    hidden = np.zeros((n, k), dtype=np.bool_)
    if slot_boost is None:
        slot_boost = np.zeros((n, k), dtype=np.float64)
    _respond_kernel(np.ascontiguousarray(users, dtype=np.int64),
                    np.ascontiguousarray(items, dtype=np.int64),
                    np.ascontiguousarray(keys, dtype=np.uint64), user_vec, item_vec, item_unit,
                    user_bias, item_static, item_quality, item_topic, item_bonus,
                    np.ascontiguousarray(slot_boost, dtype=np.float64),
                    np.ascontiguousarray(query, dtype=np.int64),
                    np.ascontiguousarray(seed, dtype=np.int64),
                    np.ascontiguousarray(novelty, dtype=np.float64),
                    np.ascontiguousarray(params, dtype=np.float64), counts, quit_, last,
                    shown, saved, clicked, hidden)
    return SlateResponse(counts[:, 0], counts[:, 1], counts[:, 2], counts[:, 3], counts[:, 4],
                         quit_, last, shown, saved, clicked, hidden)
