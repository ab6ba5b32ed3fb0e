"""Entropy stage of the transmitter: PRNG lanes, QRNG input, health tests; gateware and model.

Contract: ``docs/transmitter.md``, sections "Clock-step semantics" and "Entropy".

* One 32-bit entropy word per slot (:data:`ENTROPY_BITS_PER_SLOT`); lane ``p`` of a
  ``32*lanes``-bit word is in bits ``[32p, 32p+32)``.
* PRNG (simulation/tests only, not secure): one xoroshiro128++ generator per lane
  (Blackman & Vigna, "Scrambled linear pseudorandom number generators", ACM TOMS 2021);
  lane word = upper 32 bits of the 64-bit output; lane ``i`` is seeded with
  ``s0 = seed ^ LANE_K0[i]``, ``s1 = seed ^ LANE_K1[i]``.
* QRNG: a stream of ``32*lanes`` bits, consumed when running with the QRNG selected.
* Health tests (:mod:`qkdlink.hdl.health`) on ``word[24:32]`` of every available word.

The reference model (:func:`xoroshiro_lane_words`, :func:`entropy_model`) is vectorised: the
xoroshiro128++ state transition is linear over GF(2), so the states ``S_0 .. S_{n-1}`` are
produced by applying the jump matrices ``A^(2^j)`` (as byte lookup tables) to whole arrays of
states, doubling the number of known states each time.
"""
from __future__ import annotations

import numbers

import numpy as np
from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from qkdlink.hdl.health import CUTOFF_BITS, HealthTests, health_model

__all__ = [
    "ENTROPY_BITS_PER_SLOT", "MAX_LANES", "LANE_K0", "LANE_K1",
    "splitmix64", "xoroshiro128pp_next", "xoroshiro_lane_words",
    "Xoroshiro128ppLanes", "EntropySource", "entropy_model",
]

ENTROPY_BITS_PER_SLOT = 32
MAX_LANES = 8
_M64 = (1 << 64) - 1


# --------------------------------------------------------------------------------------
# Scalar reference (pure Python)
# --------------------------------------------------------------------------------------

def splitmix64(state: int) -> tuple[int, int]:
    """One step of Vigna's splitmix64: returns ``(output, new_state)``."""
    state = (state + 0x9E3779B97F4A7C15) & _M64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31), state


def _lane_constants():
    k0, k1 = [], []
    for lane in range(MAX_LANES):
        a, st = splitmix64(lane)        # splitmix64 stream seeded with the lane index
        b, st = splitmix64(st)
        assert a != b, "LANE_K0[i] == LANE_K1[i] would allow an all-zero state"
        k0.append(a)
        k1.append(b)
    return tuple(k0), tuple(k1)


#: Per-lane seeding constants: the first two outputs of splitmix64 seeded with the lane index.
LANE_K0, LANE_K1 = _lane_constants()


def _rotl64(x: int, k: int) -> int:
    return ((x << k) | (x >> (64 - k))) & _M64


def xoroshiro128pp_next(s0: int, s1: int) -> tuple[int, int, int]:
    """One xoroshiro128++ step (reference C code transcribed): ``(out64, s0', s1')``."""
    out = (_rotl64((s0 + s1) & _M64, 17) + s0) & _M64
    t = s1 ^ s0
    s0 = _rotl64(s0, 49) ^ t ^ ((t << 21) & _M64)
    s1 = _rotl64(t, 28)
    return out, s0, s1


def _lane_state(seed: int, lane: int) -> tuple[int, int]:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed <= _M64:
        raise ValueError(f"seed must be an integer in [0, 2^64 - 1], got {seed!r}")
    if isinstance(lane, bool) or not isinstance(lane, numbers.Integral) \
            or not 0 <= lane < MAX_LANES:
        raise ValueError(f"lane must be an integer in [0, {MAX_LANES - 1}], got {lane!r}")
    return int(seed) ^ LANE_K0[lane], int(seed) ^ LANE_K1[lane]


