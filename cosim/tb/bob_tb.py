"""cocotb test of the Bob top under Verilator: replayed detector input, records, sifting.

Driven by :func:`qkdlink.cosim.bob.run_bob_cosim`. The SV top replays the stimulus while
Bob's ``running`` output is high; Python wakes once per chunk to take the DETECTIONS records
from the link pump, answer them as Alice's host would (from Alice's choices, with the
protocol's reference decision) and hand the answers to Bob (SIFT_APPLY), collecting Bob's
SIFTED_KEY entries. The harness compares everything with the models.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles

from qkdlink.cosim.alice_host import AliceHost
from qkdlink.cosim.bob_sequence import setup_writes
from qkdlink.cosim.tb.hostlink_driver import HostLinkDriver
from qkdlink.gateware import protocol as proto
from qkdlink.gateware.regmap import BOB_REGISTERS as R, BOB_COUNTER48_NAMES, BOB_COUNTER32_NAMES, HISTOGRAM_BINS

CLOCK_PERIOD_NS = 2
_CMD = R["CMD"]
_CTRL = R["CTRL"]


def _bit(reg, name):
    return 1 << reg.field(name).offset


async def sift(link: HostLinkDriver, alice: AliceHost, records: list[int], key: list) -> None:
    """SIFT_APPLY the answers to ``records`` in groups of 32; append Bob's key entries."""
    if alice is None:
        return
    answers = alice.answer(records)
    for i in range(0, len(answers), 32):
        ans = await link.request(proto.MsgType.SIFT_APPLY, proto.sift_apply(answers[i:i + 32]))
        assert isinstance(ans, proto.SiftedKey), ans
        key.extend(ans.entries)


def take_records(link: HostLinkDriver) -> list[int]:
    out = []
    for frame in link.unsolicited:
        out.extend(proto.parse_response(frame).records)
    link.unsolicited.clear()
    return out


@cocotb.test()
async def bob_run(dut):
    spec = json.loads(Path(os.environ["QKDLINK_TB_SPEC"]).read_text())
    st = spec["settings"]
    alice = AliceHost(np.load(os.environ["QKDLINK_TB_CODES"]), spec["alice_first_slot"]) if spec["sift"] else None
    link = HostLinkDriver(dut.pump, clock_period_ns=CLOCK_PERIOD_NS)
    dut.rst.value = 1
    await ClockCycles(dut.clk, 4)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 2)

    ident = await link.read(R["ID"].addr, 3)
    for addr, value in setup_writes(st):
        await link.write(addr, value)

    clocks, chunks = spec["clocks"], spec["chunks"]
    records, key = [], []
    t0 = time.perf_counter()
    record_bits = _bit(_CTRL, "RECORD_BITS") if spec.get("record_bits") else 0
    await link.write(_CTRL.addr, _bit(_CTRL, "RUN") | _bit(_CTRL, "RECORDS") | record_bits)
    chunk = -(-clocks // chunks)
    for _ in range(chunks):
        await link.settle(chunk)
        new = take_records(link)
        records.extend(new)
        await sift(link, alice, new, key)
    await link.write(_CTRL.addr, _bit(_CTRL, "RECORDS") | record_bits)   # stop tagging, keep sending
    await link.settle(2000)
    new = take_records(link)
    records.extend(new)
    await sift(link, alice, new, key)
    run_wall_s = time.perf_counter() - t0

    await link.write(_CMD.addr, _bit(_CMD, "SNAPSHOT"))
    names48 = [f"{n}_{h}" for n in BOB_COUNTER48_NAMES for h in ("LO", "HI")]
    values = []
    for i in range(0, len(names48), 32):
        values += await link.read(R[names48[i]].addr, min(32, len(names48) - i))
    values += await link.read(R[BOB_COUNTER32_NAMES[0]].addr, len(BOB_COUNTER32_NAMES))
    regs = dict(zip(names48 + list(BOB_COUNTER32_NAMES), values))
    snap = {n: regs[f"{n}_LO"] | (regs[f"{n}_HI"] << 32) for n in BOB_COUNTER48_NAMES}
    snap.update({n: regs[n] for n in BOB_COUNTER32_NAMES})
    hist = await link.read(R["HIST_H_0"].addr, 4 * HISTOGRAM_BINS)
    link_counters = await link.read(R["RX_FRAMES"].addr, 9)

    Path(os.environ["QKDLINK_TB_OUT"]).write_text(json.dumps({
        "ident": ident, "snapshot": snap, "histogram": hist, "records": [int(r) for r in records],
        "sifted_key": [list(e) for e in key], "link_counters": link_counters, "run_wall_s": run_wall_s}))
