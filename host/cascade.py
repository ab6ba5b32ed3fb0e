"""Cascade information reconciliation, vectorised: the optimised variant and the original.

Cascade (Brassard and Salvail, EUROCRYPT 1993) corrects Bob's sifted key towards Alice's
by interactive parity checks. In each *pass* both sides permute the key with a shared
permutation, cut it into blocks of size ``k_i`` and compare block parities; a block whose
parities differ holds an odd number of errors, and a binary search (BINARY) inside it, asking
Alice for the parity of the left half at each step, finds and flips one of them. A flip in
pass ``i`` makes the blocks of the earlier passes that contain the bit odd again, so they are
searched too (the *cascade*), until every parity Alice disclosed agrees with Bob's key.

Two variants, both implemented by the same engine:

``"optimized"`` (default)
    Martinez-Mateo, Pacher, Peev, Ciurana, Martin, "Demystifying the information
    reconciliation protocol Cascade", Quantum Inf. Comput. 15, 453 (2015), arXiv:1407.3257,
    parameter set "Cascade opt. (8)", with alpha = log2(1/p) - 1/2::

        k1 = 2^ceil(alpha),  k2 = 2^ceil((alpha + 12)/2),  k3 = 4096,  k_i = n/2 (i >= 4)

    14 passes, with sub-block reuse: every parity Alice ever disclosed (the top-level blocks
    and all the halves visited by the binary searches) is kept, and a flip re-opens the
    *smallest* known block that contains it, not the whole top-level block. The block sizes,
    the pass count and the sub-block reuse are as reproduced in Rijsman's cascade-python
    (``cascade/algorithm.py``, algorithm "option8"). On top of that, block parity inference:
    the parity of the whole frame is known after the first pass, so the last block of every
    later pass is inferred, not asked (one parity saved per pass and frame).

``"original"`` (the baseline)
    Brassard–Salvail block sizes ``k1 = ceil(0.73/p)``, ``k_{i+1} = 2 k_i``, 4 passes, a flip
    re-opens the top-level blocks of the earlier passes only, no parity inference.

The interactive exchange is modelled explicitly. :class:`CascadeAlice` holds Alice's key and
does nothing but answer parity queries. :class:`Cascade` is Bob: it drives the protocol
through a callable ``ask_alice(query) -> answer``, where both messages are plain data
(dicts of ints and integer arrays or lists), so the key-distillation pipeline can wrap them
in authentication or send them over a socket. A query bundles every parity Bob needs in one
round (all blocks of all passes in the first message, then one binary-search step of every
open block), so ``rounds`` counts round trips; ``leaked_bits`` counts every parity Alice
discloses (inferred parities are not disclosed and not counted). Efficiency is measured, not
assumed: ``f = leaked_bits / (n h(QBER))`` with the QBER of the actual errors
(:func:`reconciliation_efficiency`).

Schedule: textbook Cascade runs one binary search at a time, always in the smallest odd
block, which costs a round trip per parity. Here every open search advances one level per
round, and the schedule only decides which odd blocks wait. ``"chain"`` (default): the
blocks re-opened by one chain of corrections are searched smallest first, as sequential
Cascade would (a correction in the small block often makes the bigger one even before anyone
pays to search it), distinct chains in parallel; at n = 10^4 it takes up to about 1.5x the
rounds of ``"parallel"``: all at once (fewest rounds, but measured f about 0.02-0.06 higher
at n = 10^4; both are the same within 0.01 at n >= 10^5). ``"frame"``: a frame
searches only its smallest open blocks (closest to sequential Cascade; f about 0.005 lower
than "chain", but 1.5-2x the rounds at n = 10^4 and 5-30x for frames of 10^5-10^6 bits).

Speed (numpy, no Python loop over bits or blocks): Bob keeps his bits in the padded,
permuted order of each pass, so a block or half-block is an aligned run of bytes whose
parity is a 64-bit XOR fold, and all block parities of a pass come from one gather (packed
masks for the late passes with a few big blocks). The binary searches of every open block,
in every frame and pass, advance one level per round in lock-step (one message per round).
A flip finds the smallest known block that contains it in every earlier pass in O(1): a
per-bit level map for the early passes (many small blocks), a sorted list for the late ones.
A 2-D input is a batch of frames reconciled together: blocks never cross a frame and each
frame moves to its next pass as soon as its own searches are done, so the exchange of every
frame is exactly what it would be alone, the batch needs about as many rounds as its slowest
frame, and the per-round cost of Python is shared by all of them.

Two engines, one protocol (``engine=`` of :class:`Cascade` and :class:`CascadeAlice`):
``"numpy"`` is the reference described above; ``"native"`` (the default where it applies,
through ``"auto"``) is the C++ kernel ``host/native/cascade.cpp``, which runs the same rounds
with other data structures: per block a heap-indexed tree of the known nodes (bit 0 the
mismatch of a leaf, bit 1 "split") and, for blocks of 65-4096 bits, a map from each position
to the depth of its leaf (a flip finds the leaf to toggle in one load); both parties' keys
packed in the order of each pass (built by SIMD gathers when a pass starts, or once the ranges
asked in it reach n/2 bits), so a range parity is a few words for Bob and, with a prefix
parity of the words, O(1) for Alice; Bob's top-level parities from those copies (packed
block masks and popcount for passes of at most 8 blocks); and the frames of a batch split
over two threads, each with its own state (Alice's answers too), the requests of a round
merged back into the reference order. Both engines send message for message the same
queries (tests check this), so every number above holds for both; Python keeps only the
round trip (Bob prepares a round, ``ask_alice`` answers, Bob checks and applies the answers),
so the exchange stays interactive and can be authenticated. The native engine covers
sub-block reuse (the optimised variant) and batches of fewer than 2^31 bits; ``"original"``
runs on numpy.

The permutation of pass ``j`` depends only on ``(seed, n, j)``; pass 0 keeps the key order
(channel errors are independent of position; shuffle the sifted key first if they come in
bursts). Permutations are public, so they may be reused for many frames and are cached.
"""
from __future__ import annotations

import math
import os
import threading
import weakref
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable

import numpy as np

__all__ = ["Cascade", "CascadeAlice", "CascadeStats", "ENGINES", "SCHEDULES", "VARIANTS", "binary_entropy",
           "native_available",
           "optimized_block_sizes", "original_block_sizes", "pass_permutation",
           "reconciliation_efficiency", "reconcile"]

VARIANTS = ("optimized", "original")
SCHEDULES = ("chain", "parallel", "frame")
PROTOCOL = "cascade/1"
MAX_PASSES = 64
# Passes with at least this many blocks per frame, or blocks of at most _DENSE_MAX_K bits,
# keep dense per-bit state (and Alice a prefix-XOR of the permuted key); the others (the
# few big blocks of the late passes) use packed masks and sparse state.
_DENSE_MIN_BLOCKS = 4
_DENSE_MAX_K = 4096

Query = dict
Answer = dict


# ----------------------------------------------------------------------------- math helpers

def binary_entropy(p: float) -> float:
    """h(p) = -p log2 p - (1-p) log2 (1-p), with h(0) = h(1) = 0."""
    if p <= 0.0 or p >= 1.0:
        return 0.0
    return -p * math.log2(p) - (1.0 - p) * math.log2(1.0 - p)


def reconciliation_efficiency(leaked_bits: float, n_bits: int, qber: float) -> float:
    """f = leaked / (n h(QBER)): 1 is the Slepian–Wolf limit; ``qber`` is the actual error rate."""
    h = binary_entropy(qber)
    if n_bits <= 0 or h == 0.0:
        return math.inf if leaked_bits > 0 else 1.0
    return leaked_bits / (n_bits * h)


def _check_qber(qber_estimate) -> float:
    try:
        p = float(qber_estimate)
    except (TypeError, ValueError):
        raise ValueError(f"qber_estimate = {qber_estimate!r}: must be a number in (0, 0.5)") from None
    if not (0.0 < p < 0.5):
        raise ValueError(f"qber_estimate = {p}: must be in (0, 0.5) (exclusive); Cascade needs an "
                         "estimate of the error rate to choose its block sizes")
    return p


