"""Alice and Bob in one top, for co-simulating a whole link (``qkdlink verilog --role link``).

The two endpoints share the clock; Alice's optical outputs (laser, sync, intensity code)
and Bob's optical inputs (detectors, sync) are ports, so that a channel — the ideal one of
the sifting test, or the physical channel model — sits between them in the test bench. The
sifting messages travel between the two host links through the test bench too, as they
would through the hosts' authenticated classical channel.
"""
from __future__ import annotations

from amaranth import Module
from amaranth.lib import wiring, stream, data
from amaranth.lib.wiring import In, Out

from ..hdl.entropy import ENTROPY_BITS_PER_SLOT
from .alice import Alice, AliceParams
from .bob import Bob, BobParams

__all__ = ["Link"]


class Link(wiring.Component):
    """Alice (transmitter) and Bob (receiver) side by side, with separate host links."""

    def __init__(self, alice: AliceParams, bob: BobParams):
        if (alice.samples_per_clock, alice.slots_per_clock) != (bob.samples_per_clock, bob.slots_per_clock):
            raise ValueError("Alice and Bob must have the same samples_per_clock and slots_per_clock")
        if alice.frame_log2 != bob.frame_log2:
            raise ValueError(f"sync frame_log2 differs: Alice {alice.frame_log2}, Bob {bob.frame_log2}")
        self.alice_params, self.bob_params = alice, bob
        S, P = alice.samples_per_clock, alice.slots_per_clock
        super().__init__({
            "alice_rx": In(stream.Signature(8)), "alice_tx": Out(stream.Signature(8)),
            "bob_rx": In(stream.Signature(8)), "bob_tx": Out(stream.Signature(8)),
            "qrng": In(stream.Signature(ENTROPY_BITS_PER_SLOT * P)),
            "laser": Out(data.ArrayLayout(S, 4)), "sync": Out(S), "im_code": Out(data.ArrayLayout(2, P)),
            "det": In(data.ArrayLayout(S, 4)), "sync_in": In(S), "bob_running": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.alice = alice = Alice(self.alice_params)
        m.submodules.bob = bob = Bob(self.bob_params)
        wiring.connect(m, wiring.flipped(self.alice_rx), alice.rx)
        wiring.connect(m, alice.tx, wiring.flipped(self.alice_tx))
        wiring.connect(m, wiring.flipped(self.bob_rx), bob.rx)
        wiring.connect(m, bob.tx, wiring.flipped(self.bob_tx))
        wiring.connect(m, wiring.flipped(self.qrng), alice.qrng)
        m.d.comb += [
            self.laser.eq(alice.laser), self.sync.eq(alice.sync), self.im_code.eq(alice.im_code),
            bob.det.eq(self.det), bob.sync_in.eq(self.sync_in), self.bob_running.eq(bob.running),
        ]
        return m
