"""The full link (module ``link``: Alice + Bob) under Amaranth's own simulator: the baseline
of the full-link co-simulation benchmark.

Same flow as the cocotb run without the sifting traffic (which favours this baseline):
configure both ends over their host links, start Alice (she stops by herself at the stop
slot) and then Bob, replay Bob's detector and sync words from the same event file the
Verilator run used, one clock at a time, and read both snapshots back. Alice's symbol and
pin digests and Bob's record digest are compared with the bit-exact models.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from amaranth.sim import Simulator

from ..gateware.alice import AliceParams
from ..gateware.alice_model import AliceSettings, alice_model, SNAPSHOT_FIELDS
from ..gateware.bob import BobParams
from ..gateware.bob_model import BobSettings, bob_model
from ..gateware.link import Link
from ..gateware.regmap import BOB_REGISTERS as B
from .alice_sequence import setup_writes, burst_writes, unpack_snapshot, SNAP_FIRST, SNAP_COUNT, RUN, SNAPSHOT
from .bob_sequence import setup_writes as bob_setup_writes
from .pysim_link import PySimLink
from .raw_verilator import read_events

__all__ = ["run_fulllink_pysim"]


def run_fulllink_pysim(alice: AliceParams, bob: BobParams, alice_settings: AliceSettings,
                       bob_settings: BobSettings, stim: Path, *, slots: int) -> dict:
    """Run ``slots`` slots of the link under amaranth.sim with Bob's input from ``stim``.

    Returns the replay's wall and CPU time (``emit_wall_s``, ``emit_cpu_s``), the slots
    replayed and the model checks.
    """
    P, S = alice.slots_per_clock, alice.samples_per_clock
    n_clocks = -(-slots // P)
    det, sync = read_events(stim, S, n_clocks)
    dut = Link(alice, bob)
    # amaranth.sim compiles the wide CRC of the record digest into deeply nested expressions
    old_limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old_limit, 20000))
    try:
        sim = Simulator(dut)
    finally:
        sys.setrecursionlimit(old_limit)
    sim.add_clock(1e-8)
    det_words = [int(sum(int(det[k, c]) << (c * S) for c in range(4))) for k in range(n_clocks)]
    sync_words = [int(x) for x in sync]
    result = {}

    async def bench(ctx):
        a_link = PySimLink(ctx, SimpleNamespace(rx=dut.alice_rx, tx=dut.alice_tx))
        b_link = PySimLink(ctx, SimpleNamespace(rx=dut.bob_rx, tx=dut.bob_tx), probe=dut.bob_running)
        for addr, value in setup_writes(alice_settings.as_dict()):
            await a_link.write(addr, value)
        for addr, value in bob_setup_writes(bob_settings.as_dict()):
            await b_link.write(addr, value)
        for addr, value in burst_writes(n_clocks * P):
            await a_link.write(addr, value)
        await a_link.write(*RUN)
        # Bob's RUN takes effect during the write: the clocks he already ran (zero input, as
        # the model is told) are counted and the replay continues from there.
        b_link.probe_ticks = 0
        await b_link.write(B["CTRL"].addr, 1 << B["CTRL"].field("RUN").offset)
        pre = b_link.probe_ticks
        t0, c0 = time.perf_counter(), time.process_time()
        for k in range(pre, n_clocks):
            ctx.set(dut.det.as_value(), det_words[k])
            ctx.set(dut.sync_in, sync_words[k])
            await ctx.tick()
        ctx.set(dut.det.as_value(), 0)
        ctx.set(dut.sync_in, 0)
        result["emit_wall_s"], result["emit_cpu_s"] = time.perf_counter() - t0, time.process_time() - c0
        result["replayed_clocks"] = n_clocks - pre
        result["pre_clocks"] = pre
        await b_link.write(B["CTRL"].addr, 0)
        await b_link.write(B["CMD"].addr, 1 << B["CMD"].field("SNAPSHOT").offset)
        lo, hi = await b_link.read(B["SNAP_LOCAL_SLOT_LO"].addr, 2)
        result["bob_local_slot"] = lo | hi << 32
        result["bob_digest"], = await b_link.read(B["SNAP_DIGEST_RECORDS"].addr)
        await a_link.write(*SNAPSHOT)
        result["alice_snapshot"] = unpack_snapshot(await a_link.read(SNAP_FIRST, SNAP_COUNT))

    sim.add_testbench(bench)
    sim.run()

    mismatches = []
    expect_a = alice_model(alice, alice_settings, [n_clocks]).snapshots[-1]
    for name in SNAPSHOT_FIELDS:
        if name != "SNAP_CHOICE_LOST" and result["alice_snapshot"][name] != expect_a[name]:
            mismatches.append(f"Alice {name}: amaranth.sim {result['alice_snapshot'][name]} != model {expect_a[name]}")
    n_run = result["bob_local_slot"] // P
    pre = result["pre_clocks"]
    det_run = np.zeros((n_run, 4), np.uint64)
    sync_run = np.zeros(n_run, np.uint64)
    k = min(n_run, n_clocks)
    det_run[pre:k], sync_run[pre:k] = det[pre:k], sync[pre:k]
    if result["bob_digest"] != bob_model(bob, bob_settings, det_run, sync_run).snapshot["SNAP_DIGEST_RECORDS"]:
        mismatches.append("Bob record digest: amaranth.sim differs from the model")
    return {"slots": result["replayed_clocks"] * P, "emit_wall_s": result["emit_wall_s"],
            "emit_cpu_s": result["emit_cpu_s"],
            "slots_per_s": result["replayed_clocks"] * P / result["emit_wall_s"],
            "model_agreement": not mismatches, "mismatches": mismatches}
