"""SplitMix64: the one counter-based hash behind every reproducible random number.

Assignment (:mod:`recscope.experiments.assignment`), the simulator's common random numbers
(:mod:`recscope.sim.crn`), hashed random scores (:mod:`recscope.models.random`) and the
bootstrap of :mod:`recscope.offline` all derive numbers from SplitMix64 (Steele, Lea and
Flood, 2014): add the golden-ratio increment, then apply the finaliser. Each caller keeps
its own way of building the 64-bit input (a string hash, a running key), but the mixing is
written once, here, so every copy gives the same bits.

Scalar functions are numba-compiled (callable from other numba kernels); ``*_np`` versions
work on numpy ``uint64`` arrays with wrapping arithmetic; :func:`splitmix_int` works on
Python integers.
"""

from __future__ import annotations

import numba
import numpy as np

GOLDEN = 0x9E3779B97F4A7C15
"""The SplitMix64 increment (2^64 / golden ratio)."""
M1 = 0xBF58476D1CE4E5B9
M2 = 0x94D049BB133111EB
MASK = 0xFFFFFFFFFFFFFFFF
INV53 = 1.0 / 9007199254740992.0
"""2^-53: maps the top 53 bits of a hash to a float in [0, 1)."""

_GOLDEN = np.uint64(GOLDEN)
_M1 = np.uint64(M1)
_M2 = np.uint64(M2)


@numba.njit(cache=True, inline="always")
def finalize(z: np.uint64) -> np.uint64:
    """The SplitMix64 finaliser (a bijection of uint64 with good avalanche)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@numba.njit(cache=True, inline="always")
def splitmix(z: np.uint64) -> np.uint64:
    """One SplitMix64 output for state ``z``: ``finalize(z + GOLDEN)``."""
    return finalize(z + np.uint64(0x9E3779B97F4A7C15))


@numba.njit(cache=True, inline="always")
def step(state: np.uint64) -> tuple[np.uint64, np.uint64]:
    """Advance a SplitMix64 stream: the next state and its output."""
    state = state + np.uint64(0x9E3779B97F4A7C15)
    return state, finalize(state)


@numba.njit(cache=True, inline="always")
def mix(h: np.uint64, x: np.uint64) -> np.uint64:
    """Fold ``x`` into the running hash ``h``: ``finalize(h ^ (x + GOLDEN))``."""
    return finalize(h ^ (x + np.uint64(0x9E3779B97F4A7C15)))


@numba.njit(cache=True, inline="always")
def to_unit(z: np.uint64) -> float:
    """The top 53 bits of ``z`` as a float in [0, 1)."""
    return float(z >> np.uint64(11)) * (1.0 / 9007199254740992.0)


def finalize_np(z: np.ndarray | np.uint64) -> np.ndarray:
    """Vectorised :func:`finalize` over uint64 arrays (wrapping arithmetic)."""
    z = np.asarray(z, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


def mix_np(h: np.ndarray | int, x: np.ndarray | int) -> np.ndarray:
    """Vectorised :func:`mix` over numpy uint64 arrays (wrapping arithmetic)."""
    h = np.asarray(h, dtype=np.uint64)
    x = np.asarray(x).astype(np.uint64)
    with np.errstate(over="ignore"):
        return finalize_np(h ^ (x + _GOLDEN))


def to_unit_np(z: np.ndarray) -> np.ndarray:
    """Vectorised :func:`to_unit`: float64 in [0, 1)."""
    return (np.asarray(z, dtype=np.uint64) >> np.uint64(11)).astype(np.float64) * INV53


def splitmix_int(z: int) -> int:
    """:func:`splitmix` on a Python integer (reference version for scalar code)."""
    z = (z + GOLDEN) & MASK
    z = ((z ^ (z >> 30)) * M1) & MASK
    z = ((z ^ (z >> 27)) * M2) & MASK
    return z ^ (z >> 31)
