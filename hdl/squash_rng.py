"""Bob's squashing bits: a xorshift64 generator (Marsaglia 2003, shifts 13, 7, 17).

Bob needs ``2 P`` random bits per clock to assign multi-click events (``hdl/detection.py``).
They need to be balanced and unpredictable to an eavesdropper who does not know the seed,
not of cryptographic quality: the generator is seeded by the host (``SEED_LO``/``SEED_HI``
and ``LOAD_SEED``; use a random 64-bit seed). xorshift64 has period ``2**64 - 1`` on non-zero
states and costs 64 flip-flops and one or two LUT levels per state bit, a fifth of the
xoroshiro128++ lane it replaced (on the iCE40UP5K about 550 of Bob's logic cells).

Sequence: ``S_0 = seed`` (``seed = 0`` is replaced by :data:`ZERO_SEED_STATE`, since the
all-zero state is a fixed point), ``S_{k+1} = xorshift64(S_k)``; word ``k`` is the low
``n_bits`` bits of ``S_k`` (word 0 is the seed's low bits: the state register itself is
the output, so a load is one multiplexer level, not a step).
"""
from __future__ import annotations

import numbers

import numpy as np
from amaranth.hdl import Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["SquashBits", "squash_bits_model", "xorshift64", "ZERO_SEED_STATE"]

_MASK = (1 << 64) - 1
#: The state a zero seed loads (xorshift64's state 0 is a fixed point).
ZERO_SEED_STATE = 0x9E37_79B9_7F4A_7C15


def xorshift64(x):
    """One xorshift64 step of a 64-bit state: a Python int or a numpy ``uint64`` array."""
    x = x ^ ((x << 13) & _MASK)
    x = x ^ (x >> 7)
    return x ^ ((x << 17) & _MASK)


def _jump_columns(steps: int) -> list[int]:
    """Images of the 64 unit states after ``steps`` steps (the GF(2) matrix, by columns)."""
    x = np.uint64(1) << np.arange(64, dtype=np.uint64)
    for _ in range(steps):
        x = xorshift64(x)
    return [int(v) for v in x]


def _apply(columns: list[int], x: int) -> int:
    y = 0
    while x:
        low = x & -x
        y ^= columns[low.bit_length() - 1]
        x ^= low
    return y


def squash_bits_model(seed: int, n: int, n_bits: int) -> np.ndarray:
    """Words ``0 .. n-1`` (uint8, shape ``(n,)``) of :class:`SquashBits` seeded with ``seed``.

    Vectorised: block starts by GF(2) jumps, then one numpy step per position in a block.
    """
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    if not 1 <= n_bits <= 8:
        raise ValueError(f"n_bits must be in [1, 8], got {n_bits!r}")
    n = int(n)
    state = int(seed) & _MASK or ZERO_SEED_STATE
    if n == 0:
        return np.zeros(0, dtype=np.uint8)
    block = max(1, int(np.sqrt(n)))
    starts = [state]                                # S_0, S_B, S_2B, ...
    jump = _jump_columns(block)
    for _ in range((n - 1) // block):
        starts.append(_apply(jump, starts[-1]))
    x = np.array(starts, dtype=np.uint64)
    out = np.empty((block, len(starts)), dtype=np.uint64)
    for t in range(block):
        out[t] = x
        x = xorshift64(x)
    words = out.T.reshape(-1)[:n]
    return (words & np.uint64((1 << n_bits) - 1)).astype(np.uint8)


class SquashBits(wiring.Component):
    """xorshift64 squashing bits, ``n_bits`` (1..8) per clock.

    Ports: ``seed`` (64), ``load``, ``advance`` in; ``bits`` (``n_bits``) out, the low bits of
    the state register (word ``k`` of the module docstring). A clock with ``load`` makes the
    next clock show word 0 of ``seed`` as it is in that clock (``load`` wins over
    ``advance``); a clock with ``advance`` shows word ``k + 1`` next. After reset: as if
    loaded with seed 0.
    """

    def __init__(self, n_bits: int):
        if isinstance(n_bits, bool) or not isinstance(n_bits, int) or not 1 <= n_bits <= 8:
            self._MustUse__silence = True
            raise ValueError(f"n_bits must be an integer in [1, 8], got {n_bits!r}")
        self.n_bits = n_bits
        super().__init__({"seed": In(64), "load": In(1), "advance": In(1), "bits": Out(n_bits)})

    def elaborate(self, platform):
        m = Module()
        state = Signal(64, init=ZERO_SEED_STATE)       # S_k

        def step(x):
            x = x ^ (x << 13)[:64]
            x = x ^ (x >> 7)
            return x ^ (x << 17)[:64]

        with m.If(self.load):
            m.d.sync += state.eq(Mux(self.seed == 0, Const(ZERO_SEED_STATE, 64), self.seed))
        with m.Elif(self.advance):
            m.d.sync += state.eq(step(state))
        m.d.comb += self.bits.eq(state[:self.n_bits])
        return m
