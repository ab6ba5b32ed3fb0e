"""Error verification: do Alice's and Bob's reconciled keys agree? Universal hashing.

After reconciliation Alice picks a random seed, computes a ``t``-bit tag of her key and
sends seed and tag over the authenticated channel; Bob computes the tag of his key with the
same seed and compares. The hash is the Toeplitz hash of :mod:`qkdlink.host.privacy`
(``T[i, j] = seed[n - 1 + i - j]``, a ``t x n`` matrix from ``n + t - 1`` seed bits).

Collision probability. The binary Toeplitz family is universal: for any fixed keys
``a != b`` (chosen before the seed), ``T (a xor b)`` is uniformly distributed over
``{0,1}^t``, so

    Pr_seed[ tag(a) == tag(b) ] = 2**-t        exactly, for every key length n.

(Let ``j*`` be the first position where ``a`` and ``b`` differ; row ``i`` of ``T (a xor b)``
contains ``seed[n - 1 + i - j*]`` plus seed bits with smaller indices only, so the rows are
successively uniform given the ones before; Krawczyk, CRYPTO 1994.) Choosing
``t = ceil(log2(1 / eps_cor))`` makes the protocol ``eps_cor``-correct: if the keys differ
it reports them equal with probability at most ``eps_cor``. A polynomial hash over GF(2^64)
would need a tag that grows with the number of 64-bit blocks ``L`` (collision probability
``L / 2**64`` per evaluation point); the Toeplitz tag does not, which is why
:func:`tag_bits_for` ignores ``n_bits`` beyond validating it.

Leakage. The ``t`` tag bits are public: they count as leaked bits and the finite-key
formula subtracts them (Lim et al., PRA 89, 022307 (2014) budget ``log2(2/eps_cor)`` for
this step, which is at least ``t``). The seed is public and independent of the keys.

Cost. Each tag bit is the parity of an AND of two packed bit strings (``n / 64`` word
operations); the seed is packed once per bit phase (8 phases), so a tag of ``t`` bits costs
about ``t`` passes over ``n / 8`` bytes and no per-bit Python work.
"""
from __future__ import annotations

import hmac
import math

import numpy as np

from .privacy import _as_bits, bits_from_bytes

__all__ = ["tag_bits_for", "verification_tag", "verify", "collision_probability"]


def tag_bits_for(eps_cor: float, n_bits: int) -> int:
    """Tag length ``t = ceil(log2(1/eps_cor))`` (at least 1) for keys of ``n_bits`` bits."""
    if isinstance(n_bits, bool) or not isinstance(n_bits, (int, np.integer)) or n_bits < 1:
        raise ValueError(f"n_bits = {n_bits!r}: must be a positive integer")
    try:
        eps = float(eps_cor)
    except (TypeError, ValueError):
        raise ValueError(f"eps_cor = {eps_cor!r}: must be a number in (0, 1)") from None
    if not 0.0 < eps < 1.0:
        raise ValueError(f"eps_cor = {eps_cor!r}: must be in (0, 1)")
    return max(1, math.ceil(-math.log2(eps)))


def collision_probability(tag_bits: int) -> float:
    """Probability that two different keys get the same tag: exactly ``2**-tag_bits``."""
    return 2.0 ** -tag_bits


def _tag_bits(keys: list[np.ndarray], s: np.ndarray, t: int) -> list[np.ndarray]:
    """y[i] = parity(sum_k s[i + k] x[n - 1 - k]) for i < t, for each key x (same n).

    Packed bytes: the seed is packed once per bit phase b (window i = 8a + b starts at
    byte a of phase b); each tag bit is one AND and one XOR-reduce over n / 8 bytes.
    """
    n = keys[0].size
    nb = -(-n // 8)
    xrs = [np.packbits(np.ascontiguousarray(x[::-1])) for x in keys]   # zero pad kills excess bits
    ys = [np.empty(t, np.uint8) for _ in keys]
    tmp = np.empty(nb, np.uint8)
    span = nb + -(-t // 8) + 1
    for b in range(min(8, t)):
        ph = np.zeros(span, np.uint8)
        packed = np.packbits(s[b:])
        ph[:packed.size] = packed        # byte a holds bits s[b + 8a .. b + 8a + 7]
        for i in range(b, t, 8):
            a = (i - b) // 8
            w = ph[a:a + nb]
            for xr, y in zip(xrs, ys):
                v = int(np.bitwise_xor.reduce(np.bitwise_and(w, xr, out=tmp)))
                y[i] = v.bit_count() & 1
    return ys


def verification_tag(key_bits, seed) -> bytes:
    """The tag of ``key_bits`` (n bits) under ``seed`` (n + t - 1 bits), t = len(seed) - n + 1.

    Returned as ``ceil(t / 8)`` bytes, tag bit ``i`` in bit ``i % 8`` of byte ``i // 8``.
    Equal to ``toeplitz_hash(key_bits, seed, t)`` packed.
    """
    x = _as_bits(key_bits, "key_bits")
    s = _as_bits(seed, "seed")
    if x.size == 0:
        raise ValueError("key_bits: empty input")
    t = s.size - x.size + 1
    if t < 1:
        raise ValueError(f"seed: {s.size} bits is too short for a {x.size}-bit key (needs n + t - 1, t >= 1)")
    return np.packbits(_tag_bits([x], s, t)[0], bitorder="little").tobytes()


def verify(alice_bits, bob_bits, eps_cor: float, rng) -> tuple[bool, int, np.ndarray]:
    """Compare two reconciled keys by their tags; returns ``(equal, leaked_bits, seed)``.

    ``rng`` is a ``np.random.Generator`` or bytes (at least ``n + t - 1`` bits) for the seed.
    ``leaked_bits = t = tag_bits_for(eps_cor, n)``. If the keys differ, ``equal`` is True
    with probability exactly ``2**-t <= eps_cor`` over the seed.
    """
    a = _as_bits(alice_bits, "alice_bits")
    b = _as_bits(bob_bits, "bob_bits")
    if a.size == 0:
        raise ValueError("alice_bits: empty input")
    if a.size != b.size:
        raise ValueError(f"key lengths differ: alice {a.size} bits, bob {b.size} bits")
    t = tag_bits_for(eps_cor, a.size)
    nseed = a.size + t - 1
    if isinstance(rng, np.random.Generator):
        seed = bits_from_bytes(rng.bytes(-(-nseed // 8)), nseed)
    elif isinstance(rng, (bytes, bytearray, memoryview)):
        seed = bits_from_bytes(rng, nseed)
    else:
        raise ValueError(f"rng must be a numpy Generator or bytes, got {type(rng).__name__}")
    ta, tb = (np.packbits(y, bitorder="little").tobytes() for y in _tag_bits([a, b], seed, t))
    equal = hmac.compare_digest(ta, tb)
    return equal, t, seed
