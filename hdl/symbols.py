"""Symbol selection: entropy word -> BB84 decoy-state symbol, and symbol -> laser/IM drive.

See ``docs/transmitter.md`` ("Symbol selection", "Pulse timing"). Per slot, from its 32-bit
entropy word ``w``:

* ``u_basis = w[0:15]``: basis Z (0) if ``u_basis < pz_q15`` else X (1);
* ``u_int = w[15:30]``: signal (0) if ``u_int < t_signal_q15``, decoy (1) if
  ``u_int < t_signal_q15 + t_decoy_q15`` (17-bit sum), else vacuum (2);
* ``bit = w[30]``; ``w[31]`` is unused.

When the entropy is not ok (underrun or health alarm) every lane is *blank*: intensity 3,
``bit = basis = 0``. A symbol code is the 4-bit value ``bit | basis << 1 | intensity << 2``.
"""
# No `from __future__ import annotations` here: data.Struct reads its field annotations.

import math

import numpy as np
from amaranth.hdl import Cat, Module, Mux, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

__all__ = [
    "BASIS_Z", "BASIS_X",
    "INTENSITY_SIGNAL", "INTENSITY_DECOY", "INTENSITY_VACUUM", "INTENSITY_BLANK",
    "PROB_BITS", "PROB_ONE", "NUM_LASERS",
    "Symbol", "SymbolSelector", "LaserDriver",
    "select_symbols_model", "laser_fire_model", "im_code_model",
    "quantise_probability", "intensity_thresholds",
]

BASIS_Z = 0
BASIS_X = 1
INTENSITY_SIGNAL = 0
INTENSITY_DECOY = 1
INTENSITY_VACUUM = 2
INTENSITY_BLANK = 3

PROB_BITS = 15                 # probabilities are multiples of 2**-PROB_BITS
PROB_ONE = 1 << PROB_BITS      # the quantised value of probability 1.0 (32768)

NUM_LASERS = 4                 # one laser per BB84 state: 0 = H, 1 = V, 2 = D, 3 = A

_REG_MAX = (1 << 16) - 1       # probability/threshold registers are 16 bits wide


class Symbol(data.Struct):
    """One slot's symbol (4 bits): ``bit`` [0], ``basis`` [1], ``intensity`` [2:4].

    Intensity code 3 is *blank* (no pulse); a blank symbol has ``bit = basis = 0``.
    """
    bit: 1
    basis: 1
    intensity: 2


class SymbolSelector(wiring.Component):
    """Combinational symbol selection for ``lanes`` slots per clock.

    Ports
    -----
    words : In(32*lanes)
        Entropy words, lane ``p`` in bits ``[32p, 32p+32)``.
    ok : In(1)
        Entropy available and no alarm; 0 makes every lane blank.
    pz_q15 : In(16)
        P(basis Z) in units of 2**-15 (0..32768; larger values act as 32768).
    t_signal_q15, t_decoy_q15 : In(16)
        P(signal), P(decoy) in units of 2**-15; vacuum gets the rest.
    symbols : Out(ArrayLayout(Symbol, lanes))
        One :class:`Symbol` per lane.
    """

    def __init__(self, lanes: int):
        if lanes not in (1, 2, 4):
            raise ValueError(f"SymbolSelector: lanes must be 1, 2 or 4, not {lanes!r}")
        self.lanes = lanes
        super().__init__({
            "words": In(32 * lanes),
            "ok": In(1),
            "pz_q15": In(16),
            "t_signal_q15": In(16),
            "t_decoy_q15": In(16),
            "symbols": Out(data.ArrayLayout(Symbol, lanes)),
        })

    def elaborate(self, platform):
        m = Module()
        t_sd = self.t_signal_q15 + self.t_decoy_q15          # 17 bits, no overflow
        for p in range(self.lanes):
            w = self.words[32 * p:32 * p + 32]
            u_basis = w[0:PROB_BITS]
            u_int = w[PROB_BITS:2 * PROB_BITS]
            sym = self.symbols[p]
            with m.If(self.ok):
                m.d.comb += [
                    sym.bit.eq(w[30]),
                    sym.basis.eq(u_basis >= self.pz_q15),
                    sym.intensity.eq(Mux(u_int < self.t_signal_q15, INTENSITY_SIGNAL,
                                         Mux(u_int < t_sd, INTENSITY_DECOY, INTENSITY_VACUUM))),
                ]
            with m.Else():
                m.d.comb += [
                    sym.bit.eq(0),
                    sym.basis.eq(0),
                    sym.intensity.eq(INTENSITY_BLANK),
                ]
        return m


