"""Shared testbench pieces of the hdl tests."""
import pytest
from amaranth.sim import Simulator


def _run_seeded_generator(dut, seeds, load, advance, read, expect, seed_lag):
    """Drive a seeded generator (``seed``, ``load``, ``advance`` inputs) clock by clock.

    In every clock ``read(ctx)`` is recorded next to ``expect(seed, k)``: word ``k`` of the
    stream of the seed in force (0 after reset). A ``load`` starts word 0 of the seed presented
    ``seed_lag`` clocks before the load clock (0: that clock); ``advance`` moves to word
    ``k + 1``; ``load`` wins. Returns ``(got, want)``.
    """
    got, want = [], []

    async def tb(ctx):
        seed, k = 0, 0
        for t in range(len(seeds)):
            ctx.set(dut.seed, int(seeds[t]))
            ctx.set(dut.load, int(load[t]))
            ctx.set(dut.advance, int(advance[t]))
            got.append(read(ctx))
            want.append(expect(seed, k))
            await ctx.tick()
            if load[t]:
                seed, k = int(seeds[t - seed_lag]), 0
            elif advance[t]:
                k += 1

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    return got, want


@pytest.fixture
def run_seeded_generator():
    """:func:`_run_seeded_generator`, for tests of the PRNG blocks."""
    return _run_seeded_generator