def optimized_block_sizes(qber_estimate: float, n: int, n_passes: int = 14) -> tuple[int, ...]:
    """Block sizes of "Cascade opt. (8)" (Martinez-Mateo et al. 2015, arXiv:1407.3257).

    alpha = log2(1/p) - 1/2; k1 = 2^ceil(alpha), k2 = 2^ceil((alpha+12)/2), k3 = 4096,
    k_i = ceil(n/2) for i >= 4; every size is clipped to [1, ceil(n/2)].
    """
    p = _check_qber(qber_estimate)
    alpha = math.log2(1.0 / p) - 0.5
    half = max(1, -(-n // 2))
    ks = [2 ** math.ceil(alpha), 2 ** math.ceil((alpha + 12.0) / 2.0), 4096]
    ks += [half] * max(0, n_passes - 3)
    return tuple(int(min(max(k, 1), half)) for k in ks[:n_passes])


def original_block_sizes(qber_estimate: float, n: int, n_passes: int = 4) -> tuple[int, ...]:
    """Brassard–Salvail 1993: k1 = ceil(0.73/p), k_{i+1} = 2 k_i, clipped to [1, n]."""
    p = _check_qber(qber_estimate)
    k1 = math.ceil(0.73 / p)
    return tuple(int(min(max(k1 << i, 1), n)) for i in range(n_passes))


# ----------------------------------------------------------------------------- permutations

class _Permutations:
    """perm[j] (pass order -> key index) and inv[j] for passes 0..P-1 of an n-bit frame."""

    def __init__(self, seed: int, n: int):
        self.seed, self.n = seed, n
        self.perm = np.arange(n, dtype=np.int32)[None, :]
        self.inv = self.perm

    def ensure(self, passes: int) -> None:
        have = self.perm.shape[0]
        if passes <= have:
            return
        rows = [_random_permutation(self.seed, self.n, j) for j in range(have, passes)]
        perm = np.concatenate([self.perm, np.stack(rows)])
        inv = np.empty_like(perm)
        inv[:have] = self.inv
        ar = np.arange(self.n, dtype=np.int32)
        for j in range(have, passes):
            inv[j, perm[j]] = ar
        perm.setflags(write=False)
        inv.setflags(write=False)
        self.perm, self.inv = perm, inv


def _random_permutation(seed: int, n: int, j: int) -> np.ndarray:
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, n, j])))
    return rng.permutation(n).astype(np.int32)


@lru_cache(maxsize=4)
def _permutations(seed: int, n: int) -> _Permutations:
    return _Permutations(seed, n)


def _perms(seed: int, n: int, passes: int) -> _Permutations:
    p = _permutations(seed, n)
    p.ensure(passes)
    return p


def pass_permutation(seed: int, n: int, pass_index: int) -> np.ndarray:
    """The shared permutation of pass ``pass_index``: position q of the pass order holds key bit
    ``perm[q]``. Pass 0 is the identity; pass j >= 1 is numpy's PCG64 ``permutation(n)`` seeded
    with ``SeedSequence([seed, n, j])``. Read-only, cached."""
    seed = _check_seed(seed)
    if pass_index < 0:
        raise ValueError(f"pass_index = {pass_index}: must be >= 0")
    return _perms(seed, int(n), pass_index + 1).perm[pass_index]


def _check_seed(seed) -> int:
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed = {seed!r}: must be a non-negative integer shared by Alice and Bob")
    return int(seed)


@dataclass(frozen=True)
class _Layout:
    """Geometry of one pass: block size k, nb blocks per frame (the last has `last` bits),
    each block padded to K = 2^m virtual positions, V = nb*K virtual positions per frame."""
    k: int
    nb: int
    last: int
    K: int
    m: int
    V: int
    dense: bool


