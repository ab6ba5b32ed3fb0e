"""Syndrome-based LDPC reconciliation: rate-adaptive and blind, with every disclosed bit counted.

Protocol (Bob drives it; Alice answers; every message goes through one callable, ``ask_alice``, so
the pipeline can authenticate and log it):

1. **Plan** (Bob, from the key length and the QBER estimate q): a mother code (rate R0, length n) from
   ``ldpc_codes`` and a frame layout. Each frame holds K key bits; of its other n - K symbols p0 are
   *punctured* (Alice fills them with secret random bits) and s0 = n - K - p0 *shortened* (value 0,
   known to both). The syndrome then discloses m - p0 bits about the key: the punctured columns are
   linearly independent (see ``ldpc_codes``), so p0 uniformly random padding bits hide p0 syndrome
   bits. The effective rate is (k - s)/(n - p - s) (Elkouss, Martinez-Mateo, Lancho, Martin, "Rate
   compatible protocol for information reconciliation: an application to QKD", ITW 2010; Elkouss,
   Martinez-Mateo, Martin, QIC 11 (2011) 226). p0 is chosen so that the first attempt discloses
   ``f_start * K * h(q)`` bits (by default a little below the measured median efficiency,
   ``typical_efficiency``: 0.08 for 16 kbit frames, 0.03 for 256 kbit frames). Frames are as long as
   ``frame_bits`` allows (default 262144: f drops by 0.03-0.10 from 16384) and the key permits; the
   mother rate is the highest of the nine (``ldpc_codes.MOTHER_RATES``) whose unpunctured code
   decodes half the frames at a QBER above q (measured, ``_F_HALF``), so adaptation is mostly by
   puncturing, little of it.
2. **Syndromes** (Alice -> Bob): one message with the syndromes of all frames, computed in one sparse
   product.
3. **Decode** (Bob): the syndrome difference with per-symbol channel LLRs ln((1-q)/q) from the QBER
   estimate q (key symbols), 0 (punctured), +-30 (shortened or revealed: known).
   ``decoder="native"`` (the default when the C++ kernel builds; :func:`ldpc_codes.decode_native`,
   ``host/native/ldpc.cpp``): layered sum-product over the quasi-cyclic layers, vectorised over the
   circulant, by default in 16-bit fixed point (``check_rule="sum-product-fixed"``: box-plus with a
   piecewise-linear correction, 2-4.6x faster per iteration than the float rule
   ``"sum-product"``, which decodes at f lower by 0.000-0.008 in the measurements below),
   frames shared by ``threads`` threads, early stop on a satisfied syndrome and after
   ``stall_iter`` iterations without a new lowest count of unsatisfied checks. Each frame keeps one
   decoding problem for all attempts (Bob's punctured symbols stay 0, so the error there is Alice's
   value; a revealed value becomes a known error bit), so a retry continues from the previous
   attempt's messages (``warm_start``; up to ``WARM_START_MAX_BYTES`` of state per block).
   ``check_rule="min-sum"`` (normalised) does not work on these codes near threshold: their checks
   have degree 11-51, and on the BSC every input of a check starts with the same magnitude, which
   min-sum passes on undiminished where sum-product shrinks it a lot (rate 0.7, n = 65536: normalised
   min-sum with alpha 0.25-0.75 decodes no frame up to f = 1.4, offset min-sum with beta 1.5 half of
   them at f = 1.2, sum-product at 1.08). ``decoder="bp"``: the ``ldpc`` package's
   flooding sum-product, the reference; a fresh decode on the updated syndrome each attempt.
4. **Blind retries** (Martinez-Mateo, Elkouss, Martin, "Blind reconciliation", QIC 12 (2012) 791):
   for the frames that did not converge, Bob asks Alice to reveal the values of some punctured
   symbols, which turns them into shortened ones: the disclosure grows by exactly the revealed count,
   by ``f_step * K * h(q)`` bits per retry (wider steps for short frames, whose decoding points spread
   more); the last planned attempt jumps to ``f_last`` (the error count's 5-sigma range plus a margin).
   Repeat until every frame converged or nothing is left punctured (``max_rounds`` attempts, plus one
   with nothing punctured if the planned ones stop short of it).
5. **Verify** (``verify_bits``, default 32; 0 turns it off): Bob sends a linear hash of each decoded
   frame under a matrix drawn after decoding; Alice answers which frames differ. BP can converge to a
   wrong word: measured 2 of 200 frames at QBER 0.5 % with n = 4096 (none in 200 frames at 1-5 %); one
   wrong frame would make the block's verification hash fail and cost the whole block, a 32-bit check
   costs 32 bits per frame (0.2 % of the key at n = 16384, 1-2 % of the disclosure).
6. **Done** (Bob -> Alice): the frames that never converged (or failed the check) are discarded at
   both ends (their disclosure stays counted).

A frame counts as decoded when BP satisfies the syndrome and leaves the shortened symbols at their
known values. BP convergence is not a proof of equality: run the pipeline's verification hash (eps_cor)
on the result, as after Cascade; the per-frame check only saves a block from one wrong frame.

Leakage ledger, exactly: per frame, ``m - p_final`` bits (syndrome bits minus the punctured symbols
still hidden at the end), summed over all frames, kept or discarded; reported as ``leaked_bits`` with its
split into ``syndrome_bits_net``, ``revealed_bits`` and, with ``verify_bits > 0``, ``verify_bits`` (a
per-frame linear hash that catches frames BP decoded to a wrong word). The efficiency is
``f = leaked_bits / (n_bits * h(q))``.

Measured (``benchmarks/reconcile_ldpc.py``, defaults; 2 cores shared with other jobs, 1-min load
3.4-7.9; 32-bit frame check included): with n = 262144 frames, f = 1.143 / 1.087 / 1.106 / 1.094 /
1.088 at QBER 1 / 2 / 3 / 5 / 8 % (3000 frames per QBER at 1-5 %, 300 at 8 %, no frame lost: 95 %
bound 1.0e-3 per point at 1-5 %, ``--sections fer --fer-frames 3000``);
n = 65536: 1.17 / 1.12 / 1.12 / 1.10 / 1.10; n = 16384: 1.27 / 1.19 / 1.14 / 1.13 / 1.13 (the package's
BP on the same protocol, 8 frames: 1.28 / 1.18 / 1.13 / 1.11 / 1.12). The float sum-product rule gains
0.001-0.005 at n = 262144. f <= 1.05 is not reached: the unpunctured mother codes themselves decode
half of the frames only at f = 1.07-1.10 (n = 65536-262144; density-evolution thresholds of Table I:
1.02-1.04), and adapting the rate by puncturing costs 0.01-0.05 more.

Throughput: per edge and iteration (one thread, CPU time) the package's flooding sum-product takes
33-93 ns (n = 16384-65536), the native layered float sum-product 1.3-1.5 ns, the int16 rule 0.37-0.83
ns (1.9x faster at n = 16384, 3.5-3.8x at n >= 65536, where the float messages leave the cache). With
the default blind schedule (2-5 attempts per frame, n = 262144) reconciliation runs at 4-8.5 Mbit/s
from CPU time on 2 cores (1-2.7 Mbit/s wall-clock on the shared machine); with the float rule 1.3-2.4
Mbit/s. Fewer attempts trade f for speed (QBER 3 %, first attempt at f_start: 1.12 -> f 1.12, 22
Mbit/s, one attempt per frame; 1.2 -> 36 Mbit/s; 1.35 -> 40 Mbit/s). 50 Mbit/s is not reached.
"""
from __future__ import annotations

