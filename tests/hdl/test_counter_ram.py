"""CounterRam under amaranth.sim against a plain-counter model: seeded random increments,
clears and snapshots at random times (also back to back), shadow reads during and after sweeps."""
import gc
import random
import warnings

import pytest
from amaranth.hdl import UnusedElaboratable
from amaranth.sim import Simulator

from qkdlink.hdl.counter_ram import CounterRam


class Model:
    """Plain counters plus the request/busy rules of CounterRam (module docstring)."""

    def __init__(self, dut: CounterRam):
        self.n, self.mask, self.groups = dut.n_counters, (1 << dut.width) - 1, dut.groups
        self.tail = dut.sweep_clocks
        self.vals = [0] * self.n
        self.shadow_old = [0] * self.n
        self.shadow_new = [0] * self.n
        self.last_accept = 0          # the reset sweep is accepted in clock 0
        self.last_snap = 0
        self.clock = 0

    def sweeping(self, c=None) -> bool:
        c = self.clock if c is None else c
        return c <= self.last_accept + self.tail

    def snap_settled(self, c) -> bool:
        return c > self.last_snap + self.tail

    def step(self, inc, clear, snap):
        """One clock; returns the expected ``busy``."""
        c = self.clock
        boot = c == 0
        req = snap or clear != 0
        busy = self.sweeping() or req or boot
        accept = not boot and req and not self.sweeping()
        if accept:
            self.last_accept = c
        if accept and snap:
            self.shadow_old = self.shadow_new
            self.shadow_new = list(self.vals)
            self.last_snap = c
        for i in range(self.n):
            if accept and clear >> self.groups[i] & 1:
                self.vals[i] = 0
            else:
                self.vals[i] = (self.vals[i] + inc[i]) & self.mask
        self.clock += 1
        return busy


PARAMS = [
    # n_counters, width, max_increment, groups, clocks, seed, min_gap
    (25, 48, 1, None, 12000, 1, 1),
    (7, 10, (4, 1, 2, 3, 1, 1, 8), (0, 0, 1, 1, 2, 2, 2), 9000, 2, 1),
    (2, 6, 3, (0, 1), 6000, 3, 1),
    # rare events: accumulators sized from the gap (2 of them 1 bit wide)
    (12, 12, (1, 2, 1, 1, 1, 3, 1, 1, 1, 1, 1, 1), (0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 2), 12000, 4,
     (1, 2, 3, 12, 16, 2, 1, 5, 7, 30, 1, 4)),
]


@pytest.mark.parametrize("n,width,max_inc,groups,clocks,seed,min_gap", PARAMS)
def test_against_model(n, width, max_inc, groups, clocks, seed, min_gap):
    dut = CounterRam(n, width, max_inc, groups, min_gap=min_gap)
    model = Model(dut)
    rng = random.Random(seed)
    maxes = dut.max_increment
    stats = {"snapshots": 0, "clears": 0, "back_to_back": 0, "reads_in_sweep": 0, "reads": 0, "reads_poisoned": 0}

    gaps = dut.min_gap
    last_inc = [-10**9] * n

    async def tb(ctx):
        held = None               # r_data of the last read
        mode_left, mode = 0, "calm"
        for c in range(clocks + 200):
            final = c >= clocks
            if mode_left == 0:
                mode = rng.choice(("calm", "busy", "max", "greedy"))
                mode_left = rng.randrange(50, 600)
            mode_left -= 1
            if mode == "max":
                inc = list(maxes)
            elif mode == "busy":
                inc = [rng.randint(0, m) for m in maxes]
            else:
                inc = [rng.randint(0, m) if rng.random() < 0.1 else 0 for m in maxes]
            for i in range(n):                  # the gap contract: as dense as it allows
                if inc[i] and c - last_inc[i] < gaps[i]:
                    inc[i] = 0
                elif inc[i]:
                    last_inc[i] = c
            snap, clear = 0, 0
            if not final:
                free = not model.sweeping() and c > 0
                p = 0.6 if mode == "greedy" else 0.01
                if rng.random() < (p if free else 0.02):   # requests while busy are ignored
                    snap = int(rng.random() < 0.8)
                    clear = rng.getrandbits(dut.n_groups) if rng.random() < 0.3 else 0
                    if free and snap and model.last_snap + model.tail + 1 == c:
                        stats["back_to_back"] += 1
            elif c == clocks + 20:
                snap = 1                                    # final snapshot, checked below
            r_en = int(rng.random() < 0.3)
            addr = rng.randrange(n)
            for i in range(n):
                ctx.set(dut.inc[i], inc[i])
            ctx.set(dut.clear, clear)
            ctx.set(dut.snapshot, snap)
            ctx.set(dut.r_en, r_en)
            ctx.set(dut.r_addr, addr)
            busy = model.step(inc, clear, snap)
            assert ctx.get(dut.busy) == busy, f"clock {c}: busy"
            if snap and model.last_snap == c:
                stats["snapshots"] += 1
            if clear and model.last_accept == c:
                stats["clears"] += 1
            await ctx.tick()
            if r_en:
                got = ctx.get(dut.r_data)
                stats["reads"] += 1
                if model.snap_settled(c):
                    assert got == model.shadow_new[addr], f"clock {c}: shadow[{addr}]"
                else:
                    # undefined if the sweep writes the word in the read clock (hdl/bram.py):
                    # simulation returns the complement of the old word then
                    stats["reads_in_sweep"] += 1
                    poison = model.shadow_old[addr] ^ ((1 << dut.width) - 1)
                    stats["reads_poisoned"] += got == poison
                    assert got in (model.shadow_old[addr], model.shadow_new[addr], poison), \
                        f"clock {c}: shadow[{addr}] in sweep"
                held = got
            elif held is not None:
                assert ctx.get(dut.r_data) == held, f"clock {c}: r_data held without r_en"
        # the final snapshot holds the final values
        assert not model.sweeping()
        for a in range(n):
            ctx.set(dut.r_en, 1)
            ctx.set(dut.r_addr, a)
            await ctx.tick()
            assert ctx.get(dut.r_data) == model.shadow_new[a], f"final counter {a}"
        ctx.set(dut.r_en, 0)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    assert stats["snapshots"] > 20 and stats["clears"] > 3 and stats["back_to_back"] > 3, stats
    assert stats["reads_in_sweep"] > 100 and stats["reads_poisoned"] > 0, stats