# --------------------------------------------------------------------------------------
# Vectorised model: GF(2) jump tables
# --------------------------------------------------------------------------------------

_BLOCK_LOG2 = 16                       # states per lane generated per block after doubling
_BIT_OF_BYTE = ((np.arange(256)[:, None] >> np.arange(8)) & 1).astype(bool)   # (256, 8)
_BYTE_OFFSET = np.arange(16, dtype=np.intp) * 256
_V16 = np.dtype((np.void, 16))
_jump_cols: list[np.ndarray] = []     # _jump_cols[j]: (128, 2) uint64, columns of A^(2^j)
_jump_tabs: list[np.ndarray] = []     # _jump_tabs[j]: (16*256,) byte lookup tables


def _tables_from_columns(cols: np.ndarray) -> np.ndarray:
    """Byte lookup tables of a 128x128 GF(2) matrix given by its columns (images of e_k).

    Entry ``256*b + v`` is the image of the state whose byte ``b`` is ``v`` and the other
    bytes are 0. State bits 0..63 are ``s0``, 64..127 are ``s1`` (byte ``b`` = bits 8b..8b+7).
    Entries are 16-byte opaque items (``s0``, ``s1`` little-endian) so that one ``take``
    gathers a whole 128-bit image.
    """
    cols = cols.reshape(16, 8, 2)
    sel = np.where(_BIT_OF_BYTE[None, :, :, None], cols[:, None, :, :], np.uint64(0))
    tab = np.bitwise_xor.reduce(sel, axis=2)                 # (16, 256, 2)
    return np.ascontiguousarray(tab).view(_V16).reshape(16 * 256)


def _apply(tab: np.ndarray, states: np.ndarray) -> np.ndarray:
    """Apply a matrix (its byte tables) to ``states``, ``(N, 2)`` uint64; returns ``(N, 2)``."""
    states = np.ascontiguousarray(states, dtype=np.uint64)
    by = np.ascontiguousarray(states.view(np.uint8).reshape(-1, 16).T).astype(np.intp)
    by += _BYTE_OFFSET[:, None]                       # by[b]: table index of byte b
    out = tab.take(by[0]).view(np.uint64)
    for b in range(1, 16):
        out ^= tab.take(by[b]).view(np.uint64)
    return out.reshape(-1, 2)


def _jump_table(j: int) -> np.ndarray:
    """Byte tables of ``A^(2^j)`` (cached), ``A`` the xoroshiro128++ state transition."""
    if not _jump_cols:
        cols = np.empty((128, 2), dtype=np.uint64)
        for k in range(128):
            _, a, b = xoroshiro128pp_next((1 << k) & _M64, (1 << k) >> 64)
            cols[k] = (a, b)
        _jump_cols.append(cols)
        _jump_tabs.append(_tables_from_columns(cols))
    while len(_jump_tabs) <= j:
        # (A^(2^i))^2: apply A^(2^i) to each column of A^(2^i)
        cols = _apply(_jump_tabs[-1], _jump_cols[-1])
        _jump_cols.append(cols)
        _jump_tabs.append(_tables_from_columns(cols))
    return _jump_tabs[j]


def _output_hi(states: np.ndarray) -> np.ndarray:
    """Upper 32 bits of the xoroshiro128++ output of ``(N, 2)`` uint64 states."""
    s0 = states[:, 0]
    x = s0 + states[:, 1]                          # uint64 arithmetic wraps
    r = ((x << np.uint64(17)) | (x >> np.uint64(47))) + s0
    return (r >> np.uint64(32)).astype(np.uint32)


