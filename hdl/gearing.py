"""I/O gearing: ``S`` samples per system clock to and from pins, with models.

The endpoint tops carry ``S`` samples per clock per channel (``Alice.laser``, ``Alice.sync``,
``Bob.det``, ``Bob.sync_in``): bit ``j`` of a channel's ``S``-bit word is sample ``j``, the
``j``-th ``1/S`` of the clock period (bit 0 first in time). These blocks move such words to
and from ``width`` pins:

* :class:`OutputGearing` (``o``: ``In(ArrayLayout(S, width))``, element ``c`` = pin ``c``'s word);
* :class:`InputGearing` (``i``: ``Out(ArrayLayout(S, width))``).

Implementations, chosen by ``family``:

``None`` (simulation model)
    Behavioural, for ``amaranth.sim``: a ``fast`` clock domain at ``S`` times the ``sync``
    clock, rising edges aligned, drives/samples ``pins`` (``Out``/``In(width)``) once per
    fast clock. Latency one sync clock in both directions: the word on ``o`` in sync cycle
    ``k`` appears on the pins in fast cycles ``S(k+1) .. S(k+1)+S-1``; the pin levels of fast
    cycles ``Sk .. Sk+S-1`` appear on ``i`` in sync cycle ``k + 1``. With ``S = 1`` this is
    exactly an I/O register (the generic path), which is what the tests check the geared
    model against (:func:`serialize_model`, :func:`deserialize_model`).
``"ice40"`` (``S`` = 1 or 2)
    ``S = 2``: ``SB_IO`` in DDR mode through :class:`amaranth.lib.io.DDRBuffer` (sample 0 on
    the rising edge, sample 1 on the falling edge); ``S = 1``: :class:`~amaranth.lib.io.FFBuffer`.
``"ecp5"`` (``S`` = 1, 2 or 4)
    ``S = 4``: ``ODDRX2F`` / ``IDDRX2F`` clocked by ``ECLK`` (2x the system clock, from an
    ``ECLKSYNCB``) and ``SCLK`` (the system clock, ``CLKDIVF`` of ``ECLK`` by 2), see
    :class:`qkdlink.boards.clocking.ECP5Clocking`; ``D0``/``Q0`` is sample 0. ``S = 2``: the
    ``ODDRX1F``/``IDDRX1F`` of :class:`~amaranth.lib.io.DDRBuffer`; ``S = 1``: ``FFBuffer``.
    References: Lattice TN1265 "ECP5 and ECP5-5G High-Speed I/O Interface" (gearing
    primitives, ECLK/SCLK relation).

The hardware primitives add a fixed latency of whole clocks and a fixed sub-clock skew set by
the device, not by the design; both are calibrated out on the bench with the run-time delay
registers (Alice ``PULSE_DELAY``, Bob ``DELAY_*``), see ``docs/boards.md``.
"""
from __future__ import annotations

import numpy as np
from amaranth.hdl import ClockSignal, Cat, Const, Instance, Module, Mux, Signal
from amaranth.lib import data, io, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["OutputGearing", "InputGearing", "serialize_model", "deserialize_model", "SUPPORTED_SAMPLES"]

#: Samples per clock each family's gearing supports.
SUPPORTED_SAMPLES = {None: (1, 2, 4, 8), "ice40": (1, 2), "ecp5": (1, 2, 4)}


def _check(samples_per_clock: int, width: int, family, port):
    if family not in SUPPORTED_SAMPLES:
        raise ValueError(f"gearing family = {family!r}: must be one of {sorted(SUPPORTED_SAMPLES, key=str)}")
    if samples_per_clock not in SUPPORTED_SAMPLES[family]:
        raise ValueError(f"gearing samples_per_clock = {samples_per_clock} on {family or 'simulation'}: "
                         f"must be one of {SUPPORTED_SAMPLES[family]}")
    if not isinstance(width, int) or width < 1:
        raise ValueError(f"gearing width = {width!r}: must be a positive integer")
    if family is None and port is not None:
        raise ValueError("gearing: the simulation model (family=None) has no port; it exposes `pins`")
    if family is not None:
        if port is None:
            raise ValueError(f"gearing on {family}: a platform port (platform.request(..., dir='-')) is required")
        if len(port) != width:
            raise ValueError(f"gearing width = {width} but the port has {len(port)} pins")


def serialize_model(words, samples_per_clock: int, latency_clocks: int = 1) -> np.ndarray:
    """Pin levels per fast clock, shape ``(S * (n + latency), width)``, from words ``(n, width)``.

    ``words[k, c]`` is pin ``c``'s ``S``-bit word of clock ``k`` (bit 0 first); the pins are
    low during the first ``latency_clocks`` clocks.
    """
    words = np.asarray(words, np.int64)
    S = samples_per_clock
    bits = (words[:, None, :] >> np.arange(S)[None, :, None]) & 1          # (n, S, width)
    pins = bits.reshape(-1, words.shape[1]).astype(np.uint8)
    return np.concatenate([np.zeros((S * latency_clocks, words.shape[1]), np.uint8), pins])


