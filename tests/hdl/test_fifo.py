"""BramFifo against amaranth's SyncFIFOBuffered, clock for clock, and the collision poison of hdl/bram.py."""
import gc
import warnings

import numpy as np
import pytest
from amaranth.hdl import Elaboratable, Module, UnusedElaboratable
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.sim import Simulator

from qkdlink.hdl.bram import bram, read_port
from qkdlink.hdl.fifo import BramFifo

_OUTPUTS = ("w_rdy", "r_rdy", "level")


class _Pair(Elaboratable):
    def __init__(self, width, depth):
        self.ours = BramFifo(width=width, depth=depth)
        self.ref = SyncFIFOBuffered(width=width, depth=depth)

    def elaborate(self, platform):
        m = Module()
        m.submodules.ours, m.submodules.ref = self.ours, self.ref
        return m


@pytest.mark.parametrize("width,depth,p_write,p_read,seed", [
    (8, 2, 0.5, 0.5, 1), (8, 16, 0.7, 0.3, 2), (8, 16, 0.9, 0.2, 3), (64, 5, 0.6, 0.4, 4), (3, 33, 0.95, 0.6, 5),
])
def test_matches_sync_fifo_buffered(width, depth, p_write, p_read, seed):
    clocks = 6000
    rng = np.random.default_rng(seed)
    # phases of 300 clocks alternate the two rates, so the FIFO fills and drains
    swap = (np.arange(clocks) // 300) % 2 == 1
    w_en = rng.random(clocks) < np.where(swap, p_read, p_write)
    r_en = rng.random(clocks) < np.where(swap, p_write, p_read)
    w_data = rng.integers(0, 1 << width, clocks, dtype=np.uint64)
    dut = _Pair(width, depth)
    seen = {"full": 0, "read": 0, "empty": 0}

    async def tb(ctx):
        for c in range(clocks):
            for f in (dut.ours, dut.ref):
                ctx.set(f.w_en, int(w_en[c]))
                ctx.set(f.w_data, int(w_data[c]))
                ctx.set(f.r_en, int(r_en[c]))
            for name in _OUTPUTS:
                assert ctx.get(getattr(dut.ours, name)) == ctx.get(getattr(dut.ref, name)), f"clock {c}: {name}"
            if ctx.get(dut.ref.r_rdy):
                assert ctx.get(dut.ours.r_data) == ctx.get(dut.ref.r_data), f"clock {c}: r_data"
                seen["read"] += int(r_en[c])
            seen["full"] += not ctx.get(dut.ref.w_rdy)
            seen["empty"] += not ctx.get(dut.ref.r_rdy)
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    assert seen["read"] > clocks // 10 and seen["full"] > 0 and seen["empty"] > 0, seen


@pytest.mark.parametrize("bad", [0, 1, -3, 2.0, True])
def test_bad_depth(bad):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)     # the half-built object
        with pytest.raises(ValueError, match="depth"):
            BramFifo(width=8, depth=bad)
        gc.collect()


class _Ram(Elaboratable):
    """A bram() with one write port and one read_port(), for the collision semantics."""

    def __init__(self):
        self.m = m = Module()
        m.submodules.mem = mem = bram(16, 8, init=range(8))
        self.wr = mem.write_port()
        self.rd = read_port(m, mem, self.wr, platform=None, name="rd")

    def elaborate(self, platform):
        return self.m


def test_collision_is_poisoned_in_simulation():
    """A read of the address written in the same clock returns ~old (simulation); other reads
    return the old word (a read in the clock after the write sees the new one)."""
    dut = _Ram()

    async def tb(ctx):
        ctx.set(dut.wr.addr, 3)
        ctx.set(dut.wr.data, 0xABCD)
        ctx.set(dut.wr.en, 1)
        ctx.set(dut.rd.addr, 3)
        await ctx.tick()
        assert ctx.get(dut.rd.data) == 3 ^ 0xFFFF
        ctx.set(dut.wr.en, 0)
        await ctx.tick()
        assert ctx.get(dut.rd.data) == 0xABCD
        ctx.set(dut.wr.addr, 4)
        ctx.set(dut.wr.data, 0x1234)
        ctx.set(dut.wr.en, 1)
        await ctx.tick()
        assert ctx.get(dut.rd.data) == 0xABCD        # other address: plain read
        ctx.set(dut.rd.en, 0)
        ctx.set(dut.rd.addr, 4)
        await ctx.tick()
        assert ctx.get(dut.rd.data) == 0xABCD        # held while en is low

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()


def test_read_port_needs_bram():
    from amaranth.lib.memory import Memory

    class Bad(Elaboratable):
        def elaborate(self, platform):
            m = Module()
            m.submodules.mem = mem = Memory(shape=8, depth=4, init=[])
            read_port(m, mem, mem.write_port(), platform=None, name="x")
            return m

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)     # the abandoned memory
        with pytest.raises(ValueError, match="no_rw_check"):
            Simulator(Bad())
        gc.collect()