import base64
import hashlib
import json
import math
import multiprocessing as mp
import os
import secrets
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import numpy as np

from .ldpc_codes import (FRAME_LENGTHS, MOTHER_RATES, LdpcCode, code_shape, decode_native, get_code,
                         native_available, native_state)

__all__ = ["LdpcParams", "LdpcPlan", "LdpcAlice", "LdpcBob", "LdpcStats", "LdpcProtocolError", "plan_frames",
           "reconcile", "wire", "binary_entropy", "encode_message", "decode_message", "typical_efficiency", "QBER_MAX"]

QBER_MAX = 0.11          # BB84 one-way limit (f = 1); also the rate-0.5 code's threshold (0.1071)
QBER_PLAN_MIN = 0.0025   # below this the plan is made for 0.25 % (h -> 0 gives no sensible rate)
P_SHORTENED = 1e-9       # prior error probability of a known (shortened) symbol
PROTOCOL_VERSION = 2   # 2: SHAKE-256 frame-check matrix
DECODERS = ("auto", "native", "bp")
CHECK_RULES = ("sum-product-fixed", "sum-product", "min-sum")
LLR_CLAMP = 30.0         # |LLR| of a shortened (known) symbol for the native decoder
F_COVER_MARGIN = 0.25    # efficiency added to the 5-sigma error count for the last attempt (see _f_cover)
WARM_START_MAX_BYTES = 1 << 28   # decoder state kept for warm starts (larger blocks decode cold)


class LdpcProtocolError(ValueError):
    """A message out of order, of the wrong size, or from a peer with another key length."""


def binary_entropy(p: float) -> float:
    """h(p) = -p log2 p - (1-p) log2 (1-p), with h(0) = h(1) = 0."""
    if p <= 0.0 or p >= 1.0:
        return 0.0
    return -p * math.log2(p) - (1.0 - p) * math.log2(1.0 - p)


# ----------------------------------------------------------------------------------------------
# Parameters and the frame plan.
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LdpcParams:
    """Bob's knobs (Alice needs none: Bob's setup message tells her the layout)."""
    frame_bits: int = 262144             # largest code length n to use (shorter keys use shorter codes)
    code_seed: int = 0                   # code family member; both ends derive H from (rate, n, seed)
    f_start: float | None = None         # efficiency of the first attempt (None: typical_efficiency - 0.08)
    f_step: float = 0.01                 # efficiency added by each blind retry (the last one goes to f_last)
    max_rounds: int = 12                 # decoding attempts per frame (1 = plain rate-adaptive; +1, see plan)
    max_puncture_fraction: float = 0.15  # at most this share of a frame punctured
    max_iter: int = 60                   # BP iterations per attempt (100: f -0.005, 1.5x slower)
    workers: int = 1                     # decoding processes of the package decoder ("bp")
    mother_rate: float | None = None     # force one mother code rate (default: chosen by the planner)
    verify_bits: int = 32                # per-frame check hash (0: leave it all to the block verification)
    decoder: str = "auto"                # "native" (layered C++), "bp" (ldpc package), "auto": native if it builds
    check_rule: str = "sum-product-fixed"   # native check rule: "sum-product-fixed" (int16), "sum-product" (float), "min-sum"
    min_sum_alpha: float = 0.75          # normalisation of the native min-sum rule
    stall_iter: int = 5                  # native: give up an attempt after this many iterations without progress
    warm_start: bool = True              # native: a blind retry continues from the last attempt's messages
    threads: int | None = None           # native decoding threads (None: min(2, CPUs))

    def __post_init__(self):
        def bad(name, allowed):
            raise ValueError(f"LdpcParams.{name} = {getattr(self, name)!r}: must be {allowed}")
        if not isinstance(self.frame_bits, int) or self.frame_bits < 256:
            bad("frame_bits", "an integer >= 256 (e.g. one of " + ", ".join(map(str, FRAME_LENGTHS)) + ")")
        if self.f_start is not None and (isinstance(self.f_start, bool) or not isinstance(self.f_start, (int, float))
                                         or not 0.8 <= self.f_start <= 2.0):
            bad("f_start", "None or a number in [0.8, 2.0]")
        if not (0.0 < self.f_step <= 0.5):
            bad("f_step", "in (0, 0.5]")
        if not isinstance(self.max_rounds, int) or not (1 <= self.max_rounds <= 64):
            bad("max_rounds", "an integer in [1, 64]")
        if not (0.0 <= self.max_puncture_fraction <= 0.25):
            bad("max_puncture_fraction", "in [0, 0.25]")
        if not isinstance(self.max_iter, int) or not (1 <= self.max_iter <= 10000):
            bad("max_iter", "an integer in [1, 10000]")
        if not isinstance(self.workers, int) or self.workers < 1:
            bad("workers", "an integer >= 1")
        if isinstance(self.verify_bits, bool) or not isinstance(self.verify_bits, int) or not 0 <= self.verify_bits <= 64:
            bad("verify_bits", "an integer in [0, 64]")
        if self.mother_rate is not None and self.mother_rate not in MOTHER_RATES:
            bad("mother_rate", "None or one of " + ", ".join(map(str, MOTHER_RATES)))
        if self.decoder not in DECODERS:
            bad("decoder", "one of " + ", ".join(map(repr, DECODERS)))
        if self.check_rule not in CHECK_RULES:
            bad("check_rule", "one of " + ", ".join(map(repr, CHECK_RULES)))
        if isinstance(self.min_sum_alpha, bool) or not isinstance(self.min_sum_alpha, (int, float)) \
                or not 0.1 <= self.min_sum_alpha <= 1.0:
            bad("min_sum_alpha", "a number in [0.1, 1]")
        if self.threads is not None and (isinstance(self.threads, bool) or not isinstance(self.threads, int)
                                         or self.threads < 1):
            bad("threads", "None or an integer >= 1")
        if isinstance(self.stall_iter, bool) or not isinstance(self.stall_iter, int) or self.stall_iter < 0:
            bad("stall_iter", "an integer >= 0 (0: never give up before max_iter)")


