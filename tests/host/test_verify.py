"""Error verification by Toeplitz universal hashing: equal keys pass, different keys fail
except with probability 2^-t, the tag length is what leaks. All randomness is seeded."""
import math

import numpy as np
import pytest

from qkdlink.host.privacy import toeplitz_hash_naive
from qkdlink.host.verify import collision_probability, tag_bits_for, verification_tag, verify


def _bits(rng, k):
    return rng.integers(0, 2, k, dtype=np.uint8)


@pytest.mark.parametrize("eps, t", [(1e-15, 50), (2.0 ** -20, 20), (0.5, 1), (0.4999, 2), (1e-30, 100)])
def test_tag_bits_for(eps, t):
    assert tag_bits_for(eps, 10**6) == t
    assert collision_probability(t) <= eps


@pytest.mark.parametrize("eps, n", [(0.0, 10), (1.0, 10), (-1e-9, 10), (float("nan"), 10), ("x", 10),
                                    (1e-9, 0), (1e-9, 2.5)])
def test_tag_bits_for_rejects(eps, n):
    with pytest.raises(ValueError):
        tag_bits_for(eps, n)


def test_tag_is_the_toeplitz_hash():
    rng = np.random.default_rng(1)
    for _ in range(200):
        n = int(rng.integers(1, 500))
        t = int(rng.integers(1, min(n, 80) + 1))
        x, s = _bits(rng, n), _bits(rng, n + t - 1)
        tag = verification_tag(x, s)
        assert len(tag) == math.ceil(t / 8)
        bits = np.unpackbits(np.frombuffer(tag, np.uint8), bitorder="little", count=t)
        assert np.array_equal(bits, toeplitz_hash_naive(x, s, t))


def test_equal_keys_pass_and_leak_the_tag_length():
    rng = np.random.default_rng(2)
    for n in (1, 7, 64, 1000, 1_000_003):
        a = _bits(rng, n)
        equal, leaked, seed = verify(a, a.copy(), 1e-15, rng)
        assert equal and leaked == 50 and seed.size == n + 49


def test_one_bit_and_many_bit_differences_fail():
    """eps_cor = 1e-9 (t = 30): 300 one-bit and 300 multi-bit differences, none may pass."""
    rng = np.random.default_rng(3)
    n = 20_000
    for trial in range(600):
        a = _bits(rng, n)
        b = a.copy()
        k = 1 if trial < 300 else int(rng.integers(2, n))
        b[rng.choice(n, size=k, replace=False)] ^= 1
        equal, leaked, _ = verify(a, b, 1e-9, rng)
        assert not equal and leaked == 30


def test_differences_at_the_ends_fail():
    rng = np.random.default_rng(4)
    n = 513
    for pos in (0, 1, n - 2, n - 1):
        for _ in range(20):
            a = _bits(rng, n)
            b = a.copy()
            b[pos] ^= 1
            assert not verify(a, b, 1e-12, rng)[0]


def test_collision_rate_matches_the_bound():
    """With t = 4 (eps_cor = 1/16) different keys collide at rate 2^-4, never more (5 sigma)."""
    rng = np.random.default_rng(5)
    n, trials = 256, 6000
    a = _bits(rng, n)
    b = a.copy()
    b[rng.choice(n, size=3, replace=False)] ^= 1
    hits = sum(verify(a, b, 1 / 16, rng)[0] for _ in range(trials))
    p = collision_probability(4)
    sigma = math.sqrt(trials * p * (1 - p))
    assert abs(hits - trials * p) < 5 * sigma, hits


def test_bytes_seed_source_and_errors():
    rng = np.random.default_rng(6)
    a = _bits(rng, 100)
    raw = rng.bytes(32)
    eq, t, seed = verify(a, a, 1e-6, raw)
    assert eq and t == 20
    assert np.array_equal(seed, np.unpackbits(np.frombuffer(raw, np.uint8), bitorder="little")[:119])
    with pytest.raises(ValueError, match="random source has"):
        verify(a, a, 1e-6, b"\x00")
    with pytest.raises(ValueError, match="lengths differ"):
        verify(a, a[:-1], 1e-6, rng)
    with pytest.raises(ValueError, match="empty"):
        verify(a[:0], a[:0], 1e-6, rng)
    with pytest.raises(ValueError, match="Generator or bytes"):
        verify(a, a, 1e-6, 42)
    with pytest.raises(ValueError, match="0 or 1"):
        verify(a + 1, a, 1e-6, rng)
    with pytest.raises(ValueError, match="too short"):
        verification_tag(a, a[:50])
