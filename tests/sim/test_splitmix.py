"""The one SplitMix64 helper (recscope.core.splitmix) gives the bits every former copy
gave: assignment, the simulator's common random numbers and hashed random scores."""

from __future__ import annotations

import hashlib

import numpy as np

from recscope.core import splitmix as sm
from recscope.experiments.assignment import Experiment, assign, hash_units, unit_hash
from recscope.models.random import hashed_uniform
from recscope.sim import crn

_MASK = (1 << 64) - 1


def _reference(z: int) -> int:
    """SplitMix64 as published (Steele et al. 2014), on Python integers."""
    z = (z + 0x9E3779B97F4A7C15) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def _digest(a: np.ndarray | str) -> str:
    data = a.encode() if isinstance(a, str) else a.tobytes()
    return hashlib.sha256(data).hexdigest()[:16]


def test_known_splitmix64_outputs() -> None:
    # the first outputs of the stream seeded with 0 (published reference values)
    state = np.uint64(0)
    outs = []
    for i in range(5):
        state, z = sm.step(np.uint64(state))
        outs.append(int(z))
        assert int(z) == _reference(i * sm.GOLDEN & _MASK)
    assert outs[:2] == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4]


def test_scalar_vector_and_int_versions_agree() -> None:
    rng = np.random.default_rng(0)
    z = rng.integers(0, 2**63, size=200, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    vec = sm.finalize_np(z + np.uint64(sm.GOLDEN))
    for i in range(0, 200, 17):
        assert int(vec[i]) == _reference(int(z[i])) == sm.splitmix_int(int(z[i]))
        assert int(sm.splitmix(z[i])) == int(vec[i])
    h = rng.integers(0, 2**63, size=50, dtype=np.uint64)
    x = rng.integers(0, 2**63, size=50, dtype=np.uint64)
    mixed = sm.mix_np(h, x)
    assert all(int(sm.mix(h[i], x[i])) == int(mixed[i]) for i in range(50))
    assert np.all(sm.to_unit_np(mixed) < 1.0)


def test_assignment_bits_unchanged() -> None:
    # digests recorded with the hand-written splitmix of experiments/assignment.py
    # before it was switched to recscope.core.splitmix
    ids = np.arange(5000)
    assert _digest(hash_units(ids, "exp:salt")) == "eef66250c3493552"
    assert [unit_hash(u, "s") for u in (0, 1, "abc", 42)] == [
        0.24668590631239207, 0.36283794870579844, 0.8644275295358473, 0.41267778348193007]
    a = assign(ids, Experiment(name="x", variants=("control", "treatment")))
    assert _digest("".join(map(str, a))) == "3ebc8685d4049130"
    # scalar and vectorised hashes agree bit for bit
    assert np.array_equal(hash_units(ids[:300], "q"), [unit_hash(u, "q") for u in ids[:300]])


def test_simulator_and_random_model_bits_unchanged() -> None:
    # digests recorded with the copies in sim/crn.py and models/random.py
    k = crn.keys(7, np.arange(100), 3)
    assert _digest(crn.uniforms(k, crn.VISIT)) == "464a58c3d3439c9f"
    assert int(crn.mix(np.uint64(12345), np.uint64(678))) == 4250223796479853005
    assert crn.uniform(np.uint64(12345), np.uint64(9)) == 0.40603867449415254
    assert _digest(hashed_uniform(3, np.arange(50), np.arange(70))) == "0ba877edb0c41f3e"
