"""Pulse shaping: per-slot fire bits -> S output samples per clock and channel.

See ``docs/transmitter.md`` ("Pulse timing"). ``S`` samples per clock, ``P`` slots per clock,
``K = S // P`` samples per slot; bit 0 of a sample word is the earliest sample.

For each clock ``t`` and channel ``c`` the shaper forms the ``2S``-bit word
``E_t[c] = OR_p fire[c][p] * (((1 << w) - 1) << (p*K + d))`` with ``d = min(delay, S)``,
``w = min(width, K)`` (``E_t = 0`` when not ``active``) and outputs, registered (visible in
cycle ``t+1``), ``samples[c] = E_t[c][0:S] | E_{t-1}[c][S:2S]``.
"""
from __future__ import annotations

import numpy as np
from amaranth.hdl import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["PulseShaper", "pulse_shaper_model", "check_geometry"]


def check_geometry(samples_per_clock: int, slots_per_clock: int) -> int:
    """Validate ``S`` in {1, 2, 4, 8}, ``P`` in {1, 2, 4} dividing ``S``; returns ``K = S // P``."""
    if samples_per_clock not in (1, 2, 4, 8):
        raise ValueError(f"samples_per_clock must be 1, 2, 4 or 8, not {samples_per_clock!r}")
    if slots_per_clock not in (1, 2, 4):
        raise ValueError(f"slots_per_clock must be 1, 2 or 4, not {slots_per_clock!r}")
    if samples_per_clock % slots_per_clock:
        raise ValueError(f"slots_per_clock {slots_per_clock} does not divide "
                         f"samples_per_clock {samples_per_clock}")
    return samples_per_clock // slots_per_clock


class PulseShaper(wiring.Component):
    """Registered pulse shaper for ``channels`` channels.

    Ports
    -----
    active : In(1)
        The clock is running; 0 gives ``E = 0`` (the previous clock's spill still appears).
    fire : In(ArrayLayout(unsigned(P), channels))
        ``fire[c]`` bit ``p``: lane ``p`` of channel ``c`` pulses.
    delay : In(4)
        Pulse delay in samples, saturating at ``S``.
    width : In(4)
        Pulse width in samples, saturating at ``K``; 0 gives no pulse.
    samples : Out(ArrayLayout(unsigned(S), channels))
        Registered sample words, bit 0 earliest; one cycle of latency.
    """

    def __init__(self, samples_per_clock: int, slots_per_clock: int, channels: int):
        self.K = check_geometry(samples_per_clock, slots_per_clock)
        if int(channels) != channels or channels < 1:
            raise ValueError(f"channels must be a positive integer, not {channels!r}")
        self.S = samples_per_clock
        self.P = slots_per_clock
        self.channels = channels
        super().__init__({
            "active": In(1),
            "fire": In(data.ArrayLayout(unsigned(slots_per_clock), channels)),
            "delay": In(4),
            "width": In(4),
            "samples": Out(data.ArrayLayout(unsigned(samples_per_clock), channels)),
        })

    def elaborate(self, platform):
        m = Module()
        S, P, K = self.S, self.P, self.K

        d = Signal(range(S + 1))
        m.d.comb += d.eq(Mux(self.delay > S, S, self.delay))
        # mask[i] = (i < min(width, K)); the comparison saturates by itself.
        mask = Signal(K)
        m.d.comb += mask.eq(Cat(self.width > i for i in range(K)))

        for c in range(self.channels):
            base = Signal(S, name=f"base{c}")      # undelayed pulses of all lanes
            m.d.comb += base.eq(Cat(
                mask & self.fire[c][p].replicate(K) & self.active.replicate(K)
                for p in range(P)))
            e = Signal(2 * S, name=f"e{c}")
            m.d.comb += e.eq(base << d)
            spill = Signal(S, name=f"spill{c}")
            m.d.sync += [
                spill.eq(e[S:]),
                self.samples[c].eq(e[:S] | spill),
            ]
        return m


def pulse_shaper_model(S: int, P: int, fire, active, delay, width) -> np.ndarray:
    """Model of :class:`PulseShaper` over ``n`` clocks, from reset.

    ``fire``: (n, channels, P) bool; ``active``: (n,) bool; ``delay``, ``width``: register
    values (int, or (n,) arrays of the value at each clock). Returns (n, channels) uint64:
    ``out[t]`` is the registered word produced from clock ``t`` (visible in cycle ``t+1``).
    """
    K = check_geometry(S, P)
    f = np.asarray(fire, dtype=bool)
    if f.ndim != 3 or f.shape[2] != P:
        raise ValueError(f"fire must be (n, channels, {P}), got shape {f.shape}")
    n = f.shape[0]
    act = np.asarray(active, dtype=bool)
    if act.shape != (n,):
        raise ValueError(f"active must have shape ({n},), got {act.shape}")
    d = np.minimum(np.asarray(delay, dtype=np.int64), S)
    w = np.minimum(np.asarray(width, dtype=np.int64), K)
    if d.shape not in ((), (n,)) or w.shape not in ((), (n,)):
        raise ValueError(f"delay and width must be scalars or ({n},) arrays")
    if (d < 0).any() or (w < 0).any():
        raise ValueError("delay and width must be non-negative")
    # Lanes as a P-bit index, then a table: undelayed word per (width, lane set).
    lanes = np.zeros(f.shape[:2], dtype=np.int64)
    for p in range(P):
        lanes |= f[:, :, p].astype(np.int64) << p
    table = np.zeros((K + 1, 1 << P), dtype=np.uint64)
    for wi in range(K + 1):
        for bits in range(1 << P):
            table[wi, bits] = sum(((1 << wi) - 1) << (p * K) for p in range(P) if bits >> p & 1)
    if d.ndim == 0 and w.ndim == 0:
        e = (table[w] << np.uint64(d))[lanes]
    else:
        w = np.broadcast_to(w, (n,))
        d = np.broadcast_to(d, (n,)).astype(np.uint64)
        e = table[w[:, None], lanes] << d[:, None]
    e = np.where(act[:, None], e, np.uint64(0))
    spill = np.zeros_like(e)
    spill[1:] = e[:-1] >> np.uint64(S)
    return (e & np.uint64((1 << S) - 1)) | spill
