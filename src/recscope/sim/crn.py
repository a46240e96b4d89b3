"""Counter-based random numbers for common-random-number (CRN) replays.

Every random draw of the simulated platform is a pure function of *what it is for*
(seed, user, day, session, request step, slate position, purpose), never of the order in
which draws were consumed. Replaying the same users under another policy therefore
reuses exactly the same numbers wherever the two worlds line up, which is what makes
``all control`` versus ``all treatment`` a low-noise ground truth (and makes a unit's
outcome in an experiment identical to its outcome in the world where everyone shares its
variant, when there is no interference).

The generator is splitmix64 applied to a running hash of the key parts; it passes the
usual uniformity checks and costs a handful of integer operations per number.
"""

from __future__ import annotations

import numba
import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_INV53 = 1.0 / 9007199254740992.0

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
def mix(h: np.uint64, x: np.uint64) -> np.uint64:
    """Fold ``x`` into the running hash ``h`` (splitmix64 finaliser)."""
    z = h ^ (x + np.uint64(0x9E3779B97F4A7C15))
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@numba.njit(cache=True, inline="always")
def uniform(h: np.uint64, stream: np.uint64) -> float:
    """A uniform in [0, 1) for purpose ``stream`` of key ``h``."""
    return float(mix(h, stream) >> np.uint64(11)) * (1.0 / 9007199254740992.0)


def mix_np(h: np.ndarray | int, x: np.ndarray | int) -> np.ndarray:
    """Vectorised :func:`mix` over numpy uint64 arrays (wrapping arithmetic)."""
    h = np.asarray(h, dtype=np.uint64)
    x = np.asarray(x).astype(np.uint64)
    with np.errstate(over="ignore"):
        z = h ^ (x + _GOLDEN)
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


def keys(seed: int, *parts: np.ndarray | int) -> np.ndarray:
    """Hash key of (seed, part_1, ..., part_n); parts broadcast like numpy arrays."""
    h = mix_np(np.uint64(seed & 0xFFFFFFFFFFFFFFFF), 0x5EED)
    for p in parts:
        h = mix_np(h, p)
    return h


def uniforms(key: np.ndarray, stream: int) -> np.ndarray:
    """Uniforms in [0, 1) for purpose ``stream`` of each key (vectorised :func:`uniform`)."""
    return (mix_np(key, stream) >> np.uint64(11)).astype(np.float64) * _INV53
