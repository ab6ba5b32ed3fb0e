"""LiveCounters under amaranth.sim against flip-flop counters: seeded random events (at most
one per counter every ``min_event_gap`` clocks), random reads and back-to-back read bursts,
narrow widths so that the counters wrap."""
import gc
import random
import warnings

import pytest
from amaranth.hdl import UnusedElaboratable
from amaranth.sim import Simulator

from qkdlink.hdl.live_counters import LiveCounters

PARAMS = [
    # n_counters, width, min_event_gap, max_read_burst, clocks, seed
    (9, 32, 3, 32, 20000, 1),
    (9, 8, 3, 32, 20000, 2),        # wraps many times
    (2, 5, 1, 4, 8000, 3),           # fewer counters than pipeline words; an event every clock
    (16, 12, 2, 16, 12000, 4),
]


@pytest.mark.parametrize("n, width, gap, burst, clocks, seed", PARAMS)
def test_reads_match_flipflop_counters(n, width, gap, burst, clocks, seed):
    dut = LiveCounters(n, width, min_event_gap=gap, max_read_burst=burst)
    rng = random.Random(seed)
    mask = (1 << width) - 1
    checked = []

    async def tb(ctx):
        vals = [0] * n                 # flip-flop counters: value in the current clock
        last = [-gap] * n
        expect = {}                    # clock -> expected r_data
        burst_left = 0
        for c in range(clocks):
            p_event = rng.choice((0.05, 0.3, 1.0))
            inc = 0
            for i in range(n):
                if c - last[i] >= gap and rng.random() < p_event:
                    inc |= 1 << i
                    last[i] = c
            if burst_left == 0 and c > 2 * dut.n_words and rng.random() < 0.05:
                burst_left = rng.randint(1, burst) if burst else 0
            r_en = burst_left > 0
            addr = rng.randrange(n)
            burst_left = max(0, burst_left - 1)
            ctx.set(dut.inc, inc)
            ctx.set(dut.r_en, r_en)
            ctx.set(dut.r_addr, addr)
            if c in expect:
                assert ctx.get(dut.r_data) == expect.pop(c), f"clock {c}"
                checked.append(c)
            nxt = [(v + (inc >> i & 1)) & mask for i, v in enumerate(vals)]
            if r_en:
                expect[c + 2] = nxt[addr]          # the flip-flop value in clock c + 1
            await ctx.tick()
            vals = nxt
            if c % 997 == 0:
                assert dut.peek(ctx) == vals
        assert dut.peek(ctx) == vals

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    assert len(checked) > clocks // 20


def test_read_result_held_until_next_read():
    dut = LiveCounters(3, 16)

    async def tb(ctx):
        for _ in range(10):
            await ctx.tick()
        ctx.set(dut.inc, 0b010)
        await ctx.tick()
        ctx.set(dut.inc, 0)
        ctx.set(dut.r_en, 1)
        ctx.set(dut.r_addr, 1)
        await ctx.tick()
        ctx.set(dut.r_en, 0)
        await ctx.tick()
        for _ in range(20):
            assert ctx.get(dut.r_data) == 1
            ctx.set(dut.inc, 0b010)
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()


@pytest.mark.parametrize("kwargs, name", [(dict(n_counters=0), "n_counters"), (dict(n_counters=True), "n_counters"),
                                          (dict(n_counters=2, width=0), "width"),
                                          (dict(n_counters=2, min_event_gap=0), "min_event_gap")])
def test_bad_parameters(kwargs, name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)   # the half-built component
        with pytest.raises(ValueError, match=name):
            LiveCounters(**kwargs)
        gc.collect()