def deserialize_model(pins, samples_per_clock: int, latency_clocks: int = 1) -> np.ndarray:
    """Words ``(n + latency, width)`` from pin levels ``(S * n, width)``; the first
    ``latency_clocks`` words are 0."""
    pins = np.asarray(pins, np.int64)
    S = samples_per_clock
    n = pins.shape[0] // S
    words = (pins[:S * n].reshape(n, S, -1) << np.arange(S)[None, :, None]).sum(axis=1)
    return np.concatenate([np.zeros((latency_clocks, pins.shape[1]), np.int64), words])


def _domain_check(family, S):
    return family == "ecp5" and S == 4


class OutputGearing(wiring.Component):
    """``S`` samples per sync clock on each of ``width`` output pins (see the module docstring)."""

    def __init__(self, samples_per_clock: int, width: int = 1, *, family=None, port=None):
        _check(samples_per_clock, width, family, port)
        self.samples_per_clock = samples_per_clock
        self.width = width
        self.family = family
        self.port = port
        members = {"o": In(data.ArrayLayout(samples_per_clock, width))}
        if family is None:
            members["pins"] = Out(width)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        S, W = self.samples_per_clock, self.width
        if self.family is None:
            word = Signal(data.ArrayLayout(S, W))
            m.d.sync += word.eq(self.o)
            phase = Signal(range(S))
            if S > 1:
                # The first fast cycle of each sync cycle is the one where the sync-domain
                # toggle differs from its fast-domain copy; phase counts from there.
                toggle, seen = Signal(), Signal()
                count = Signal(range(S))
                m.d.sync += toggle.eq(~toggle)
                m.d.fast += seen.eq(toggle)
                first = toggle != seen
                m.d.comb += phase.eq(Mux(first, 0, count))
                m.d.fast += count.eq(phase + 1)
            m.d.comb += [self.pins[c].eq(word[c].bit_select(phase, 1)) for c in range(W)]
            return m
        if _domain_check(self.family, S):
            if any(self.port.invert):
                raise ValueError("ECP5 x2 gearing: inverted pins are not supported; use a non-inverted resource")
            for c in range(W):
                q = Signal(name=f"q{c}")
                m.submodules[f"oddr{c}"] = Instance(
                    "ODDRX2F", i_SCLK=ClockSignal("sync"), i_ECLK=ClockSignal("eclk"), i_RST=Const(0),
                    **{f"i_D{j}": self.o[c][j] for j in range(4)}, o_Q=q)
                m.submodules[f"ob{c}"] = Instance("OB", i_I=q, o_O=self.port.io[c])
            return m
        if S == 2:
            m.submodules.buf = buf = io.DDRBuffer("o", self.port, o_domain="sync")
            m.d.comb += [buf.o[j].eq(Cat(self.o[c][j] for c in range(W))) for j in range(2)]
        else:
            m.submodules.buf = buf = io.FFBuffer("o", self.port, o_domain="sync")
            m.d.comb += buf.o.eq(Cat(self.o[c][0] for c in range(W)))
        return m


class InputGearing(wiring.Component):
    """``S`` samples per sync clock from each of ``width`` input pins (see the module docstring)."""

    def __init__(self, samples_per_clock: int, width: int = 1, *, family=None, port=None):
        _check(samples_per_clock, width, family, port)
        self.samples_per_clock = samples_per_clock
        self.width = width
        self.family = family
        self.port = port
        members = {"i": Out(data.ArrayLayout(samples_per_clock, width))}
        if family is None:
            members["pins"] = In(width)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        S, W = self.samples_per_clock, self.width
        if self.family is None:
            for c in range(W):
                if S == 1:
                    m.d.sync += self.i[c].eq(self.pins[c])
                    continue
                hist = Signal(S, name=f"hist{c}")             # the last S fast-cycle levels
                m.d.fast += hist.eq(Cat(hist[1:], self.pins[c]))
                m.d.sync += self.i[c].eq(Cat(hist[1:], self.pins[c]))
            return m
        if _domain_check(self.family, S):
            if any(self.port.invert):
                raise ValueError("ECP5 x2 gearing: inverted pins are not supported; use a non-inverted resource")
            for c in range(W):
                d = Signal(name=f"d{c}")
                m.submodules[f"ib{c}"] = Instance("IB", i_I=self.port.io[c], o_O=d)
                m.submodules[f"iddr{c}"] = Instance(
                    "IDDRX2F", i_D=d, i_SCLK=ClockSignal("sync"), i_ECLK=ClockSignal("eclk"), i_RST=Const(0),
                    **{f"o_Q{j}": self.i[c][j] for j in range(4)})   # ALIGNWD left unconnected (0)
            return m
        if S == 2:
            m.submodules.buf = buf = io.DDRBuffer("i", self.port, i_domain="sync")
            for c in range(W):
                m.d.comb += self.i[c].eq(Cat(buf.i[0][c], buf.i[1][c]))
        else:
            m.submodules.buf = buf = io.FFBuffer("i", self.port, i_domain="sync")
            for c in range(W):
                m.d.comb += self.i[c].eq(buf.i[c])
        return m