def _words_from_states(init: np.ndarray, n: int) -> np.ndarray:
    """Words ``0..n-1`` of ``k`` generators with initial states ``init`` ((k, 2) uint64).

    Returns ``(n, k)`` uint32. States are rows of an ``(L*k, 2)`` array, row ``i*k + g`` =
    state ``i`` of generator ``g``: doubling up to ``L = 2^_BLOCK_LOG2`` states, then one
    jump by ``A^L`` per further block of ``L`` states.
    """
    k = init.shape[0]
    out = np.empty((n, k), dtype=np.uint32)
    if n == 0:
        return out
    states = np.ascontiguousarray(init, dtype=np.uint64).reshape(k, 2)
    length, j = 1, 0
    while length < n and j < _BLOCK_LOG2:
        need = min(length, n - length)             # states length .. length+need-1
        nxt = _apply(_jump_table(j), states[: need * k])
        states = np.concatenate([states, nxt])
        length += need
        j += 1
    block = length
    out[:block] = _output_hi(states).reshape(block, k)
    done = block
    if done < n:
        tab = _jump_table(_BLOCK_LOG2)             # block == 2^_BLOCK_LOG2 here
        while done < n:
            take = min(block, n - done)
            states = _apply(tab, states[: take * k])
            out[done:done + take] = _output_hi(states).reshape(take, k)
            done += take
    return out


def xoroshiro_lane_words(seed: int, lane: int, n: int) -> np.ndarray:
    """The first ``n`` words (uint32, shape ``(n,)``) of PRNG lane ``lane`` seeded with ``seed``.

    Word ``k`` = upper 32 bits of the ``k``-th xoroshiro128++ output from the state
    ``(seed ^ LANE_K0[lane], seed ^ LANE_K1[lane])``. Vectorised (no per-word Python loop).
    """
    n = _check_n(n)
    s0, s1 = _lane_state(seed, lane)
    return _words_from_states(np.array([[s0, s1]], dtype=np.uint64), n)[:, 0]


def _prng_words(seed: int, lanes: int, n: int) -> np.ndarray:
    init = np.array([_lane_state(seed, p) for p in range(lanes)], dtype=np.uint64)
    return _words_from_states(init, n)


def _check_n(n):
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    return int(n)


def _check_lanes(lanes):
    if isinstance(lanes, bool) or not isinstance(lanes, numbers.Integral) \
            or not 1 <= lanes <= MAX_LANES:
        raise ValueError(f"lanes must be an integer in [1, {MAX_LANES}], got {lanes!r}")
    return int(lanes)


# --------------------------------------------------------------------------------------
# Gateware
# --------------------------------------------------------------------------------------

def _checked(elaboratable, check, value):
    """``check(value)``; on error silence the "created but never used" warning first."""
    try:
        return check(value)
    except ValueError:
        elaboratable._MustUse__silence = True
        raise


def _step_hdl(s0, s1):
    t = s1 ^ s0
    return s0.rotate_left(49) ^ t ^ (t << 21)[:64], t.rotate_left(28)


def _pipeline_init(seed: int, lane: int):
    """Register contents right after loading ``seed``: word 0 (upper 32 bits of the output
    of ``S_0``), ``s0 + s1`` and ``s0`` of ``S_1``, and ``S_2``."""
    s0, s1 = _lane_state(seed, lane)
    out0, a0, a1 = xoroshiro128pp_next(s0, s1)
    _, b0, b1 = xoroshiro128pp_next(a0, a1)
    return out0 >> 32, (a0 + a1) & _M64, a0, b0, b1


