"""Bring-up stand-in for an endpoint: the same ports as Alice or Bob, no QKD logic.

Used by ``qkdlink build --bringup`` to check a board's clock, pins, gearing and UART on the
bench before the endpoint goes on (a first test of the wiring): the UART echoes every
byte; as Alice, laser channel ``c`` is a square wave of period ``2^(c+11)`` clocks on all
``S`` samples, the sync output fires sample 0 once every ``2^12`` clocks and the IM code
counts slots; as Bob, ``running`` (the status LED) toggles on every clock with a detector or
sync sample set, so a laser-to-detector loopback cable makes it flicker.
"""
from __future__ import annotations

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..hdl.entropy import ENTROPY_BITS_PER_SLOT

__all__ = ["BringUpParams", "BringUp"]


class BringUpParams:
    def __init__(self, samples_per_clock: int, slots_per_clock: int):
        if samples_per_clock % slots_per_clock:
            raise ValueError(f"slots_per_clock = {slots_per_clock}: must divide samples_per_clock = {samples_per_clock}")
        self.samples_per_clock = samples_per_clock
        self.slots_per_clock = slots_per_clock

    def as_dict(self) -> dict:
        return dict(samples_per_clock=self.samples_per_clock, slots_per_clock=self.slots_per_clock, bringup=True)


class BringUp(wiring.Component):
    def __init__(self, role: str, params: BringUpParams):
        self.role = role
        self.params = p = params
        S, P = p.samples_per_clock, p.slots_per_clock
        ports = {"rx": In(stream.Signature(8)), "tx": Out(stream.Signature(8))}
        if role == "alice":
            ports.update(qrng=In(stream.Signature(ENTROPY_BITS_PER_SLOT * P)), laser=Out(data.ArrayLayout(S, 4)),
                         sync=Out(S), im_code=Out(data.ArrayLayout(2, P)))
        elif role == "bob":
            ports.update(det=In(data.ArrayLayout(S, 4)), sync_in=In(S), running=Out(1))
        else:
            raise ValueError(f"role {role!r}: must be 'alice' or 'bob'")
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        S, P = self.params.samples_per_clock, self.params.slots_per_clock
        wiring.connect(m, wiring.flipped(self.rx), wiring.flipped(self.tx))
        count = Signal(16)
        m.d.sync += count.eq(count + 1)
        if self.role == "alice":
            m.d.comb += self.qrng.ready.eq(1)
            m.d.sync += [self.laser[c].eq(count[10 + c].replicate(S)) for c in range(4)]
            m.d.sync += self.sync.eq(count[:12] == 0)
            m.d.sync += self.im_code.eq(Cat((count[:2] + l)[:2] for l in range(P)))
        else:
            seen = Signal()
            m.d.sync += seen.eq(self.det.as_value().any() | self.sync_in.any())
            with m.If(seen):
                m.d.sync += self.running.eq(~self.running)
        return m
