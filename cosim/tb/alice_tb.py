"""cocotb test of the Alice top under Verilator: configure, emit bursts, read snapshots.

Driven by :func:`qkdlink.cosim.alice.run_alice_cosim`, which passes a JSON spec in
``QKDLINK_TB_SPEC`` and reads the JSON written to ``QKDLINK_TB_OUT``. The testbench only
measures; the harness compares with the bit-exact model. Python wakes per host-link byte and
once per burst, never per emitted slot.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import cocotb
from cocotb.triggers import ClockCycles, Timer

from qkdlink.cosim.alice_sequence import (setup_writes, burst_writes, unpack_snapshot, SNAP_FIRST,
                                          SNAP_COUNT, RUN, STOP, SNAPSHOT)
from qkdlink.cosim.tb.hostlink_driver import HostLinkDriver
from qkdlink.gateware.regmap import ALICE_REGISTERS as R

CLOCK_PERIOD_NS = 2  # the SV top toggles clk every 1 ns


@cocotb.test()
async def alice_bursts(dut):
    spec = json.loads(Path(os.environ["QKDLINK_TB_SPEC"]).read_text())
    bursts, P = spec["bursts"], spec["params"]["slots_per_clock"]
    progress_path = os.environ.get("QKDLINK_TB_PROGRESS")
    clk = dut.clk
    link = HostLinkDriver(dut.pump, clock_period_ns=CLOCK_PERIOD_NS)
    dut.qrng_valid.value = 0
    dut.qrng_payload.value = 0
    dut.rst.value = 1
    await ClockCycles(clk, 4)
    dut.rst.value = 0
    await ClockCycles(clk, 2)

    ident = await link.read(R["ID"].addr, 3)
    for addr, value in setup_writes(spec["settings"]):
        await link.write(addr, value)

    snapshots, emit_wall_s, stop_slot = [], 0.0, 0
    for clocks in bursts:
        stop_slot += clocks * P
        for addr, value in burst_writes(stop_slot):
            await link.write(addr, value)
        t0 = time.perf_counter()
        await link.write(*RUN)
        await Timer(clocks * CLOCK_PERIOD_NS, unit="ns")
        emit_wall_s += time.perf_counter() - t0
        status = await link.read(R["STATUS"].addr)
        assert not status[0] & 1, f"still running after the burst: STATUS={status[0]:#x}"
        await link.write(*STOP)
        await link.write(*SNAPSHOT)
        snapshots.append(unpack_snapshot(await link.read(SNAP_FIRST, SNAP_COUNT)))
        if progress_path:
            with open(progress_path, "a") as fh:
                fh.write(f"{len(snapshots)}\n")

    choice_answers = []
    for first, count in spec.get("choice_queries", []):
        ans = await link.choices(first, count)
        choice_answers.append({"first_slot": ans.first_slot, "entries": list(ans.entries)})
    link_counters = await link.read(R["RX_FRAMES"].addr, 9)

    with open(os.environ["QKDLINK_TB_OUT"], "w") as fh:
        json.dump({"ident": ident, "snapshots": snapshots, "emit_wall_s": emit_wall_s,
                   "choices": choice_answers, "link_counters": link_counters}, fh)