def test_reset_sweep_zeroes_ram():
    """A reset in mid-run zeroes counters and shadows although RAM contents survive it."""
    from amaranth.hdl import Module, ResetInserter, Signal
    dut = CounterRam(4, 16, 2)
    rst = Signal()
    m = Module()
    m.submodules.dut = ResetInserter(rst)(dut)

    async def tb(ctx):
        for _ in range(40):
            for i in range(4):
                ctx.set(dut.inc[i], i % 3)
            await ctx.tick()
        ctx.set(dut.snapshot, 1)
        await ctx.tick()
        ctx.set(dut.snapshot, 0)
        while ctx.get(dut.busy):
            await ctx.tick()
        ctx.set(dut.r_en, 1)
        ctx.set(dut.r_addr, 2)
        await ctx.tick()
        assert ctx.get(dut.r_data) > 0
        ctx.set(rst, 1)
        await ctx.tick()
        ctx.set(rst, 0)
        for i in range(4):
            ctx.set(dut.inc[i], 0)
        assert ctx.get(dut.busy)
        while ctx.get(dut.busy):
            await ctx.tick()
        for a in range(4):
            ctx.set(dut.r_addr, a)
            await ctx.tick()
            assert ctx.get(dut.r_data) == 0
        ctx.set(dut.snapshot, 1)
        await ctx.tick()
        ctx.set(dut.snapshot, 0)
        while ctx.get(dut.busy):
            await ctx.tick()
        for a in range(4):
            ctx.set(dut.r_addr, a)
            await ctx.tick()
            assert ctx.get(dut.r_data) == 0, "live counters zeroed by the reset sweep"

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()


def test_bad_parameters():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)   # the half-built components
        with pytest.raises(ValueError, match="n_counters"):
            CounterRam(0)
        with pytest.raises(ValueError, match="width"):
            CounterRam(4, 65)
        with pytest.raises(ValueError, match=r"max_increment\[1\]"):
            CounterRam(2, 8, (1, 0))
        with pytest.raises(ValueError, match="max_increment has 1 entries"):
            CounterRam(2, 8, (1,))
        with pytest.raises(ValueError, match="groups has 3 entries"):
            CounterRam(2, 8, 1, (0, 1, 0))
        with pytest.raises(ValueError, match=r"min_gap\[1\]"):
            CounterRam(2, 8, 1, min_gap=(1, 0))
        with pytest.raises(ValueError, match="min_gap has 1 entries"):
            CounterRam(2, 8, 1, min_gap=(2,))
        gc.collect()