@dataclass(frozen=True)
class LdpcPlan:
    """How a key of ``n_bits`` is cut into frames of one mother code, and the puncturing per round."""
    n_bits: int
    qber_estimate: float
    rate: float                 # mother code design rate
    n: int                      # code length
    m: int                      # syndrome bits per frame
    seed: int
    frames: int
    key_bits: int               # K: key bits in a full frame
    long_frames: int            # the first ``long_frames`` frames hold K bits, the others K - 1
    punctured: tuple[int, ...]  # punctured symbols per round, strictly decreasing

    @property
    def frame_sizes(self) -> np.ndarray:
        sizes = np.full(self.frames, self.key_bits, dtype=np.int64)
        sizes[self.long_frames:] -= 1
        return sizes

    def to_message(self) -> dict:
        return {"type": "ldpc_setup", "version": PROTOCOL_VERSION, "n_bits": self.n_bits,
                "rate": self.rate, "n": self.n, "seed": self.seed,
                "code_digest": get_code(self.rate, self.n, self.seed).digest, "frames": self.frames,
                "key_bits": self.key_bits, "long_frames": self.long_frames,
                "punctured": int(self.punctured[0])}


# Median efficiency at which a frame first decodes, measured with these codes and the blind protocol
# (benchmarks/reconcile_ldpc.py): n = 16384 (blind steps of 0.01, 10-30 frames per point, the
# rate-0.5-0.9 codes of Table I) and n = 262144 (steps of 0.01, 9-15 frames per point, 2-3e6-bit keys,
# all nine mother rates). The automatic first attempt is START_BELOW_TYPICAL below it.
_TYPICAL_F = {16384: ((0.005, 1.25), (0.01, 1.20), (0.02, 1.14), (0.03, 1.15), (0.05, 1.12), (0.08, 1.10),
                      (0.11, 1.10)),
              262144: ((0.005, 1.25), (0.01, 1.16), (0.02, 1.09), (0.03, 1.10), (0.05, 1.09), (0.08, 1.085),
                       (0.11, 1.085))}
START_BELOW_TYPICAL = {16384: 0.08, 262144: 0.03}   # a wider spread between short frames


def typical_efficiency(qber: float, n: int | None = None) -> float:
    """Median efficiency at which a frame of length ``n`` decodes (default: the longest code,
    262144), interpolated in the QBER and in log n between the measured tables (16384, 262144)."""
    return _interp_n(n, {k: float(np.interp(qber, *zip(*v))) for k, v in _TYPICAL_F.items()})


def _interp_n(n: int | None, table: dict) -> float:
    lo, hi = min(table), max(table)
    x = hi if n is None else min(max(int(n), lo), hi)
    w = math.log(x / lo) / math.log(hi / lo)
    return (1.0 - w) * table[lo] + w * table[hi]


def _auto_f_start(q: float, n: int) -> float:
    return typical_efficiency(q, n) - _interp_n(n, START_BELOW_TYPICAL)


# Puncturing limit per mother rate as a fraction of n, slightly below ``max_punctured`` / n of the codes
# (untainted-then-least-tainted order, measured for n = 4096-262144), so that planning needs no code;
# the chosen code's own limit is applied after the choice.
_PUNCTURE_ESTIMATE = {0.5: 0.24, 0.55: 0.23, 0.6: 0.2, 0.65: 0.18, 0.7: 0.135, 0.75: 0.12, 0.8: 0.11,
                      0.85: 0.078, 0.9: 0.05}

# Efficiency at which half the frames of the unpunctured, unshortened mother code decode (n = 65536,
# layered sum-product, 100 iterations; ldpc_codes.DERIVED_RATES). The planner prefers the highest
# rate whose QBER at this efficiency, _q_half, is above the estimate: the mother code then decodes
# most frames with nothing punctured, and puncturing adapts it to the lower efficiencies of the
# first attempts (puncturing costs less than shortening a code far below its threshold).
_F_HALF = {0.5: 1.07, 0.55: 1.07, 0.6: 1.08, 0.65: 1.08, 0.7: 1.09, 0.75: 1.09, 0.8: 1.10, 0.85: 1.08,
           0.9: 1.10}


# A code whose half-decoding QBER is a little below q (shortened a little) still beats the next lower
# rate punctured up: puncturing costs more at high rates, where checks have degree 30-60 and a
# punctured symbol hears little from them (n = 262144, QBER 2 %: rate 0.85, _q_half 1.96 %, gives
# f = 1.10; rate 0.8 punctured 1.14-1.16).
Q_HALF_SLACK = 0.95


@lru_cache(maxsize=None)
def _q_half(rate: float) -> float:
    """QBER q with h(q) = (1 - rate) / _F_HALF[rate] (bisection)."""
    target, lo, hi = (1.0 - rate) / _F_HALF[rate], 1e-6, 0.5
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if binary_entropy(mid) < target else (lo, mid)
    return lo


def _candidate_lengths(frame_bits: int) -> list[int]:
    return sorted({n for n in FRAME_LENGTHS if n <= frame_bits} | {frame_bits}, reverse=True)


