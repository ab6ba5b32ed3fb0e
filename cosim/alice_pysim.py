"""The Alice check under Amaranth's own simulator (``amaranth.sim``).

Same flow as the cocotb testbench — configure over the host link, emit bursts, snapshot,
read back — for two purposes: the baseline that the co-simulation benchmark compares
against, and a third opinion (next to Verilator and the model) on short runs in tests.
"""
from __future__ import annotations

import time

from amaranth.sim import Simulator

from ..gateware.alice import Alice, AliceParams
from ..gateware.alice_model import AliceSettings
from .pysim_link import PySimLink
from .alice_sequence import setup_writes, burst_writes, unpack_snapshot, SNAP_FIRST, SNAP_COUNT, RUN, STOP, SNAPSHOT

__all__ = ["run_alice_pysim"]


def run_alice_pysim(params: AliceParams, settings: AliceSettings, bursts: list[int]) -> dict:
    """Run ``bursts`` under amaranth.sim; returns snapshots and the emission wall time."""
    dut = Alice(params)
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    P = params.slots_per_clock
    result = {"snapshots": [], "emit_wall_s": 0.0}

    async def bench(ctx):
        link = PySimLink(ctx, dut)
        for addr, value in setup_writes(settings.as_dict()):
            await link.write(addr, value)
        stop = 0
        for clocks in bursts:
            stop += clocks * P
            for addr, value in burst_writes(stop):
                await link.write(addr, value)
            t0 = time.perf_counter()
            await link.write(*RUN)
            await ctx.tick().repeat(clocks)
            result["emit_wall_s"] += time.perf_counter() - t0
            await link.write(*STOP)
            await link.write(*SNAPSHOT)
            result["snapshots"].append(unpack_snapshot(await link.read(SNAP_FIRST, SNAP_COUNT)))

    sim.add_testbench(bench)
    sim.run()
    return result
