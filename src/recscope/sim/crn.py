"""Counter-based random numbers for common-random-number (CRN) replays.

Every random draw of the simulated platform is a pure function of *what it is for*
(seed, user, day, session, request step, slate position, purpose), never of the order in
which draws were consumed. Replaying the same users under another policy therefore
reuses exactly the same numbers wherever the two worlds line up, which is what makes
``all control`` versus ``all treatment`` a low-noise ground truth (and makes a unit's
outcome in an experiment identical to its outcome in the world where everyone shares its
variant, when there is no interference).

The generator is splitmix64 (:mod:`recscope.core.splitmix`) applied to a running hash of
the key parts; it passes the usual uniformity checks and costs a handful of integer
operations per number. ``mix`` and ``mix_np`` are re-exported from there.
"""

from __future__ import annotations

import numba
import numpy as np

from recscope.core.splitmix import mix, mix_np, to_unit, to_unit_np

# purposes (streams) of the draws
VISIT = 1
TIME = 2
SURFACE = 3
SURFACE2 = 4
QUERY = 5
GAP = 6
EXAMINE = 7
ATTRACT = 8
SAVE_HIDE = 9
LEAVE = 10
CONTINUE = 11
SOCIAL = 12
POLICY = 13


@numba.njit(cache=True, inline="always")
def uniform(h: np.uint64, stream: np.uint64) -> float:
    """A uniform in [0, 1) for purpose ``stream`` of key ``h``."""
    return to_unit(mix(h, stream))


def keys(seed: int, *parts: np.ndarray | int) -> np.ndarray:
    """Hash key of (seed, part_1, ..., part_n); parts broadcast like numpy arrays."""
    h = mix_np(np.uint64(seed & 0xFFFFFFFFFFFFFFFF), 0x5EED)
    for p in parts:
        h = mix_np(h, p)
    return h


def uniforms(key: np.ndarray, stream: int) -> np.ndarray:
    """Uniforms in [0, 1) for purpose ``stream`` of each key (vectorised :func:`uniform`)."""
    return to_unit_np(mix_np(key, stream))