def _f_cover(q: float, key_bits: float, sigmas: float = 5.0, margin: float = F_COVER_MARGIN) -> float:
    """Efficiency that covers a frame with 5 sigma more errors than expected, plus ``F_COVER_MARGIN``
    (0.25) of BP margin.

    With K key bits the error count is binomial(K, q): short frames at low QBER need a wide range
    (K = 3100, q = 1 %: 1.93; K = 3200, q = 5 %: 1.52; K = 15000, q = 3 %: 1.42). A margin of 0.15 lost
    frames 2.6 sigma out in the tail (n = 16384, q = 5 %: 2 of 250 frames, 1 of 200 at 1 %; with 0.25:
    0 of 250 at 5 %, f +0.00-0.03)."""
    q_hi = min(q + sigmas * math.sqrt(q * (1.0 - q) / key_bits), 0.5)
    return binary_entropy(q_hi) / binary_entropy(q) + margin


def plan_frames(n_bits: int, qber_estimate: float, params: LdpcParams = LdpcParams()) -> LdpcPlan:
    """Choose mother code, frame size and puncturing schedule (deterministic; Bob sends the result).

    For a code (n, m) and K key bits per frame, attempt r discloses ``leak_r = ceil(f_r K h(q))``
    bits, i.e. punctures ``p_r = m - leak_r`` symbols, with f_0 = ``f_start`` (default from
    :func:`typical_efficiency` for the frame length; higher when the puncturing limit
    ``p <= min(max_puncture_fraction * n, code.max_punctured)`` binds), then steps of ``f_step`` (wider
    for short frames: the 3-sigma spread of the error count plus 0.15, over the rounds) and the last
    attempt at ``f_last = max(f_start + (max_rounds - 1) f_step, f_cover)`` (the 5-sigma spread, see
    :func:`_f_cover`) with ``p = 0``; if the rounds run out first one more attempt with nothing
    punctured is added. A frame needs ``K + p_0 <= n`` and ``m >= f_last K h``. The key is split into
    equal frames (sizes differ by at most one bit). Candidates are sized from the code shapes alone
    (puncturing limits from ``_PUNCTURE_ESTIMATE``); only the chosen code is built, and its own
    puncturing limit applied. Among (n, R0) whose first attempt is within 0.03 of the best we take
    the highest rate whose half-decoding QBER (``_q_half``) exceeds 0.95 q, then the longest n, then the
    most key bits per frame.
    """
    _check_qber(qber_estimate)
    if isinstance(n_bits, bool) or not isinstance(n_bits, (int, np.integer)) or n_bits <= 0:
        raise ValueError(f"key length {n_bits!r}: must be a positive number of bits")
    n_bits = int(n_bits)
    h = binary_entropy(max(float(qber_estimate), QBER_PLAN_MIN))
    q_plan = max(float(qber_estimate), QBER_PLAN_MIN)
    cands = []
    for n in _candidate_lengths(params.frame_bits):
        f0 = params.f_start if params.f_start is not None else _auto_f_start(q_plan, n)
        f_base = f0 + (params.max_rounds - 1) * params.f_step
        for rate in (MOTHER_RATES if params.mother_rate is None else (params.mother_rate,)):
            m, _ = code_shape(rate, n)                      # no code is built while planning
            k = n - m
            pcap = int(min(params.max_puncture_fraction, _PUNCTURE_ESTIMATE[rate]) * n)
            # largest K with K + p0(K) <= n, p0(K) = min(pcap, m - f0 K h)
            k_a = math.floor(k / (1.0 - f0 * h))            # puncturing not capped
            k_b = n - pcap                                  # puncturing capped
            k_s = max(k_a if m - f0 * k_a * h <= pcap else 0, k_b if m - f0 * k_b * h >= pcap else 0)
            k_hi, f_last = min(k_s, n), f_base
            for _ in range(3):                              # f_last depends on K through f_cover
                f_last = min(max(f_base, _f_cover(q_plan, max(k_hi, 1))), 2.5)
                k_hi = min(k_s, math.floor(m / (f_last * h)), n)
            if k_hi < 1:
                continue
            frames = -(-n_bits // k_hi)
            key_bits = -(-n_bits // frames)
            p0 = int(min(pcap, max(m - math.ceil(f0 * key_bits * h), 0), n - key_bits))
            f_first = (m - p0) / (key_bits * h)
            cands.append((f_first, n, key_bits, rate, frames, p0, f_last, f0))
    if not cands:
        raise ValueError(f"no frame layout for {n_bits} bits at QBER {qber_estimate}")
    f_best = min(c[0] for c in cands)
    good = [c for c in cands if c[0] <= max(c[7], f_best) + 0.03]
    # prefer the highest-rate mother code whose BSC threshold is above q, adapted mostly by puncturing:
    # measured at n = 16384, a code shortened below its threshold does worse (8 %: rate 0.5 punctured
    # f = 1.11, rate 0.6 shortened 1.21)
    above = [r for r in MOTHER_RATES if _q_half(r) > Q_HALF_SLACK * q_plan]
    preferred = [c for c in good if above and c[3] == max(above)]
    f_first, n, key_bits, rate, frames, p0, f_last, _ = max(preferred or good, key=lambda c: (c[1], c[2], -c[0]))
    code = get_code(rate, n, params.code_seed)
    if p0 > code.max_punctured:                      # the estimate was optimistic for this code
        p0 = code.max_punctured
        f_first = (code.m - p0) / (key_bits * h)
    long_frames = n_bits - frames * (key_bits - 1)
    rounds = params.max_rounds
    # steps of f_step, or wider when the frames' decoding points spread more (short frames: the error
    # count's 3-sigma range, plus 0.15), then f_last at once
    step = max(params.f_step, (_f_cover(q_plan, key_bits, sigmas=3.0, margin=0.15) - f_first) / max(rounds - 2, 1))
    punct = [p0]
    for r in range(1, rounds):
        f_r = f_first + r * step if r < rounds - 1 else f_last
        p = int(min(max(code.m - math.ceil(f_r * key_bits * h), 0), p0))
        if p < punct[-1]:
            punct.append(p)
        if p == 0:
            break
    if punct[-1] > 0 and params.max_rounds > 1:
        punct.append(0)              # a last resort with nothing punctured: frames not lost to the cap
    return LdpcPlan(n_bits, float(qber_estimate), rate, n, code.m, params.code_seed, frames, key_bits,
                    long_frames, tuple(punct))


def _check_qber(q):
    if isinstance(q, bool) or not isinstance(q, (int, float, np.floating)) or not math.isfinite(q):
        raise ValueError(f"QBER estimate {q!r}: must be a number in [0, {QBER_MAX})")
    if q < 0:
        raise ValueError(f"QBER estimate {q}: must be in [0, {QBER_MAX})")
    if q >= QBER_MAX:
        raise ValueError(f"QBER estimate {q:.4f} is at or above {QBER_MAX:.0%}: above the one-way BB84 "
                         f"limit no key can be distilled, and no mother code (lowest threshold 0.1071 at "
                         f"rate 0.5) reconciles it; abort the block")


def _as_bits(bits, who: str) -> np.ndarray:
    a = np.asarray(bits)
    if a.ndim != 1:
        raise ValueError(f"{who} key: must be a 1-D array of bits, got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{who} key is empty: nothing to reconcile")
    if a.dtype == bool:
        return a.astype(np.uint8)
    if not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{who} key: must hold integers 0/1, got dtype {a.dtype}")
    if a.max() > 1 or a.min() < 0:
        raise ValueError(f"{who} key: must hold only 0 and 1")
    return a.astype(np.uint8)


def _layout(code: LdpcCode, key_bits: int):
    """(key positions, other positions in modulation order) of a frame holding ``key_bits`` bits."""
    order = code.modulation_order
    d = code.n - key_bits
    return np.sort(order[d:]), order[:d]


def _frames_from_key(bits: np.ndarray, plan: LdpcPlan, keypos: np.ndarray) -> np.ndarray:
    """(frames, n) words with the key bits placed; every other symbol 0. Short frames end with a 0."""
    sizes = plan.frame_sizes
    K, L = plan.key_bits, plan.long_frames
    padded = np.zeros((plan.frames, K), dtype=np.uint8)
    mask = np.arange(K)[None, :] < sizes[:, None]
    padded[:L] = bits[:L * K].reshape(L, K)                   # frames of K bits, then of K - 1
    padded[L:, :K - 1] = bits[L * K:].reshape(plan.frames - L, K - 1)
    words = np.zeros((plan.frames, plan.n), dtype=np.uint8)
    words[:, keypos] = padded
    return words, mask


def _frame_hashes(padded_keys: np.ndarray, seed: int, bits: int) -> np.ndarray:
    """Linear hash M x (mod 2) of each frame's key bits, M a public random bits x K matrix.

    M is drawn from SHAKE-256 (FIPS 202) on ``seed`` (stable across numpy versions), after Bob's
    decoding, so a wrong frame escapes with probability 2^-bits; each hash discloses ``bits`` linear
    functions of the key, which are counted as leaked."""
    k = padded_keys.shape[1]
    need = (bits * k + 7) // 8
    stream = hashlib.shake_256(f"qkdlink-ldpc-verify/{seed}".encode()).digest(need)
    M = np.unpackbits(np.frombuffer(stream, dtype=np.uint8), count=bits * k).reshape(bits, k)
    # parity of (key AND row) on packed bytes: XOR-reduce the bytes, then the parity of one byte
    keys = np.packbits(np.asarray(padded_keys, dtype=np.uint8), axis=1)          # (F, ceil(K/8))
    rows = np.packbits(M, axis=1)                                                # (bits, ceil(K/8))
    acc = np.bitwise_xor.reduce(keys[:, None, :] & rows[None, :, :], axis=2)     # (F, bits) bytes
    return _BYTE_PARITY[acc]


_BYTE_PARITY = (np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).sum(axis=1) & 1).astype(np.uint8)


# ----------------------------------------------------------------------------------------------
# Messages: dicts of str -> int | float | str | list[int] | bytes, with a canonical byte form.
# ----------------------------------------------------------------------------------------------

def encode_message(msg: dict) -> bytes:
    """Canonical bytes of a message (sorted-key JSON, byte strings in base64), for authentication."""
    def enc(v):
        if isinstance(v, (bytes, bytearray)):
            return {"b64": base64.b64encode(bytes(v)).decode()}
        if isinstance(v, (np.integer,)):
            return int(v)
        if isinstance(v, (np.floating,)):
            return float(v)
        if isinstance(v, (list, tuple, np.ndarray)):
            return [enc(x) for x in v]
        return v
    return json.dumps({k: enc(v) for k, v in msg.items()}, sort_keys=True, separators=(",", ":")).encode()


def decode_message(data: bytes) -> dict:
    def dec(v):
        if isinstance(v, dict) and set(v) == {"b64"}:
            return base64.b64decode(v["b64"])
        if isinstance(v, list):
            return [dec(x) for x in v]
        return v
    return {k: dec(v) for k, v in json.loads(data.decode()).items()}


def _pack(bits: np.ndarray) -> bytes:
    return np.packbits(np.asarray(bits, dtype=np.uint8).ravel()).tobytes()


def _unpack(data: bytes, count: int, what: str) -> np.ndarray:
    if not isinstance(data, (bytes, bytearray)) or len(data) != (count + 7) // 8:
        raise LdpcProtocolError(f"{what}: expected {(count + 7) // 8} bytes for {count} bits, "
                                f"got {len(data) if isinstance(data, (bytes, bytearray)) else type(data).__name__}")
    return np.unpackbits(np.frombuffer(bytes(data), dtype=np.uint8), count=count)


# ----------------------------------------------------------------------------------------------
# Alice.
# ----------------------------------------------------------------------------------------------

class LdpcAlice:
    """Alice's side: answers Bob's requests. Call it (or ``handle``) with a request dict.

    ``rng``: source of the punctured padding bits. Default: the OS CSPRNG (``secrets``), as the padding
    must be uniform and secret; pass a seeded ``numpy.random.Generator`` only for tests.
    """

    def __init__(self, alice_bits, rng: np.random.Generator | None = None):
        self._bits = _as_bits(alice_bits, "Alice's")
        self._rng = rng
        self._plan = None
        self._words = None
        self._failed = None
        self.messages = 0

    def _random_bits(self, shape) -> np.ndarray:
        count = int(np.prod(shape))
        if self._rng is None:
            raw = np.frombuffer(secrets.token_bytes((count + 7) // 8), dtype=np.uint8)
            return np.unpackbits(raw, count=count).reshape(shape)
        return self._rng.integers(0, 2, size=shape, dtype=np.uint8)

    def __call__(self, request: dict) -> dict:
        return self.handle(request)

    def handle(self, request: dict) -> dict:
        self.messages += 1
        kind = request.get("type")
        if kind == "ldpc_setup":
            return self._setup(request)
        if self._plan is None:
            raise LdpcProtocolError(f"request {kind!r} before ldpc_setup")
        if kind == "ldpc_reveal":
            return self._reveal(request)
        if kind == "ldpc_verify":
            return self._verify(request)
        if kind == "ldpc_done":
            failed = np.asarray(request.get("failed", []), dtype=np.int64)
            if failed.size and (failed.min() < 0 or failed.max() >= self._plan.frames):
                raise LdpcProtocolError("ldpc_done: frame index out of range")
            self._failed = failed
            return {"type": "ldpc_ack"}
        raise LdpcProtocolError(f"unknown request type {kind!r}")

    def _setup(self, req: dict) -> dict:
        if req.get("version") != PROTOCOL_VERSION:
            raise LdpcProtocolError(f"ldpc_setup: protocol version {req.get('version')!r}, "
                                    f"this end speaks {PROTOCOL_VERSION}")
        if req["n_bits"] != len(self._bits):
            raise LdpcProtocolError(f"key length mismatch: Bob has {req['n_bits']} bits, "
                                    f"Alice has {len(self._bits)}")
        code = get_code(req["rate"], req["n"], req["seed"])
        if req.get("code_digest") != code.digest:
            raise LdpcProtocolError(f"ldpc_setup: code {code.name} differs between the ends (digest "
                                    f"{req.get('code_digest')!r} vs {code.digest!r}); clear the code cache "
                                    f"or align the numpy versions")
        frames, key_bits, long_frames = int(req["frames"]), int(req["key_bits"]), int(req["long_frames"])
        p0 = int(req["punctured"])
        if (frames * key_bits - (frames - long_frames) != len(self._bits) or not 0 < long_frames <= frames
                or not 0 <= p0 <= min(code.max_punctured, code.n - key_bits)):
            raise LdpcProtocolError("ldpc_setup: inconsistent frame layout")
        plan = LdpcPlan(len(self._bits), float("nan"), code.rate_design, code.n, code.m, code.seed, frames,
                        key_bits, long_frames, (p0,))
        keypos, other = _layout(code, key_bits)
        words, _ = _frames_from_key(self._bits, plan, keypos)
        if p0:
            words[:, other[:p0]] = self._random_bits((frames, p0))
        self._plan, self._code, self._keypos, self._words = plan, code, keypos, words
        self._p = np.full(frames, p0, dtype=np.int64)
        return {"type": "ldpc_syndromes", "syndromes": _pack(code.syndromes(words))}

    def _reveal(self, req: dict) -> dict:
        frames = np.asarray(req["frames"], dtype=np.int64)
        p_new = int(req["punctured"])
        if frames.size == 0 or frames.min() < 0 or frames.max() >= self._plan.frames or len(set(frames.tolist())) != len(frames):
            raise LdpcProtocolError("ldpc_reveal: bad frame list")
        p_old = self._p[frames]
        if np.any(p_old != p_old[0]) or not 0 <= p_new < p_old[0]:
            raise LdpcProtocolError("ldpc_reveal: punctured count must decrease, and be equal for all frames")
        pos = self._code.modulation_order[p_new:p_old[0]]
        self._p[frames] = p_new
        return {"type": "ldpc_values", "values": _pack(self._words[np.ix_(frames, pos)])}

    def _verify(self, req: dict) -> dict:
        frames = np.asarray(req["frames"], dtype=np.int64)
        bits = int(req["bits"])
        if frames.size == 0 or frames.min() < 0 or frames.max() >= self._plan.frames or not 1 <= bits <= 64:
            raise LdpcProtocolError("ldpc_verify: bad frame list or hash length")
        theirs = _unpack(req["hashes"], len(frames) * bits, "ldpc_verify").reshape(len(frames), bits)
        mine = _frame_hashes(self._words[np.ix_(frames, self._keypos)], int(req["seed"]), bits)
        return {"type": "ldpc_verified", "mismatch": frames[(mine != theirs).any(axis=1)].tolist()}

    def result(self) -> np.ndarray:
        """Alice's reconciled key: her bits without the frames Bob reported as failed."""
        if self._failed is None:
            raise LdpcProtocolError("result() before ldpc_done")
        keep = np.ones(self._plan.frames, dtype=bool)
        keep[self._failed] = False
        return self._bits[np.repeat(keep, self._plan.frame_sizes)]


# ----------------------------------------------------------------------------------------------
# Bob.
# ----------------------------------------------------------------------------------------------

@dataclass
class LdpcStats:
    """What one reconciliation cost; ``leaked_bits`` is the exact disclosure (see the module doc)."""
    n_bits: int                     # key bits in
    kept_bits: int                  # key bits out (failed frames dropped at both ends)
    discarded_bits: int
    qber_estimate: float
    code: str
    mother_rate: float
    n: int
    m: int
    frames: int
    key_bits_per_frame: int
    punctured_schedule: tuple
    frame_errors: int               # frames dropped: never decoded, or failed the per-frame check
    failed_frames: list
    first_attempt_failures: int
    rounds_histogram: list          # frames decoded at attempt 1, 2, ...
    leaked_bits: int                # syndrome_bits_net + revealed_bits + verify_bits
    syndrome_bits_net: int          # frames * (m - p0)
    revealed_bits: int              # punctured values revealed by the blind retries
    syndrome_bits_sent: int         # frames * m (p0 per frame are hidden by Alice's random padding)
    verify_bits: int
    verify_mismatches: int
    messages: int                   # both directions
    payload_bits_from_alice: int
    decodes: int
    bp_iterations: int
    wire_bytes: int = 0

    @property
    def fer(self) -> float:
        return self.frame_errors / self.frames

    @property
    def rounds(self) -> int:
        """Round trips (one request and one answer each)."""
        return self.messages // 2

    def efficiency(self, qber: float | None = None) -> float:
        """f = leaked_bits / (n_bits h(qber)); by default with the QBER estimate."""
        h = binary_entropy(self.qber_estimate if qber is None else qber)
        return self.leaked_bits / (self.n_bits * h) if h > 0 else float("inf")

    def to_dict(self) -> dict:
        d = {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}
        d.update(method="ldpc", fer=self.fer, rounds=self.rounds, efficiency=self.efficiency())
        return d

_DECODER: dict = {}     # one decoder per process: {"key": (code, max_iter), "dec": ..., "priors": key}


def _decoder(code_key, max_iter, prior_key, priors):
    from ldpc import BpDecoder      # imported lazily: worker processes and callers that only plan
    if _DECODER.get("key") != (code_key, max_iter):
        code = get_code(*code_key)
        _DECODER.clear()
        _DECODER["dec"] = BpDecoder(code.H, error_channel=priors, max_iter=max_iter, bp_method="product_sum",
                                    schedule="parallel", input_vector_type="syndrome")
        _DECODER["key"] = (code_key, max_iter)
        _DECODER["priors"] = prior_key
    elif _DECODER["priors"] != prior_key:
        _DECODER["dec"].update_channel_probs(priors)
        _DECODER["priors"] = prior_key
    return _DECODER["dec"]


def _decode_batch(code_key, max_iter, prior_key, priors, diffs_packed, count, m):
    """Decode ``count`` syndrome differences; returns (packed errors, converged flags, iterations)."""
    dec = _decoder(code_key, max_iter, prior_key, priors)
    diffs = np.unpackbits(np.frombuffer(diffs_packed, dtype=np.uint8), count=count * m).reshape(count, m)
    n = len(priors)
    out = np.zeros((count, n), dtype=np.uint8)
    conv = np.zeros(count, dtype=bool)
    iters = np.zeros(count, dtype=np.int64)
    for i in range(count):
        out[i] = dec.decode(diffs[i])
        conv[i] = dec.converge
        iters[i] = dec.iter
    return np.packbits(out).tobytes(), conv, iters


class LdpcBob:
    """Bob's side: plans, decodes, asks for reveals, reports failures.

    ``reconcile(bob_bits, ask_alice, qber_estimate) -> (corrected, stats)``; ``corrected`` is Bob's key
    with Alice's values, minus the frames that never decoded (Alice drops the same frames).
    """

    def __init__(self, params: LdpcParams = LdpcParams()):
        self.params = params
        self._pool = None

    def close(self):
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def decoder(self) -> str:
        """The decoder in use: "native" (layered, C++) or "bp" (``ldpc`` package, flooding)."""
        d = self.params.decoder
        if d == "auto":
            return "native" if native_available() else "bp"
        if d == "native" and not native_available():
            raise RuntimeError("LdpcParams.decoder = 'native': the C++ kernel could not be built "
                               "(see qkdlink.host.native.load('ldpc')); use decoder='bp'")
        return d

    @property
    def _threads(self) -> int:
        return self.params.threads or max(1, min(2, os.cpu_count() or 1))

    def _map(self, code_key, prior_key, priors, diffs):
        """Decode rows of ``diffs`` (F, m) with the ``ldpc`` package (``decoder="bp"``); in worker
        processes when ``workers > 1``."""
        F, m = diffs.shape
        p = self.params
        if p.workers == 1 or F == 1:
            chunks = [np.arange(F)]
        else:
            if self._pool is None:
                ctx = mp.get_context("forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn")
                self._pool = ProcessPoolExecutor(p.workers, mp_context=ctx)
            chunks = [c for c in np.array_split(np.arange(F), min(F, 4 * p.workers)) if len(c)]
        args = [(code_key, p.max_iter, prior_key, priors, _pack(diffs[c]), len(c), m) for c in chunks]
        if p.workers == 1 or F == 1:
            results = [_decode_batch(*a) for a in args]
        else:
            results = list(self._pool.map(_decode_batch, *zip(*args)))
        n = len(priors)
        errors = np.zeros((F, n), dtype=np.uint8)
        conv = np.zeros(F, dtype=bool)
        iters = np.zeros(F, dtype=np.int64)
        for c, (packed, cv, it) in zip(chunks, results):
            errors[c] = np.unpackbits(np.frombuffer(packed, dtype=np.uint8), count=len(c) * n).reshape(len(c), n)
            conv[c] = cv
            iters[c] = it
        return errors, conv, iters

    def reconcile(self, bob_bits, ask_alice: Callable[[dict], dict], qber_estimate: float):
        bits = _as_bits(bob_bits, "Bob's")
        plan = plan_frames(len(bits), qber_estimate, self.params)
        code = get_code(plan.rate, plan.n, plan.seed)
        code_key = (plan.rate, plan.n, plan.seed)
        keypos, other = _layout(code, plan.key_bits)
        order = code.modulation_order
        q = min(max(float(qber_estimate), QBER_PLAN_MIN), 0.5)
        messages = bits_sent = 0

        def ask(msg):
            nonlocal messages, bits_sent
            messages += 1
            reply = ask_alice(msg)
            messages += 1
            for v in reply.values():
                if isinstance(v, (bytes, bytearray)):
                    bits_sent += 8 * len(v)
            return reply

        reply = ask(plan.to_message())
        if reply.get("type") != "ldpc_syndromes":
            raise LdpcProtocolError(f"expected ldpc_syndromes, got {reply.get('type')!r}")
        s_alice = _unpack(reply["syndromes"], plan.frames * code.m, "ldpc_syndromes").reshape(plan.frames, code.m)

        words, mask = _frames_from_key(bits, plan, keypos)          # punctured and shortened = 0
        done = np.zeros(plan.frames, dtype=bool)
        p_final = np.full(plan.frames, plan.punctured[0], dtype=np.int64)
        rounds_used = np.zeros(plan.frames, dtype=np.int64)
        decodes = bp_iterations = first_failures = 0
        native = self.decoder == "native"
        if native:
            # one decoding problem per frame for all attempts: Bob's punctured and shortened symbols stay 0
            # in ``words``, so the error pattern there is Alice's value; a revealed value becomes a known
            # error bit (LLR +-LLR_CLAMP), and each attempt can continue from the last one's messages
            diffs0 = s_alice ^ code.syndromes(words)
            known = np.zeros((plan.frames, code.n), dtype=np.uint8)
            lq = math.log((1.0 - q) / q)
            state = None
            if self.params.warm_start:
                width = 2 * code.n + int(code.H.nnz)
                if plan.frames * width * 4 <= WARM_START_MAX_BYTES:
                    state = native_state(code, plan.frames)
        for r, p in enumerate(plan.punctured):
            pending = np.flatnonzero(~done)
            if len(pending) == 0:
                break
            if r > 0:
                rep = ask({"type": "ldpc_reveal", "frames": pending.tolist(), "punctured": int(p)})
                if rep.get("type") != "ldpc_values":
                    raise LdpcProtocolError(f"expected ldpc_values, got {rep.get('type')!r}")
                pos = order[p:plan.punctured[r - 1]]
                vals = _unpack(rep["values"], len(pending) * len(pos), "ldpc_values")
                (known if native else words)[np.ix_(pending, pos)] = vals.reshape(len(pending), len(pos))
                p_final[pending] = p
            if native:
                fixed = other[p:]                                   # shortened or revealed: known
                kf = known[np.ix_(pending, fixed)]
                llr = np.full((len(pending), code.n), lq, dtype=np.float32)
                llr[:, other[:p]] = 0.0
                llr[:, fixed] = LLR_CLAMP * (1.0 - 2.0 * kf)
                prm = self.params
                errors, conv, iters = decode_native(
                    code, llr, diffs0[pending], prm.max_iter, prm.check_rule,
                    prm.min_sum_alpha if prm.check_rule == "min-sum" else 0.0, self._threads,
                    0 if r == len(plan.punctured) - 1 else prm.stall_iter,       # last chance: no early give-up
                    state=state, state_rows=pending if state is not None else None,
                    resume=state is not None and r > 0)
                ok = conv & (errors[:, fixed] == kf).all(axis=1)    # known symbols must stay put
            else:
                priors = np.full(code.n, q)
                priors[other[:p]] = 0.5
                priors[other[p:]] = P_SHORTENED
                diffs = s_alice[pending] ^ code.syndromes(words[pending])
                errors, conv, iters = self._map(code_key, (r, p, q), priors, diffs)
                ok = conv & ~errors[:, other[p:]].any(axis=1)      # shortened symbols must stay put
            decodes += len(pending)
            bp_iterations += int(iters.sum())
            good = pending[ok]
            words[good] ^= errors[ok]
            done[good] = True
            rounds_used[pending] = r + 1
            if r == 0:
                first_failures = int((~ok).sum())

        verified = np.flatnonzero(done)
        mismatched = 0
        if self.params.verify_bits and len(verified):
            vb = self.params.verify_bits
            seed = secrets.randbits(63)
            hashes = _frame_hashes(words[np.ix_(verified, keypos)], seed, vb)
            rep = ask({"type": "ldpc_verify", "seed": seed, "bits": vb, "frames": verified.tolist(),
                       "hashes": _pack(hashes)})
            if rep.get("type") != "ldpc_verified":
                raise LdpcProtocolError(f"expected ldpc_verified, got {rep.get('type')!r}")
            bad = np.asarray(rep["mismatch"], dtype=np.int64)
            if bad.size and not np.isin(bad, verified).all():
                raise LdpcProtocolError("ldpc_verified: unknown frame index")
            done[bad] = False
            mismatched = int(bad.size)
        failed = np.flatnonzero(~done)
        ack = ask({"type": "ldpc_done", "failed": failed.tolist()})
        if ack.get("type") != "ldpc_ack":
            raise LdpcProtocolError(f"expected ldpc_ack, got {ack.get('type')!r}")

        keep = done
        corrected = words[:, keypos][mask & keep[:, None]]
        sizes = plan.frame_sizes
        leaked_frames = code.m - p_final
        verify_leak = self.params.verify_bits * len(verified) if self.params.verify_bits else 0
        leaked = int(leaked_frames.sum()) + verify_leak
        revealed = int((plan.punctured[0] - p_final).sum())
        stats = LdpcStats(
            n_bits=plan.n_bits, kept_bits=int(len(corrected)), discarded_bits=int(sizes[~keep].sum()),
            qber_estimate=float(qber_estimate), code=code.name, mother_rate=code.rate, n=code.n, m=code.m,
            frames=plan.frames, key_bits_per_frame=plan.key_bits, punctured_schedule=tuple(plan.punctured),
            frame_errors=int(len(failed)), failed_frames=failed.tolist(), first_attempt_failures=first_failures,
            rounds_histogram=np.bincount(rounds_used[done], minlength=len(plan.punctured) + 1)[1:].tolist(),
            leaked_bits=leaked, syndrome_bits_net=int(plan.frames * (code.m - plan.punctured[0])),
            revealed_bits=revealed, syndrome_bits_sent=int(plan.frames * code.m), verify_bits=int(verify_leak),
            verify_mismatches=mismatched, messages=messages, payload_bits_from_alice=bits_sent,
            decodes=decodes, bp_iterations=bp_iterations)
        return corrected, stats


def wire(alice: Callable[[dict], dict]) -> Callable[[dict], dict]:
    """A channel that sends every message through its byte form (:func:`encode_message`), as an
    authenticated link would; ``ask.bytes`` counts the bytes both ways."""
    def ask(msg: dict) -> dict:
        data = encode_message(msg)
        reply = encode_message(alice(decode_message(data)))
        ask.bytes += len(data) + len(reply)
        return decode_message(reply)
    ask.bytes = 0
    return ask


def reconcile(alice_bits, bob_bits, qber_estimate: float, *, params: LdpcParams = LdpcParams(),
              channel: Callable[[Callable], Callable] | None = wire,
              alice_rng: np.random.Generator | None = None) -> tuple[np.ndarray, "LdpcStats", LdpcAlice]:
    """Run both sides locally: ``(corrected, stats, alice)``, as ``cascade.reconcile``.

    ``corrected`` is Bob's key and ``alice.result()`` Alice's, both without the discarded frames.
    ``channel(alice) -> ask_alice`` may wrap the exchange; the default, :func:`wire`, passes every
    message through its byte form; ``None`` calls Alice directly.
    """
    a = _as_bits(alice_bits, "Alice's")
    b = _as_bits(bob_bits, "Bob's")
    if len(a) != len(b):
        raise ValueError(f"key length mismatch: Alice {len(a)} bits, Bob {len(b)} bits")
    alice = LdpcAlice(a, rng=alice_rng)
    ask = alice if channel is None else channel(alice)
    with LdpcBob(params) as bob:
        corrected, stats = bob.reconcile(b, ask, qber_estimate)
    stats.wire_bytes = int(getattr(ask, "bytes", 0))
    return corrected, stats, alice