class Xoroshiro128ppLanes(wiring.Component):
    """``lanes`` xoroshiro128++ generators, one 32-bit word per lane and clock.

    Ports: ``seed`` (64), ``load``, ``advance`` in; ``words`` (``32*lanes``) out, lane ``p``
    in bits ``[32p, 32p+32)``.

    ``words`` is a register holding each lane's current word ``k``. A clock with ``load``
    makes the next clock show word 0 of the lanes seeded from ``seed`` **as it was on the
    clock before** (``seed`` is registered; ``load`` wins over ``advance``); a clock with
    ``advance`` (and not ``load``) makes the next clock show word ``k+1``. After reset the
    lanes are as if loaded with seed 0. (In the endpoints ``seed`` is a register written by
    the host long before LOAD_SEED.)

    Pipeline: the state register runs two steps ahead (``S_{k+2}``) and a middle stage holds
    ``s0 + s1`` and ``s0`` of ``S_{k+1}``, so each stepping path has one 64-bit adder. The
    load path has one adder too: ``s0 + s1`` of the seeded ``S_0`` is registered with the
    seed.
    """

    def __init__(self, lanes: int):
        self.lanes = _checked(self, _check_lanes, lanes)
        super().__init__({
            "seed": In(64),
            "load": In(1),
            "advance": In(1),
            "words": Out(ENTROPY_BITS_PER_SLOT * self.lanes),
        })

    def elaborate(self, platform):
        m = Module()
        words = []
        seed_r = Signal(64)
        m.d.sync += seed_r.eq(self.seed)
        for p in range(self.lanes):
            w0, psum0, ps00, st00, st10 = _pipeline_init(0, p)
            word = Signal(32, init=w0, name=f"word{p}")
            psum = Signal(64, init=psum0, name=f"psum{p}")     # s0 + s1 of S_{k+1}
            ps0 = Signal(64, init=ps00, name=f"ps0_{p}")       # s0 of S_{k+1}
            st0 = Signal(64, init=st00, name=f"s0_{p}")        # S_{k+2}
            st1 = Signal(64, init=st10, name=f"s1_{p}")

            l0 = Signal(64, name=f"load_s0_{p}")                # S_0 of the new seed
            l1 = Signal(64, name=f"load_s1_{p}")
            l_sum = Signal(64, name=f"load_sum_{p}")            # s0 + s1 of S_0, registered
            m.d.comb += [l0.eq(seed_r ^ LANE_K0[p]), l1.eq(seed_r ^ LANE_K1[p])]
            m.d.sync += l_sum.eq(((self.seed ^ LANE_K0[p]) + (self.seed ^ LANE_K1[p]))[:64])
            a0, a1 = _step_hdl(l0, l1)                              # S_1
            b0, b1 = _step_hdl(a0, a1)                              # S_2

            with m.If(self.load):
                m.d.sync += [
                    word.eq((l_sum.rotate_left(17) + l0)[32:64]),
                    psum.eq(a0 + a1),
                    ps0.eq(a0),
                    st0.eq(b0),
                    st1.eq(b1),
                ]
            with m.Elif(self.advance):
                n0, n1 = _step_hdl(st0, st1)
                m.d.sync += [
                    word.eq((psum.rotate_left(17) + ps0)[32:64]),
                    psum.eq(st0 + st1),
                    ps0.eq(st0),
                    st0.eq(n0),
                    st1.eq(n1),
                ]
            words.append(word)
        m.d.comb += self.words.eq(Cat(*words))
        return m


