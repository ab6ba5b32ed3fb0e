"""The Bob check under Amaranth's own simulator: the baseline of the receiver benchmark.

Same flow as the cocotb testbench's tagging phase — configure over the host link, replay the
detector and sync words while running, snapshot, read back — with records kept in the
gateware (RECORDS off): the snapshot counters and the record digest are compared with the
model. The replay necessarily sets the inputs every clock (that is how amaranth.sim runs).
"""
from __future__ import annotations

import sys
import time

import numpy as np
from amaranth.sim import Simulator

from ..gateware.bob import Bob, BobParams
from ..gateware.bob_model import BobSettings
from ..gateware.regmap import BOB_REGISTERS as R, BOB_COUNTER32_NAMES
from .bob_sequence import setup_writes
from .pysim_link import PySimLink

__all__ = ["run_bob_pysim"]


def run_bob_pysim(params: BobParams, settings: BobSettings, det: np.ndarray, sync: np.ndarray) -> dict:
    """Replay ``det``/``sync`` under amaranth.sim; returns the digest, counters and wall time."""
    dut = Bob(params)
    # amaranth.sim compiles the wide CRC of the record digest into deeply nested expressions
    old_limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old_limit, 20000))
    try:
        sim = Simulator(dut)
    finally:
        sys.setrecursionlimit(old_limit)
    sim.add_clock(1e-8)
    S = params.samples_per_clock
    det_words = [int(sum(int(det[k, c]) << (c * S) for c in range(4))) for k in range(det.shape[0])]
    sync_words = [int(x) for x in sync]
    result = {}

    async def bench(ctx):
        link = PySimLink(ctx, dut, probe=dut.running)
        cmd, ctrl = R["CMD"], R["CTRL"]
        for addr, value in setup_writes(settings.as_dict()):
            await link.write(addr, value)
        # RUN takes effect during the write; the clocks it already ran (with zero input) are
        # counted so that the model can be given the same run.
        link.probe_ticks = 0
        await link.write(ctrl.addr, 1 << ctrl.field("RUN").offset)
        result["pre_clocks"] = link.probe_ticks
        t0 = time.perf_counter()
        for k in range(len(det_words)):
            ctx.set(dut.det.as_value(), det_words[k])
            ctx.set(dut.sync_in, sync_words[k])
            await ctx.tick()
        ctx.set(dut.det.as_value(), 0)
        ctx.set(dut.sync_in, 0)
        result["emit_wall_s"] = time.perf_counter() - t0
        await link.write(ctrl.addr, 0)
        await link.write(cmd.addr, 1 << cmd.field("SNAPSHOT").offset)
        lo, hi = await link.read(R["SNAP_LOCAL_SLOT_LO"].addr, 2)
        result["local_slot"] = lo | hi << 32
        values = await link.read(R[BOB_COUNTER32_NAMES[0]].addr, len(BOB_COUNTER32_NAMES))
        result.update(dict(zip(BOB_COUNTER32_NAMES, values)))

    sim.add_testbench(bench)
    sim.run()
    return result