class LaserDriver(wiring.Component):
    """Combinational symbol -> laser fire bits and intensity-modulator code, ``lanes`` slots.

    Ports
    -----
    symbols : In(ArrayLayout(Symbol, lanes))
    fire : Out(ArrayLayout(unsigned(lanes), 4))
        ``fire[s]`` bit ``p``: lane ``p`` fires laser ``s = 2*basis + bit`` (0 = H, 1 = V,
        2 = D, 3 = A); blank lanes fire nothing. Same layout as ``PulseShaper.fire`` with
        ``channels = 4``.
    im_code : Out(ArrayLayout(unsigned(2), lanes))
        Intensity code per lane for the intensity modulator; blank gives vacuum (2).
    """

    def __init__(self, lanes: int):
        if lanes not in (1, 2, 4):
            raise ValueError(f"LaserDriver: lanes must be 1, 2 or 4, not {lanes!r}")
        self.lanes = lanes
        super().__init__({
            "symbols": In(data.ArrayLayout(Symbol, lanes)),
            "fire": Out(data.ArrayLayout(unsigned(lanes), NUM_LASERS)),
            "im_code": Out(data.ArrayLayout(unsigned(2), lanes)),
        })

    def elaborate(self, platform):
        m = Module()
        for s in range(NUM_LASERS):
            m.d.comb += self.fire[s].eq(Cat(
                (self.symbols[p].intensity != INTENSITY_BLANK)
                & (Cat(self.symbols[p].bit, self.symbols[p].basis) == s)
                for p in range(self.lanes)))
        for p in range(self.lanes):
            intensity = self.symbols[p].intensity
            m.d.comb += self.im_code[p].eq(
                Mux(intensity == INTENSITY_BLANK, INTENSITY_VACUUM, intensity))
        return m


# --- reference models ------------------------------------------------------------------------

def _check_reg(name: str, value) -> int:
    v = int(value)
    if v != value or not 0 <= v <= _REG_MAX:
        raise ValueError(f"{name} = {value!r} is not an integer in [0, {_REG_MAX}]")
    return v


def select_symbols_model(words, ok, pz_q15: int, t_signal_q15: int, t_decoy_q15: int) -> np.ndarray:
    """Model of :class:`SymbolSelector` over ``n`` clocks.

    ``words``: (n, lanes) uint32 entropy words; ``ok``: (n,) bool. Returns (n, lanes) uint8
    symbol codes ``bit | basis << 1 | intensity << 2``.
    """
    pz = _check_reg("pz_q15", pz_q15)
    ts = _check_reg("t_signal_q15", t_signal_q15)
    td = _check_reg("t_decoy_q15", t_decoy_q15)
    w = np.asarray(words, dtype=np.uint32)
    if w.ndim != 2:
        raise ValueError(f"words must be (n, lanes), got shape {w.shape}")
    ok = np.asarray(ok, dtype=bool)
    if ok.shape != w.shape[:1]:
        raise ValueError(f"ok must have shape ({w.shape[0]},), got {ok.shape}")
    mask = np.uint32(PROB_ONE - 1)
    u_basis = w & mask
    u_int = (w >> np.uint32(PROB_BITS)) & mask
    bit = ((w >> np.uint32(30)) & np.uint32(1)).astype(np.uint8)
    basis = (u_basis >= pz).astype(np.uint8)
    intensity = np.where(u_int < ts, INTENSITY_SIGNAL,
                         np.where(u_int < ts + td, INTENSITY_DECOY, INTENSITY_VACUUM)).astype(np.uint8)
    codes = bit | (basis << 1) | (intensity << 2)
    return np.where(ok[:, None], codes, np.uint8(INTENSITY_BLANK << 2)).astype(np.uint8)


def laser_fire_model(codes) -> np.ndarray:
    """Model of :class:`LaserDriver` fire bits: (n, lanes) codes -> (n, 4, lanes) bool."""
    c = np.asarray(codes, dtype=np.uint8)
    state = c & 3
    lit = (c >> 2) != INTENSITY_BLANK
    return (state[:, None, :] == np.arange(NUM_LASERS, dtype=np.uint8)[None, :, None]) & lit[:, None, :]


def im_code_model(codes) -> np.ndarray:
    """Model of :class:`LaserDriver` IM codes: (n, lanes) codes -> (n, lanes) uint8 in 0..2."""
    intensity = np.asarray(codes, dtype=np.uint8) >> 2
    return np.where(intensity == INTENSITY_BLANK, INTENSITY_VACUUM, intensity).astype(np.uint8)


# --- host-side quantisation ------------------------------------------------------------------

def quantise_probability(p: float) -> int:
    """Round probability ``p`` in [0, 1] to the nearest multiple of 2**-15; returns 0..32768.

    Ties round half up. Error at most 2**-16.
    """
    try:
        x = float(p)
    except (TypeError, ValueError):
        raise ValueError(f"probability {p!r} is not a number") from None
    if not (0.0 <= x <= 1.0):              # also rejects NaN
        raise ValueError(f"probability {p!r} outside [0, 1]")
    return int(math.floor(x * PROB_ONE + 0.5))


def intensity_thresholds(p_signal: float, p_decoy: float, p_vacuum: float) -> tuple[int, int]:
    """Register values ``(t_signal_q15, t_decoy_q15)`` for the intensity probabilities.

    The three probabilities must each be in [0, 1] and sum to 1 within 1e-9. Signal and
    decoy are rounded independently (error <= 2**-16 each); vacuum gets the rest. In the
    one case where rounding both up would exceed 1 (both exactly on a tie) decoy is reduced
    by 2**-15 so that ``t_signal + t_decoy <= 32768``.
    """
    ps = quantise_probability(p_signal)
    pd = quantise_probability(p_decoy)
    quantise_probability(p_vacuum)                     # range check
    total = float(p_signal) + float(p_decoy) + float(p_vacuum)
    if abs(total - 1.0) > 1e-9:
        raise ValueError(f"intensity probabilities signal={p_signal!r}, decoy={p_decoy!r}, "
                         f"vacuum={p_vacuum!r} sum to {total!r}, not 1 (tolerance 1e-9)")
    pd = min(pd, PROB_ONE - ps)
    return ps, pd