class EntropySource(wiring.Component):
    """Entropy words for ``lanes`` slots per running clock, with health tests.

    Ports (all per clock; ``run`` = this clock is a running clock):

    * ``run``, ``select_qrng``, ``seed`` (64), ``load_seed``, ``clear_alarm``,
      ``rct_cutoff`` (16), ``apt_cutoff`` (16) in;
    * ``qrng``: ``In(stream.Signature(32*lanes))``, ``qrng.ready = run & QRNG selected``;
    * ``words`` (``32*lanes``): the words consumed this clock (the PRNG register, or the
      QRNG payload, combinationally);
    * ``ok = run & available & ~alarm`` (``available`` = 1 for the PRNG, ``qrng.valid`` for
      the QRNG; ``alarm`` includes this clock's fires), ``underrun = run & ~available``;
    * ``ok_unless_fire``: ``ok`` without this clock's fires, so ``ok = ok_unless_fire &
      ~rct_fire.any() & ~apt_fire.any()`` (a user may register the three and combine them
      one clock later, off the fire-to-alarm path);
    * ``rct_fire``, ``apt_fire`` (``lanes`` bits): per-lane fires this clock;
    * ``alarm_rct``, ``alarm_apt``: sticky alarms including this clock's fires.

    The PRNG advances exactly on clocks with ``run`` and the PRNG selected; ``load_seed``
    reseeds it (the next clock shows word 0; a word shown in a clock with both ``run`` and
    ``load_seed`` is still consumed). The health tests take a sample on clocks with ``run``
    and ``available``. ``clear_alarm`` clears both sticky alarms and restarts the tests
    before this clock's sample: ``alarm_t = (alarm_{t-1} & ~clear_t) | fire_t``.

    ``has_prng=False`` / ``has_qrng=False`` leave out a source; the ports stay the same,
    ``select_qrng`` is then ignored (only QRNG: always QRNG; only PRNG: always PRNG,
    ``qrng.ready = 0``).
    """

    def __init__(self, lanes: int, *, has_prng: bool = True, has_qrng: bool = True):
        self.lanes = _checked(self, _check_lanes, lanes)
        if not (has_prng or has_qrng):
            self._MustUse__silence = True
            raise ValueError("EntropySource needs at least one of has_prng, has_qrng")
        self.has_prng = bool(has_prng)
        self.has_qrng = bool(has_qrng)
        width = ENTROPY_BITS_PER_SLOT * self.lanes
        super().__init__({
            "run": In(1),
            "select_qrng": In(1),
            "seed": In(64),
            "load_seed": In(1),
            "qrng": In(stream.Signature(width)),
            "rct_cutoff": In(CUTOFF_BITS),
            "apt_cutoff": In(CUTOFF_BITS),
            "clear_alarm": In(1),
            "words": Out(width),
            "ok": Out(1),
            "ok_unless_fire": Out(1),
            "underrun": Out(1),
            "rct_fire": Out(self.lanes),
            "apt_fire": Out(self.lanes),
            "alarm_rct": Out(1),
            "alarm_apt": Out(1),
        })

    def elaborate(self, platform):
        m = Module()

        use_qrng = Signal()
        available = Signal()
        if self.has_prng and self.has_qrng:
            m.d.comb += use_qrng.eq(self.select_qrng)
        else:
            m.d.comb += use_qrng.eq(Const(int(self.has_qrng)))

        if self.has_prng:
            m.submodules.prng = prng = Xoroshiro128ppLanes(self.lanes)
            m.d.comb += [
                prng.seed.eq(self.seed),
                prng.load.eq(self.load_seed),
                prng.advance.eq(self.run & ~use_qrng),
            ]
            prng_words = prng.words
        else:
            prng_words = Const(0, len(self.words))

        if self.has_qrng:
            m.d.comb += [
                self.qrng.ready.eq(self.run & use_qrng),
                available.eq(Mux(use_qrng, self.qrng.valid, 1)),
                self.words.eq(Mux(use_qrng, self.qrng.payload, prng_words)),
            ]
        else:
            m.d.comb += [available.eq(1), self.words.eq(prng_words)]

        sample_valid = Signal()
        m.d.comb += sample_valid.eq(self.run & available)
        rct, apt = [], []
        for p in range(self.lanes):
            ht = HealthTests()
            m.submodules[f"health{p}"] = ht
            base = ENTROPY_BITS_PER_SLOT * p
            m.d.comb += [
                ht.sample.eq(self.words[base + 24:base + 32]),
                ht.valid.eq(sample_valid),
                ht.rct_cutoff.eq(self.rct_cutoff),
                ht.apt_cutoff.eq(self.apt_cutoff),
                ht.restart.eq(self.clear_alarm),
            ]
            rct.append(ht.rct_fire)
            apt.append(ht.apt_fire)
        m.d.comb += [self.rct_fire.eq(Cat(*rct)), self.apt_fire.eq(Cat(*apt))]

        alarm_rct_q = Signal()
        alarm_apt_q = Signal()
        m.d.comb += [
            self.alarm_rct.eq((alarm_rct_q & ~self.clear_alarm) | self.rct_fire.any()),
            self.alarm_apt.eq((alarm_apt_q & ~self.clear_alarm) | self.apt_fire.any()),
            self.ok_unless_fire.eq(sample_valid & ~((alarm_rct_q | alarm_apt_q) & ~self.clear_alarm)),
            self.ok.eq(self.ok_unless_fire & ~self.rct_fire.any() & ~self.apt_fire.any()),
            self.underrun.eq(self.run & ~available),
        ]
        m.d.sync += [alarm_rct_q.eq(self.alarm_rct), alarm_apt_q.eq(self.alarm_apt)]
        return m


