"""Sync sampler: the sync channel sampled by level, one sync bit per slot.

Alice's sync channel carries one bit per slot as a pulse of ``width`` samples. At one sample
per slot (``K = S / P = 1``) consecutive 1-bits merge into one long pulse, so a rising-edge
detector (the time tagger) cannot decode it; the sync channel is sampled by *level* instead.
``S`` samples per clock, ``P`` slots per clock, ``K = S // P``; bit 0 of a sample word is the
earliest sample, absolute sample time ``T = clock * S + i``.

1. Fine delay, exactly as in the time tagger (``hdl/timetagger.py``):
   ``x'[T] = x[T - d]``, ``d = min(delay, max_delay_samples)`` (default ``4*S - 1``); samples
   before the first clock after reset are 0. ``delay`` is taken with the sample word of the
   same clock.
2. Sync bit of lane ``p`` of clock ``t`` = OR of ``x'`` over the samples ``[p*K, (p+1)*K)``
   of clock ``t``.

Outputs are registered, ``SyncSampler.LATENCY = 3`` clocks after the input word, the same as
``TimeTagger.LATENCY``, so the sampler lines up with the detector time taggers.

Recovering Alice's bits (end to end with :class:`qkdlink.hdl.pulses.PulseShaper`)
-----------------------------------------------------------------------------------
The shaper (pulse delay ``d`` in [0, S], width ``w`` in [1, K]) puts the pulse of lane ``p``
of its clock ``t`` on samples ``[(t+1)*S + p*K + d, ... + w)`` of its output (the ``+1`` is
its output register). Let the sampler see that output directly (sampler input clock = shaper
output cycle) with delay ``D``, and write ``D + d = q*S + u``. The sampler window of lane
``p`` in input clock ``t + 1 + q`` then starts ``u`` samples before the pulse of slot
``(t, p)`` in the undelayed stream, i.e. it covers that pulse and no other iff

    ``0 <= u <= K - w``     (the pulse lies inside one sampling window),

and then ``bits[t + 1 + q] == fire[t]`` exactly for every bit pattern (``u < 0`` lets the
next slot's pulse in, ``u > K - w`` the previous one's). So the recovering delays are
``D = q*S - d + u`` for any ``q >= 0`` and ``u`` in ``[0, K - w]`` with
``0 <= D <= max_delay_samples``; the natural choice is ``D = (S - d) % S + (K - w) // 2``
(centred, ``q = 1`` when ``d > 0``). At ``K = 1`` (so ``w = 1``) only ``u = 0`` works:
``D = S - d`` for ``d > 0``, ``D = 0`` for ``d = 0``. On a real link the channel delay adds to
``d``: calibrate ``D`` so that the total delay is a whole number of clocks plus ``u``.
"""
import numpy as np
from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import bits_for

from .pulses import check_geometry
from .timetagger import _delayed, _max_delay

__all__ = ["SyncSampler", "sync_sampler_model"]


class SyncSampler(wiring.Component):
    """Level sampler for the sync channel: ``P`` sync bits per clock.

    Three registered stages (``LATENCY = 3``): (1) the time tagger's fine delay, a barrel
    shifter over the last ``ceil(max_delay / S)`` raw words -> delayed word; (2) the OR of the
    ``K`` samples of each lane; (3) output register. Out-of-context nextpnr-ecp5 (LFE5U-25F,
    default max delay), grade 8 / grade 6: S = 8 251 / 182 MHz (the 32-sample shifter), S = 4
    315 / 249 MHz.

    Parameters
    ----------
    samples_per_clock, slots_per_clock : int
        ``S`` in {1, 2, 4, 8}, ``P`` in {1, 2, 4} dividing ``S``.
    max_delay_samples : int or None
        Largest fine delay in samples (default ``4*S - 1``); larger ``delay`` values saturate.

    Ports
    -----
    samples : In(S)
        Sync channel sample word, bit 0 earliest.
    delay : In(bits_for(max_delay_samples))
        Fine delay, samples (saturating at ``max_delay_samples``).
    bits : Out(P)
        Registered: bit ``p`` is the sync bit of lane ``p`` of the input clock ``LATENCY``
        clocks earlier.
    """

    LATENCY = 3

    def __init__(self, samples_per_clock: int, slots_per_clock: int, max_delay_samples=None):
        self.K = check_geometry(samples_per_clock, slots_per_clock)
        self.S = samples_per_clock
        self.P = slots_per_clock
        self.max_delay = _max_delay(samples_per_clock, max_delay_samples)
        super().__init__({
            "samples": In(self.S),
            "delay": In(bits_for(self.max_delay)),
            "bits": Out(self.P),
        })

    def elaborate(self, platform):
        m = Module()
        S, P, K, D = self.S, self.P, self.K, self.max_delay
        words = -(-D // S)                      # raw history words the delay can reach back

        # stage 1: fine delay (as TimeTagger)
        hist = [Signal(S, name=f"hist{k}") for k in range(words)]        # hist[0] newest
        m.d.sync += [h.eq(p) for h, p in zip(hist, [self.samples, *hist[:-1]])]
        window = Cat(*reversed(hist), self.samples)          # sample T - k*S at k*S below
        d = Signal(range(D + 1))
        raw = self.delay
        m.d.comb += d.eq(Mux(raw > D, D, raw) if (1 << len(raw)) - 1 > D else raw)
        x = Signal(S)                                        # delayed word
        m.d.sync += x.eq((window << d)[words * S:words * S + S])

        # stage 2: per-lane OR; stage 3: output register
        lanes = Signal(P)
        m.d.sync += [lanes.eq(Cat(x[p * K:(p + 1) * K].any() for p in range(P))),
                     self.bits.eq(lanes)]
        return m


def sync_sampler_model(S: int, P: int, samples, delay, max_delay_samples=None) -> np.ndarray:
    """Model of :class:`SyncSampler` over ``n`` input clocks from reset.

    ``samples``: (n,) words of ``S`` bits; ``delay``: scalar or (n,) (the register value at
    each input clock), samples, saturating at ``max_delay_samples`` (default ``4*S - 1``).
    Returns (n, P) bool indexed by input clock (no latency): lane ``p`` of clock ``t`` is the
    OR of the delayed samples ``[p*K, (p+1)*K)`` of clock ``t``.
    """
    K = check_geometry(S, P)
    dmax = _max_delay(S, max_delay_samples)
    x = np.asarray(samples)
    if x.ndim != 1:
        raise ValueError(f"samples must be (n,), got shape {x.shape}")
    if x.size and (x.min() < 0 or x.max() >= 1 << S):
        raise ValueError(f"samples must be {S}-bit words")
    n = len(x)
    d = np.asarray(delay, dtype=np.int64)
    if d.shape not in ((), (n,)):
        raise ValueError(f"delay must be a scalar or ({n},), got shape {d.shape}")
    if (d < 0).any():
        raise ValueError("delay must be non-negative")
    xd = _delayed(x.astype(np.uint8), np.minimum(d, dmax), S)
    shifts = (np.arange(P) * K).astype(np.uint8)
    return ((xd[:, None] >> shifts) & np.uint8((1 << K) - 1)) != 0