def _layout(n: int, k: int) -> _Layout:
    nb = -(-n // k)
    m = max(0, (k - 1).bit_length())
    K = 1 << m
    return _Layout(k, nb, n - (nb - 1) * k, K, m, nb * K, nb >= _DENSE_MIN_BLOCKS or K <= _DENSE_MAX_K)


@lru_cache(maxsize=16)
def _virtual_perm(seed: int, n: int, j: int, k: int) -> np.ndarray:
    """Key index at each virtual position of pass j (n for padding): int32, length nb*K."""
    lay = _layout(n, k)
    v = np.arange(lay.V, dtype=np.int64)
    blk, off = v >> lay.m, v & (lay.K - 1)
    blen = np.where(blk == lay.nb - 1, lay.last, lay.k)
    q = np.minimum(blk * lay.k + off, n - 1)
    out = np.where(off < blen, _perms(seed, n, j + 1).perm[j][q], n).astype(np.int32)
    out.setflags(write=False)
    return out


@lru_cache(maxsize=32)
def _block_masks(seed: int, n: int, j: int, k: int) -> np.ndarray:
    """Packed (little-endian uint64) membership masks of the nb blocks of pass j: (nb, W)."""
    lay = _layout(n, k)
    blk = _perms(seed, n, j + 1).inv[j] // k
    masks = np.stack([_pack((blk == b)[None, :].view(np.uint8))[0] for b in range(lay.nb)])
    masks.setflags(write=False)
    return masks


def _pack(bits2d: np.ndarray) -> np.ndarray:
    """(F, n) 0/1 uint8 -> (F, ceil(n/64)) uint64, bit x of a row at word x>>6, bit x&63."""
    packed = np.packbits(bits2d, axis=1, bitorder="little")
    pad = (-packed.shape[1]) % 8
    if pad:
        packed = np.concatenate([packed, np.zeros((packed.shape[0], pad), np.uint8)], axis=1)
    return np.ascontiguousarray(packed).view("<u8").astype(np.uint64, copy=False)


def _parity64(w: np.ndarray) -> np.ndarray:
    """Parity of each uint64 word, as uint8."""
    if hasattr(np, "bitwise_count"):
        return (np.bitwise_count(w) & 1).astype(np.uint8)
    w = w.copy()
    for s in (32, 16, 8, 4, 2, 1):
        w ^= w >> np.uint64(s)
    return (w & np.uint64(1)).astype(np.uint8)


def _row_parity(a: np.ndarray) -> np.ndarray:
    """Parity of every row of a C-contiguous 0/1 uint8 matrix whose row length is 2^t."""
    L = a.shape[1]
    if L >= 8:
        w = a.view(np.uint64)
        while w.shape[1] > 1:
            h = w.shape[1] >> 1
            w = w[:, :h] ^ w[:, h:]
        return _parity64(w[:, 0])
    return a.sum(axis=1, dtype=np.uint8) & np.uint8(1)


def _xor_ranges(a: np.ndarray, start: np.ndarray, length: np.ndarray) -> np.ndarray:
    """XOR of a[start:start+length] for many ranges (length >= 1), as uint64."""
    if length.size and (length == length[0]).all():
        L = int(length[0])
        if L == 1:
            return a[start].astype(np.uint64)
        return np.bitwise_xor.reduce(a[start[:, None] + np.arange(L)], axis=1).astype(np.uint64)
    first = np.cumsum(length) - length
    idx = np.arange(int(length.sum()), dtype=np.int64) + np.repeat(start - first, length)
    return np.bitwise_xor.reduceat(a[idx], first).astype(np.uint64)


def _range_parities(bits2d: np.ndarray, perm: np.ndarray, frame: np.ndarray, start: np.ndarray,
                    stop: np.ndarray) -> np.ndarray:
    """Parity of bits2d[frame, perm[start:stop]] for many ranges (direct gather)."""
    ln = stop - start
    total = int(ln.sum())
    first = np.cumsum(ln) - ln
    pos = np.arange(total, dtype=np.int64) + np.repeat(start - first, ln)
    vals = bits2d[np.repeat(frame, ln), perm[pos]]
    return np.add.reduceat(vals, first, dtype=np.uint8) & np.uint8(1) if total else \
        np.zeros(0, np.uint8)


def _levels(d: np.ndarray) -> list[int]:
    """Distinct small non-negative ints in d (levels of binary-search nodes)."""
    if d.size == 0:
        return []
    return np.flatnonzero(np.bincount(d)).tolist()


def _unique(a: np.ndarray) -> np.ndarray:
    if a.size < 2:
        return a
    a = np.sort(a)
    keep = np.empty(a.size, bool)
    keep[0] = True
    np.not_equal(a[1:], a[:-1], out=keep[1:])
    return a[keep]


def _as_bits(x, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim not in (1, 2):
        raise ValueError(f"{name}: must be a 1-D key or a 2-D batch (frames, n), got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{name}: empty key (shape {a.shape}); need at least one bit per frame")
    if a.dtype != np.uint8:
        if a.dtype.kind not in "biu":
            raise ValueError(f"{name}: dtype {a.dtype} is not a bit array (bool or integer 0/1)")
        if a.dtype.kind != "b" and ((a < 0) | (a > 1)).any():
            raise ValueError(f"{name}: values must be 0 or 1")
        a = a.astype(np.uint8)
    elif (a > 1).any():
        raise ValueError(f"{name}: values must be 0 or 1")
    return a


# ----------------------------------------------------------------------------- native engine

ENGINES = ("auto", "native", "numpy")
_SCHEDULE_CODE = {"parallel": 0, "chain": 1, "frame": 2}
_MASK_MAX_BLOCKS = 8          # passes with at most this many blocks: packed masks, AND + popcount


@lru_cache(maxsize=1)
def _native_lib():
    """The C++ kernel ``host/native/cascade.cpp`` (compiled once, cached); None if unavailable."""
    import ctypes
    from qkdlink.host.native import NativeBuildError, load
    try:
        lib = load("cascade")
    except NativeBuildError:
        return None
    P, I64, I = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    lib.cas_alice_new.argtypes = [P, I64, I64]
    lib.cas_alice_new.restype = P
    lib.cas_alice_free.argtypes = [P]
    lib.cas_alice_free.restype = None
    lib.cas_alice_tables.argtypes = [P, I, P, P, P, P, P, P, I]
    lib.cas_alice_tables.restype = None
    lib.cas_alice_ranges.argtypes = [P, P, I64, I64, P, P, P, P, P, I]
    lib.cas_alice_ranges.restype = I64
    lib.cas_bob_new.argtypes = [I64, I64, I, P, P, P, P, P, P, I, I]
    lib.cas_bob_new.restype = P
    lib.cas_bob_free.argtypes = [P]
    lib.cas_bob_free.restype = None
    lib.cas_bob_start.argtypes = [P, P]
    lib.cas_bob_start.restype = None
    lib.cas_bob_open.argtypes = [P]
    lib.cas_bob_open.restype = I64
    lib.cas_bob_prepare.argtypes = [P, P, P, P, P]
    lib.cas_bob_prepare.restype = I64
    lib.cas_bob_finish.argtypes = [P, P, I64]
    lib.cas_bob_finish.restype = I64
    lib.cas_bob_result.argtypes = [P, P, P, P]
    lib.cas_bob_result.restype = None
    return lib


def native_available() -> bool:
    """True if the C++ Cascade kernel compiled and loaded on this machine."""
    return _native_lib() is not None


def _check_engine(engine: str) -> bool:
    """Whether to use the native kernel for ``engine`` (one of :data:`ENGINES`)."""
    if engine not in ENGINES:
        raise ValueError(f"engine = {engine!r}: must be one of {ENGINES}")
    if engine == "numpy":
        return False
    if _native_lib() is None:
        if engine == "native":
            raise RuntimeError("engine = 'native': the C++ Cascade kernel could not be built "
                               "(see qkdlink.host.native.load('cascade'))")
        return False
    return True


def _ptr(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]


@lru_cache(maxsize=8)
def _native_masks(seed: int, n: int, passes: tuple[tuple[int, int], ...]):
    """Packed block masks of the (pass, block size) pairs with few blocks, concatenated, and the
    word offset of each pair (-1: no mask, the kernel scatters through the permutation)."""
    W = -(-n // 64)
    parts, off, at = [], [], 0
    for j, k in passes:
        nb = -(-n // k)
        if j > 0 and nb <= _MASK_MAX_BLOCKS:
            parts.append(_block_masks(seed, n, j, k).reshape(-1))
            off.append(at)
            at += nb * W
        else:
            off.append(-1)
    masks = np.ascontiguousarray(np.concatenate(parts)) if parts else np.zeros(1, np.uint64)
    return masks, np.array(off, np.int64)


@lru_cache(maxsize=1)
def _native_threads() -> int:
    return 2 if (os.cpu_count() or 1) >= 2 else 1


# ----------------------------------------------------------------------------- Alice

class CascadeAlice:
    """Alice's side: holds her key (one frame, or a (frames, n) batch) and answers parity queries.

    A query is ``{"protocol", "n", "frames", "seed", "requests": [...]}``; each request is
    either ``{"kind": "blocks", "pass": j, "block_size": k, "frame": [...], "block": [...]}``
    (the parity of block b of the pass-j order cut into blocks of k) or
    ``{"kind": "ranges", "pass": [...], "frame": [...], "start": [...], "stop": [...]}``
    (the parity of positions start..stop-1 of the pass order). The answer is
    ``{"parities": [uint8 array per request]}``. ``parities_disclosed`` counts every parity
    answered, ``queries_answered`` the messages. ``engine`` ("auto", "native", "numpy")
    chooses how the parities are computed (the C++ kernel or numpy); the answers are the same.
    """

    def __init__(self, alice_bits, seed: int, *, engine: str = "auto"):
        self._native = _check_engine(engine)
        self._tables: dict[tuple[int, int], np.ndarray] = {}
        self._native_rows = 1                        # passes whose permutation the kernel gets
        a = _as_bits(alice_bits, "alice_bits")
        self.single = a.ndim == 1
        self._bits = np.ascontiguousarray(a.reshape(1, -1) if self.single else a)
        self.frames, self.n = self._bits.shape
        self.seed = _check_seed(seed)
        self.parities_disclosed = 0
        self.queries_answered = 0
        self._prefix: dict[int, np.ndarray] = {}
        self._gathered: dict[int, int] = {}      # bits gathered directly per pass (no prefix yet)
        self._packed = None
        self._handle = None                      # native: Alice's key and its copies in pass order
        self._rq = self._rq_out = self._rq_ptrs = None   # native: request and answer buffers
        self._perm, self._perm_rows, self._perm_ptr = None, 0, 0
        self._lock = threading.Lock()            # the kernel's state is not shared between threads

    def __getstate__(self):
        """Copies and pickles carry the key, not the kernel's handle (rebuilt on first use)."""
        state = dict(self.__dict__)
        state["_handle"], state["_lock"] = None, None
        state["_rq"] = state["_rq_out"] = state["_rq_ptrs"] = state["_perm"] = None
        state["_perm_rows"], state["_perm_ptr"] = 0, 0
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _native_handle(self):
        """The kernel's copy of Alice's key (packed, with the pass orders built on demand)."""
        if self._handle is None:
            lib = _native_lib()
            h = lib.cas_alice_new(_ptr(self._bits), self.frames, self.n)
            if not h:
                raise MemoryError(f"native Cascade: no memory for Alice's {self.frames} frame(s) of "
                                  f"n = {self.n} bits")
            self._handle = h
            weakref.finalize(self, lib.cas_alice_free, h)
        return self._handle

    def __call__(self, query: Query) -> Answer:
        return self.answer(query)

    def answer(self, query: Query) -> Answer:
        if not isinstance(query, dict) or "requests" not in query:
            raise ValueError("Cascade query must be a dict with 'requests'")
        if query.get("protocol", PROTOCOL) != PROTOCOL:
            raise ValueError(f"protocol {query.get('protocol')!r}: Alice speaks {PROTOCOL!r}")
        n, frames = int(query.get("n", -1)), int(query.get("frames", -1))
        if n != self.n or frames != self.frames:
            raise ValueError(f"length mismatch: Bob has {frames} frame(s) of n = {n} bits, Alice has "
                             f"{self.frames} frame(s) of n = {self.n} bits")
        if "seed" in query and int(query["seed"]) != self.seed:
            raise ValueError(f"seed mismatch: Bob uses seed {query['seed']}, Alice {self.seed}; the "
                             "permutations must be shared")
        with self._lock:
            out = []
            if self._native:
                self._native_tables(query["requests"])
            for req in query["requests"]:
                kind = req.get("kind")
                if kind == "blocks":
                    par = self._blocks(req)
                elif kind == "ranges":
                    par = self._ranges(req)
                else:
                    raise ValueError(f"unknown request kind {kind!r}: expected 'blocks' or 'ranges'")
                self.parities_disclosed += int(par.size)
                out.append(par)
            self.queries_answered += 1
        return {"parities": out}

    # -- internals
    def _frames(self, req) -> np.ndarray:
        f = np.asarray(req["frame"], dtype=np.int64).reshape(-1)
        if f.size and (f.min() < 0 or f.max() >= self.frames):
            raise ValueError(f"frame index out of range [0, {self.frames})")
        return f

    def _pass(self, j) -> int:
        j = int(j)
        if not 0 <= j < MAX_PASSES:
            raise ValueError(f"pass = {j}: must be in [0, {MAX_PASSES})")
        return j

    def _prefix_xor(self, j: int) -> np.ndarray:
        cx = self._prefix.get(j)
        if cx is None:
            perm = _perms(self.seed, self.n, j + 1).perm[j]
            a = self._bits if j == 0 else np.take(self._bits, perm, axis=1)
            cx = np.zeros((self.frames, self.n + 1), np.uint8)
            np.bitwise_xor.accumulate(a, axis=1, out=cx[:, 1:])
            self._prefix[j] = cx
        return cx

    def _blocks(self, req) -> np.ndarray:
        j = self._pass(req["pass"])
        k = int(req["block_size"])
        if not 1 <= k <= self.n:
            raise ValueError(f"block_size = {k}: must be in [1, n = {self.n}]")
        f = self._frames(req)
        b = np.asarray(req["block"], dtype=np.int64).reshape(-1)
        if b.size != f.size:
            raise ValueError("blocks request: 'frame' and 'block' differ in length")
        lay = _layout(self.n, k)
        if b.size and (b.min() < 0 or b.max() >= lay.nb):
            raise ValueError(f"block index out of range [0, {lay.nb}) for block_size {k}")
        if (j, k) in self._tables:
            return self._tables[j, k][f, b]
        if not lay.dense:
            if self._packed is None:
                self._packed = _pack(self._bits)
            masks = _block_masks(self.seed, self.n, j, k)
            table = _parity64(np.bitwise_xor.reduce(self._packed[:, None, :] & masks[None], axis=2))
            return table[f, b]
        cx = self._prefix_xor(j)
        start = b * k
        return cx[f, np.minimum(start + k, self.n)] ^ cx[f, start]

    def _native_tables(self, requests) -> None:
        """Native engine: all top-level parity tables a message asks for, in one sweep of the key."""
        need = []
        for req in requests:
            if isinstance(req, dict) and req.get("kind") == "blocks":
                try:
                    j, k = self._pass(req["pass"]), int(req["block_size"])
                except (KeyError, TypeError, ValueError):
                    continue                         # reported by _blocks
                if 1 <= k <= self.n and (j, k) not in self._tables and (j, k) not in need:
                    need.append((j, k))
        if not need:
            return
        P = max(j for j, _ in need) + 1
        perm = _perms(self.seed, self.n, P).perm
        self._native_rows = max(self._native_rows, P)
        masks, moff = _native_masks(self.seed, self.n, tuple(need))
        rows = np.array([j for j, _ in need], np.int64)
        ks = np.array([k for _, k in need], np.int64)
        nbs = [-(-self.n // k) for _, k in need]
        out = np.empty(self.frames * sum(nbs), np.uint8)
        _native_lib().cas_alice_tables(self._native_handle(), len(need), _ptr(rows), _ptr(ks), _ptr(perm),
                                       _ptr(masks), _ptr(moff), _ptr(out), _native_threads())
        at = 0
        for (j, k), nb in zip(need, nbs):
            self._tables[j, k] = out[at:at + self.frames * nb].reshape(self.frames, nb)
            at += self.frames * nb

    def _ranges(self, req) -> np.ndarray:
        if self._native:
            return self._native_ranges(req)
        f = self._frames(req)
        j = np.asarray(req["pass"], dtype=np.int64).reshape(-1)
        s = np.asarray(req["start"], dtype=np.int64).reshape(-1)
        e = np.asarray(req["stop"], dtype=np.int64).reshape(-1)
        if not (j.size == f.size == s.size == e.size):
            raise ValueError("ranges request: 'pass', 'frame', 'start', 'stop' differ in length")
        if f.size == 0:
            return np.zeros(0, np.uint8)
        if j.min() < 0 or s.min() < 0 or e.max() > self.n or (e <= s).any():
            raise ValueError(f"ranges request: need pass >= 0 and 0 <= start < stop <= n = {self.n}")
        if j.max() >= MAX_PASSES:
            raise ValueError(f"pass = {j.max()}: must be < {MAX_PASSES}")
        out = np.empty(f.size, np.uint8)
        passes = _levels(j)
        for jj in passes:
            sel = slice(None) if len(passes) == 1 else np.flatnonzero(j == jj)
            fs, ss, es = f[sel], s[sel], e[sel]
            # gather directly until that has cost about as much as a prefix-XOR of the pass
            done = self._gathered.get(jj, 0) + int((es - ss).sum())
            if jj in self._prefix or done * 4 >= self.frames * self.n:
                cx = self._prefix_xor(jj)
                out[sel] = cx[fs, es] ^ cx[fs, ss]
            else:
                self._gathered[jj] = done
                perm = _perms(self.seed, self.n, jj + 1).perm[jj]
                out[sel] = _range_parities(self._bits, perm, fs, ss, es)
        return out


    def _native_ranges(self, req) -> np.ndarray:
        """``ranges`` on the C++ kernel, which also checks every request. This runs once per
        round, so the request goes through persistent buffers whose addresses are known (no
        per-call numpy conversions or address look-ups)."""
        try:
            cols = [req[k] for k in ("pass", "frame", "start", "stop")]
            m = len(cols[0])
            same = all(len(c) == m for c in cols[1:])
        except TypeError:
            raise ValueError("ranges request: 'pass', 'frame', 'start', 'stop' must be 1-D integer "
                             "arrays") from None
        if not same:
            raise ValueError("ranges request: 'pass', 'frame', 'start', 'stop' differ in length")
        if not m:
            return np.zeros(0, np.uint8)
        if self._rq is None or self._rq.shape[1] < m:
            self._rq = np.empty((4, max(m, 2 * (0 if self._rq is None else self._rq.shape[1]))), np.int64)
            self._rq_out = np.empty(self._rq.shape[1], np.uint8)
            self._rq_ptrs = tuple(_ptr(r) for r in self._rq) + (_ptr(self._rq_out),)
        rq = self._rq
        try:
            for r, c in zip(rq, cols):
                r[:m] = c
        except (ValueError, TypeError, OverflowError):
            raise ValueError("ranges request: 'pass', 'frame', 'start', 'stop' must be 1-D integer "
                             "arrays of the same length") from None
        h = self._native_handle()
        pj, pf, ps, pe, pout = self._rq_ptrs
        while True:
            if self._perm_rows != self._native_rows:
                self._perm = _perms(self.seed, self.n, self._native_rows).perm   # (kept alive here)
                self._perm_rows, self._perm_ptr = self._native_rows, _ptr(self._perm)
            bad = _native_lib().cas_alice_ranges(h, self._perm_ptr, self._perm_rows, m, pj, pf, ps, pe,
                                                 pout, _native_threads())
            if bad < 0:
                return self._rq_out[:m].copy()
            i, kind = divmod(int(bad), 4)
            if kind == 0:
                raise ValueError(f"frame index out of range [0, {self.frames})")
            if kind == 1:
                raise ValueError(f"ranges request: need pass >= 0 and 0 <= start < stop <= n = {self.n}")
            j = rq[0, :m]
            if not 0 <= j[i] < MAX_PASSES:
                raise ValueError(f"pass = {j[i]}: must be in [0, {MAX_PASSES})")
            self._native_rows = int(j.max()) + 1            # kind 3: a pass not generated yet


# ----------------------------------------------------------------------------- Bob

@dataclass
class CascadeStats:
    """What one reconciliation cost. ``leaked_bits`` is summed over the frames of a batch."""
    variant: str
    n_bits: int
    frames: int
    qber_estimate: float
    block_sizes: tuple[int, ...]
    leaked_bits: int
    rounds: int
    corrected_bits: int
    leaked_bits_per_frame: np.ndarray = field(repr=False)
    corrected_bits_per_frame: np.ndarray = field(repr=False)

    @property
    def passes(self) -> int:
        return len(self.block_sizes)

    @property
    def messages(self) -> int:
        """Classical messages: one query and one answer per round."""
        return 2 * self.rounds

    def efficiency(self, qber: float) -> float:
        """f = leaked / (frames n h(qber)) for the given (actual) error rate."""
        return reconciliation_efficiency(self.leaked_bits, self.frames * self.n_bits, qber)

    def observed_efficiency(self) -> float:
        """f with the QBER Bob observed (his corrections), which is the actual one when he succeeds."""
        return reconciliation_efficiency(self.leaked_bits, self.frames * self.n_bits,
                                         self.corrected_bits / (self.frames * self.n_bits))

    def to_dict(self) -> dict:
        return {"variant": self.variant, "n_bits": self.n_bits, "frames": self.frames,
                "qber_estimate": self.qber_estimate, "block_sizes": list(self.block_sizes),
                "passes": self.passes, "leaked_bits": self.leaked_bits, "rounds": self.rounds,
                "messages": self.messages, "corrected_bits": self.corrected_bits}


class Cascade:
    """Bob's side of Cascade (he drives; Alice only answers through ``ask_alice``).

    ``Cascade(variant="optimized", seed=0)``; ``n_passes``, ``subblock_reuse`` and
    ``block_parity_inference`` override the variant's defaults, ``schedule`` is one of
    :data:`SCHEDULES` (see the module docstring). ``seed`` must be Alice's. ``engine``: "native"
    (the C++ kernel), "numpy" (the reference), or "auto" (native where it applies: with
    sub-block reuse, i.e. the optimised variant; numpy otherwise or if g++ is missing). Both
    engines send the same messages and return the same keys and statistics.
    """

    def __init__(self, variant: str = "optimized", seed: int = 0, *, n_passes: int | None = None,
                 subblock_reuse: bool | None = None, block_parity_inference: bool | None = None,
                 schedule: str = "chain", engine: str = "auto"):
        if variant not in VARIANTS:
            raise ValueError(f"variant = {variant!r}: must be one of {VARIANTS}")
        self.variant = variant
        self.seed = _check_seed(seed)
        default_passes = 14 if variant == "optimized" else 4
        self.n_passes = default_passes if n_passes is None else int(n_passes)
        if not 1 <= self.n_passes <= MAX_PASSES:
            raise ValueError(f"n_passes = {n_passes}: must be in [1, {MAX_PASSES}]")
        opt = variant == "optimized"
        self.subblock_reuse = opt if subblock_reuse is None else bool(subblock_reuse)
        self.block_parity_inference = opt if block_parity_inference is None else bool(block_parity_inference)
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule = {schedule!r}: must be one of {SCHEDULES}")
        self.schedule = schedule
        if engine == "native" and not self.subblock_reuse:
            raise ValueError("engine = 'native' implements Cascade with sub-block reuse only; use "
                             "engine='numpy' (or 'auto') with subblock_reuse=False")
        self.engine = engine
        self._native = _check_engine(engine) and self.subblock_reuse

    def block_sizes(self, n: int, qber_estimate: float) -> tuple[int, ...]:
        if self.variant == "optimized":
            return optimized_block_sizes(qber_estimate, n, self.n_passes)
        return original_block_sizes(qber_estimate, n, self.n_passes)

    def reconcile(self, bob_bits, ask_alice: Callable[[Query], Answer], qber_estimate: float
                  ) -> tuple[np.ndarray, CascadeStats]:
        """Correct ``bob_bits`` (1-D key or 2-D batch (frames, n)) towards Alice's key.

        Returns the corrected bits (same shape, uint8) and a :class:`CascadeStats`.
        """
        if not callable(ask_alice):
            raise TypeError("ask_alice must be callable: query -> answer")
        p = _check_qber(qber_estimate)
        b = _as_bits(bob_bits, "bob_bits")
        single = b.ndim == 1
        b2 = b.reshape(1, -1) if single else b
        session = (_NativeBobSession if self._native else _BobSession)(self, b2, ask_alice, p)
        corrected = session.run()
        return (corrected[0] if single else corrected), session.stats()


class _BobSession:
    """One reconciliation: Bob's key, his view of every disclosed parity, the open searches.

    Every pass has a virtual address range: frame f, block b, offset o of pass j lives at
    ``base_j + (f nb_j + b) K_j + o`` (blocks padded to K_j = 2^m_j), so every node of a
    binary search is an aligned range [g, g + 2^d). A *leaf* is a known block whose halves are
    not known; the leaves of a pass partition it, and each has a mismatch bit (Bob's parity
    xor Alice's). Dense passes keep the leaf level per address (``lvl``) and the mismatch at
    the leaf start (``mis``); sparse passes (a few big blocks) keep their top-level blocks in
    ``tmis`` until split, and the leaves of split blocks in a sorted list. The open searches
    are the odd leaves: ``(Wg, Wp, Wd)`` = (start, pass, level). Without sub-block reuse (the
    original protocol) the leaves are the top-level blocks only and ``(Wg, Wp, Wd)`` are the
    current nodes of the searches.
    """

    # columns of the per-pass table
    _BASE, _V, _KM1, _M, _K, _NBM1, _LAST = range(7)

    def __init__(self, cfg: Cascade, bits2d: np.ndarray, ask: Callable, qber: float):
        self.cfg, self.ask_alice, self.qber = cfg, ask, qber
        self.F, self.n = F, n = bits2d.shape
        self.ks = cfg.block_sizes(n, qber)
        self.P = P = len(self.ks)
        self.seed = cfg.seed
        self.reuse = cfg.subblock_reuse
        self.bpi = cfg.block_parity_inference
        self.schedule = cfg.schedule
        self.perms = _perms(self.seed, n, P)
        self.bits = np.zeros((F, n + 1), np.uint8)       # column n: the padding bit, always 0
        self.bits[:, :n] = bits2d
        self.lays = lays = [_layout(n, k) for k in self.ks]
        self.m = np.array([l.m for l in lays], np.int64)
        self.dense = np.array([l.dense for l in lays], bool)
        # address layout: dense passes first (they own the leaf arrays, [0, D)), then sparse
        base = np.zeros(P, np.int64)
        addr = 0
        for j in [j for j in range(P) if lays[j].dense]:
            addr = -(-addr // lays[j].K) * lays[j].K
            base[j] = addr
            addr += F * lays[j].V
        kmax = max([8] + [l.K for l in lays])
        self.D = D = -(-addr // kmax) * kmax if addr else 0
        addr = D
        for j in [j for j in range(P) if not lays[j].dense]:
            addr = -(-addr // lays[j].K) * lays[j].K
            base[j] = addr
            addr += F * lays[j].V
        total = -(-addr // kmax) * kmax
        self.base = base
        self.table = np.array([[base[j], l.V, l.K - 1, l.m, l.k, l.nb - 1, l.last]
                               for j, l in enumerate(lays)], np.int64)
        self.lvl = np.empty(D, np.int8) if self.reuse else None
        self.mis = np.zeros(D, np.uint8)
        self.s_start = np.zeros(0, np.int64)              # listed sparse leaves, sorted
        self.s_lvl = np.zeros(0, np.int64)
        self.s_mis = np.zeros(0, np.uint8)
        ntop = np.array([0 if l.dense else F * l.nb for l in lays], np.int64)
        self.tbase = np.cumsum(ntop) - ntop               # sparse top-level blocks
        nall = np.array([F * l.nb for l in lays], np.int64)
        self.gbase = np.cumsum(nall) - nall               # all top-level blocks: chain group ids
        self.ngroups = int(nall.sum())
        self.tmis = np.zeros(int(ntop.sum()), np.uint8)
        self.tsplit = np.zeros(int(ntop.sum()), bool)
        # Bob's bits in the virtual order of every pass, filled when a pass first needs it (at
        # its start if dense, at its first binary search if sparse); untouched pages cost nothing
        self.bv = np.empty(total, np.uint8)
        self.built = np.zeros((P, F), bool)
        self.packed = None if self.dense.all() else _pack(self.bits[:, :n])
        # every frame runs its passes at its own pace: cur[f] is the pass frame f is in
        self.cur = np.full(F, -1, np.int64)
        # fast-forward through sparse passes: all their block masks, stacked
        sp = [j for j in range(P) if not lays[j].dense]
        self.sp_pass = np.array(sp, np.int64)
        self.sp_col = np.cumsum([0] + [lays[j].nb for j in sp])
        self.sp_masks = np.concatenate([_block_masks(self.seed, n, j, lays[j].k) for j in sp]) \
            if sp else None
        self.dense_from = np.full(P + 1, P, np.int64)     # first dense pass >= j
        for j in range(P - 1, -1, -1):
            self.dense_from[j] = j if lays[j].dense else self.dense_from[j + 1]
        self.Wg = self.Wp = self.Wd = np.zeros(0, np.int64)
        self.Ws = np.zeros(0, np.int64)                   # chain group: its first top-level block
        self.rounds = 0
        self.leak = np.zeros(F, np.int64)
        self.corr = np.zeros(F, np.int64)

    # ------------------------------------------------------------------ protocol
    def run(self) -> np.ndarray:
        self.alice_top = self._ask_top_level()
        self.alice_sp = np.concatenate([self.alice_top[j] for j in self.sp_pass], axis=1) \
            if self.sp_pass.size else None
        self._advance()
        while self.Wg.size:
            self._round()
            self._advance()
        return self.bits[:, :self.n].copy()

    def _advance(self) -> None:
        """Start the next pass of every frame that has no open search left (repeatedly: a pass
        whose blocks all agree needs no round). Frames never wait for each other, so a batch
        takes about as many rounds as its slowest frame, and each frame's exchange is exactly
        what it would be alone."""
        busy = np.zeros(self.F, bool)
        if self.Wg.size:
            T = self.table[self.Wp]
            busy[(self.Wg - T[:, self._BASE]) // T[:, self._V]] = True
        while True:
            idle = np.flatnonzero(~busy & (self.cur < self.P - 1))
            if not idle.size:
                return
            nxt = self.cur[idle] + 1
            dn = self.dense[nxt]
            for j in _levels(nxt[dn]):
                fr = idle[dn & (nxt == j)]
                busy[fr[self._start_pass(j, fr)]] = True
            if not dn.all():
                fr = idle[~dn]
                busy[fr[self._fast_forward(fr)]] = True

    def _fast_forward(self, fr: np.ndarray) -> np.ndarray:
        """Frames ``fr`` (idle, next pass sparse): a frame with no open search has no flips, so
        the block parities of all its coming sparse passes can be compared at once; it skips
        the passes whose blocks all agree (nothing is asked: their parities came with the first
        message) and starts the first one with an odd block, or stops before the next dense
        pass. Returns which frames opened a search."""
        B = _parity64(np.bitwise_xor.reduce(self.packed[fr, None, :] & self.sp_masks[None], axis=2))
        mis = self.alice_sp[fr] ^ B
        odd_any = np.logical_or.reduceat(mis, self.sp_col[:-1], axis=1).astype(bool)
        lo = self.cur[fr] + 1
        hi = self.dense_from[lo]
        cand = odd_any & (self.sp_pass[None, :] >= lo[:, None]) & (self.sp_pass[None, :] < hi[:, None])
        has = cand.any(axis=1)
        self.cur[fr[~has]] = hi[~has] - 1
        if has.any():
            col = np.argmax(cand[has], axis=1)
            frh, mish = fr[has], mis[has]
            for c in _levels(col):
                j = int(self.sp_pass[c])
                sel = col == c
                self._open_sparse(j, frh[sel], mish[sel][:, self.sp_col[c]:self.sp_col[c + 1]])
        return has

    def stats(self) -> CascadeStats:
        return CascadeStats(self.cfg.variant, self.n, self.F, self.qber, self.ks,
                            int(self.leak.sum()), self.rounds, int(self.corr.sum()),
                            self.leak.copy(), self.corr.copy())

    @property
    def max_rounds(self) -> int:
        """Round-trip budget: 40 x passes x (log2 n + 1), ~10x the most an honest run needs, so
        inconsistent answers (which can keep the cascade effect going) end in an error."""
        return 40 * len(self.ks) * (int(np.ceil(np.log2(max(self.n, 2)))) + 1)

    def _ask(self, requests: list[dict]) -> list[np.ndarray]:
        query = {"protocol": PROTOCOL, "n": self.n, "frames": self.F, "seed": self.seed,
                 "requests": requests}
        if self.rounds >= self.max_rounds:
            raise ValueError(f"Cascade did not converge in {self.max_rounds} round trips (honest runs need "
                             "150-1300): Alice's answers are inconsistent with Bob's key (tampered messages?)")
        pars = self._ask_parities(query, len(requests))
        out = []
        for req, par in zip(requests, pars):
            par = np.asarray(par, dtype=np.uint8).reshape(-1)
            fr = req["frame"]
            if par.size != fr.size:
                raise ValueError(f"Alice answered {par.size} parities, Bob asked {fr.size}")
            if par.size and par.max() > 1:
                raise ValueError("Alice's parities must be 0 or 1")
            self.leak += np.bincount(fr, minlength=self.F)
            out.append(par)
        return out

    def _ask_top_level(self) -> list[np.ndarray]:
        """First message: the parities of the top-level blocks of every pass (Alice's parities do
        not depend on Bob's corrections and every pass runs, so asking them all at once leaks
        exactly what asking pass by pass would). With block parity inference the last block of
        each pass j >= 1 is not asked: it is the frame parity (known from pass 0) xor the others."""
        F = self.F
        reqs, asked = [], []
        for j, lay in enumerate(self.lays):
            nask = lay.nb - 1 if (self.bpi and j > 0) else lay.nb
            asked.append(nask)
            if nask:
                reqs.append({"kind": "blocks", "pass": j, "block_size": lay.k,
                             "frame": np.repeat(np.arange(F, dtype=np.int64), nask),
                             "block": np.tile(np.arange(nask, dtype=np.int64), F)})
        answers = iter(self._ask(reqs))
        tops = []
        for lay, nask in zip(self.lays, asked):
            A = np.zeros((F, lay.nb), np.uint8)
            if nask:
                A[:, :nask] = next(answers).reshape(F, nask)
            if nask < lay.nb:
                A[:, -1] = np.bitwise_xor.reduce(tops[0], axis=1) ^ \
                    np.bitwise_xor.reduce(A[:, :nask], axis=1)
            tops.append(A)
        return tops

    def _build(self, j: int, fr: np.ndarray) -> np.ndarray:
        """Fill pass j's region of ``bv`` for frames ``fr`` from Bob's current bits (flips are
        applied to it from then on); returns those rows."""
        F, lay = self.F, self.lays[j]
        base = int(self.base[j])
        region = self.bv[base:base + F * lay.V].reshape(F, lay.V)
        whole = fr.size == F
        if j == 0 and lay.K == lay.k and lay.V == self.n:
            rows = self.bits[:, :self.n] if whole else self.bits[fr, :self.n]
        else:
            vperm = _virtual_perm(self.seed, self.n, j, lay.k)
            if whole:
                np.take(self.bits, vperm, axis=1, out=region)
                self.built[j] = True
                return region
            rows = np.take(self.bits[fr], vperm, axis=1)
        if whole:
            region[:] = rows
        else:
            region[fr] = rows
        self.built[j, fr] = True
        return rows

    def _start_pass(self, j: int, fr: np.ndarray) -> np.ndarray:
        """Frames ``fr`` start dense pass j: compare the top-level block parities, open the odd
        blocks. Returns which frames opened a search."""
        F, lay = self.F, self.lays[j]
        base = int(self.base[j])
        rows = self._build(j, fr)
        B = _row_parity(np.ascontiguousarray(rows).reshape(-1, lay.K)).reshape(fr.size, lay.nb)
        mis = self.alice_top[j][fr] ^ B
        starts = (base + ((fr[:, None] * lay.nb + np.arange(lay.nb)) * lay.K)).reshape(-1)
        if self.reuse:
            lv = self.lvl[base:base + F * lay.V].reshape(F, lay.V)
            if fr.size == F:
                lv[:] = lay.m
            else:
                lv[fr] = lay.m
        self.mis[starts] = mis.reshape(-1)
        self.cur[fr] = j
        self._open(j, starts[mis.reshape(-1) == 1])
        return mis.any(axis=1)

    def _open_sparse(self, j: int, fr: np.ndarray, mis: np.ndarray) -> None:
        """Frames ``fr`` start sparse pass j with top-level mismatches ``mis`` (frames, nb)."""
        lay = self.lays[j]
        blocks = (fr[:, None] * lay.nb + np.arange(lay.nb)).reshape(-1)
        self.tmis[self.tbase[j] + blocks] = mis.reshape(-1)
        self.cur[fr] = j
        self._open(j, self.base[j] + blocks[mis.reshape(-1) == 1] * lay.K)

    def _open(self, j: int, starts: np.ndarray) -> None:
        """Add top-level leaves of pass j to the open searches."""
        if not starts.size:
            return
        self.Wg = np.concatenate([self.Wg, starts])
        self.Wp = np.concatenate([self.Wp, np.full(starts.size, j, np.int64)])
        self.Wd = np.concatenate([self.Wd, np.full(starts.size, self.lays[j].m, np.int64)])
        self.Ws = np.concatenate([self.Ws, self.gbase[j] + ((starts - self.base[j]) >> self.lays[j].m)])
        o = np.argsort(self.Wg, kind="stable")
        self.Wg, self.Wp, self.Wd, self.Ws = self.Wg[o], self.Wp[o], self.Wd[o], self.Ws[o]

    # ------------------------------------------------------------------ leaves
    # Sparse passes: a top-level block is a leaf (mismatch in ``tmis``) until it is split
    # (``tsplit``); then its leaves are listed in the sorted arrays s_start/s_lvl/s_mis.
    def _sparse_index(self, g: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.s_start, g, side="right") - 1

    def _tb(self, g: np.ndarray, pid: np.ndarray) -> np.ndarray:
        return self.tbase[pid] + ((g - self.base[pid]) >> self.m[pid])

    def _get_mis(self, g: np.ndarray, pid: np.ndarray) -> np.ndarray:
        """Mismatch bit of the leaves starting at g (pass pid)."""
        dn = g < self.D
        if dn.all():
            return self.mis[g]
        out = np.empty(g.size, np.uint8)
        out[dn] = self.mis[g[dn]]
        sp = np.flatnonzero(~dn)
        tb = self._tb(g[sp], pid[sp])
        split = self.tsplit[tb]
        out[sp[~split]] = self.tmis[tb[~split]]
        if split.any():
            out[sp[split]] = self.s_mis[self._sparse_index(g[sp[split]])]
        return out

    def _lower(self, g: np.ndarray, d: np.ndarray, pid: np.ndarray) -> None:
        """Leaf at g (level d) now has level d-1 (its start and mismatch are unchanged)."""
        dn = g < self.D
        if dn.any():
            gd, dd = g[dn], d[dn]
            for lev in _levels(dd):
                self.lvl.reshape(-1, 1 << lev)[gd[dd == lev] >> lev] = lev - 1
        if not dn.all():
            sp = ~dn
            self._sparse_split(g[sp], d[sp], pid[sp], None)

    def _split(self, g: np.ndarray, d: np.ndarray, half: np.ndarray, ml: np.ndarray,
               pid: np.ndarray) -> None:
        """Leaf (g, d) -> two leaves of level d-1 with mismatches ml (left) and 1-ml (right)."""
        dn = g < self.D
        if dn.all():
            self._lower(g, d, pid)
            self.mis[g] = ml
            self.mis[g + half] = ml ^ 1
            return
        gd, hd, mld = g[dn], half[dn], ml[dn]
        self._lower(gd, d[dn], pid[dn])
        self.mis[gd] = mld
        self.mis[gd + hd] = mld ^ 1
        sp = ~dn
        self._sparse_split(g[sp], d[sp], pid[sp], ml[sp])

    def _sparse_split(self, g, d, pid, ml) -> None:
        """Sparse leaves (g, d) get level d-1; with ``ml`` (a split) their left half takes
        mismatch ml and the right half is listed with ml^1, without (a padding descent) only
        the left half remains."""
        top = d == self.m[pid]
        new_s, new_l, new_m = [], [], []
        if top.any():                                    # first split of a top-level block
            gt, dt = g[top], d[top]
            tb = self._tb(gt, pid[top])
            self.tsplit[tb] = True
            new_s.append(gt)
            new_l.append(dt - 1)
            new_m.append(self.tmis[tb] if ml is None else ml[top])
        lst = ~top
        if lst.any():
            i = self._sparse_index(g[lst])
            self.s_lvl[i] = d[lst] - 1
            if ml is not None:
                self.s_mis[i] = ml[lst]
        if ml is not None:
            new_s.append(g + (np.int64(1) << (d - 1)))
            new_l.append(d - 1)
            new_m.append(ml ^ 1)
        if new_s:
            s = np.concatenate(new_s)
            o = np.argsort(s, kind="stable")
            self._sparse_insert(s[o], np.concatenate(new_l)[o],
                                np.concatenate(new_m).astype(np.uint8)[o])

    def _sparse_insert(self, start: np.ndarray, lvl: np.ndarray, mis: np.ndarray) -> None:
        """Insert new listed leaves (``start`` sorted, not present yet)."""
        pos = np.searchsorted(self.s_start, start)
        at = pos + np.arange(pos.size)                   # their indices after the insertion
        keep = np.ones(self.s_start.size + pos.size, bool)
        keep[at] = False
        for name, vals in (("s_start", start), ("s_lvl", lvl), ("s_mis", mis)):
            old = getattr(self, name)
            arr = np.empty(keep.size, old.dtype)
            arr[at] = vals
            arr[keep] = old
            setattr(self, name, arr)

    # ------------------------------------------------------------------ one round
    def _ask_parities(self, query: dict, n_requests: int) -> list:
        """One round trip: Alice's parities for the ``n_requests`` requests of ``query``."""
        answer = self.ask_alice(query)
        self.rounds += 1
        try:
            pars = answer["parities"]
        except (TypeError, KeyError, IndexError):
            raise ValueError("Alice's answer must be a dict with 'parities'") from None
        if len(pars) != n_requests:
            raise ValueError(f"Alice answered {len(pars)} requests, Bob asked {n_requests}")
        return pars

    def _round(self) -> None:
        """One binary-search step of every open leaf, in every frame and pass, then the flips."""
        g, pid, d, st = self.Wg, self.Wp, self.Wd, self.Ws
        found_g, found_p, found_s = [], [], []
        z = d == 0                                        # an odd 1-bit leaf is a known error
        if z.any():
            found_g.append(g[z])
            found_p.append(pid[z])
            found_s.append(st[z])
            g, pid, d, st = g[~z], pid[~z], d[~z], st[~z]
        T = self.table[pid]
        base, V, Km1, m, k, nbm1, last = T.T
        loc = g - base
        f = loc // V
        v = loc - f * V
        off = v & Km1
        blen = np.where((v >> m) == nbm1, last, k)
        half = np.int64(1) << (d - 1)
        # descend without asking while the right half holds only padding
        empty = off + half >= blen
        while empty.any():
            if self.reuse:
                self._lower(g[empty], d[empty], pid[empty])
            d = d - empty
            z = d == 0
            if z.any():
                found_g.append(g[z])
                found_p.append(pid[z])
                found_s.append(st[z])
                keep = ~z
                g, pid, d, st, f, v, off, blen, k, m = (a[keep] for a in
                                                        (g, pid, d, st, f, v, off, blen, k, m))
            half = np.int64(1) << (d - 1)
            empty = off + half >= blen
        held = None
        if self.schedule != "parallel" and g.size:
            # sequential Cascade searches the smallest odd block first: a correction there often
            # makes a bigger odd block even before anyone pays to search it. "chain": within one
            # chain of corrections (the leaves a correction re-opens inherit the group of the
            # search that made it); "frame": within the whole frame.
            key, size = (f, self.F) if self.schedule == "frame" else (st, self.ngroups)
            low = np.full(size, 127, np.int8)
            np.minimum.at(low, key, d.astype(np.int8))
            run = d <= low[key]
            if not run.all():
                wait = ~run
                held = g[wait], pid[wait], d[wait], st[wait]
                g, pid, d, st, f, v, off, k, m, half = (a[run] for a in
                                                        (g, pid, d, st, f, v, off, k, m, half))
        if g.size:
            q0 = (v >> m) * k + off
            (alice,) = self._ask([{"kind": "ranges", "pass": pid, "frame": f, "start": q0,
                                   "stop": q0 + half}])
            ml = alice ^ self._parity(g, d - 1, pid, f)
            if self.reuse:
                self._split(g, d, half, ml, pid)
            odd = g + (ml ^ 1) * half
            fin = d == 1
            found_g.append(odd[fin])
            found_p.append(pid[fin])
            found_s.append(st[fin])
            go = ~fin
            Wg, Wp, Wd, Ws = odd[go], pid[go], d[go] - 1, st[go]
        else:
            Wg = Wp = Wd = Ws = np.zeros(0, np.int64)
        if held is not None:
            Wg, Wp, Wd, Ws = (np.concatenate([a, h]) for a, h in zip((Wg, Wp, Wd, Ws), held))
            if not self.reuse:
                o = np.argsort(Wg, kind="stable")
                Wg, Wp, Wd, Ws = Wg[o], Wp[o], Wd[o], Ws[o]
        if len(found_g) > 1:
            fg, fp, fs = np.concatenate(found_g), np.concatenate(found_p), np.concatenate(found_s)
        else:
            fg, fp, fs = found_g[0], found_p[0], found_s[0]
        tg, tp, td, gv, tk = self._apply_flips(fg, fp, fs)
        if self.reuse:
            # open searches first, so that a leaf both open and toggled keeps its state
            Wg, Wp, Wd = np.concatenate([Wg, tg]), np.concatenate([Wp, tp]), np.concatenate([Wd, td])
            Ws = np.concatenate([Ws, tk])
            o = np.argsort(Wg, kind="stable")
            Wg, Wp, Wd, Ws = Wg[o], Wp[o], Wd[o], Ws[o]
            keep = self._get_mis(Wg, Wp) == 1
            if Wg.size > 1:
                keep[1:] &= Wg[1:] != Wg[:-1]
            self.Wg, self.Wp, self.Wd, self.Ws = Wg[keep], Wp[keep], Wd[keep], Ws[keep]
        else:
            self._update_noreuse(Wg, Wp, Wd, Ws, tg, tp, gv, tk)

    def _update_noreuse(self, Wg, Wp, Wd, Ws, tg, tp, gv, tk) -> None:
        """Original Cascade: a flip kills an open search whose node it falls in; a top-level
        block that is odd and has no open search starts one from the top."""
        killed_g = killed_p = killed_s = np.zeros(0, np.int64)
        if gv.size and Wg.size:
            gs = np.sort(gv)
            cnt = np.searchsorted(gs, Wg + (np.int64(1) << Wd)) - np.searchsorted(gs, Wg)
            dead = cnt & 1 == 1
            if dead.any():
                mk = self.m[Wp[dead]]
                killed_g, killed_p, killed_s = (Wg[dead] >> mk) << mk, Wp[dead], Ws[dead]
                Wg, Wp, Wd, Ws = Wg[~dead], Wp[~dead], Wd[~dead], Ws[~dead]
        cg, cp = np.concatenate([tg, killed_g]), np.concatenate([tp, killed_p])
        cs = np.concatenate([tk, killed_s])
        o = np.argsort(cg, kind="stable")
        cg, cp, cs = cg[o], cp[o], cs[o]
        keep = self._get_mis(cg, cp) == 1
        if cg.size > 1:
            keep[1:] &= cg[1:] != cg[:-1]
        if Wg.size and cg.size:
            mw = self.m[Wp]
            busy = np.sort((Wg >> mw) << mw)
            i = np.minimum(np.searchsorted(busy, cg), busy.size - 1)
            keep &= busy[i] != cg
        cg, cp, cs = cg[keep], cp[keep], cs[keep]
        Wg, Wp, Wd = (np.concatenate([Wg, cg]), np.concatenate([Wp, cp]),
                      np.concatenate([Wd, self.m[cp]]))
        Ws = np.concatenate([Ws, cs])
        o = np.argsort(Wg, kind="stable")
        self.Wg, self.Wp, self.Wd, self.Ws = Wg[o], Wp[o], Wd[o], Ws[o]

    def _parity(self, g: np.ndarray, d: np.ndarray, pid: np.ndarray, f: np.ndarray) -> np.ndarray:
        """Bob's current parity of the nodes [g, g + 2^d) (rows of ``bv``)."""
        need = ~self.built[pid, f]
        if need.any():
            for j in _levels(pid[need]):
                self._build(j, _unique(f[need & (pid == j)]))
        out = np.empty(g.size, np.uint8)
        big = d >= 3                                      # whole 64-bit words of bv
        if big.any():
            nw = np.int64(1) << (d[big] - 3)
            out[big] = _parity64(_xor_ranges(self.bv.view(np.uint64), g[big] >> 3, nw))
        small = ~big
        if small.any():
            out[small] = _parity64(_xor_ranges(self.bv, g[small], np.int64(1) << d[small]))
        return out

    def _apply_flips(self, found: np.ndarray, fpid: np.ndarray, fgroup: np.ndarray):
        """Flip the key bits at the given 1-bit leaves (address, pass, chain group) and toggle
        the mismatch of the leaf that contains each flipped bit in every started pass.

        Returns the leaves that toggled an odd number of times (start, pass, level), the
        addresses of every flipped bit in every started pass, and the toggled leaves' group."""
        e = np.zeros(0, np.int64)
        if not found.size:
            return e, e, e, e, e
        T = self.table[fpid]
        loc = found - T[:, self._BASE]
        V = T[:, self._V]
        f = loc // V
        v = loc - f * V
        q = (v >> T[:, self._M]) * T[:, self._K] + (v & T[:, self._KM1])
        x = self.perms.perm[fpid, q].astype(np.int64)
        key = f * (self.n + 1) + x
        o = np.argsort(key, kind="stable")
        key, fgroup = key[o], fgroup[o]
        first = np.ones(key.size, bool)                 # one error may be found twice
        first[1:] = key[1:] != key[:-1]
        key, fgroup = key[first], fgroup[first]
        f, x = key // (self.n + 1), key % (self.n + 1)
        self.bits.reshape(-1)[key] ^= 1
        self.corr += np.bincount(f, minlength=self.F)
        if self.packed is not None:
            np.bitwise_xor.at(self.packed.reshape(-1), f * self.packed.shape[1] + (x >> 6),
                              np.uint64(1) << (x & 63).astype(np.uint64))
        # every pass that frame f has started: j <= cur[f]
        J = np.arange(int(self.cur[f].max()) + 1, dtype=np.int64)
        TJ = self.table[J]
        q = self.perms.inv[J[:, None], x[None, :]].astype(np.int64)
        kJ = TJ[:, self._K, None]
        blk = q // kJ
        gv = TJ[:, self._BASE, None] + f[None, :] * TJ[:, self._V, None] + \
            (blk << TJ[:, self._M, None]) + (q - blk * kJ)
        valid = J[:, None] <= self.cur[f][None, :]
        self.bv[gv[valid & self.built[J[:, None], f[None, :]]]] ^= 1
        pid = np.broadcast_to(J[:, None], gv.shape)[valid]
        grp = np.broadcast_to(fgroup[None, :], gv.shape)[valid]
        gv = gv[valid]
        if self.reuse:
            dense = gv < self.D
            lev = self.m[pid]                            # unsplit sparse tops: level m
            lev[dense] = self.lvl[gv[dense]]
            sp = np.flatnonzero(~dense)
            if sp.size:
                sp = sp[self.tsplit[self._tb(gv[sp], pid[sp])]]
                if sp.size:
                    lev[sp] = self.s_lvl[self._sparse_index(gv[sp])]
        else:
            lev = self.m[pid]
        starts = (gv >> lev) << lev
        # leaves hit an odd number of times toggle
        o = np.argsort(starts, kind="stable")
        s = starts[o]
        edge = np.flatnonzero(np.concatenate(([True], s[1:] != s[:-1], [True])))
        odd = o[edge[:-1][np.diff(edge) & 1 == 1]]
        tg, tp, td = starts[odd], pid[odd], lev[odd]
        dn = tg < self.D
        self.mis[tg[dn]] ^= 1
        if not dn.all():
            sp = ~dn
            gs, ps = tg[sp], tp[sp]
            tb = self._tb(gs, ps)
            split = self.tsplit[tb]
            self.tmis[tb[~split]] ^= 1
            if split.any():
                self.s_mis[self._sparse_index(gs[split])] ^= 1
        return tg, tp, td, gv, grp[odd]


class _NativeBobSession(_BobSession):
    """Bob's session on the C++ engine (``host/native/cascade.cpp``): the same rounds, queries
    and corrections as :class:`_BobSession`; Python only carries the messages."""

    def __init__(self, cfg: Cascade, bits2d: np.ndarray, ask: Callable, qber: float):
        self.cfg, self.ask_alice, self.qber = cfg, ask, qber
        self.F, self.n = F, n = bits2d.shape
        self.ks = cfg.block_sizes(n, qber)
        self.P = P = len(self.ks)
        self.seed = cfg.seed
        self.bpi = cfg.block_parity_inference
        self.lays = [_layout(n, k) for k in self.ks]
        self.rounds = 0
        self.leak = np.zeros(F, np.int64)
        self.corr = np.zeros(F, np.int64)
        perms = _perms(self.seed, n, P)
        self._keep = (perms.perm, perms.inv) + _native_masks(self.seed, n, tuple(enumerate(self.ks)))
        self._ks = np.array(self.ks, np.int64)
        self._bits0 = np.ascontiguousarray(bits2d, dtype=np.uint8)
        self._lib = _native_lib()
        if F * n >= 1 << 31:
            raise ValueError(f"native Cascade: a batch of {F} frames of n = {n} bits has {F * n} bits; the "
                             "kernel takes fewer than 2^31 per batch (split the batch)")

    def run(self) -> np.ndarray:
        lib = self._lib
        perm, inv, masks, moff = self._keep
        h = lib.cas_bob_new(self.F, self.n, self.P, _ptr(self._ks), _ptr(perm), _ptr(inv),
                            _ptr(self._bits0), _ptr(masks), _ptr(moff),
                            _SCHEDULE_CODE[self.cfg.schedule], _native_threads())
        if not h:
            raise MemoryError(f"native Cascade: no memory for {self.F} frame(s) of n = {self.n} bits")
        try:
            tops = np.concatenate([t.reshape(-1) for t in self._ask_top_level()]).astype(np.uint8)
            lib.cas_bob_start(h, _ptr(tops))          # (keep every array passed by address alive)
            # the round trips: the kernel prepares the requests of a round, Alice answers, the
            # kernel checks and applies the answers (it counts the parities asked per frame)
            head = {"protocol": PROTOCOL, "n": self.n, "frames": self.F, "seed": self.seed}
            max_rounds = self.max_rounds
            prepare, finish, is_open = lib.cas_bob_prepare, lib.cas_bob_finish, lib.cas_bob_open
            cap, buf, ptrs = 0, None, ()
            steps = 0
            while True:
                nopen = is_open(h)
                if nopen == 0:
                    break
                steps += 1
                if steps > 4 * max_rounds:
                    raise ValueError(f"Cascade did not converge in {steps} steps: Alice's answers are "
                                     "inconsistent with Bob's key (tampered messages?)")
                if nopen > cap:
                    cap = max(nopen, 2 * cap)
                    buf = np.empty((4, cap), np.int64)
                    ptrs = tuple(_ptr(r) for r in buf)
                    ans = np.empty(cap, np.uint8)
                    ans_ptr = _ptr(ans)
                nreq = prepare(h, *ptrs)
                if not nreq:
                    finish(h, 0, 0)
                    continue
                if self.rounds >= max_rounds:
                    raise ValueError(f"Cascade did not converge in {max_rounds} round trips (honest runs "
                                     "need 150-1300): Alice's answers are inconsistent with Bob's key "
                                     "(tampered messages?)")
                pid, fr, start, stop = buf[:, :nreq].copy()
                query = dict(head)
                query["requests"] = [{"kind": "ranges", "pass": pid, "frame": fr, "start": start,
                                      "stop": stop}]
                par = self._ask_parities(query, 1)[0]
                try:
                    size = len(par)
                except TypeError:
                    raise ValueError("Alice's parities must be an array of 0/1 values") from None
                if size != nreq:
                    raise ValueError(f"Alice answered {size} parities, Bob asked {nreq}")
                try:
                    ans[:nreq] = par
                except (ValueError, TypeError, OverflowError):
                    raise ValueError("Alice's parities must be 0 or 1") from None
                if finish(h, ans_ptr, nreq) < 0:
                    raise ValueError("Alice's parities must be 0 or 1")
            out = np.empty((self.F, self.n), np.uint8)
            asked = np.zeros(self.F, np.int64)
            lib.cas_bob_result(h, _ptr(out), _ptr(self.corr), _ptr(asked))
            self.leak += asked
        finally:
            lib.cas_bob_free(h)
        return out


# ----------------------------------------------------------------------------- convenience

def reconcile(alice_bits, bob_bits, qber_estimate: float, *, seed: int = 0,
              variant: str = "optimized", channel: Callable[[Callable], Callable] | None = None,
              **options) -> tuple[np.ndarray, CascadeStats, CascadeAlice]:
    """Run both sides locally. ``channel(alice) -> ask_alice`` may wrap the exchange
    (e.g. serialise or authenticate the messages); default: Alice answers directly."""
    a = _as_bits(alice_bits, "alice_bits")
    b = _as_bits(bob_bits, "bob_bits")
    if a.shape != b.shape:
        raise ValueError(f"length mismatch: alice_bits has shape {a.shape}, bob_bits {b.shape}")
    alice = CascadeAlice(a, seed)
    ask = alice if channel is None else channel(alice)
    corrected, stats = Cascade(variant, seed, **options).reconcile(b, ask, qber_estimate)
    return corrected, stats, alice