# --------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------

def _sticky(fire: np.ndarray, clear: np.ndarray | None) -> np.ndarray:
    """``alarm_t = (alarm_{t-1} & ~clear_t) | fire_t`` from reset, vectorised."""
    n = fire.shape[0]
    pos = np.arange(n)
    last_fire = np.maximum.accumulate(np.where(fire, pos, -1))
    if clear is None:
        return last_fire >= 0
    last_clear = np.maximum.accumulate(np.where(clear, pos, -1))
    return (last_fire >= 0) & (last_fire >= last_clear)


def entropy_model(lanes: int, seed: int, n: int, *, rct_cutoff: int, apt_cutoff: int,
                  select_qrng: bool = False, qrng_words=None, qrng_valid=None,
                  clear=None) -> dict:
    """Outputs of :class:`EntropySource` over ``n`` running clocks, vectorised.

    Starts from reset (or a clock after LOAD_SEED with ``seed`` and CLEAR_ALARM) and covers
    running clocks only; the PRNG (seeded with ``seed``) is the source unless ``select_qrng``.

    * ``qrng_words``: ``(n, lanes)`` uint32, the QRNG payload presented at each running
      clock (required with ``select_qrng``; the value at an underrun clock is returned as is
      and tested by nothing); ``qrng_valid``: ``(n,)`` bool, default all valid.
    * ``clear``: optional ``(n,)`` bool, CLEAR_ALARM took effect at this running clock (a
      clear during stopped clocks counts at the next running clock).

    Returns a dict of numpy arrays: ``words`` (n, lanes) uint32, ``ok`` (n,),
    ``underrun`` (n,), ``rct_fire`` (n, lanes), ``apt_fire`` (n, lanes), ``alarm_rct`` (n,),
    ``alarm_apt`` (n,), all bool except ``words``.
    """
    lanes = _check_lanes(lanes)
    n = _check_n(n)
    if select_qrng:
        if qrng_words is None:
            raise ValueError("select_qrng needs qrng_words, shape (n, lanes)")
        words = np.asarray(qrng_words)
        if words.shape != (n, lanes):
            raise ValueError(f"qrng_words must have shape ({n}, {lanes}), got {words.shape}")
        words = words.astype(np.uint32)
        if qrng_valid is None:
            available = np.ones(n, dtype=bool)
        else:
            available = np.asarray(qrng_valid, dtype=bool)
            if available.shape != (n,):
                raise ValueError(f"qrng_valid must have shape ({n},), got {available.shape}")
    else:
        words = _prng_words(seed, lanes, n)
        available = np.ones(n, dtype=bool)
    if clear is not None:
        clear = np.asarray(clear, dtype=bool)
        if clear.shape != (n,):
            raise ValueError(f"clear must have shape ({n},), got {clear.shape}")

    samples = (words >> np.uint32(24)).astype(np.uint8)
    rct_fire, apt_fire = health_model(samples, available, rct_cutoff, apt_cutoff,
                                      restart=clear)
    alarm_rct = _sticky(rct_fire.any(axis=1), clear)
    alarm_apt = _sticky(apt_fire.any(axis=1), clear)
    return {
        "words": words,
        "ok": available & ~alarm_rct & ~alarm_apt,
        "underrun": ~available,
        "rct_fire": rct_fire,
        "apt_fire": apt_fire,
        "alarm_rct": alarm_rct,
        "alarm_apt": alarm_apt,
    }
